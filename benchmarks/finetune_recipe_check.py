"""Choose the fine-tuning recipe on a development cohort, never on a test set.

    python benchmarks/finetune_recipe_check.py BENCH_OUT COHORT DEV_MANIFEST OUT
        [--set K=V ...] [--fraction F] [--seeds S ...] [--methods M ...]

The cohort's validation split holds 80 sinuses, and each draw may only be scored on the few
it did not use (see method_val_check.py): too few to tell two fine-tuning recipes apart. The
development cohort is a separate labelled manifest (e.g. ``paranasal-ssl synth DEV --cases 400
--seed 2013 --id-prefix dev- ...``: the same generator with a seed that neither the benchmark
cohort nor its independent test cohort uses), scored by the run's CAE and pretext exactly like
the benchmark's independent test cohort.

The script links BENCH_OUT/runs/COHORT's CAE, residuals, pretext and baselines into OUT/run
(nothing before fine-tuning is retrained), applies the ``--set`` changes (fine-tuning settings
only), fine-tunes every method in ``--methods`` on draws ``--seeds`` at fraction F exactly as
the benchmark does, and scores the new classifiers and the benchmark's own cells on the
development cohort, with the zero-label residual score and the pretext's score before
fine-tuning. Writes OUT/results.json with the code version.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from check_args import check_parser
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.cells import init_for
from paranasal_ssl.benchmarks.external import external_records
from paranasal_ssl.stages.evaluate_stage import load_classifier, prior_scores, score_records
from paranasal_ssl.stages.finetune_stage import finetune
from paranasal_ssl.stages.residual_stage import residual_folder, residuals_for_records
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info

METHODS = ("residual-pretext", "simclr", "byol", "simsiam", "mim", "random-init")
LINKED = ("cae", "residuals", "pretext", "baselines")


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` under ``dst`` (``cp -al``): no copy, no retraining."""
    for root, _, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (target / f).exists():
                os.link(Path(root) / f, target / f)


def auprc(records, scores) -> float:
    return round(float(average_precision_score([r.label for r in records], scores)), 3)


def main(bench: Path, cohort: str, dev: Path, out: Path, sets, fraction: float, seeds,
         methods) -> dict:
    src_dir = bench / "runs" / cohort
    folder = out / "run"
    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "splits.json"):
            shutil.copy2(src_dir / f, folder / f)
        for sub in LINKED:
            if (src_dir / sub).exists():
                link_tree(src_dir / sub, folder / sub)
    # the benchmark's own phantom manifest (a copied benchmark folder's config may still name
    # the folder it was copied from)
    manifest = bench / "cohorts" / cohort / "manifest.csv"
    manifest = manifest if manifest.exists() else None
    run = open_run(folder, manifest=manifest, overrides=list(sets), device="cpu",
                   cache_dir=src_dir / "cache")
    src = open_run(src_dir, manifest=manifest, device="cpu")
    if run.config.data != src.config.data or run.config.residual != src.config.residual:
        raise SystemExit("--set may only change fine-tuning settings here")
    records = external_records(src, dev)
    residuals = residuals_for_records(
        src, records, src_dir / "external" / f"dev-{residual_folder(src).name}")
    records = [r for r in records if r.key in residuals.scores]
    results = {"bench_out": str(bench), "cohort": cohort, "dev_manifest": str(dev),
               "settings": list(sets), "label_fraction": fraction, "seeds": list(seeds),
               "code_version": code_version(), "environment": environment_info(),
               "dev_sinuses": len(records),
               "dev_prevalence": round(float(np.mean([r.label for r in records])), 3),
               "zero-label": auprc(records, [residuals.scores[r.key] for r in records])}
    prior = prior_scores(src, records, residuals)
    results["before fine-tuning"] = auprc(records, [prior[r.key] for r in records])
    results["changed"], results["benchmark"] = {}, {}
    for method in methods:
        new, old = [], []
        for s in seeds:
            name = f"recipe-{method}-f{fraction:g}-s{s}"
            finetune(run, fraction, s, init_for(run, method), name=name, resume=True,
                     set_default=False, train_seed=s)
            new.append(auprc(records, score_records(run, load_classifier(run, name), records,
                                                    residuals)["tta"]))
            bench_name = f"bench-{method}-f{fraction:g}-s{s}"
            if (src.dir / "finetune" / bench_name / "best.pt").exists():
                old.append(auprc(records, score_records(
                    src, load_classifier(src, bench_name), records, residuals)["tta"]))
        results["changed"][method] = {"mean": round(float(np.mean(new)), 3), "draws": new}
        if old:
            results["benchmark"][method] = {"mean": round(float(np.mean(old)), 3),
                                            "draws": old}
        write_json(out / "results.json", results)  # partial results after each method
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.dev, args.out, args.sets, args.fraction, args.seeds,
             args.methods)
    print(json.dumps({k: r[k] for k in ("dev_sinuses", "dev_prevalence", "zero-label",
                                           "before fine-tuning", "changed", "benchmark")},
                     indent=1))
