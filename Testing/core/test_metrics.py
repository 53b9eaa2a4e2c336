"""Classification metrics, bootstrap CIs and tables, checked against hand-worked examples."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from paranasal_ssl.benchmarks.aggregate import per_type, type_groups
from paranasal_ssl.evaluation import (
    aggregate_runs,
    bootstrap_ci,
    bootstrap_counts,
    choose_decision_threshold,
    choose_threshold_max_f1,
    classification_metrics,
    format_table,
    format_value,
    paired_bootstrap_diff,
    per_group_metrics,
    sensitivity_at_specificity,
)
from paranasal_ssl.evaluation.bootstrap import Interval, _evaluate
from paranasal_ssl.geometry import SinusROI
from paranasal_ssl.inference import call_band, classify_call
from paranasal_ssl.manifest import SinusRecord, read_manifest, write_manifest

Y4, S4 = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]


def noisy(n, seed=0, shift=1.0, decimals=1):
    """Labels (n,) and rounded (so tied) Gaussian scores separated by ``shift``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(rng.normal(size=n) + shift * y, decimals)


# --- point metrics -------------------------------------------------------------------------

def test_hand_example_auroc_ap_prevalence():
    # Ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 0.5 * 1 + 0.5 * 2/3; 3 of 4 pairs ordered.
    m = classification_metrics(Y4, S4)
    assert m["auroc"] == pytest.approx(0.75)
    assert m["auprc"] == pytest.approx(5 / 6)
    assert (m["n"], m["n_pos"], m["n_neg"], m["prevalence"]) == (4, 2, 2, 0.5)


