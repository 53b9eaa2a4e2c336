"""Numbers of one cohort: per method and label fraction the mean over label draws with a pooled
95% bootstrap CI (subjects and draws resampled), per anomaly type, paired differences."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from paranasal_ssl.benchmarks.cells import cell_scores
from paranasal_ssl.benchmarks.protocol import PRETRAINED_METHODS
from paranasal_ssl.evaluation import aggregate_runs, bootstrap_ci, per_group_metrics
from paranasal_ssl.evaluation.bootstrap import bootstrap_counts, metric_on_resamples
from paranasal_ssl.residual_fusion import FOCAL_NAME

GENERIC = [m for m in PRETRAINED_METHODS if m != "residual-pretext"]
ZERO_LABEL_REFERENCES = ("zero-label residual", FOCAL_NAME)


def summarise_runs(y: np.ndarray, subjects: np.ndarray, scores: np.ndarray, n_boot: int,
                   seed: int = 0) -> dict:
    """Mean, sd and pooled CI of AUPRC and AUROC over runs (R, N) on one test set."""
    if len(scores) == 0:
        return {"n_runs": 0}
    agg = aggregate_runs(y, scores, ("auprc", "auroc"), clusters=subjects, n_boot=n_boot,
                         seed=seed)
    out = {"n_runs": int(len(scores))}
    for m, s in agg.items():
        out[m] = s.mean
        out[f"{m}_sd"] = s.std
        out[f"{m}_ci"] = [s.ci.low, s.ci.high]
        out[f"{m}_per_run"] = list(s.per_run)
    return out


def paired_difference(y, subjects, a: np.ndarray, b: np.ndarray, n_boot: int,
                      seed: int = 0) -> Optional[dict]:
    """Mean-over-draws AUPRC of runs ``a`` (R, N) minus that of ``b`` (R, N) or (1, N), with a
    CI from resampling subjects and (paired) draws together."""
    if len(a) == 0 or len(b) == 0:
        return None
    counts = bootstrap_counts(y, clusters=subjects, n_boot=n_boot, seed=seed)
    ap_a = np.stack([metric_on_resamples(y, s, counts) for s in a])  # (R, B)
    ap_b = np.stack([metric_on_resamples(y, s, counts) for s in b])
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, len(a), size=(n_boot, len(a)))
    cols = np.arange(n_boot)[:, None]
    rep_a = np.nanmean(ap_a[picks, cols], axis=1)
    rep_b = (np.nanmean(ap_b[np.minimum(picks, len(b) - 1), cols], axis=1) if len(b) > 1
             else ap_b[0])
    diff = rep_a - rep_b
    point = float(np.mean([metric_on_resamples(y, s, np.ones((1, len(y))))[0] for s in a])
                  - np.mean([metric_on_resamples(y, s, np.ones((1, len(y))))[0] for s in b]))
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    return {"difference": point, "ci": [float(lo), float(hi)],
            "excludes_zero": bool(lo > 0 or hi < 0)}


def per_type(y, scores: np.ndarray, types: Sequence[Sequence[str]]) -> Dict[str, dict]:
    """Per anomaly type (positives of that type vs all normals), averaged over runs."""
    rows: Dict[str, List[float]] = {}
    meta: Dict[str, dict] = {}
    for s in scores:
        for t, m in per_group_metrics(y, s, types).items():
            if t == "all":
                continue
            rows.setdefault(t, []).append(np.nan if m["auprc"] is None else m["auprc"])
            meta[t] = {"n_pos": m["n_pos"], "prevalence": m["prevalence"]}
    return {t: {"auprc": float(np.nanmean(v)) if np.isfinite(v).any() else None, **meta[t]}
            for t, v in rows.items()}


def type_groups(test) -> List[tuple]:
    """Groups of each test sinus for the per-type table: its anomaly types, plus "subtle (any
    type)" and "subtle thickening" where the phantom manifest's ``subtle`` column is 1 (every
    reportable finding small: thickening up to 6 mm, cysts and polyps under 6 mm, thin fluid or
    partial opacification). Normal sinuses have none: they are every group's negatives."""
    groups = []
    for r in test:
        g = tuple(r.anomaly_types) if r.label else ()
        if r.label and r.extra.get("subtle") == "1":
            g += ("subtle (any type)",)
            if "mucosal_thickening" in r.anomaly_types:
                g += ("subtle thickening",)
        groups.append(g)
    return groups


