"""Does this method's classifier add to the focal residual score? A development-cohort check.

    python benchmarks/score_fusion_check.py BENCH_OUT COHORT DEV_MANIFEST OUT.json
        [--fractions F ...] [--seeds S ...]

The focal residual score (the run's CAEs; CT bone gate, 2 mm Gaussian, box maximum: see
``residual_fusion.FOCAL_RESIDUAL``) ranks the development cohort's sinuses better than the
method's fine-tuned classifier. This asks whether the two together do better than either,
with no label spent on combining them: each score is standardised with its mean and standard
deviation over the run's training sinuses (labels unused) and the two are added (the
classifier as a logit). It does so for the benchmark's own fine-tuned residual-pretext cells
(every fraction in ``--fractions``, draws ``--seeds``; other methods' cells with
``--methods``) and for the pretext before fine-tuning.
Nothing is fitted on the development cohort; no test split is read. The focal maps are cached
in the run (RUN/external/focal-<key>-train and -dev).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from check_args import check_parser
from scipy.special import logit
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.external import external_records
from paranasal_ssl.experiment import override
from paranasal_ssl.residual_fusion import FOCAL_RESIDUAL
from paranasal_ssl.stages.evaluate_stage import load_classifier, prior_scores, score_records
from paranasal_ssl.stages.residual_stage import (
    compute_residuals,
    residual_folder,
    residual_scores_for_records,
    residuals_for_records,
)
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info


def auprc(records, scores) -> float:
    return round(float(average_precision_score([r.label for r in records], scores)), 3)


def standardised(train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` in units of the training sinuses' spread around their mean."""
    return (values - train.mean()) / train.std()


def as_logit(probs) -> np.ndarray:
    return logit(np.clip(np.asarray(probs, np.float64), 1e-6, 1 - 1e-6))


def main(bench: Path, cohort: str, dev: Path, out: Path, fractions, seeds,
         methods=("residual-pretext",)) -> dict:
    run = open_run(bench / "runs" / cohort, manifest=bench / "cohorts" / cohort / "manifest.csv",
                   device="cpu")
    residuals = compute_residuals(run)
    dev_records = external_records(run, dev)
    dev_res = residuals_for_records(
        run, dev_records, run.dir / "external" / f"dev-{residual_folder(run).name}")
    dev_records = [r for r in dev_records if r.key in dev_res.scores]
    train = [r for r in run.split("train") if r.key in residuals.scores]
    focal = replace(run, config=override(run.config, FOCAL_RESIDUAL))
    maps = run.dir / "external" / f"focal-{residual_folder(focal).name}"
    f_train = residual_scores_for_records(focal, train, Path(f"{maps}-train"))
    f_dev = residual_scores_for_records(focal, dev_records, Path(f"{maps}-dev"))
    z_focal = standardised(np.array([f_train[r.key] for r in train]),
                           np.array([f_dev[r.key] for r in dev_records]))

    def fused(model_train, model_dev) -> float:
        return auprc(dev_records, z_focal + standardised(as_logit(model_train),
                                                         as_logit(model_dev)))

    p_train, p_dev = prior_scores(run, train, residuals), prior_scores(run, dev_records, dev_res)
    p_train = [p_train[r.key] for r in train]
    p_dev = [p_dev[r.key] for r in dev_records]
    results = {"bench_out": str(bench), "cohort": cohort, "dev_manifest": str(dev),
               "seeds": list(seeds), "focal_residual": FOCAL_RESIDUAL,
               "fusion": "sum of the two scores standardised on the training sinuses",
               "code_version": code_version(), "environment": environment_info(),
               "dev_sinuses": len(dev_records),
               "dev_prevalence": round(float(np.mean([r.label for r in dev_records])), 3),
               "label_free": {
                   "focal residual": auprc(dev_records, z_focal),
                   "zero-label residual": auprc(dev_records,
                                                [dev_res.scores[r.key] for r in dev_records]),
                   "pretext before fine-tuning": auprc(dev_records, p_dev),
                   "pretext before fine-tuning + focal residual": fused(p_train, p_dev)},
               "fine_tuned": {}}
    for method in methods:
        results["fine_tuned"][method] = {}
        for fraction in fractions:
            alone, together = [], []
            for s in seeds:
                model = load_classifier(run, f"bench-{method}-f{fraction:g}-s{s}")
                m_train = score_records(run, model, train, residuals)["tta"]
                m_dev = score_records(run, model, dev_records, dev_res)["tta"]
                alone.append(auprc(dev_records, m_dev))
                together.append(fused(m_train, m_dev))
            results["fine_tuned"][method][f"{fraction:g}"] = {
                "classifier": {"mean": round(float(np.mean(alone)), 3), "draws": alone},
                "classifier + focal residual": {"mean": round(float(np.mean(together)), 3),
                                                "draws": together}}
            write_json(out, results)  # partial results after each cell group
    write_json(out, results)
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__, draws=False)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["residual-pretext"],
                        choices=["residual-pretext", "simclr", "byol", "simsiam", "mim",
                                 "random-init"])
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.dev, args.out, args.fractions, args.seeds,
             args.methods)
    print(json.dumps({k: r[k] for k in ("label_free", "fine_tuned")}, indent=1))
