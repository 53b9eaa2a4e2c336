"""Zero-label residual AUPRC for CAE trainings that differ only in their seed (and settings).

    python benchmarks/cae_seed_check.py RUN_DIR OUT_DIR SEED [SEED ...] [--set K=V ...]

RUN_DIR is a finished run (e.g. a benchmark cohort's ``bench_out/full/runs/ct``); without
``--set`` its own CAE is reported as seed ``cae_train.seed`` of its config. For every other SEED
(every SEED with ``--set``: e.g. ``--set cae.noise_std=0.2`` for a denoising CAE) the run is
copied to OUT_DIR/seed<SEED> without its stage outputs, one CAE is retrained with
``cae_train.seed`` and the ``--set`` settings changed, and the zero-label residual score is
evaluated on the validation split (what decisions may use) and the test split (reported, never
used to choose). "mean of seeds" is the score averaged over the seeds' CAEs (what stage 2 does
with ``cae.ensemble``). Writes OUT_DIR/results.json with the code version. Found with it: lower
CAE reconstruction error went with worse residuals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.stages.cae_stage import train_cae
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info


def zero_label_auprc(run) -> dict:
    res = compute_residuals(run)
    row = {}
    for split in ("val", "test"):
        recs = [r for r in run.split(split, labelled=True) if r.key in res.scores]
        labels = [r.label for r in recs]
        row[split] = round(float(average_precision_score(labels, [res.scores[r.key]
                                                                  for r in recs])), 3)
        row[f"{split}_prevalence"] = round(sum(labels) / len(labels), 3)
    return row


def main(src: Path, out: Path, seeds, sets=()) -> dict:
    base = open_run(src, device="cpu", cache_dir=src / "cache")
    results = {"run": str(src), "code_version": code_version(),
               "environment": environment_info(), "settings": list(sets), "seeds": {}}
    scores = []
    for seed in seeds:
        if seed == base.config.cae_train.seed and not sets and base.config.cae.ensemble == 1:
            run, folder = base, src
        else:
            folder = out / f"seed{seed}"
            if not folder.exists():
                shutil.copytree(src, folder, ignore=shutil.ignore_patterns(
                    "cae", "residuals", "pretext", "finetune", "baselines", "model.json",
                    "cache"))
            run = open_run(folder, overrides=["cae.ensemble=1", f"cae_train.seed={seed}",
                                              *sets], device="cpu", cache_dir=src / "cache")
            train_cae(run, resume=True)
        row = zero_label_auprc(run)
        scores.append(compute_residuals(run).scores)
        last = (folder / "cae" / "metrics.csv").read_text().splitlines()
        row["cae_last_epoch"] = dict(zip(last[0].split(","), last[-1].split(",")))
        results["seeds"][seed] = row
        print(seed, row, flush=True)
    if len(scores) > 1:
        mean = {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}
        results["mean of seeds"] = {
            split: round(float(average_precision_score(
                [r.label for r in recs], [mean[r.key] for r in recs])), 3)
            for split in ("val", "test")
            for recs in [[r for r in base.split(split, labelled=True) if r.key in mean]]}
        print("mean of seeds", results["mean of seeds"], flush=True)
    write_json(out / "results.json", results)
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    main(args.run, args.out, args.seeds, args.sets)
    print(json.dumps({"written": str(args.out / "results.json")}))
