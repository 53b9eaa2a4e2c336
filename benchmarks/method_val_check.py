"""Validation-split check of a change to the method, against a finished benchmark cohort.

    python benchmarks/method_val_check.py BENCH_OUT COHORT OUT [--set K=V ...]
        [--cae-from SEED_CHECK_OUT] [--fraction F] [--seeds S ...]

Decisions about the method may only use validation data. This script copies
BENCH_OUT/runs/COHORT (configuration, splits, crops cache) to OUT/run with the ``--set``
changes, runs stages 1-3 there (``--cae-from``: take the ensemble members from a
``cae_seed_check.py`` output, ``seed<k>/cae`` becoming member k, instead of training them) and
fine-tunes draws ``--seeds`` at fraction F exactly as the benchmark does. Then every
classifier, the new ones and the benchmark's own cells of every method at F, scores the
validation sinuses that its draw did not use (labels_used.csv and its validation subset);
the zero-label residual score and the residual heatmap's localisation are taken on the whole
validation split. The test split is never read. Writes OUT/results.json with the code
version.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from check_args import check_parser
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.stages.cae_stage import member_dir, train_cae
from paranasal_ssl.stages.evaluate_stage import (
    load_classifier,
    localisation,
    prior_scores,
    score_records,
)
from paranasal_ssl.stages.finetune_stage import finetune, validation_subset
from paranasal_ssl.stages.pretext_stage import pretrain
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import Run, open_run
from paranasal_ssl.version import code_version, environment_info

METHODS = ("residual-pretext", "simclr", "byol", "simsiam", "mim", "random-init")


def held_out_records(run: Run, name: str, val, fraction: float, seed: int) -> list:
    """The validation sinuses that classifier ``name`` (draw ``seed`` at ``fraction``) did not
    see: neither its training labels (labels_used.csv) nor the validation subset it stopped
    and set its threshold on."""
    with open(run.dir / "finetune" / name / "labels_used.csv", newline="") as f:
        used = {row["key"] for row in csv.DictReader(f)}
    used |= {r.key for r in validation_subset(run.split("val", labelled=True), fraction,
                                               seed)[0]}
    return [r for r in val if r.key not in used]


def held_out_auprc(run: Run, name: str, val, residuals, fraction: float, seed: int) -> dict:
    """AUPRC of classifier ``name`` on the validation sinuses it did not see."""
    records = held_out_records(run, name, val, fraction, seed)
    probs = score_records(run, load_classifier(run, name), records, residuals)["tta"]
    y = [r.label for r in records]
    return {"auprc": float(average_precision_score(y, probs)), "n": len(records),
            "prevalence": float(np.mean(y))}


def zero_label(run: Run, val, residuals) -> float:
    return float(average_precision_score([r.label for r in val],
                                         [residuals.scores[r.key] for r in val]))


def before_finetuning(run: Run, val, residuals):
    """AUPRC on the whole validation split of the pretext's sinus-level head (no labels)."""
    prior = prior_scores(run, val, residuals)
    if prior is None:
        return None
    return round(float(average_precision_score([r.label for r in val],
                                               [prior[r.key] for r in val])), 3)


def _heatmap(run: Run, residuals, val) -> dict:
    """Residual heatmap on the validation anomaly masks (pooled voxel AUPRC, best Dice) and
    false-positive volume in normal sinuses (mL), as in the benchmark's report."""
    loc = localisation(run, residuals, val)
    return {"voxel_auprc": round(loc["pooled"]["voxel_auprc"], 3),
            "best_dice": round(loc["pooled"]["best_dice"], 3),
            "fp_volume_ml_normals": round(loc["per_case_mean"]["fp_volume_ml_normals"], 3),
            "pointing_hit_rate": round(loc["per_case_mean"]["pointing_hit_rate"], 3)}


def summary(rows) -> dict:
    values = [r["auprc"] for r in rows]
    return {"mean": round(float(np.mean(values)), 3), "draws": [round(v, 3) for v in values],
            "n": [r["n"] for r in rows]}


def main(bench: Path, cohort: str, out: Path, sets, cae_from, fraction: float, seeds) -> dict:
    src_dir = bench / "runs" / cohort
    folder = out / "run"
    if not folder.exists():
        shutil.copytree(src_dir, folder, ignore=shutil.ignore_patterns(
            "cae", "residuals", "pretext", "finetune", "baselines", "model.json", "cache"))
    run = open_run(folder, overrides=list(sets), device="cpu", cache_dir=src_dir / "cache")
    if cae_from is not None:
        for k in range(run.config.cae.ensemble):
            target = member_dir(folder, k)
            if not (target / "best.pt").exists():
                target.mkdir(parents=True, exist_ok=True)
                for f in (cae_from / f"seed{k}" / "cae").iterdir():
                    if f.is_file():
                        shutil.copy2(f, target / f.name)
    train_cae(run, resume=True)
    residuals = compute_residuals(run)
    pretrain(run, resume=True)
    val = [r for r in run.split("val", labelled=True) if r.key in residuals.scores]
    changed = []
    for s in seeds:
        name = f"check-f{fraction:g}-s{s}"
        finetune(run, fraction, s, "pretext", name=name, resume=True, set_default=False,
                 train_seed=s)
        changed.append(held_out_auprc(run, name, val, residuals, fraction, s))
    src = open_run(src_dir, device="cpu")
    src_res = compute_residuals(src)
    src_val = [r for r in src.split("val", labelled=True) if r.key in src_res.scores]
    results = {"bench_out": str(bench), "cohort": cohort, "settings": list(sets),
               "cae_from": str(cae_from) if cae_from else None, "label_fraction": fraction,
               "seeds": list(seeds), "code_version": code_version(),
               "environment": environment_info(),
               "val_prevalence": float(np.mean([r.label for r in val])),
               "zero-label": {"changed": round(zero_label(run, val, residuals), 3),
                              "benchmark": round(zero_label(src, src_val, src_res), 3)},
               "before fine-tuning": {"changed": before_finetuning(run, val, residuals),
                                      "benchmark": before_finetuning(src, src_val, src_res)},
               "heatmap localisation": {"changed": _heatmap(run, residuals, val),
                                        "benchmark": _heatmap(src, src_res, src_val)},
               "changed residual-pretext": summary(changed), "benchmark cells": {}}
    for method in METHODS:
        names = [f"bench-{method}-f{fraction:g}-s{s}" for s in seeds]
        if all((src.dir / "finetune" / n / "best.pt").exists() for n in names):
            results["benchmark cells"][method] = summary(
                [held_out_auprc(src, n, src_val, src_res, fraction, s)
                 for n, s in zip(names, seeds)])
    write_json(out / "results.json", results)
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__, dev=False)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--cae-from", type=Path)
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.out, args.sets, args.cae_from, args.fraction,
             args.seeds)
    print(json.dumps({k: r[k] for k in ("zero-label", "before fine-tuning",
                                           "heatmap localisation",
                                           "changed residual-pretext",
                                           "benchmark cells")},
                     indent=1))
