"""Can a few labels add to the best label-free score? A check on a development cohort.

    python benchmarks/label_combination_check.py FOCAL_BENCH_OUT BENCH_OUT COHORT DEV OUT.json

The focal residual score (CT bone gate, 2 mm Gaussian, max in the sinus box; see
``ResidualConfig``) ranks the development cohort's sinuses better than this method's
classifier, whose pooled features do not carry it. Before building a classifier that takes the
explicit residual score, this asks whether the labels can add anything to it: on each of the
benchmark's label draws (same fraction and seeds as its cells) it fits a logistic regression
(scikit-learn, L2, features standardised on the draw) on the focal score and the benchmark
pretext's score before fine-tuning, and scores the development cohort with it. Nothing is
fitted on the development cohort; no test split is read.

FOCAL_BENCH_OUT: a copy of the benchmark folder whose runs use the focal residual (their
``residuals/`` and ``external/dev-*`` scores exist, e.g. made by finetune_recipe_check.py);
BENCH_OUT: the benchmark itself (its pretext gives the second feature).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.external import external_records
from paranasal_ssl.splits import label_fraction_subset
from paranasal_ssl.stages.evaluate_stage import prior_scores
from paranasal_ssl.stages.residual_stage import (
    compute_residuals,
    residual_folder,
    residuals_for_records,
)
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info


def read_scores(path: Path) -> dict:
    with open(path, newline="") as f:
        return {row["key"]: float(row["score"]) for row in csv.DictReader(f)}


def main(focal: Path, bench: Path, cohort: str, dev: Path, out: Path, fraction: float,
         seeds) -> dict:
    manifest = bench / "cohorts" / cohort / "manifest.csv"
    run = open_run(bench / "runs" / cohort, manifest=manifest, device="cpu")
    frun = open_run(focal / "runs" / cohort, manifest=manifest, device="cpu")
    key = residual_folder(frun).name
    focal_score = read_scores(frun.dir / "residuals" / key / "scores.csv")
    focal_score.update(read_scores(frun.dir / "external" / f"dev-{key}" / "scores.csv"))
    dev_records = external_records(run, dev)
    own = compute_residuals(run)
    dev_res = residuals_for_records(
        run, dev_records, run.dir / "external" / f"dev-{residual_folder(run).name}")
    train_pool = run.split("train", labelled=True)
    prior = prior_scores(run, train_pool, own)
    prior.update(prior_scores(run, dev_records, dev_res))

    def features(records, names):
        cols = {"focal residual": [focal_score[r.key] for r in records],
                "pretext before fine-tuning": [prior[r.key] for r in records],
                "benchmark zero-label residual": [
                    own.scores.get(r.key, dev_res.scores.get(r.key)) for r in records]}
        return np.column_stack([cols[n] for n in names])

    y_dev = np.array([r.label for r in dev_records])
    result = {"focal_bench_out": str(focal), "bench_out": str(bench), "cohort": cohort,
              "dev_manifest": str(dev), "label_fraction": fraction, "seeds": list(seeds),
              "dev_sinuses": len(y_dev), "dev_prevalence": round(float(y_dev.mean()), 3),
              "focal_residual": {k: getattr(frun.config.residual, k) for k in (
                  "smoothing", "gaussian_sigma_mm", "bone_gate_hu", "score")},
              "code_version": code_version(), "environment": environment_info(),
              "label_free": {}, "fitted_on_draws": {}}
    for name in ("focal residual", "pretext before fine-tuning", "benchmark zero-label residual"):
        result["label_free"][name] = round(float(average_precision_score(
            y_dev, features(dev_records, [name])[:, 0])), 3)
    combos = {"focal residual + pretext": ["focal residual", "pretext before fine-tuning"],
              "focal residual + pretext + zero-label": [
                  "focal residual", "pretext before fine-tuning",
                  "benchmark zero-label residual"]}
    for name, cols in combos.items():
        draws = []
        for seed in seeds:
            train = label_fraction_subset(train_pool, fraction, seed, min_per_class=1)
            y = np.array([r.label for r in train])
            scaler = StandardScaler().fit(features(train, cols))
            clf = LogisticRegression(class_weight="balanced").fit(
                scaler.transform(features(train, cols)), y)
            p = clf.predict_proba(scaler.transform(features(dev_records, cols)))[:, 1]
            draws.append({"n_train": len(y), "auprc": round(float(
                average_precision_score(y_dev, p)), 3),
                "weights": [round(float(w), 3) for w in clf.coef_[0]]})
        result["fitted_on_draws"][name] = {
            "mean": round(float(np.mean([d["auprc"] for d in draws])), 3), "draws": draws}
    write_json(out, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("focal", type=Path)
    parser.add_argument("bench", type=Path)
    parser.add_argument("cohort")
    parser.add_argument("dev", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    r = main(args.focal, args.bench, args.cohort, args.dev, args.out, args.fraction, args.seeds)
    print(r["label_free"])
    for k, v in r["fitted_on_draws"].items():
        print(k, v["mean"], [d["auprc"] for d in v["draws"]])