def test_perfect_and_inverted_scores():
    perfect = classification_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect["auroc"] == 1.0 and perfect["auprc"] == 1.0
    inverted = classification_metrics([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    # Positives ranked 3rd and 4th: AP = 0.5 * 1/3 + 0.5 * 2/4.
    assert inverted["auroc"] == 0.0
    assert inverted["auprc"] == pytest.approx(0.5 / 3 + 0.25)


def test_tied_scores_count_as_half_and_one_operating_point():
    # Pos 0.5 ties neg 0.5 (1/2), beats 0.2 (1); pos 0.9 beats both: AUROC 3.5 / 4.
    # Groups 0.9{+} then 0.5{+,-}: AP = 0.5 * 1 + 0.5 * 2/3.
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    m = classification_metrics(y, s)
    assert m["auroc"] == pytest.approx(0.875)
    assert m["auprc"] == pytest.approx(5 / 6)
    boot = bootstrap_ci(y, s, n_boot=5)
    assert boot["auroc"].estimate == pytest.approx(0.875)
    assert boot["auprc"].estimate == pytest.approx(5 / 6)


def test_sensitivity_at_specificity_hand_example():
    neg = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    pos = [0.95, 0.85, 0.55, 0.3, 0.05]
    y, s = [0] * 10 + [1] * 5, neg + pos
    # Spec >= 0.9 allows 1 false positive (1.0): t = 0.95 catches 1 of 5 positives.
    assert sensitivity_at_specificity(y, s, 0.90) == (pytest.approx(0.2), 0.95)
    # Spec >= 0.8 allows 2 (1.0, 0.9): t = 0.85 catches 0.95 and 0.85.
    assert sensitivity_at_specificity(y, s, 0.80) == (pytest.approx(0.4), 0.85)
    # Spec >= 0.95 allows none, and the top score is a negative: only "predict nothing".
    assert sensitivity_at_specificity(y, s, 0.95) == (0.0, None)
    # Equal sensitivity at t = 0.9 and t = 0.5: the higher (more specific) threshold is given.
    assert sensitivity_at_specificity([1, 0, 0], [0.9, 0.5, 0.1], 0.5) == (1.0, 0.9)
    m = classification_metrics(y, s)
    assert m["sens_at_spec90"] == pytest.approx(0.2) and m["sens_at_spec95"] == 0.0
    assert m["threshold_at_spec95"] is None and "threshold_at_spec95" in m["notes"]


def test_decision_threshold_needs_enough_validation_sinuses_of_each_class():
    rng = np.random.default_rng(0)
    y = np.array([0] * 12 + [1] * 10)
    p = np.clip(0.25 + 0.4 * y + rng.normal(0, 0.15, y.size), 0, 1)
    threshold, source = choose_decision_threshold(y, p)
    assert threshold == choose_threshold_max_f1(y, p) != 0.5
    assert source == "validation (max F1; 10 anomalous, 12 normal)"
    few, why = choose_decision_threshold(y[3:], p[3:])  # 9 normal
    assert few == 0.5 and "9 normal" in why and f"would give {threshold:.3f}" in why
    none, why = choose_decision_threshold(np.zeros(5), p[:5])  # no anomalous one: no F1
    assert none == 0.5 and "0 anomalous" in why


def test_the_uncertain_band_is_centred_on_the_decision_threshold():
    assert call_band((0.35, 0.65), 0.5) == (0.35, 0.65)
    assert call_band((0.35, 0.65), None) == (0.35, 0.65)
    for threshold in (0.02, 0.2, 0.43, 0.8):
        low, high = call_band((0.35, 0.65), threshold)
        assert low < threshold < high
        # the call never contradicts the decision p >= threshold
        for p in np.linspace(0, 1, 101):
            call = classify_call(p, (low, high))
            assert call == "uncertain" or (call == "anomalous") == (p >= threshold)
    low, high = call_band((0.35, 0.65), 0.1)
    assert classify_call(0.3, (low, high)) == "anomalous"  # was "normal" in the fixed band


def test_f1_threshold_chosen_on_validation_and_applied_to_test():
    # Validation F1 per threshold: .8->.5, .7->.4, .6->.67, .35->.857, .3->.75, .1->.67.
    yv, sv = [0, 0, 1, 1, 0, 1], [0.1, 0.3, 0.35, 0.6, 0.7, 0.8]
    assert choose_threshold_max_f1(yv, sv) == 0.35
    y, s = [0, 1, 1, 0], [0.34, 0.36, 0.9, 0.5]
    m = classification_metrics(y, s, y_true_val=yv, y_score_val=sv)
    assert m["threshold"] == 0.35 and m["threshold_source"] == "validation (max F1)"
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 0)
    assert m["f1"] == pytest.approx(0.8) and m["precision"] == pytest.approx(2 / 3)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.5
    # Without validation: 0.5, said so, and a different F1 (t=0.5: tp 1, fp 1, fn 1).
    d = classification_metrics(y, s)
    assert d["threshold"] == 0.5 and "no validation" in d["threshold_source"]
    assert d["f1"] == pytest.approx(0.5)


def test_f1_ties_keep_the_highest_threshold():
    # Ranking +,-,-,+ with 2 positives: F1 = 2/3 at t=0.9 and again at t=0.3.
    assert choose_threshold_max_f1([1, 0, 0, 1], [0.9, 0.7, 0.5, 0.3]) == 0.9


def test_brier_for_probabilities_only():
    assert classification_metrics([0, 1], [0.2, 0.6])["brier"] == pytest.approx(0.1)
    m = classification_metrics([0, 1], [-1.0, 2.0])
    assert m["brier"] is None and m["probabilities"] is False and "brier" in m["notes"]
    assert "arbitrary" in m["threshold_source"]
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 1], [-1.0, 2.0], probabilities=True)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_none_with_reason_and_no_warning(label):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics([label] * 4, [0.1, 0.7, 0.3, 0.9])
    assert m["auprc"] is None and m["auroc"] is None and m["sens_at_spec90"] is None
    assert "one class" in m["notes"]["auprc"]
    assert m["prevalence"] == label and m["brier"] is not None


def test_bad_inputs_raise_clear_value_errors():
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="3 samples but y_score has 2"):
        classification_metrics([0, 1, 1], [0.1, 0.3])
    with pytest.raises(ValueError, match="only 0"):
        classification_metrics([0, 2], [0.1, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0, 1], [np.nan, 0.2])


