"""Which normal anatomy and which acquisition effects a model mistakes for anomalies.

    python benchmarks/false_alarm_check.py PREDICTIONS MANIFEST OUT

(run from the repository root with ``PYTHONPATH=ParanasalSSL:benchmarks``, as the other checks)

``PREDICTIONS`` is the ``predictions.csv`` that ``paranasal-ssl evaluate --run MODEL --manifest
MANIFEST --out DIR`` writes (each scan analysed as ``predict`` analyses it); ``MANIFEST`` is a
phantom cohort's manifest, whose truth columns say what each normal side holds: its normal
variants (a bony septum, a deep alveolar or zygomatic recess, a dental root bulging into the
floor, hypoplasia; domain.md lists them as what resembles a finding), its mucosal lining (mm),
and the scan's noise, scanner, dental metal and head rotation. Nothing is trained or chosen.

Only the **clean normal sides** are grouped (label 0, truly normal, no sub-threshold lining of
2-4 mm: that lining has its own row in ``error_groups_check``). For each factor, among them:

- ``auroc_vs_anomalous``: the group's sides ranked against every anomalous side (1 = never
  above one, 0.5 = as high as they are), for the model's probability, its classifier alone and
  the focal residual score;
- ``false_alarms``: the share the model calls anomalous (its decision threshold) and the share
  it calls uncertain or anomalous;
- ``raises_score``: AUROC of the sides with the factor against the clean normal sides without
  it (0.5 = the factor leaves the score alone, 1 = always higher), with a 95% interval;

and the Spearman correlation of the normal lining's thickness with each score.

Writes OUT.json (with code version and machine) and OUT.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.evaluation import bootstrap_ci
from paranasal_ssl.version import code_version, environment_info

SCORES = OrderedDict([("model", "probability"), ("classifier alone", "classifier_probability"),
                      ("focal residual", "focal_residual_score")])
VARIANTS = ("bony_septum", "deep_alveolar_recess", "deep_zygomatic_recess", "root_protrusion",
            "hypoplasia")


def read_rows(predictions: Path, manifest: Path) -> list:
    """Manifest rows joined with their predictions (by case and side); rows not predicted are
    left out."""
    with open(predictions, newline="") as f:
        predicted = {(r["case_id"], r["side"]): r for r in csv.DictReader(f)}
    with open(manifest, newline="") as f:
        return [dict(r, **predicted[(r["case_id"], r["side"])]) for r in csv.DictReader(f)
                if (r["case_id"], r["side"]) in predicted and r["label"] in ("0", "1")]


def is_clean_normal(row: dict) -> bool:
    return (row["label"] == "0" and row.get("true_label", "0") == "0"
            and not float(row.get("subthreshold_thickening_mm") or 0.0))


def factors(row: dict) -> Dict[str, bool]:
    """Each factor of a clean normal side: present or not."""
    variants = set(filter(None, row.get("normal_variants", "").split(";")))
    out = {f"variant: {v.replace('_', ' ')}": v in variants for v in VARIANTS}
    out["variant: none"] = not variants
    out["mucosal lining >= 1.5 mm"] = float(row.get("mucosa_mm") or 0.0) >= 1.5
    out["dental metal in the scan"] = row.get("dental_metal") == "1"
    rotation = [float(v) for v in (row.get("head_rotation_deg") or "0 0 0").split()]
    out["head turned or tilted > 5 deg"] = max(map(abs, rotation)) > 5
    out["cone-beam CT"] = row.get("scanner") == "cbct"
    return out


def noise_factor(rows: list) -> Dict[int, bool]:
    """Sides of the noisiest third of the clean normal scans (noise SD, HU or MRI units)."""
    noise = np.array([float(r.get("noise_sd") or 0.0) for r in rows])
    cut = np.quantile(noise, 2 / 3)
    return {i: bool(v > cut) for i, v in enumerate(noise)}


def _auroc(low: np.ndarray, high: np.ndarray) -> Optional[float]:
    if not len(low) or not len(high):
        return None
    return float(roc_auc_score(np.r_[np.zeros(len(low)), np.ones(len(high))], np.r_[low, high]))


def raises_score(sel: np.ndarray, scores: np.ndarray, subjects: np.ndarray) -> Optional[list]:
    """[AUROC, low, high] of the sides in ``sel`` against the others (95% bootstrap interval,
    subjects resampled: both sides of a scan share its noise, metal and rotation); None when
    every side or none has the factor."""
    if sel.all() or not sel.any():
        return None
    ci = bootstrap_ci(sel.astype(int), scores, ("auroc",), clusters=subjects)["auroc"]
    return [ci.estimate, ci.low, ci.high]


def score_of(rows: list, column: str) -> Optional[np.ndarray]:
    if any(r.get(column, "") == "" for r in rows):
        return None  # e.g. a model without the residual fusion: no classifier-alone column
    return np.array([float(r[column]) for r in rows])


def analyse(rows: list) -> dict:
    clean = [r for r in rows if is_clean_normal(r)]
    anomalous = [r for r in rows if r["label"] == "1"]
    flags = [factors(r) for r in clean]
    noisy = noise_factor(clean)
    for i, f in enumerate(flags):
        f["noisiest third of the scans"] = noisy[i]
    calls = np.array([r["call"] for r in clean])
    subjects = np.array([r["subject_id"] for r in clean])
    scores = OrderedDict()  # name -> (clean normal sides' scores, anomalous sides' scores)
    for name, column in SCORES.items():
        normal_scores, positive_scores = score_of(clean, column), score_of(anomalous, column)
        if normal_scores is not None and positive_scores is not None:
            scores[name] = normal_scores, positive_scores
    table = OrderedDict()
    for factor in flags[0] if flags else []:
        sel = np.array([f[factor] for f in flags])
        if not sel.any():
            continue
        table[factor] = {
            "n": int(sel.sum()),
            "false_alarms": {"anomalous": float(np.mean(calls[sel] == "anomalous")),
                             "uncertain or anomalous": float(np.mean(calls[sel] != "normal"))},
            "auroc_vs_anomalous": {name: _auroc(normal[sel], positive)
                                   for name, (normal, positive) in scores.items()},
            "raises_score": {name: raises_score(sel, normal, subjects)
                             for name, (normal, _) in scores.items()}}
    all_calls = {"anomalous": float(np.mean(calls == "anomalous")) if len(calls) else None,
                 "uncertain or anomalous": float(np.mean(calls != "normal")) if len(calls)
                 else None}
    lining = np.array([float(r.get("mucosa_mm") or "nan") for r in clean])
    spearman = OrderedDict()  # the normal lining's thickness (1-3 mm) against each score
    if np.isfinite(lining).all() and len(clean) > 2:
        spearman = OrderedDict((name, float(spearmanr(lining, normal)[0]))
                               for name, (normal, _) in scores.items())
    return {"sides": len(rows), "anomalous": len(anomalous), "clean_normal": len(clean),
            "false_alarms_all_clean_normals": all_calls, "factors": table,
            "lining_spearman": spearman}


def markdown(report: dict) -> str:
    names = list(SCORES)
    lines = [f"# False alarms on clean normal sides: `{report['predictions']}`", "",
             f"{report['sides']} sides ({report['anomalous']} anomalous, "
             f"{report['clean_normal']} clean normal: truly normal, no 2-4 mm lining); "
             f"code {report['code_version']}. Of all clean normal sides the model calls "
             f"{report['false_alarms_all_clean_normals']['anomalous']:.1%} anomalous and "
             f"{report['false_alarms_all_clean_normals']['uncertain or anomalous']:.1%} "
             "uncertain or anomalous.", "",
             "AUROC vs anomalous: the group ranked against every anomalous side (1 = never "
             "above one). Raises score: the group against the clean normal sides without the "
             "factor (0.5 = no effect), with its 95% interval (subjects resampled).", "",
             "| factor | n | called anomalous | uncertain or anomalous | "
             + " | ".join(f"AUROC vs anomalous: {n}" for n in names) + " | "
             + " | ".join(f"raises score: {n}" for n in names) + " |",
             "|---|---|---|---|" + "---|" * (2 * len(names))]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    ci = lambda v: "n/a" if v is None else f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"  # noqa: E731
    for factor, e in report["factors"].items():
        lines.append(f"| {factor} | {e['n']} | {e['false_alarms']['anomalous']:.1%} | "
                     f"{e['false_alarms']['uncertain or anomalous']:.1%} | "
                     + " | ".join(fmt(e["auroc_vs_anomalous"].get(n)) for n in names) + " | "
                     + " | ".join(ci(e["raises_score"].get(n)) for n in names) + " |")
    if report.get("lining_spearman"):
        lines += ["", "Spearman correlation of the normal mucosal lining's thickness (mm) with "
                  "each score, over the clean normal sides: " + ", ".join(
                      f"{name} {rho:+.2f}" for name, rho in report["lining_spearman"].items())
                  + "."]
    made = report.get("evaluation")
    if made:
        lines += ["", f"Scores: `evaluate --manifest` of model `{made['model']}` "
                  f"({made['model_dir']}, code {made['code_version']}) on "
                  f"`{made['manifest_path']}` (SHA-256 {str(made['manifest_sha256'])[:12]})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="predictions.csv of evaluate --manifest")
    parser.add_argument("manifest", type=Path, help="the phantom cohort's manifest.csv")
    parser.add_argument("out", type=Path, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    report = {"predictions": str(args.predictions), "manifest": str(args.manifest),
              "code_version": code_version(), "environment": environment_info(),
              "command": " ".join(sys.argv)}
    evaluation = args.predictions.parent / "results.json"  # what evaluate --manifest recorded
    if evaluation.is_file():
        import json

        made = json.loads(evaluation.read_text())
        report["evaluation"] = {k: made.get(k) for k in ("model", "model_dir", "manifest_path",
                                                         "manifest_sha256", "code_version")}
    report.update(analyse(read_rows(args.predictions, args.manifest)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), report)
    write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
