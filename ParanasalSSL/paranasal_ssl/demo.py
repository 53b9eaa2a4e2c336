"""``paranasal-ssl demo``: the whole method on a phantom cohort, on a laptop CPU.

Makes a CT phantom cohort, runs the four stages with the ``cpu-small`` profile, fine-tunes at
10% of the labels from the pretext encoder and from scratch (several label draws), evaluates
both against the zero-label residual score on the held-out test split, prints a table and leaves
a model that ``predict`` and the Slicer module can use. Re-running continues where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.evaluation import format_table
from paranasal_ssl.splits import label_fraction_subset
from paranasal_ssl.stages.cae_stage import train_cae
from paranasal_ssl.stages.evaluate_stage import PRIOR_ROW, evaluate_model
from paranasal_ssl.stages.finetune_stage import finetune, finetune_name, validation_subset
from paranasal_ssl.stages.pretext_stage import pretrain
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.version import code_version, environment_info

log = logging.getLogger(__name__)

# Epoch caps that keep the demo within ~15 minutes on 2 CPU cores (early stopping still applies).
DEMO_OVERRIDES = ["cae_train.epochs=60", "pretext_train.epochs=20", "finetune_train.epochs=30"]


def run_demo(out: Path, cases: int = 160, modality: str = "ct", seed: int = 0,
             fraction: float = 0.1, label_seeds: Sequence[int] = (0, 1, 2),
             device: str = "auto", workers: int = 0, extra_overrides: Sequence[str] = ()
             ) -> dict:
    from paranasal_ssl.cli.main import main as cli

    out = Path(out)
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    cohort = out / "cohort"
    if not (cohort / "manifest.csv").exists():
        code = cli(["synth", str(cohort), "--cases", str(cases), "--modality", modality,
                    "--seed", str(seed)])
        if code:
            raise RuntimeError(f"synth failed with exit code {code}")
    timings["phantoms"] = time.perf_counter() - t0
    run = open_run(out / "run", manifest=cohort / "manifest.csv", profile=None
                   if (out / "run" / "config.json").exists() else "cpu-small",
                   overrides=[] if (out / "run" / "config.json").exists()
                   else DEMO_OVERRIDES + list(extra_overrides), device=device, workers=workers)
    for s in label_seeds:  # a cohort too small for the label draws: say so before training
        label_fraction_subset(run.split("train", labelled=True), fraction, s, min_per_class=1)
        validation_subset(run.split("val", labelled=True), fraction, s)
    for name, fn in (("stage 1 CAE", lambda: train_cae(run, resume=True)),
                     ("stage 2 residuals", lambda: compute_residuals(run)),
                     ("stage 3 pretext", lambda: pretrain(run, resume=True))):
        t = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t
    t = time.perf_counter()
    evaluations: Dict[str, List[dict]] = {"pretext": [], "random": []}
    for s in label_seeds:
        for init in ("pretext", "random"):
            finetune(run, fraction, s, init, resume=True,
                     set_default=(init == "pretext" and s == label_seeds[0]))
            evaluations[init].append(evaluate_model(run, finetune_name(fraction, s, init),
                                                    n_boot=500))
    timings["stage 4 fine-tuning + evaluation"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    results = summarise(evaluations, fraction, label_seeds)
    results.update({"timings_s": {k: round(v, 1) for k, v in timings.items()},
                    "cohort": str(cohort), "run": str(run.dir), "code_version": code_version(),
                    "environment": environment_info(), "profile": run.config.profile})
    write_json(out / "results.json", results)
    write_text(out / "results.md", results["table"])
    return results


def summarise(evaluations: Dict[str, List[dict]], fraction: float, seeds: Sequence[int]) -> dict:
    """Mean +/- sd over label draws of AUPRC/AUROC for the three scores."""
    rows, data = [], {}
    first = evaluations["pretext"][0]
    entries = [
        ("residual pretext + fine-tune (this method)", evaluations["pretext"],
         "model (crop-averaged)"),
        ("same network from scratch", evaluations["random"], "model (crop-averaged)"),
        ("zero-label residual score (no labels)", evaluations["pretext"][:1],
         "zero-label residual score"),
        # the fine-tuned model's own starting point: what the labels added
        ("this method before fine-tuning (no labels)", evaluations["pretext"][:1], PRIOR_ROW),
    ]
    entries = [e for e in entries if e[2] in e[1][0]["methods"]]
    for label, evals, key in entries:
        auprc = np.array([e["methods"][key]["auprc"] for e in evals], float)
        auroc = np.array([e["methods"][key]["auroc"] for e in evals], float)
        ci = evals[0]["methods"][key]["auprc_ci"]
        data[label] = {"auprc": auprc.tolist(), "auroc": auroc.tolist()}
        rows.append({"method": label,
                     "labels": "none" if "no labels" in label else f"{fraction:.0%}",
                     "AUPRC": _mean_sd(auprc), "AUROC": _mean_sd(auroc),
                     "AUPRC 95% CI (draw 1)": f"[{ci[0]:.3f}, {ci[1]:.3f}]"})
    table = (f"Test split: {first['n_sinuses']} sinuses, {first['n_subjects']} subjects, "
             f"prevalence {first['prevalence']:.3f} (the AUPRC of a random score). "
             f"Mean +/- sd over {len(seeds)} label draws.\n\n"
             + format_table(rows, list(rows[0])) + "\n")
    return {"table": table, "rows": rows, "per_draw": data, "label_fraction": fraction,
            "label_seeds": list(seeds), "test_prevalence": first["prevalence"]}


def _mean_sd(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.3f} +/- {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
