"""The benchmark's Markdown report: one section per cohort, every number with its CI."""

from __future__ import annotations

from typing import Dict, List

from paranasal_ssl.benchmarks.protocol import METHOD_TITLES
from paranasal_ssl.evaluation import format_table


def _ci(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.3f}"


def _msd(row: dict) -> str:
    if row.get("auprc") is None:
        return "n/a (" + "; ".join(row.get("skipped", [])[:1])[:60] + ")" if row.get(
            "skipped") else "n/a"
    sd = row.get("auprc_sd")
    text = f"{row['auprc']:.3f}" + (f" +/- {sd:.3f}" if sd is not None else "")
    skipped, ran = len(row.get("skipped", [])), len(row.get("n_train_sinuses", []))
    draws = f" ({ran} of {ran + skipped} draws)" if skipped else ""
    return text + f" [{row['auprc_ci'][0]:.2f}, {row['auprc_ci'][1]:.2f}]" + draws


def _skipped_note(methods: dict, fractions: List[float]) -> List[str]:
    """One line per fraction where label draws were skipped, with the first reason given."""
    lines = []
    for f in fractions:
        rows = [by_f.get(f"{f:g}", {}) for by_f in methods.values()]
        reasons = [reason for row in rows for reason in row.get("skipped", [])]
        if reasons:
            most = max(len(row.get("skipped", [])) for row in rows)
            lines.append(f"- {f:.0%} labels: up to {most} draw(s) per method skipped ("
                         f"{reasons[0]})")
    return (["Skipped label draws (the cells above average the draws that ran):"] + lines
            + [""]) if lines else []


def cohort_section(s: dict, headline: float) -> str:
    fractions = sorted({float(f) for rows in s["methods"].values() for f in rows})
    lines = [f"## Cohort `{s['cohort']}`", "",
             f"{s.get('test_set', 'Test split')}: {s['n_test_sinuses']} sinuses from "
             f"{s['n_test_subjects']} subjects, "
             f"prevalence **{s['prevalence']:.3f}** (the AUPRC of a random score). Cells: mean "
             "+/- sd over label draws [pooled 95% CI, subjects and draws resampled].", ""]
    if s.get("residual_fusion"):
        lines += ["Every fine-tuned classifier's score here adds the focal residual score of the "
                  "cohort's CAE (`finetune.residual_fusion`; each weighted by its spread over "
                  "the training sinuses, no label spent); the classifiers alone are in the "
                  "crop-averaging table.", ""]
    rows = []
    for method, by_f in s["methods"].items():
        row = {"method": METHOD_TITLES.get(method, method)}
        for f in fractions:
            row[f"{f:.0%} labels"] = _msd(by_f.get(f"{f:g}", {}))
        rows.append(row)
    for name, z in s["zero_label"].items():
        row = {"method": f"{name} (no labels)"}
        for f in fractions:
            row[f"{f:.0%} labels"] = _ci(z["auprc"], z["auprc_ci"])
        rows.append(row)
    lines += ["### AUPRC", "", format_table(rows, list(rows[0])), ""]
    lines += _skipped_note(s["methods"], fractions)
    h = f"{headline:g}"
    tta_rows = []
    for method, by_f in s["methods"].items():
        r = by_f.get(h, {})
        if r.get("auprc") is not None:
            row = {"method": METHOD_TITLES.get(method, method),
                   "AUPRC, crop-averaged": f"{r['auprc']:.3f}",
                   "AUPRC, single crop": f"{r['auprc_single_crop']:.3f}",
                   "AUROC": _ci(r.get("auroc"), r.get("auroc_ci"))}
            if s.get("residual_fusion"):
                row["AUPRC, classifier alone (no residual fusion)"] = _f(
                    r.get("auprc_classifier_alone"))
            tta_rows.append(row)
    if tta_rows:
        lines += [f"### Test-time crop averaging and AUROC at {headline:.0%} labels", "",
                  format_table(tta_rows, list(tta_rows[0])), ""]
    if s["differences"]:
        lines += ["### Paired differences in AUPRC (mean over draws, 95% CI)", ""]
        for name, d in s["differences"].items():
            if d:
                mark = "CI excludes 0" if d["excludes_zero"] else "CI includes 0"
                lines.append(f"- {name}: **{d['difference']:+.3f}** [{d['ci'][0]:+.3f}, "
                             f"{d['ci'][1]:+.3f}] ({mark})")
        lines.append("")
    lines += _paper_margin(s) + _per_type(s["per_type"], headline)
    most = s.get("per_type_most_labels")
    if most and most["methods"]:
        lines += _per_type(most["methods"], most["fraction"])
    lines += _localisation(s)
    return "\n".join(lines)


def _paper_margin(s: dict) -> List[str]:
    c = s.get("paper_margin")
    if not c:
        return []
    ours = s["methods"]["residual-pretext"][f"{c['fraction']:g}"]
    best = s["methods"][c["best_generic"]][f"{c['fraction']:g}"]
    zero = "n/a" if c["zero_label_auprc"] is None else f"{c['zero_label_auprc']:.3f}"
    zero_name = c.get("zero_label_reference") or "zero-label residual"
    return [f"**Paper's margin at {c['fraction']:.0%} labels** (at least +{c['margin']:.2f} "
            "over the best generic baseline, non-overlapping 95% CIs, above the zero-label "
            f"score of its CAE): **{'met' if c['met'] else 'not met'}**. This method "
            f"{_msd(ours)} vs {METHOD_TITLES.get(c['best_generic'], c['best_generic'])} "
            f"{_msd(best)}: {c['difference']:+.3f}, intervals "
            f"{'overlap' if c['intervals_overlap'] else 'do not overlap'}; {zero_name} "
            f"{zero}.", ""]


def _per_type(per_type: Dict[str, dict], fraction: float) -> List[str]:
    """Per-type AUPRC table: ``per_type`` maps method -> type -> {auprc, n_pos, ...}."""
    types = sorted({t for v in per_type.values() for t in v})
    if not types:
        return []
    rows = []
    for method, by_t in per_type.items():
        row = {"method": METHOD_TITLES.get(method, method)}
        for t in types:
            v = by_t.get(t, {})
            row[t] = "n/a" if v.get("auprc") is None else f"{v['auprc']:.3f}"
        rows.append(row)
    n_pos = {t: next(v[t]["n_pos"] for v in per_type.values() if t in v) for t in types}
    return [f"### Per anomaly type at {fraction:.0%} labels (AUPRC; positives of the type vs "
            "all normals)", "", "Positives per type: " + ", ".join(f"{t} {n_pos[t]}"
                                                                  for t in types), "",
            format_table(rows, list(rows[0])), ""]


def _localisation(s: dict) -> List[str]:
    loc: Dict[str, dict] = s.get("localisation") or {}
    rows = []
    for name, v in loc.items():
        if not v:
            continue
        pc = v.get("per_case_mean", {})
        rows.append({"map": name, "voxel AUPRC": _f(pc.get("voxel_auprc")),
                     "best Dice": _f(pc.get("best_dice")),
                     "pointing game": _f(pc.get("pointing_hit_rate")),
                     "FP volume in normals (mL)": _f(pc.get("fp_volume_ml_normals"))})
    if not rows:
        return []
    return ["### Localisation on anomalous test sinuses (per-case means, inside the ROI box)", "",
            format_table(rows, list(rows[0])), ""]


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