def test_per_type_rows_use_all_normals_as_negatives():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.9, 0.25, 0.6]
    groups = ["normal", None, "polyp", "cyst", "polyp", ("cyst", "polyp")]
    rows = per_group_metrics(y, s, groups)
    assert list(rows) == ["all", "cyst", "polyp"]  # labels of normal sinuses are ignored
    cyst, polyp = rows["cyst"], rows["polyp"]
    assert (cyst["n_pos"], cyst["n_neg"], cyst["prevalence"]) == (2, 3, 0.4)
    assert cyst["auroc"] == 1.0
    # Polyp positives 0.25 and 0.6 vs normals 0.1, 0.2, 0.3: 5 of 6 pairs; ranking +,-,+,-,-.
    assert polyp["auroc"] == pytest.approx(5 / 6)
    assert polyp["auprc"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert rows["all"]["n"] == 6
    with pytest.raises(ValueError, match="groups has 2 entries"):
        per_group_metrics(y, s, ["a", "b"])


def test_per_type_table_adds_subtle_groups_from_the_phantom_manifest(tmp_path):
    roi = SinusROI.from_values([-25, 40, -40], [30, 40, 45])
    rows = [("a", 1, ("mucosal_thickening",), "1"), ("b", 1, ("polyp",), "1"),
            ("c", 1, ("mucosal_thickening",), "0"), ("d", 0, (), "0"), ("e", 0, (), "")]
    records = [SinusRecord(c, c, tmp_path / f"{c}.nii.gz", "left", roi, label, types,
                           extra={"subtle": flag}) for c, label, types, flag in rows]
    back = read_manifest(write_manifest(records, tmp_path / "m.csv",
                                        extra_columns=["subtle"]))
    groups = type_groups(back)
    assert groups == [("mucosal_thickening", "subtle (any type)", "subtle thickening"),
                      ("polyp", "subtle (any type)"), ("mucosal_thickening",), (), ()]
    table = per_type(np.array([1, 1, 1, 0, 0]), np.array([[0.9, 0.2, 0.8, 0.5, 0.1]]), groups)
    assert table["subtle (any type)"]["n_pos"] == 2 and table["subtle thickening"]["n_pos"] == 1
    # subtle thickening 0.9 above both normals; the subtle polyp 0.2 is below the normal at 0.5
    assert table["subtle thickening"]["auprc"] == pytest.approx(1.0)
    assert table["subtle (any type)"]["auprc"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


# --- bootstrap -----------------------------------------------------------------------------

def test_vectorised_metrics_equal_sklearn_with_weights():
    y, s = noisy(60, seed=3)
    w = bootstrap_counts(y, n_boot=20, seed=1)
    ap, auc = _evaluate("auprc", y, s, w), _evaluate("auroc", y, s, w)
    for b in range(20):
        assert ap[b] == pytest.approx(average_precision_score(y, s, sample_weight=w[b]))
        assert auc[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]))
    sens = _evaluate("sens@spec90", y, s, np.ones((1, y.size), dtype=int))[0]
    assert sens == pytest.approx(sensitivity_at_specificity(y, s, 0.9)[0])


def test_callable_metric_sees_the_same_resamples_as_builtins():
    y, s = noisy(40, seed=4)
    fast = bootstrap_ci(y, s, "auprc", n_boot=30, seed=7)["auprc"]
    slow = bootstrap_ci(y, s, {"ap": average_precision_score}, n_boot=30, seed=7)["ap"]
    assert (slow.low, slow.high) == (pytest.approx(fast.low), pytest.approx(fast.high))


def test_ci_contains_estimate_and_shrinks_with_n():
    small = bootstrap_ci(*noisy(80, seed=1), seed=0)
    large = bootstrap_ci(*noisy(2000, seed=1), seed=0)
    for name in ("auprc", "auroc"):
        for ci in (small[name], large[name]):
            assert ci.low < ci.estimate < ci.high and ci.n_valid == ci.n_boot == 1000
        assert large[name].high - large[name].low < 0.5 * (small[name].high - small[name].low)


