"""Run the benchmark's cells: prepare a cohort (phantoms, stages 1-3, baselines) and fine-tune +
score one (method, label fraction, draw). Finished cells are read back, never recomputed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.protocol import COHORTS, BenchmarkPlan
from paranasal_ssl.config import load_json
from paranasal_ssl.errors import ConfigError, InputError
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.stages.run import Run, open_run

log = logging.getLogger(__name__)


def prepare_cohort(out: Path, plan: BenchmarkPlan, name: str, device: str = "auto",
                   workers: int = 0) -> Run:
    """Phantoms (once) or the user's manifest, and the run folder with its fixed split."""
    if name in plan.manifests:
        manifest = Path(plan.manifests[name]).resolve()
    else:
        manifest = _phantom_cohort(out, plan, name)
    run_dir = out / "runs" / name
    new = not (run_dir / "config.json").exists()
    return open_run(run_dir, manifest=manifest, profile=plan.profile if new else None,
                    overrides=plan.overrides if new else [], device=device, workers=workers)


def _phantom_cohort(out: Path, plan: BenchmarkPlan, name: str) -> Path:
    args, seed = COHORTS[name]
    cohort = out / "cohorts" / name
    made = synth_settings(cohort)
    if made is not None and made["cases"] != plan.cases:
        # its runs, splits and cells were made on those cases: mixing would mislabel results
        raise ConfigError(cohort / "cohort_config.json",
                          f"cohort {name} of this benchmark folder has {made['cases']} phantom "
                          f"cases, this run asks for {plan.cases}", field="--cases",
                          expected=f"{made['cases']} (or another --out for a new benchmark)")
    return synth_phantom_cohort(cohort, plan.cases, seed, args)


def synth_settings(folder: Path) -> Optional[dict]:
    """``{"cases", "seed"}`` of the phantom cohort made in ``folder``; None when it has none."""
    if not (folder / "manifest.csv").exists():
        return None
    config = load_json(folder / "cohort_config.json")
    return {"cases": int(config["cases"]), "seed": int(config["seed"])}


def synth_phantom_cohort(folder: Path, cases: int, seed: int, args: List[str],
                         replace: bool = False) -> Path:
    """``folder/manifest.csv`` of ``cases`` phantoms (``paranasal-ssl synth`` with ``args``),
    made once; ``replace``: make them again over an existing cohort of other settings (each
    case depends only on the seed and its index: at the same seed, the cases both hold are the
    same)."""
    from paranasal_ssl.cli.main import main as cli

    made = synth_settings(folder)
    if made is None or (replace and made != {"cases": cases, "seed": seed}):
        if made is not None:
            log.info("%s holds %d cases of seed %d: making %d of seed %d", folder,
                     made["cases"], made["seed"], cases, seed)
        code = cli(["synth", str(folder), "--cases", str(cases), "--seed", str(seed), *args,
                    *(["--overwrite"] if made is not None else [])])
        if code:
            raise RuntimeError(f"synth of the phantom cohort in {folder} failed (exit {code})")
    return folder / "manifest.csv"


def pretrain_all(run: Run, plan: BenchmarkPlan) -> Dict[str, float]:
    """Stages 1-3 and every baseline's pretraining (resumable); returns seconds per step."""
    import time

    from paranasal_ssl.baselines.train import pretrain_baseline
    from paranasal_ssl.stages.cae_stage import train_cae
    from paranasal_ssl.stages.pretext_stage import pretrain
    from paranasal_ssl.stages.residual_stage import compute_residuals

    steps = [("CAE", lambda: train_cae(run, resume=True)),
             ("residuals", lambda: compute_residuals(run))]
    if "residual-pretext" in plan.methods:
        steps.append(("pretext", lambda: pretrain(run, resume=True)))
    for m in ("simclr", "byol", "simsiam", "mim"):
        if m in plan.methods:
            steps.append((m, lambda m=m: pretrain_baseline(run, m, resume=True)))
    seconds = {}
    for name, fn in steps:
        t = time.perf_counter()
        fn()
        seconds[name] = round(time.perf_counter() - t, 1)
    return seconds


def init_for(run: Run, method: str) -> str:
    if method == "residual-pretext":
        return "pretext"
    if method == "random-init":
        return "random"
    return str(run.dir / "baselines" / method / "best.pt")


def run_cell(run: Run, method: str, fraction: float, seed: int, cells: Path,
             test: List[SinusRecord], residuals) -> dict:
    """Fine-tune ``method`` on draw ``seed`` of ``fraction`` and score the test split."""
    from paranasal_ssl.stages.evaluate_stage import model_scores
    from paranasal_ssl.stages.finetune_stage import finetune

    path = cells / method / f"f{fraction:g}-s{seed}.json"
    if path.exists():
        return load_json(path)
    name = f"bench-{method}-f{fraction:g}-s{seed}"
    try:
        result, folder = finetune(run, fraction, seed, init_for(run, method), name=name,
                                  resume=True, set_default=False, train_seed=seed)
    except InputError as exc:  # e.g. 1% of the subjects holds no anomalous sinus
        cell = {"method": method, "fraction": fraction, "seed": seed, "skipped": str(exc)}
        write_json(path, cell)
        return cell
    probs = model_scores(run, name, test, residuals)
    info = load_json(folder / "model.json")
    cell = {"method": method, "fraction": fraction, "seed": seed,
            "keys": [r.key for r in test], "tta": probs["tta"].tolist(),
            "single": probs["single"].tolist(), "threshold": info["threshold"],
            "residual_fusion": info.get("residual_fusion"),
            **({"classifier": probs["classifier"].tolist()} if "classifier" in probs else {}),
            "n_train_sinuses": info["n_train_sinuses"],
            "n_train_anomalous": info["n_train_anomalous"],
            "n_val_sinuses": info["n_val_sinuses"], "best_epoch": result.best_epoch,
            "train_seconds": round(result.seconds, 1)}
    write_json(path, cell)
    return cell


def cell_scores(cells: List[dict], n: int, key: str = "tta") -> np.ndarray:
    """(R, N) scores of the cells that ran (skipped cells are left out)."""
    rows = [c[key] for c in cells if "skipped" not in c]
    return np.asarray(rows, float).reshape(len(rows), n)
