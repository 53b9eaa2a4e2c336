"""Does the focal residual map's *shape* tell a small cyst from a normal lining? A development-
cohort check.

    python benchmarks/focal_shape_check.py DEV_MANIFEST OUT RUN

(run from the repository root with ``PYTHONPATH=ParanasalSSL:benchmarks``)

Why: a quarter of the normal sides carry a 2-4 mm incidental lining, which the focal residual
score (the maximum of the gated, 2 mm Gaussian residual in the sinus box) ranks above cysts and
polyps under 6 mm (``error_groups_check.py``). On these phantoms a retention cyst is a dome on
one wall and a lining a layer along all of them (domain.md), so a score of how much a map's
peak stands out from its surroundings might separate them where the peak's height does not.
For each sinus of the development cohort, from the run's focal maps (made if missing), crop
scores averaged over the test-time crops as the benchmark does:

- ``max``: the focal residual score itself;
- ``peak over its surroundings, sigma S``: the maximum in the box of ``m - G_S(m)`` (a
  difference of Gaussians: the map minus its own blur of S voxels);
- ``max - 90th percentile``: the peak over the box's 90th percentile;
- ``max + peak over surroundings``: the two standardised over the cohort and added.

No label is used, nothing is trained and no test split is read; the scores are compared on the
development cohort only. Writes OUT.json (settings, code version, machine) and OUT.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from crop_spacing_check import group_table, read_dev, summary

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.version import code_version, environment_info

SIGMAS = (1.5, 2.5, 4.0)  # voxels of the run's crop (2 mm each on cpu-small)


def crop_shape_scores(m: torch.Tensor, box: torch.Tensor) -> dict:
    """Per score name, the ``(t,)`` scores of focal maps ``m`` ``(t, 1, S, S, S)`` inside the
    sinus boxes ``box`` (same shape, bool)."""
    from paranasal_ssl.residual_maps import crop_scores, gaussian_filter3d

    peak = crop_scores(m, box, "max")
    out = {"max": peak}
    for s in SIGMAS:
        out[f"peak over its surroundings, sigma {s:g}"] = crop_scores(
            m - gaussian_filter3d(m, s), box, "max")
    out["max - 90th percentile"] = peak - torch.stack(
        [torch.quantile(m[i][box[i]], 0.9) for i in range(len(m))])
    return out


def shape_scores(run_dir: Path, dev: Path) -> dict:
    """Per score name, the sinus score per ``case:side`` key of ``dev``."""
    from paranasal_ssl.benchmarks.external import external_records
    from paranasal_ssl.crop_cache import record_key
    from paranasal_ssl.residual_fusion import focal_folder, focal_run
    from paranasal_ssl.stages.data import roi_masks
    from paranasal_ssl.stages.residual_stage import residual_folder, residual_scores_for_records
    from paranasal_ssl.stages.run import open_run

    run = open_run(run_dir, device="cpu")
    records = external_records(run, dev)
    folder = focal_folder(run, run.dir / "external" / f"dev-{residual_folder(run).name}")
    residual_scores_for_records(focal_run(run), records, folder)  # the maps, cached
    t = run.config.data.crop.test_crops_per_side
    out: dict = {}
    for r in records:
        m = torch.from_numpy(np.load(folder / f"{record_key(r)}.npy")[:t].astype(np.float32))
        m = m[:, None]  # (t, 1, S, S, S)
        crop = crop_shape_scores(m, roi_masks([r], run, t))
        for name, values in crop.items():
            out.setdefault(name, {})[r.key] = float(values.mean())
    return out


def main(dev: Path, out: Path, run_dir: Path) -> dict:
    keys, y, groups = read_dev(dev)
    scores = shape_scores(run_dir, dev)

    def standardised(name):
        v = np.array([scores[name][k] for k in keys])
        return (v - v.mean()) / v.std()

    for s in SIGMAS:
        both = standardised("max") + standardised(f"peak over its surroundings, sigma {s:g}")
        scores[f"max + peak over surroundings, sigma {s:g}"] = dict(zip(keys, both))
    report = {"dev_manifest": str(dev), "run": str(run_dir), "sinuses": len(y),
              "prevalence": float(y.mean()), "code_version": code_version(),
              "environment": environment_info(), "command": " ".join(sys.argv),
              "scores": {name: summary(keys, y, groups, s) for name, s in scores.items()}}
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))
    return report


def markdown(r: dict) -> str:
    return "\n".join([f"# Focal residual map shape: `{r['dev_manifest']}`", "",
                      f"{r['sinuses']} sinuses, prevalence {r['prevalence']:.3f}; maps of "
                      f"`{r['run']}`; code {r['code_version']}.", ""]
                     + group_table(list(r["scores"].items())))

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dev", type=Path, help="the development cohort's manifest.csv")
    parser.add_argument("out", type=Path, help="writes OUT.json and OUT.md")
    parser.add_argument("run", type=Path, help="a run folder with trained CAEs")
    args = parser.parse_args()
    print(markdown(main(args.dev, args.out, args.run)))