def test_cluster_bootstrap_keeps_subjects_together_and_both_classes():
    y, _ = noisy(200, seed=2)
    subjects = np.arange(200) // 2
    w = bootstrap_counts(y, clusters=subjects, n_boot=300, seed=0)
    assert w.shape == (300, 200)
    assert np.array_equal(w[:, 0::2], w[:, 1::2])  # both sides of a subject drawn together
    assert ((w * y).sum(1) > 0).all() and ((w * (1 - y)).sum(1) > 0).all()
    # Stratified: the number of subjects drawn is always the number of subjects.
    assert (w[:, 0::2].sum(1) == 100).all()
    # In the resample's indices every drawn subject brings its left AND right sinus.
    idx = np.repeat(np.arange(200), w[0])
    left = np.bincount(subjects[idx[idx % 2 == 0]], minlength=100)
    right = np.bincount(subjects[idx[idx % 2 == 1]], minlength=100)
    assert np.array_equal(left, right) and left.max() > 1 and (left == 0).any()


def test_stratified_resamples_keep_a_rare_class():
    # One anomalous sample among 10: a plain bootstrap loses it in about 35% of resamples.
    y, s = [1] + [0] * 9, np.linspace(1.0, 0.0, 10)
    w = bootstrap_counts(y, n_boot=200, seed=0)
    assert ((w * np.array(y)).sum(1) == 1).all() and (w.sum(1) == 10).all()
    assert bootstrap_ci(y, s, n_boot=200)["auprc"].n_valid == 200
    plain = bootstrap_ci(y, s, n_boot=200, stratify=False)["auprc"]
    assert 100 < plain.n_valid < 180


def test_cluster_ci_is_wider_when_both_sides_are_copies():
    # Each subject's two sinuses are identical: 100 subjects carry only 100 samples' worth.
    y, s = noisy(100, seed=5)
    y2, s2, subj = np.repeat(y, 2), np.repeat(s, 2), np.repeat(np.arange(100), 2)
    naive = bootstrap_ci(y2, s2, "auroc")["auroc"]
    clustered = bootstrap_ci(y2, s2, "auroc", clusters=subj)["auroc"]
    assert clustered.high - clustered.low > 1.2 * (naive.high - naive.low)


def test_bootstrap_is_deterministic_for_a_seed():
    y, s = noisy(100, seed=6)
    assert bootstrap_ci(y, s, seed=3) == bootstrap_ci(y, s, seed=3)
    assert bootstrap_ci(y, s, seed=3) != bootstrap_ci(y, s, seed=4)


def test_bootstrap_is_fast():
    y, s = noisy(500, seed=8, decimals=3)
    start = time.perf_counter()
    bootstrap_ci(y, s, ("auprc", "auroc"), n_boot=1000, clusters=np.arange(500) // 2)
    assert time.perf_counter() - start < 2.0


def test_paired_difference_of_a_method_with_itself_is_zero():
    y, s = noisy(120, seed=9)
    d = paired_bootstrap_diff(y, s, s, ("auprc", "auroc"))
    for res in d.values():
        assert (res.difference.estimate, res.difference.low, res.difference.high) == (0, 0, 0)
        assert res.p_value == 1.0


def test_paired_difference_detects_a_better_method():
    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 300)
    good, bad = y * 2.0 + rng.normal(size=300), y * 0.3 + rng.normal(size=300)
    d = paired_bootstrap_diff(y, good, bad, "auroc")["auroc"]
    assert d.difference.estimate == pytest.approx(d.value_a - d.value_b)
    assert d.difference.low > 0 and d.p_value < 0.01


def test_aggregate_runs_mean_std_and_joint_ci():
    y, s = noisy(150, seed=11)
    one = aggregate_runs(y, s[None, :], "auroc")["auroc"]
    assert one.ci == bootstrap_ci(y, s, "auroc")["auroc"]  # one run = ordinary bootstrap
    assert one.std is None
    twin = aggregate_runs(y, np.stack([s, s]), "auroc")["auroc"]
    assert twin.std == 0.0 and twin.ci == one.ci  # identical runs add no run variance
    other = np.round(s + np.random.default_rng(1).normal(size=150), 1)
    per = [roc_auc_score(y, s), roc_auc_score(y, other)]
    two = aggregate_runs(y, [s, other], "auroc")["auroc"]
    assert two.per_run == (pytest.approx(per[0]), pytest.approx(per[1]))
    assert two.mean == pytest.approx(np.mean(per)) and two.std == pytest.approx(np.std(per, ddof=1))
    assert two.ci.low < two.mean < two.ci.high


