"""Where the AUPRC that no method reaches lies: a benchmark's independent test cohort, by finding.

    python benchmarks/error_groups_check.py BENCH_OUT COHORT OUT [--fraction 0.1]

(run from the repository root with ``PYTHONPATH=ParanasalSSL:benchmarks``, as the other checks)

Reads a finished benchmark (its cells on the independent test cohort of ``COHORT`` and the
label-free references, all cached) and the phantom truth the cohort's manifest carries
(``true_label``, ``findings`` with sizes, ``subthreshold_thickening_mm``,
``opacified_fraction``). Nothing is trained, no threshold is chosen and no setting is picked
here: it explains the scores the benchmark already reported.

Per group of sinuses (e.g. positives whose only findings are cysts or polyps under 4 mm,
normal sides with a 3-4 mm sub-threshold lining), for every method at ``--fraction`` labels
(its score fused as in the benchmark, and its classifier alone) and every label-free score:

- ``auroc``: how a group is ranked against the whole opposite class (positives of the group
  against all normals; normals of the group against all positives); 0.5 = no better than
  chance, below 0.5 = ranked the wrong way round;
- ``ap_if_perfect``: this method's AUPRC on the cohort if that group alone were ranked
  perfectly (its positives on top, its normals at the bottom): the AUPRC the group holds.

And two ground-truth references that no image-based method can have: the AUPRC of the true
label (what label noise alone leaves) and of the true filled fraction of the sinus (a perfect
measurement of volume).

Writes OUT.json (with code version and machine) and OUT.md.
"""

from __future__ import annotations

import csv
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
from check_args import check_parser
from sklearn.metrics import average_precision_score, roc_auc_score

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.version import code_version, environment_info

METHODS = ("residual-pretext", "simclr", "simsiam", "byol", "mim", "random-init")
GROUP_ORDER = (
    "normal, no finding", "normal, sub-threshold lining 2-3 mm",
    "normal, sub-threshold lining 3-4 mm", "normal label, reportable finding (label noise)",
    "cyst/polyp only, < 4 mm", "cyst/polyp only, 4-6 mm", "cyst/polyp only, 6-10 mm",
    "cyst/polyp only, >= 10 mm", "thickening only, 4-5 mm", "thickening only, 5-6 mm",
    "thickening only, >= 6 mm", "opacification, fluid or several findings",
    "anomalous label, no reportable finding (label noise)")
# Groups taken together for the AUPRC they hold (``ap_if_perfect`` of their union).
UNIONS = {
    "cysts/polyps under 10 mm": ("cyst/polyp only, < 4 mm", "cyst/polyp only, 4-6 mm",
                                 "cyst/polyp only, 6-10 mm"),
    "normal sides with a 2-4 mm sub-threshold lining": (
        "normal, sub-threshold lining 2-3 mm", "normal, sub-threshold lining 3-4 mm"),
}
UNIONS["both of the above"] = UNIONS["cysts/polyps under 10 mm"] + UNIONS[
    "normal sides with a 2-4 mm sub-threshold lining"]


def finding_group(row: dict) -> str:
    """The group of one manifest row (phantom truth columns), as named in the report."""
    kinds, sizes = [], []  # sizes in mm of the cysts, polyps and thickening
    for item in filter(None, row["findings"].split(";")):
        kind, _, size = item.partition(":")  # e.g. "retention_cyst:5.2mm"
        kinds.append(kind)
        if size.endswith("mm"):
            sizes.append(float(size[:-2]))
    if row["label"] == "0":
        if row["true_label"] == "1":
            return "normal label, reportable finding (label noise)"
        sub = float(row["subthreshold_thickening_mm"] or 0.0)
        if sub >= 3.0:
            return "normal, sub-threshold lining 3-4 mm"
        return "normal, sub-threshold lining 2-3 mm" if sub > 0 else "normal, no finding"
    if row["true_label"] == "0":
        return "anomalous label, no reportable finding (label noise)"
    if kinds and all(k in ("retention_cyst", "polyp") for k in kinds):
        s = max(sizes)
        return ("cyst/polyp only, < 4 mm" if s < 4 else "cyst/polyp only, 4-6 mm" if s < 6
                else "cyst/polyp only, 6-10 mm" if s < 10 else "cyst/polyp only, >= 10 mm")
    if kinds == ["mucosal_thickening"]:
        s = sizes[0]
        return ("thickening only, 4-5 mm" if s < 5 else "thickening only, 5-6 mm" if s < 6
                else "thickening only, >= 6 mm")
    return "opacification, fluid or several findings"


