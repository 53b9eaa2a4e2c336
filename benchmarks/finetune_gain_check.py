"""What do the labels add? The residual-pretext classifier before and after fine-tuning.

    python benchmarks/finetune_gain_check.py BENCH_OUT OUT.json [--cohorts C ...]
        [--fractions F ...] [--seeds S ...]

Fine-tuning from the residual pretext starts from the pretext network's sinus-level head (the
classifier's ``prior``; see networks/classifier.py): before any label it already ranks
sinuses. For each benchmark draw of this method this script scores, on the validation sinuses
the draw did not use (neither its training labels nor its validation subset), (a) that
starting classifier, (b) the fine-tuned one and (c) the zero-label CAE residual score, and
writes their AUPRCs with the code version. Validation only: the test split is never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from method_val_check import held_out_records
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.stages.evaluate_stage import load_classifier, prior_scores, score_records
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info

SCORES = ("before fine-tuning (pretext prior)", "fine-tuned", "zero-label residual")


def cohort_gain(bench: Path, cohort: str, fractions, seeds) -> dict:
    run = open_run(bench / "runs" / cohort, device="cpu")
    residuals = compute_residuals(run)
    val = [r for r in run.split("val", labelled=True) if r.key in residuals.scores]
    start = prior_scores(run, val, residuals)  # one starting point for every draw
    out = {}
    for f in fractions:
        rows = []
        for s in seeds:
            name = f"bench-residual-pretext-f{f:g}-s{s}"
            records = held_out_records(run, name, val, f, s)
            y = [r.label for r in records]
            scores = ([start[r.key] for r in records],
                      score_records(run, load_classifier(run, name), records, residuals)["tta"],
                      [residuals.scores[r.key] for r in records])
            rows.append({k: float(average_precision_score(y, p)) for k, p in zip(SCORES, scores)}
                        | {"n": len(records), "prevalence": float(np.mean(y))})
        out[f"{f:g}"] = {"mean": {k: round(float(np.mean([r[k] for r in rows])), 3)
                                  for k in SCORES}, "draws": rows}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cohorts", nargs="+", default=["ct", "mri", "ct-screening"])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = {"bench_out": str(args.bench), "fractions": args.fractions, "seeds": args.seeds,
               "code_version": code_version(), "environment": environment_info(),
               "cohorts": {c: cohort_gain(args.bench, c, args.fractions, args.seeds)
                           for c in args.cohorts}}
    write_json(args.out, results)
    print(json.dumps({c: {f: v["mean"] for f, v in r.items()}
                      for c, r in results["cohorts"].items()}, indent=1))
