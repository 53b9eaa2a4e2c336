"""Does fine-tuning's batch-norm drift alone lower the pretext's ranking?

    python benchmarks/bn_drift_check.py BENCH_OUT COHORT OUT.json [--fraction F] [--seeds S ...]

For each label draw, the classifier before fine-tuning (pretext encoder + its sinus-level
head) runs the forward passes of a fine-tuning in training mode - 30 batches of 16 augmented
crops of the draw's labelled training sinuses, drawn as the training loop draws them - with no
gradient step: only the batch-norm running statistics change. That model, the unchanged start
and the benchmark's fine-tuned cell are scored on the cohort's whole validation split (no
validation label is used by the first two). The test split is never read.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from check_args import check_parser
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.splits import label_fraction_subset
from paranasal_ssl.stages.data import crops_for, pick_crops, sinus_tensor
from paranasal_ssl.stages.evaluate_stage import load_classifier, score_records
from paranasal_ssl.stages.finetune_stage import initial_classifier
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.training.augment import augment
from paranasal_ssl.training.loop import epoch_generator
from paranasal_ssl.version import code_version, environment_info


def main(bench: Path, cohort: str, out: Path, fraction: float, seeds, steps: int = 30) -> dict:
    manifest = bench / "cohorts" / cohort / "manifest.csv"
    run = open_run(bench / "runs" / cohort, manifest=manifest if manifest.exists() else None,
                   device="cpu")
    residuals = compute_residuals(run)
    val = [r for r in run.split("val", labelled=True) if r.key in residuals.scores]

    def auprc(model) -> float:
        probs = score_records(run, model.eval(), val, residuals)["tta"]
        return round(float(average_precision_score([r.label for r in val], probs)), 3)

    start, _ = initial_classifier(run, "pretext")
    results = {"bench_out": str(bench), "cohort": cohort, "label_fraction": fraction,
               "steps": steps, "code_version": code_version(),
               "environment": environment_info(), "val_sinuses": len(val),
               "start": auprc(start), "draws": {}}
    n = run.config.data.crop.train_crops_per_side
    batch = run.config.finetune_train.batch_size
    for seed in seeds:
        labelled = label_fraction_subset(run.split("train", labelled=True), fraction, seed,
                                         min_per_class=1)
        x = sinus_tensor(crops_for(run, labelled, "batch-norm drift"), n)
        drifted = copy.deepcopy(start).train()
        with torch.no_grad():
            for epoch in range(steps):  # one batch per epoch, as fine-tuning at 10% runs
                gen = epoch_generator(seed, epoch)
                idx = torch.randperm(len(x), generator=gen)[:batch]
                drifted(augment(pick_crops(x, idx, gen).float(), None, gen)[0])
        name = f"bench-residual-pretext-f{fraction:g}-s{seed}"
        results["draws"][str(seed)] = {
            "batch-norm drift only": auprc(drifted),
            "benchmark fine-tuned": auprc(load_classifier(run, name))
            if (run.dir / "finetune" / name / "best.pt").exists() else None}
    write_json(out, results)
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__, dev=False)
    args = parser.parse_args()
    print(json.dumps(main(args.bench, args.cohort, args.out, args.fraction, args.seeds),
                     indent=1))