def read_cells(bench: Path, cohort: str, method: str, fraction: float, keys: list):
    """Mean over the cell's draws of the fused score and of the classifier alone, in ``keys``'
    order; None when the benchmark has no such cells."""
    import json

    fused, alone = [], []
    for path in sorted((bench / "cells" / f"{cohort}-external" / method).glob(
            f"f{fraction:g}-s*.json")):
        cell = json.loads(path.read_text())
        if "skipped" in cell:
            continue
        order = {k: i for i, k in enumerate(cell["keys"])}
        idx = [order[k] for k in keys]
        fused.append(np.asarray(cell["tta"])[idx])
        if "classifier" in cell:
            alone.append(np.asarray(cell["classifier"])[idx])
    if not fused:
        return None
    return np.mean(fused, 0), (np.mean(alone, 0) if alone else None)


def external_manifest(bench: Path, cohort: str) -> Path:
    """The independent test cohort the benchmark scored for ``cohort`` (its results.json)."""
    import json

    results = bench / "results.json"
    for summary in json.loads(results.read_text())["cohorts"]:
        if summary["cohort"] == cohort and summary.get("external"):
            return Path(summary["external"]["manifest"])
    raise SystemExit(f"{results}: no independent test cohort for cohort {cohort!r}")


def label_free(bench: Path, cohort: str, manifest: Path, keys: list) -> dict:
    """The benchmark's label-free references on its independent test cohort (cached maps)."""
    from paranasal_ssl.benchmarks.external import external_records
    from paranasal_ssl.benchmarks.reference_scores import label_free_references
    from paranasal_ssl.stages.residual_stage import residual_folder, residuals_for_records
    from paranasal_ssl.stages.run import open_run

    run = open_run(bench / "runs" / cohort, device="cpu")
    records = external_records(run, manifest)
    folder = run.dir / "external" / f"{cohort}-{residual_folder(run).name}"
    residuals = residuals_for_records(run, records, folder)
    refs = label_free_references(run, residuals, records)
    return {name: np.array([scores[k] for k in keys]) for name, scores in refs.items()}


def perfected(y: np.ndarray, score: np.ndarray, sel: np.ndarray) -> float:
    """AUPRC of ``score`` with the sinuses of ``sel`` ranked perfectly (positives on top,
    normals at the bottom)."""
    s = score.copy()
    s[sel & (y == 1)] = score.max() + 1.0
    s[sel & (y == 0)] = score.min() - 1.0
    return float(average_precision_score(y, s))


def group_auroc(y: np.ndarray, sel: np.ndarray, score: np.ndarray) -> Optional[float]:
    """AUROC of the sinuses of ``sel`` (all of one class) against every sinus of the other
    class; None when the cohort has no other class."""
    positive = bool(y[sel][0])
    other = (y == 0) if positive else (y == 1)
    if not other.any():
        return None
    lo, hi = (score[other], score[sel]) if positive else (score[sel], score[other])
    return float(roc_auc_score(np.r_[np.zeros(len(lo)), np.ones(len(hi))], np.r_[lo, hi]))


def group_table(y: np.ndarray, groups: np.ndarray, scores: dict, headline: np.ndarray) -> dict:
    out = OrderedDict()
    for g in [g for g in GROUP_ORDER if g in set(groups)]:
        sel = groups == g
        out[g] = {"n": int(sel.sum()), "label": int(y[sel][0]),
                  "auroc": {name: group_auroc(y, sel, s) for name, s in scores.items()},
                  "ap_if_perfect": perfected(y, headline, sel)}
    return out


