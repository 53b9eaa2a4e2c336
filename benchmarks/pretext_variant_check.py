"""Does a change to stage 3 or to the shared encoder help this method? A development-cohort check.

    python benchmarks/pretext_variant_check.py BENCH_OUT COHORT DEV_MANIFEST OUT --set K=V ...
        [--fraction F] [--seeds S ...]

Hard-links BENCH_OUT/runs/COHORT's CAE, residual maps, independent-cohort maps and crop cache
into OUT/runs/COHORT (nothing is copied or recomputed before stage 3), writes its config with
the ``--set`` changes (encoder, pretext or pretext_train settings: the residual settings must
be the ones whose maps BENCH_OUT holds, e.g. a copy of the benchmark made with the focal
residual), retrains the pretext there, and then does what finetune_recipe_check.py does for
the residual pretext method: fine-tunes it on the benchmark's draws at fraction F and scores
the development cohort (a labelled manifest that neither the benchmark cohort nor its
independent test cohort shares), beside the zero-label residual and the pretext before
fine-tuning. No test split is read. Writes OUT/results.json with the settings changed and the
code version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from check_args import check_parser
from finetune_recipe_check import link_tree
from finetune_recipe_check import main as recipe_check

from paranasal_ssl.atomic import write_json
from paranasal_ssl.experiment import load_experiment, override, save_experiment
from paranasal_ssl.stages.pretext_stage import pretrain
from paranasal_ssl.stages.run import open_run

LINKED = ("cae", "residuals", "external")
ALLOWED = ("encoder.", "pretext.", "pretext_train.")


def prepare(bench: Path, cohort: str, out: Path, sets) -> Path:
    """OUT/runs/COHORT: the benchmark run's stages 1-2 linked, its config with ``sets``."""
    bad = [s for s in sets if not s.startswith(ALLOWED)]
    if bad:
        raise SystemExit(f"--set may only change {', '.join(ALLOWED)} settings here: {bad}")
    src, dst = bench / "runs" / cohort, out / "runs" / cohort
    if not (dst / "config.json").exists():
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "splits.json", dst / "splits.json")
        for sub in LINKED:
            if (src / sub).exists():
                link_tree(src / sub, dst / sub)
        (dst / "cache").symlink_to((src / "cache").resolve(), target_is_directory=True)
        saved = json.loads((src / "config.json").read_text())
        config = override(load_experiment(src / "config.json"), list(sets))
        save_experiment(config, dst / "config.json", manifest=saved.get("manifest"))
    cohorts = out / "cohorts"
    if not cohorts.exists():
        cohorts.symlink_to((bench / "cohorts").resolve(), target_is_directory=True)
    return dst


def main(bench: Path, cohort: str, dev: Path, out: Path, sets, fraction: float, seeds) -> dict:
    folder = prepare(bench, cohort, out, sets)
    run = open_run(folder, manifest=out / "cohorts" / cohort / "manifest.csv", device="cpu")
    pretrain(run, resume=True)
    results = recipe_check(out, cohort, dev, out / f"check-{cohort}", [], fraction, seeds,
                           ["residual-pretext"])
    results = {"pretext_settings": list(sets), "source_bench_out": str(bench), **results}
    write_json(out / f"results-{cohort}.json", results)
    return results


if __name__ == "__main__":
    parser = check_parser(__doc__)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    r = main(args.bench, args.cohort, args.dev, args.out, args.sets, args.fraction, args.seeds)
    print(json.dumps({k: r[k] for k in ("pretext_settings", "zero-label", "before fine-tuning",
                                           "changed")}, indent=1))