def test_aggregate_ci_covers_the_spread_between_runs():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 400)
    strong, weak = 3.0 * y + rng.normal(size=400), 0.6 * y + rng.normal(size=400)
    agg = aggregate_runs(y, [strong, weak], "auroc")["auroc"]
    assert agg.per_run[0] > 0.9 and agg.per_run[1] < 0.7
    # Half the replicates draw the same run twice, so the CI reaches both runs' values.
    assert agg.ci.low < agg.per_run[1] + 0.03 and agg.ci.high > agg.per_run[0] - 0.03


def test_unknown_metric_name_raises():
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(Y4, S4, "accuracy")


# --- tables --------------------------------------------------------------------------------

def test_format_table_renders_intervals_numbers_and_missing_values():
    rows = [{"method": "ours", "auprc": Interval(0.8123, 0.7712, 0.8499), "n": 120, "f1": None},
            {"method": "a|b", "auprc": (0.5, 0.41, 0.6), "n": 7, "f1": 0.66666}]
    table = format_table(rows, [("method", "Method"), ("auprc", "AUPRC"), "n", "f1", "x"])
    assert table.splitlines() == [
        "| Method | AUPRC | n | f1 | x |",
        "|---|---|---|---|---|",
        "| ours | 0.812 [0.77, 0.85] | 120 | n/a |  |",
        "| a\\|b | 0.500 [0.41, 0.60] | 7 | 0.667 |  |",
    ]
    assert str(Interval(0.8123, 0.7712, 0.8499)) == "0.812 [0.77, 0.85]"
    assert format_value(float("nan")) == "n/a" and format_value(True) == "yes"


def test_an_evaluation_of_one_class_says_why_its_ranking_metrics_are_missing():
    from paranasal_ssl.stages.evaluate_stage import method_metrics, report_markdown

    y = np.ones(6, int)
    scores = {"model (crop-averaged)": np.linspace(0.2, 0.9, 6), "zero-label": np.arange(6.0)}
    methods = method_metrics(y, np.repeat(np.arange(3), 2), [("polyp",)] * 6, scores, 0.5,
                             None, n_boot=10)
    assert methods["zero-label"]["auprc"] is None
    results = {"methods": methods, "split": "test", "model": "m", "n_sinuses": 6,
               "n_subjects": 3, "prevalence": 1.0, "code_version": "x"}
    report = report_markdown(results)
    assert "| model (crop-averaged) | n/a | 1.000 | n/a |" in report
    assert "n/a: every sinus here is anomalous" in report
    y[:2] = 0  # both classes: no such line
    assert "n/a: every sinus" not in report_markdown(
        dict(results, methods=method_metrics(y, np.repeat(np.arange(3), 2), [("polyp",)] * 6,
                                             scores, 0.5, None, n_boot=10)))


def test_a_report_on_few_labelled_sinuses_warns_that_its_intervals_are_rough():
    """One sinus of each class: every resample holding both ranks them alike, so the interval
    is a single point; the report says so, and says nothing once both classes have ten."""
    from paranasal_ssl.stages.evaluate_stage import method_metrics, report_markdown

    def report(y):
        scores = {"model (crop-averaged)": np.linspace(0.9, 0.1, len(y))}
        methods = method_metrics(y, np.arange(len(y)), [()] * len(y), scores, 0.5, None,
                                 n_boot=200)
        return methods, report_markdown({"methods": methods, "split": "test", "model": "m",
                                         "n_sinuses": len(y), "n_subjects": len(y),
                                         "prevalence": float(y.mean()), "code_version": "x"})

    methods, text = report(np.array([0, 1]))
    assert methods["model (crop-averaged)"]["auroc_ci"] == [0.0, 0.0]  # a point, by chance
    assert "**Few labels:** only 1 anomalous and 1 normal sinuses" in text
    _, text = report(np.array([0] * 10 + [1] * 9))
    assert "only 9 anomalous and 10 normal" in text
    _, text = report(np.array([0] * 10 + [1] * 10))
    assert "Few labels" not in text