def main(bench: Path, cohort: str, out: Path, fraction: float = 0.1) -> dict:
    manifest = external_manifest(bench, cohort)
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("0", "1")]
    keys = [f"{r['case_id']}:{r['side']}" for r in rows]
    y = np.array([int(r["label"]) for r in rows])
    groups = np.array([finding_group(r) for r in rows])
    scores = OrderedDict()
    for m in METHODS:
        cell = read_cells(bench, cohort, m, fraction, keys)
        if cell is None:
            continue
        scores[m] = cell[0]
        if cell[1] is not None:
            scores[f"{m} (classifier alone)"] = cell[1]
    scores.update(label_free(bench, cohort, manifest, keys))
    headline = scores["residual-pretext"]
    truth = np.array([int(r["true_label"]) for r in rows], float)
    filled = np.array([float(r["opacified_fraction"]) for r in rows])
    report = {
        "bench_out": str(bench), "cohort": cohort, "manifest": str(manifest),
        "label_fraction": fraction, "sinuses": len(y), "prevalence": float(y.mean()),
        "code_version": code_version(), "environment": environment_info(),
        "command": " ".join(sys.argv),
        "auprc": {name: float(average_precision_score(y, s)) for name, s in scores.items()},
        "ground_truth_references": {
            # ties broken by the filled fraction so that the true label alone is not a 2-level
            # score whose AUPRC depends on the order of ties
            "true label (what label noise leaves)": float(average_precision_score(
                y, truth + 1e-3 * filled)),
            "true filled fraction of the sinus (a perfect volume measurement)": float(
                average_precision_score(y, filled)),
        },
        "normals_with_subthreshold_lining": float(np.mean(
            [r["subthreshold_thickening_mm"] != "" for r, t in zip(rows, y) if t == 0])),
        "groups": group_table(y, groups, scores, headline),
        "ap_if_perfect_unions": {name: perfected(y, headline, np.isin(groups, members))
                                 for name, members in UNIONS.items()},
    }
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))
    return report


def markdown(r: dict) -> str:
    names = ["residual-pretext", "residual-pretext (classifier alone)", "simclr", "simsiam"]
    names += [n for n in r["auprc"] if n not in names and not n.endswith("(classifier alone)")
              and n not in METHODS]
    names = [n for n in names if n in r["auprc"]]
    lines = [f"# Where the AUPRC lies: `{r['cohort']}` independent test cohort",
             "", f"{r['sinuses']} sinuses, prevalence {r['prevalence']:.3f}; methods at "
             f"{r['label_fraction']:g} labels (mean score over the draws); code "
             f"{r['code_version']}.", "",
             "AUPRC of ground-truth references (no image-based method has these):", ""]
    for k, v in r["ground_truth_references"].items():
        lines.append(f"- {k}: {v:.3f}")
    lines += ["", f"{100 * r['normals_with_subthreshold_lining']:.0f}% of the normal sides carry "
              "a 2-4 mm sub-threshold lining (labelled normal, in the finding mask)."]
    lines += ["", "AUPRC: " + ", ".join(f"{n} {r['auprc'][n]:.3f}" for n in names), "",
              "AUROC of each group against the whole opposite class (0.5 = chance), and this "
              "method's AUPRC if that group alone were ranked perfectly:", "",
              "| group | n | " + " | ".join(names) + " | AUPRC if perfect |",
              "|---|---|" + "---|" * (len(names) + 1)]
    for g, row in r["groups"].items():
        cells = ["-" if row["auroc"][n] is None else f"{row['auroc'][n]:.3f}" for n in names]
        lines.append(f"| {g} | {row['n']} | " + " | ".join(cells)
                     + f" | {row['ap_if_perfect']:.3f} |")
    lines += ["", f"This method's AUPRC ({r['auprc']['residual-pretext']:.3f}) if these groups "
              "were ranked perfectly: " + "; ".join(
                  f"{k} {v:.3f}" for k, v in r["ap_if_perfect_unions"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = check_parser(__doc__, dev=False, draws=False)
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args()
    result = main(args.bench, args.cohort, args.out, args.fraction)
    print(markdown(result))
