"""Choose the residual filter and the zero-label score on a development cohort, never a test set.

    python benchmarks/residual_score_check.py BENCH_OUT COHORT DEV_MANIFEST OUT.json
        [--kernels 1 3 5] [--scores mean p99 p99.9]

Why: retention cysts (mean about 6 mm, 3-20 mm) and polyps (5-15 mm) are focal findings, and
the cpu-small median filter is 5 voxels at 2 mm, a 10 mm window: it keeps a voxel only where
more than half of its 125 neighbours are positive, so a 6 mm dome (a few voxels) vanishes.
The mean of the residual inside the sinus box then measures volume, which focal findings lack.

The script takes the benchmark run's CAE (no retraining), computes the air-gated residual of
the development cohort's test-time crops once without a median filter, then filters it with
each kernel (the same filter stage 2 runs: filtering after the gate is what ``raw_residual``
does) and scores each sinus with each crop score, averaged over the test-time crops as stage 2
does. Writes AUPRC overall and per anomaly type (positives of the type vs all normals), with
the settings and code version, to OUT.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.external import external_records
from paranasal_ssl.progress import Progress
from paranasal_ssl.residual_maps import median_filter3d, raw_residual
from paranasal_ssl.stages.cae_stage import load_cae
from paranasal_ssl.stages.data import crops_for, roi_masks
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info


def crop_score(r: torch.Tensor, region: torch.Tensor, kind: str) -> torch.Tensor:
    """``(B,)`` score of residuals ``(B, 1, S, S, S)`` inside ``region``: mean or a quantile."""
    flat, mask = r.flatten(1), region.flatten(1)
    if kind == "mean":
        return (flat * mask).sum(1) / mask.sum(1).clamp_min(1)
    q = float(kind[1:]) / 100.0
    values = torch.where(mask, flat, torch.full_like(flat, float("nan")))
    return torch.nanquantile(values, q, dim=1)


def main(bench: Path, cohort: str, dev: Path, out: Path, kernels, kinds) -> dict:
    manifest = bench / "cohorts" / cohort / "manifest.csv"
    run = open_run(bench / "runs" / cohort, manifest=manifest if manifest.exists() else None,
                   device="cpu")
    records = external_records(run, dev)
    t = run.config.data.crop.test_crops_per_side
    crops = crops_for(run, records, "residual score check", "crops (dev cohort)")
    cae = load_cae(run)
    cfg = run.config.residual
    scores = {(k, s): [] for k in kernels for s in kinds}
    with Progress("residual score check", total=len(crops.records), unit="sinus") as progress:
        for i, rec in enumerate(crops.records):
            x = torch.from_numpy(np.asarray(crops.crops[i][:t], dtype=np.float32))[:, None]
            raw = raw_residual(cae, x, 1, cfg.sign, cfg.air_gate)
            region = roi_masks([rec], run, t)
            for k in kernels:
                r = median_filter3d(raw, k)
                for s in kinds:
                    scores[(k, s)].append(float(crop_score(r, region, s).mean()))
            progress.update(1)
    labels = np.array([r.label for r in crops.records])
    types = sorted({t for r in crops.records if r.label == 1 for t in r.anomaly_types})
    results = {"bench_out": str(bench), "cohort": cohort, "dev_manifest": str(dev),
               "run_median_kernel": cfg.median_kernel, "run_score": cfg.score,
               "crop": {"shape": run.config.data.crop.shape,
                        "spacing_mm": run.config.data.crop.spacing_mm},
               "sinuses": len(labels), "prevalence": round(float(labels.mean()), 3),
               "positives_per_type": {ty: sum(ty in r.anomaly_types for r in crops.records
                                              if r.label == 1) for ty in types},
               "code_version": code_version(), "environment": environment_info(),
               "auprc": {}}
    for (k, s), values in scores.items():
        v = np.array(values)
        row = {"all": round(float(average_precision_score(labels, v)), 3)}
        for ty in types:
            keep = np.array([r.label == 0 or ty in r.anomaly_types for r in crops.records])
            row[ty] = round(float(average_precision_score(labels[keep], v[keep])), 3)
        results["auprc"][f"kernel {k} ({k * run.config.data.crop.spacing_mm:g} mm), {s}"] = row
    write_json(out, results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("cohort")
    parser.add_argument("dev", type=Path, help="the development cohort's manifest.csv")
    parser.add_argument("out", type=Path)
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--scores", nargs="+", default=["mean", "p99", "p99.9"])
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.dev, args.out, args.kernels, args.scores)
    print(json.dumps(r["auprc"], indent=1))
