"""Test AUPRC of the paper's pretext network against this project's, on the same CAEs.

    python benchmarks/paper_network_check.py BENCH_OUT COHORT OUT [--fraction F] [--seeds S ...]

BENCH_OUT/runs/COHORT is a finished `paranasal-ssl benchmark` cohort. OUT/run gets a copy of its
configuration, splits, CAEs and residual maps; there the pretext network is the paper's (ResNet-18
3D encoder + U-Net decoder, head [256]: ``PAPER_NETWORK``) and everything else is the run's:
residual targets, pretext epochs and optimiser, fine-tuning settings, label draws, test-time
crops. Its fine-tuned cells at fraction F are scored on the test split and compared with the
benchmark's own residual-pretext cells of the same fraction and draws (paired bootstrap over
subjects and draws). This is the accuracy half of `speed --compare-paper`, done on the
benchmark's CAEs instead of a short CAE training. Writes OUT/results.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from check_args import check_parser

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.aggregate import paired_difference, summarise_runs
from paranasal_ssl.benchmarks.cells import cell_scores, run_cell
from paranasal_ssl.benchmarks.paper_compare import PAPER_NETWORK
from paranasal_ssl.config import load_json
from paranasal_ssl.stages.pretext_stage import pretrain
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info


def main(bench: Path, cohort: str, out: Path, fraction: float, seeds) -> dict:
    src = bench / "runs" / cohort
    folder = out / "run"
    if not folder.exists():
        shutil.copytree(src, folder, ignore=shutil.ignore_patterns(
            "pretext", "finetune", "baselines", "model.json", "cache"))
    run = open_run(folder, overrides=PAPER_NETWORK, device="cpu", cache_dir=src / "cache")
    result = pretrain(run, resume=True)
    residuals = compute_residuals(run)  # the copied maps: same CAEs, settings and data
    available = {r.key for r in residuals.crops.records}
    test = [r for r in run.split("test", labelled=True) if r.key in available]
    paper = [run_cell(run, "residual-pretext", fraction, s, out / "cells", test, residuals)
             for s in seeds]
    ours = [load_json(bench / "cells" / cohort / "residual-pretext" / f"f{fraction:g}-s{s}.json")
            for s in seeds]
    keys = [r.key for r in test]
    if any(c.get("keys") != keys for c in paper + ours if "skipped" not in c):
        raise SystemExit("the benchmark's cells were scored on another test set")
    y = np.array([r.label for r in test])
    subjects = np.array([r.subject_id for r in test])
    a, b = cell_scores(paper, len(test)), cell_scores(ours, len(test))
    results = {
        "benchmark": str(bench), "cohort": cohort, "label_fraction": fraction,
        "seeds": list(seeds), "code_version": code_version(), "environment": environment_info(),
        "paper_network": PAPER_NETWORK, "prevalence": float(y.mean()), "n_test": len(test),
        "paper_pretext": {"epochs_run": result.epochs_run, "best_metric": result.best_metric,
                          "seconds": round(result.seconds, 1),
                          "samples_per_second": round(result.samples_per_second, 2)},
        "paper": summarise_runs(y, subjects, a, 1000),
        "ours": summarise_runs(y, subjects, b, 1000),
        "ours - paper": paired_difference(y, subjects, b, a, 1000),
        "fine-tuning seconds": {"paper": [c.get("train_seconds") for c in paper],
                                "ours": [c.get("train_seconds") for c in ours]}}
    write_json(out / "results.json", results)
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__, dev=False)
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.out, args.fraction, args.seeds)
    print(json.dumps({k: r[k] for k in ("prevalence", "ours - paper")}, indent=1))
    for w in ("paper", "ours"):
        print(w, round(r[w]["auprc"], 3), "+/-", round(r[w]["auprc_sd"], 3), r[w]["auprc_ci"])