def summarise_cohort(name: str, plan, test, cells: Dict[str, Dict[float, List[dict]]],
                     references: Dict[str, Dict[str, float]], localisation: dict) -> dict:
    y = np.array([r.label for r in test])
    subjects = np.array([r.subject_id for r in test])
    types = type_groups(test)
    n = len(test)
    out = {"cohort": name, "n_test_sinuses": n, "n_test_subjects": int(len(set(subjects))),
           "prevalence": float(y.mean()), "methods": {}, "zero_label": {}, "per_type": {},
           "differences": {}, "localisation": localisation, "training": {}}
    for method, by_fraction in cells.items():
        out["methods"][method] = {}
        for fraction, runs in sorted(by_fraction.items()):
            tta, single = cell_scores(runs, n, "tta"), cell_scores(runs, n, "single")
            row = summarise_runs(y, subjects, tta, plan.n_boot)
            row["auprc_single_crop"] = summarise_runs(y, subjects, single, plan.n_boot).get(
                "auprc")
            fused = [c for c in runs if "classifier" in c]
            if fused:  # the classifier before its residual fusion
                alone = summarise_runs(y, subjects, cell_scores(fused, n, "classifier"),
                                       plan.n_boot)
                row["auprc_classifier_alone"] = alone.get("auprc")
                out["residual_fusion"] = True
            row["skipped"] = [c["skipped"] for c in runs if "skipped" in c]
            row["n_train_sinuses"] = [c.get("n_train_sinuses") for c in runs
                                      if "skipped" not in c]
            out["methods"][method][f"{fraction:g}"] = row
    for ref, by_key in references.items():
        s = np.array([by_key[r.key] for r in test])
        ci = bootstrap_ci(y, s, ("auprc", "auroc"), clusters=subjects, n_boot=plan.n_boot)
        out["zero_label"][ref] = {"auprc": ci["auprc"].estimate, "auprc_ci": [
            ci["auprc"].low, ci["auprc"].high], "auroc": ci["auroc"].estimate,
            "auroc_ci": [ci["auroc"].low, ci["auroc"].high]}
    f = plan.headline_fraction
    head = {m: cell_scores(cells[m].get(f, []), n) for m in cells}
    for m, scores in head.items():
        if len(scores):
            out["per_type"][m] = per_type(y, scores, types)
    for ref, by_key in references.items():
        out["per_type"][ref] = per_type(y, np.array([[by_key[r.key] for r in test]]), types)
    # the same table with the most labels: a type that no amount of labels lifts is not a
    # failure of the few-label methods (e.g. findings that the inputs or residuals lose)
    top = max((fr for by_f in cells.values() for fr in by_f), default=f)
    if top != f:
        rows = {m: per_type(y, s, types) for m in cells
                if len(s := cell_scores(cells[m].get(top, []), n))}
        out["per_type_most_labels"] = {"fraction": top, "methods": rows}
    if "residual-pretext" in head and len(head["residual-pretext"]):
        ours = head["residual-pretext"]
        generic = {m: out["methods"][m][f"{f:g}"].get("auprc") for m in GENERIC if m in head
                   and out["methods"][m].get(f"{f:g}", {}).get("auprc") is not None}
        if generic:
            best = max(generic, key=generic.get)
            out["differences"][f"residual-pretext - {best} (best generic) at {f:g}"] = \
                paired_difference(y, subjects, ours, head[best], plan.n_boot)
        if "random-init" in head:
            out["differences"][f"residual-pretext - random-init at {f:g}"] = \
                paired_difference(y, subjects, ours, head["random-init"], plan.n_boot)
        for ref, by_key in references.items():
            s = np.array([[by_key[r.key] for r in test]])
            out["differences"][f"residual-pretext - {ref} at {f:g}"] = paired_difference(
                y, subjects, ours, s, plan.n_boot)
    out["paper_margin"] = paper_margin(out, f)
    return out


def paper_margin(summary: dict, fraction: float, margin: float = 0.04) -> Optional[dict]:
    """The paper's claim as a test: at ``fraction`` labels this method's AUPRC is at least
    ``margin`` above the best generic self-supervised baseline's, their pooled 95% CIs do not
    overlap, and it is above the best zero-label score of its CAE (the residual, and the focal
    residual where the report has it). None without those cells."""
    rows = {m: summary["methods"].get(m, {}).get(f"{fraction:g}", {}) for m in
            ["residual-pretext"] + GENERIC}
    rows = {m: r for m, r in rows.items() if r.get("auprc") is not None}
    if "residual-pretext" not in rows or len(rows) < 2:
        return None
    ours = rows.pop("residual-pretext")
    best = max(rows, key=lambda m: rows[m]["auprc"])
    # the zero-label scores of the method's own CAE: its residual and, where reported, the focal
    # residual (which a fused classifier adds to its score): the best of them is the bar
    refs = {name: summary["zero_label"][name]["auprc"] for name in ZERO_LABEL_REFERENCES
            if summary["zero_label"].get(name, {}).get("auprc") is not None}
    zero_name = max(refs, key=refs.get) if refs else None
    zero = refs.get(zero_name)
    check = {"fraction": fraction, "margin": margin, "best_generic": best,
             "difference": ours["auprc"] - rows[best]["auprc"],
             "intervals_overlap": ours["auprc_ci"][0] <= rows[best]["auprc_ci"][1],
             "zero_label_auprc": zero, "zero_label_reference": zero_name,
             "ahead_of_zero_label": zero is not None and ours["auprc"] > zero}
    check["met"] = bool(check["difference"] >= margin and not check["intervals_overlap"]
                        and check["ahead_of_zero_label"])
    return check
