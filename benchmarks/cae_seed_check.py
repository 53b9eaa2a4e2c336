"""Zero-label residual AUPRC for CAE trainings that differ only in their seed.

    python benchmarks/cae_seed_check.py RUN_DIR OUT_DIR SEED [SEED ...]

RUN_DIR is a finished run (e.g. a benchmark cohort's ``bench_out/full/runs/ct``); its own CAE is
reported as seed ``cae_train.seed`` of its config. For every other SEED the run is copied to
OUT_DIR/seed<SEED> without its stage outputs, the CAE is retrained with only ``cae_train.seed``
changed, and the zero-label residual score is evaluated on the validation split (what decisions
may use) and the test split (reported, never used to choose). Writes OUT_DIR/results.json with
the code version. Found with it: lower CAE reconstruction error went with worse residuals.
"""

from __future__ import annotations

import json
import shutil
import sys
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


def main(src: Path, out: Path, seeds) -> dict:
    base = open_run(src, device="cpu", cache_dir=src / "cache")
    results = {"run": str(src), "code_version": code_version(),
               "environment": environment_info(), "seeds": {}}
    for seed in seeds:
        if seed == base.config.cae_train.seed:
            run, folder = base, src
        else:
            folder = out / f"seed{seed}"
            if not folder.exists():
                shutil.copytree(src, folder, ignore=shutil.ignore_patterns(
                    "cae", "residuals", "pretext", "finetune", "baselines", "model.json",
                    "cache"))
            run = open_run(folder, overrides=[f"cae_train.seed={seed}"], device="cpu",
                           cache_dir=src / "cache")
            train_cae(run, resume=True)
        row = zero_label_auprc(run)
        last = (folder / "cae" / "metrics.csv").read_text().splitlines()
        row["cae_last_epoch"] = dict(zip(last[0].split(","), last[-1].split(",")))
        results["seeds"][seed] = row
        print(seed, row, flush=True)
    write_json(out / "results.json", results)
    return results


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), [int(s) for s in sys.argv[3:]])
    print(json.dumps({"written": str(Path(sys.argv[2]) / "results.json")}))
