"""Choose the residual's gate, filter and zero-label score on a development cohort (not a test).

    python benchmarks/residual_score_check.py BENCH_OUT COHORT DEV_MANIFEST OUT.json

Why: retention cysts (mean about 6 mm, 3-20 mm) and polyps (5-15 mm) are focal findings. The
benchmark's per-type tables showed every method, supervised with all labels included, near
chance on them, and on the independent CT cohort an 8-12 mm cyst-only side scored like a
normal one. In such a cyst the gated residual x - CAE(x) is 0.3-0.6 (the CAE expects air
there), but the 10 mm median filter (5 voxels at 2 mm) keeps a voxel only where more than half
of its 125 neighbours are positive, so the dome vanishes; and a mean over the sinus box
measures volume, which a focal finding lacks. A smaller filter alone lets through the CAE's
errors at bright bony walls (on CT a positive residual where it expects air), which every
crop has: a gate on the scan's own intensity removes those at their source on CT (every
finding is soft tissue or fluid, at most about 64 HU; compact bone +250 HU and more).

The script takes the benchmark run's CAE (no retraining), computes for the development
cohort's test-time crops the air-gated residual x - CAE(x) with and without the bone gate,
filters it with each filter and scores each sinus with each crop score inside its ROI box,
averaged over the test-time crops as stage 2 does. Writes AUPRC overall and per anomaly type
(positives of the type vs all normals), with the settings and code version, to OUT.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from check_args import check_parser
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.external import external_records
from paranasal_ssl.progress import Progress
from paranasal_ssl.residual_maps import (
    crop_scores,
    gaussian_filter3d,
    median_filter3d,
    raw_residual,
)
from paranasal_ssl.stages.cae_stage import load_cae
from paranasal_ssl.stages.data import crops_for, roi_masks
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info

BONE_GATE_HU = 150.0  # midway between fungal opacity (~64 HU) and compact bone (+250 HU)
SCORES = ("mean", "p99", "max")


def main(bench: Path, cohort: str, dev: Path, out: Path) -> dict:
    manifest = bench / "cohorts" / cohort / "manifest.csv"
    run = open_run(bench / "runs" / cohort, manifest=manifest if manifest.exists() else None,
                   device="cpu")
    data, cfg = run.config.data, run.config.residual
    spacing = data.crop.spacing_mm
    filters = {f"median {k} voxels ({k * spacing:g} mm)": (lambda r, k=k: median_filter3d(
        r.contiguous(), k)) for k in (5, 3)}
    filters["gaussian sigma 2 mm"] = lambda r: gaussian_filter3d(r, 2.0 / spacing)
    gates = {"no bone gate": None}
    if data.intensity.modality == "ct":  # MRI bone is dark: nothing to gate
        lo, hi = data.intensity.ct_window_hu
        gates[f"bone gate {BONE_GATE_HU:g} HU"] = (BONE_GATE_HU - lo) / (hi - lo)
    records = external_records(run, dev)
    t = data.crop.test_crops_per_side
    crops = crops_for(run, records, "residual score check", "crops (dev cohort)")
    cae = load_cae(run)
    scores = {(g, f, s): [] for g in gates for f in filters for s in SCORES}
    with Progress("residual score check", total=len(crops.records), unit="sinus") as progress:
        for i, rec in enumerate(crops.records):
            x = torch.from_numpy(np.asarray(crops.crops[i][:t], dtype=np.float32))[:, None]
            region = roi_masks([rec], run, t)
            for g, level in gates.items():
                members = getattr(cae, "members", [cae])
                # unfiltered per member (median_kernel 1), averaged after filtering, as stage 2
                raw = [raw_residual(m, x, 1, cfg.sign, cfg.air_gate, level) for m in members]
                for f, filt in filters.items():
                    r = sum(filt(m) for m in raw) / len(raw)
                    for s in SCORES:
                        scores[(g, f, s)].append(float(crop_scores(r, region, s).mean()))
            progress.update(1)
    labels = np.array([r.label for r in crops.records])
    types = sorted({t for r in crops.records if r.label == 1 for t in r.anomaly_types})
    results = {"bench_out": str(bench), "cohort": cohort, "dev_manifest": str(dev),
               "modality": data.intensity.modality,
               "crop": {"shape": data.crop.shape, "spacing_mm": spacing},
               "air_gate": cfg.air_gate, "sign": cfg.sign,
               "sinuses": len(labels), "prevalence": round(float(labels.mean()), 3),
               "positives_per_type": {ty: sum(ty in r.anomaly_types for r in crops.records
                                              if r.label == 1) for ty in types},
               "code_version": code_version(), "environment": environment_info(),
               "auprc": {}}
    for (g, f, s), values in scores.items():
        v = np.array(values)
        row = {"all": round(float(average_precision_score(labels, v)), 3)}
        for ty in types:
            keep = np.array([r.label == 0 or ty in r.anomaly_types for r in crops.records])
            row[ty] = round(float(average_precision_score(labels[keep], v[keep])), 3)
        results["auprc"][f"{g}, {f}, {s}"] = row
    write_json(out, results)
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__, draws=False)
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.dev, args.out)
    for name, row in sorted(r["auprc"].items(), key=lambda kv: -kv[1]["all"]):
        print(f"{row['all']:.3f}  {name}  " + " ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                     if k != "all"))
