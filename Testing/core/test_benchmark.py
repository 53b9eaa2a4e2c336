"""The benchmark end to end on a tiny configuration, its resumability, and its statistics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.tiny import TINY_OVERRIDES, synth
from paranasal_ssl.benchmarks.aggregate import paired_difference, paper_margin
from paranasal_ssl.benchmarks.protocol import make_plan
from paranasal_ssl.benchmarks.reference_scores import FOCAL_NAME, central_box
from paranasal_ssl.benchmarks.report_md import cohort_section
from paranasal_ssl.benchmarks.runner import run_benchmark
from paranasal_ssl.stages.run import open_run


def test_benchmark_runs_end_to_end_and_resumes(tmp_path, tiny_cohort):
    external = synth(tmp_path / "external", 4, "--seed", "8", "--id-prefix", "ext-")
    plan = make_plan("cpu-small", fractions=[0.5, 1.0], seeds=[0, 1],
                     methods=["residual-pretext", "byol", "random-init"],
                     overrides=TINY_OVERRIDES, manifests={"tiny": str(tiny_cohort)},
                     external_manifests={"tiny": str(external)})
    plan.n_boot = 50
    out = tmp_path / "bench"
    results = run_benchmark(out, plan, device="cpu", workers=1)
    s = results["cohorts"][0]
    assert s["cohort"] == "tiny" and 0 < s["prevalence"] < 1
    for method in plan.methods:
        for f in ("0.5", "1"):
            row = s["methods"][method][f]
            assert row["n_runs"] + len(row["skipped"]) == 2
            if row["n_runs"]:
                assert 0 <= row["auprc"] <= 1 and row["auprc_ci"][0] <= row["auprc_ci"][1]
    assert set(s["zero_label"]) == {"zero-label residual", "intensity (non-air fraction)",
                                    "residual pretext before fine-tuning", FOCAL_NAME}
    # the focal residual reference: its own cached maps beside the run's, and a paired test
    focal = s["zero_label"][FOCAL_NAME]
    assert 0 <= focal["auprc"] <= 1 and f"residual-pretext - {FOCAL_NAME} at 1" in s["differences"]
    # ... computed for the sinuses scored only (no calibration on the run's other sinuses): the
    # residual fusion's (every split of the run: training statistics, validation threshold,
    # test) beside the run's own maps, and the independent cohort's 8
    assert len(list((out / "runs" / "tiny" / "residuals").iterdir())) == 1
    focal_dirs = [p for p in (out / "runs" / "tiny" / "external").iterdir() if "-focal-" in p.name]
    assert len(focal_dirs) == 2  # the run's and the independent cohort's
    run = open_run(out / "runs" / "tiny", device="cpu")
    in_splits = sum(len(run.split(name)) for name in ("train", "val", "test"))
    assert sorted(len(list(p.glob("*.npy"))) for p in focal_dirs) == sorted([in_splits, 8])
    # every classifier is fused (the profile's setting): the report keeps the classifier alone
    alone = s["methods"]["residual-pretext"]["1"]["auprc_classifier_alone"]
    assert s["residual_fusion"] and 0 <= alone <= 1
    # what the labels add, on test: the fine-tuned classifier against its own starting point
    assert "residual-pretext - residual pretext before fine-tuning at 1" in s["differences"]
    assert (out / s["figure"]).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "prevalence" in report and "BYOL" in report and "residual pretext" in report
    assert "classifier alone (no residual fusion)" in report
    assert "Paper's margin at 100% labels" in report and s["paper_margin"]["best_generic"] == "byol"
    # the independent test cohort: every method's headline cells scored on its 8 sinuses
    ext = s["external"]
    assert ext["n_test_sinuses"] == 8 and ext["n_test_subjects"] == 4
    for method in plan.methods:
        row = ext["methods"][method]["1"]
        assert row["n_runs"] + len(row["skipped"]) == 2
    ours = s["methods"]["residual-pretext"]["1"]
    assert ours["n_runs"] == 2 and ext["methods"]["residual-pretext"]["1"]["n_runs"] == 2
    cell = json.loads((out / "cells" / "tiny-external" / "residual-pretext" / "f1-s0.json")
                      .read_text())
    assert all(k.startswith("ext-") for k in cell["keys"]) and len(cell["tta"]) == 8
    assert "zero-label residual" in ext["zero_label"] and ext["paper_margin"] is not None
    assert FOCAL_NAME in ext["zero_label"]
    assert "Independent test cohort" in report and "tiny: independent test cohort" in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["code_version"] and saved["environment"]["processor"]
    assert saved["plan"]["seeds"] == [0, 1]
    # a second run reads every finished cell back instead of training again
    cells = sorted((out / "cells").rglob("*.json"))
    stamps = [c.stat().st_mtime_ns for c in cells]
    finetuned = sorted((out / "runs" / "tiny" / "finetune").rglob("best.pt"))
    weights = [c.stat().st_mtime_ns for c in finetuned]
    again = run_benchmark(out, plan, device="cpu", workers=1)
    assert [c.stat().st_mtime_ns for c in cells] == stamps
    assert [c.stat().st_mtime_ns for c in finetuned] == weights  # no model trained again
    assert again["cohorts"][0]["methods"] == s["methods"]
    # ... and keeps what the first run cost: the resumed run's own time would hide it
    earlier = again["timings_s"]["earlier invocations"]
    assert [e["total_seconds"] for e in earlier] == [saved["total_seconds"]]
    assert earlier[0]["timings_s"] == {k: v for k, v in saved["timings_s"].items()
                                       if k != "earlier invocations"}
    assert "resumed; earlier run" in (out / "report.md").read_text()
    # benchmarks/error_groups_check.py reads the finished benchmark: every sinus of the
    # independent cohort in one group, every method's cells and the label-free references
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from error_groups_check import main as error_groups

    groups = error_groups(out, "tiny", tmp_path / "groups", fraction=1.0)
    assert sum(g["n"] for g in groups["groups"].values()) == 8
    assert {"residual-pretext", "byol", "random-init", "zero-label residual",
            FOCAL_NAME} <= set(groups["auprc"])
    for name in ("zero-label residual", FOCAL_NAME):  # the same scores the report used
        assert groups["auprc"][name] == pytest.approx(ext["zero_label"][name]["auprc"])
    assert "Where the AUPRC lies" in (tmp_path / "groups.md").read_text()


def test_paired_difference_of_a_method_with_itself_is_exactly_zero():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    subjects = np.repeat(np.arange(20), 2)
    a = rng.random((3, 40))
    d = paired_difference(y, subjects, a, a, n_boot=200)
    assert d["difference"] == 0 and d["ci"] == [0.0, 0.0] and not d["excludes_zero"]
    better = np.stack([y + 0.1 * rng.random(40) for _ in range(3)])
    d = paired_difference(y, subjects, better, a, n_boot=200)
    assert d["difference"] > 0.3 and d["excludes_zero"]


def test_central_box_keeps_the_middle_half_of_each_axis():
    box = np.zeros((10, 12, 8), bool)
    box[2:10, 0:12, 2:6] = True
    inner = central_box(box)
    idx = np.argwhere(inner)
    assert idx.min(0).tolist() == [4, 3, 3] and idx.max(0).tolist() == [7, 8, 4]


def _cell(auprc, lo, hi):
    return {"auprc": auprc, "auprc_sd": 0.01, "auprc_ci": [lo, hi], "auprc_single_crop": auprc}


def test_paper_margin_needs_the_margin_separate_intervals_and_the_zero_label_score():
    summary = {"cohort": "x", "n_test_sinuses": 80, "n_test_subjects": 40, "prevalence": 0.5,
               "methods": {"residual-pretext": {"0.1": _cell(0.90, 0.86, 0.94)},
                           "simclr": {"0.1": _cell(0.80, 0.70, 0.85)},
                           "byol": {"0.1": _cell(0.84, 0.78, 0.87)},
                           "random-init": {"0.1": _cell(0.95, 0.9, 0.99)}},
               "zero_label": {"zero-label residual": {"auprc": 0.85, "auprc_ci": [0.8, 0.9]}},
               "differences": {}, "per_type": {}, "localisation": {}}
    c = paper_margin(summary, 0.1)
    # the best generic baseline is BYOL (random init is not one); +0.06 but 0.86 < 0.87
    assert c["best_generic"] == "byol" and abs(c["difference"] - 0.06) < 1e-9
    assert c["intervals_overlap"] and not c["met"]
    summary["methods"]["byol"]["0.1"] = _cell(0.84, 0.78, 0.85)
    assert paper_margin(summary, 0.1)["met"]
    assert "**met**" in cohort_section(summary | {"paper_margin": paper_margin(summary, 0.1)},
                                      0.1)
    summary["zero_label"]["zero-label residual"]["auprc"] = 0.91
    assert not paper_margin(summary, 0.1)["met"]
    summary["zero_label"]["zero-label residual"]["auprc"] = 0.85
    summary["methods"]["byol"]["0.1"] = _cell(0.87, 0.80, 0.85)
    assert not paper_margin(summary, 0.1)["met"]  # +0.03 < 0.04
    assert paper_margin(summary, 0.2) is None


def test_report_shows_the_per_type_table_again_with_the_most_labels(tmp_path):
    from paranasal_ssl.benchmarks.aggregate import summarise_cohort
    from paranasal_ssl.geometry import SinusROI
    from paranasal_ssl.manifest import SinusRecord

    roi = SinusROI.from_values([-25, 40, -40], [30, 40, 45])
    rows = [("a", 1, ("polyp",)), ("b", 1, ("retention_cyst",)), ("c", 0, ()), ("d", 0, ())]
    test = [SinusRecord(c, c, tmp_path / f"{c}.nii.gz", "left", roi, label, types)
            for c, label, types in rows]
    keys = [r.key for r in test]

    def cell(scores):
        return {"keys": keys, "tta": scores, "single": scores}

    # at 10% the cyst scores below both normals; with all labels above them
    cells = {"residual-pretext": {0.1: [cell([0.9, 0.1, 0.5, 0.3])],
                                  1.0: [cell([0.9, 0.8, 0.5, 0.3])]}}
    plan = make_plan("cpu-small", fractions=[0.1, 1.0], seeds=[0])
    plan.n_boot = 20
    s = summarise_cohort("x", plan, test, cells, {}, {})
    assert s["per_type"]["residual-pretext"]["retention_cyst"]["auprc"] == 1 / 3
    most = s["per_type_most_labels"]
    assert most["fraction"] == 1.0
    assert most["methods"]["residual-pretext"]["retention_cyst"]["auprc"] == 1.0
    report = cohort_section(s, 0.1)
    assert "Per anomaly type at 10% labels" in report
    assert "Per anomaly type at 100% labels" in report
    # a plan whose headline is already its largest fraction has one table
    plan = make_plan("cpu-small", fractions=[1.0], seeds=[0])
    s = summarise_cohort("x", plan, test, {"residual-pretext": {1.0: cells[
        "residual-pretext"][1.0]}}, {}, {})
    assert "per_type_most_labels" not in s
    assert cohort_section(s, 1.0).count("Per anomaly type") == 1


def test_report_says_how_many_label_draws_a_cell_averages_when_some_were_skipped(tmp_path):
    """A small cohort: two of three 10% draws hold one class and are skipped. The cell used to
    show the one draw that ran like any other (only its missing '+/- sd' told)."""
    from paranasal_ssl.benchmarks.aggregate import summarise_cohort
    from paranasal_ssl.geometry import SinusROI
    from paranasal_ssl.manifest import SinusRecord

    roi = SinusROI.from_values([-25, 40, -40], [30, 40, 45])
    test = [SinusRecord(c, c, tmp_path / f"{c}.nii.gz", "left", roi, label, ())
            for c, label in (("a", 1), ("b", 1), ("c", 0), ("d", 0))]
    keys = [r.key for r in test]
    ran = {"keys": keys, "tta": [0.9, 0.6, 0.5, 0.3], "single": [0.9, 0.6, 0.5, 0.3]}
    reason = "label fraction 0.1 of 10 subjects gives 2 normal and 0 anomalous sinuses"
    cells = {"residual-pretext": {0.1: [ran] + [{"skipped": reason}] * 2, 1.0: [ran] * 3}}
    plan = make_plan("cpu-small", fractions=[0.1, 1.0], seeds=[0, 1, 2])
    plan.n_boot = 20
    report = cohort_section(summarise_cohort("x", plan, test, cells, {}, {}), 0.1)
    assert "1.000 [1.00, 1.00] (1 of 3 draws)" in report
    assert f"- 10% labels: up to 2 draw(s) per method skipped ({reason})" in report
    assert "100% labels: up to" not in report and "(3 of 3 draws)" not in report


def test_phantom_cohort_of_another_size_is_made_again_or_refused(tmp_path):
    """An independent test cohort asked for at another size is made again (its first cases
    unchanged); a benchmark cohort of another size is refused (its runs used the old one)."""
    import pytest

    from paranasal_ssl.benchmarks.cells import _phantom_cohort, synth_phantom_cohort
    from paranasal_ssl.crop_cache import record_key
    from paranasal_ssl.errors import ConfigError
    from paranasal_ssl.manifest import read_manifest

    small = ["--spacing", "2", "--workers", "1", "--progress", "none"]
    folder = tmp_path / "ext"
    first = read_manifest(synth_phantom_cohort(folder, 1, 5, small, replace=True))
    again = read_manifest(synth_phantom_cohort(folder, 1, 5, small, replace=True))
    assert [record_key(r) for r in again] == [record_key(r) for r in first]
    larger = read_manifest(synth_phantom_cohort(folder, 2, 5, small, replace=True))
    assert len({r.case_id for r in larger}) == 2
    assert [record_key(r) for r in larger[:len(first)]] == [record_key(r) for r in first]
    plan = make_plan("cpu-small", cases=1)
    cohort = tmp_path / "bench" / "cohorts" / "ct"
    synth_phantom_cohort(cohort, 2, 11, small)
    with pytest.raises(ConfigError, match="has 2 phantom cases, this run asks for 1"):
        _phantom_cohort(tmp_path / "bench", plan, "ct")
