"""One training loop for every stage: seeded epochs, validation, early stopping, checkpoints,
per-epoch metrics (CSV), progress, cancellation and exact resume.

Determinism: epoch ``e`` draws its sample order and augmentations from a generator seeded with
``(seed, e)`` and reseeds torch's global RNG (dropout) the same way, so a run resumed from
``last.pt`` after epoch ``e`` continues exactly as the uninterrupted run would (on CPU; some GPU
kernels are nondeterministic).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from paranasal_ssl.atomic import write_text
from paranasal_ssl.experiment import TrainConfig
from paranasal_ssl.progress import Progress, check_cancelled
from paranasal_ssl.training.checkpoint import load_weights, read_checkpoint, save_checkpoint
from paranasal_ssl.training.device import autocast
from paranasal_ssl.training.optim import build_optimizer, lr_factor, set_lr

log = logging.getLogger(__name__)

# train_step(model, sample_indices, generator) -> scalar loss tensor
TrainStep = Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
Validate = Callable[[torch.nn.Module], Dict[str, float]]
# after_step(model, steps_done, total_steps): runs after every optimiser step (e.g. BYOL's EMA)
AfterStep = Callable[[torch.nn.Module, int, int], None]


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def fit(model: torch.nn.Module, *, cfg: TrainConfig, run_dir: Path, kind: str, signature: str,
        meta: Dict[str, Any], n_train: int, train_step: TrainStep, validate: Validate,
        monitor: str, mode: str, device: torch.device, resume: bool = False,
        stage: Optional[str] = None, params=None,
        after_step: Optional[AfterStep] = None) -> FitResult:
    """Train ``model`` in place and leave its BEST weights loaded; see the module docstring.

    ``run_dir`` receives ``best.pt``, ``last.pt`` and ``metrics.csv``. ``monitor`` names the key
    of ``validate``'s dict that selects the best epoch (``mode`` 'min' or 'max').
    ``after_step(model, steps_done, total_steps)``, if given, runs after each optimiser step
    with the global step count (so a schedule it follows resumes exactly).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = stage or kind
    optimizer = build_optimizer(params if params is not None else model.parameters(), cfg)
    bs = min(cfg.batch_size, n_train)
    # the last partial batch is dropped: batch norm misbehaves on tiny batches
    steps_per_epoch = max(1, n_train // bs)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    sign = 1.0 if mode == "min" else -1.0
    state = {"epoch": -1, "step": 0, "best": math.inf, "best_epoch": -1, "bad_epochs": 0,
             "history": [], "finished": False, "seconds": 0.0, "samples": 0}
    last = run_dir / "last.pt"
    if resume and last.exists():
        payload = read_checkpoint(last, kind, signature)
        load_weights(model, last, kind, signature)
        ts = payload["training_state"]
        optimizer.load_state_dict(ts["optimizer"])
        state.update({k: ts[k] for k in state if k in ts})
        log.info("%s: resuming after epoch %d", stage, state["epoch"] + 1)
    elif not resume:
        for stale in ("last.pt", "best.pt", "metrics.csv"):
            (run_dir / stale).unlink(missing_ok=True)

    total_steps = cfg.epochs * steps_per_epoch
    with Progress(stage, total=total_steps, unit="step") as progress:
        progress.done = (state["epoch"] + 1) * steps_per_epoch
        if progress._bar is not None:
            progress._bar.update(progress.done)
        epoch = state["epoch"] + 1
        while epoch < cfg.epochs and not state["finished"]:
            t0 = time.perf_counter()
            gen = epoch_generator(cfg.seed, epoch)
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            order = torch.randperm(n_train, generator=gen)
            model.train()
            losses = []
            for s in range(steps_per_epoch):
                idx = order[(s * bs) % n_train:][:bs]
                set_lr(optimizer, cfg.lr, lr_factor(state["step"], steps_per_epoch, cfg))
                with autocast(device):
                    loss = train_step(model, idx, gen)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{stage}: loss became {loss.item()} at epoch "
                                             f"{epoch + 1}; lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] += 1
                if after_step is not None:
                    after_step(model, state["step"], total_steps)
                state["samples"] += len(idx)
                losses.append(loss.item())
                progress.update(1, epoch=epoch + 1, loss=losses[-1])
            train_seconds = time.perf_counter() - t0
            model.eval()
            with torch.no_grad():
                metrics = validate(model)
            row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                   "lr": optimizer.param_groups[0]["lr"], "seconds": round(train_seconds, 3),
                   **{k: float(v) for k, v in metrics.items()}}
            state["history"].append(row)
            state["seconds"] += train_seconds
            value = sign * metrics[monitor]
            if value < state["best"] - 1e-12:
                state.update(best=value, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(run_dir / "best.pt", model, kind, signature,
                                {**meta, "epoch": epoch + 1, monitor: metrics[monitor]})
            else:
                state["bad_epochs"] += 1
            stop = (cfg.patience and state["bad_epochs"] >= cfg.patience
                    and epoch + 1 >= cfg.min_epochs)
            state["epoch"] = epoch
            state["finished"] = bool(stop) or epoch + 1 >= cfg.epochs
            _write_metrics(run_dir / "metrics.csv", state["history"])
            save_checkpoint(last, model, kind, signature, {**meta, "epoch": epoch + 1},
                            training_state={"optimizer": optimizer.state_dict(),
                                            **{k: state[k] for k in state}})
            log.info("%s epoch %d/%d: %s", stage, epoch + 1, cfg.epochs,
                     ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                               if isinstance(v, float)))
            check_cancelled()  # after saving: a cancelled run resumes from this epoch
            epoch += 1
    load_weights(model, run_dir / "best.pt", kind, signature)
    model.eval()
    stopped = state["epoch"] + 1 < cfg.epochs
    return FitResult(best_metric=sign * state["best"], best_epoch=state["best_epoch"] + 1,
                     epochs_run=state["epoch"] + 1, stopped_early=stopped,
                     history=state["history"], seconds=state["seconds"],
                     samples_per_second=state["samples"] / max(state["seconds"], 1e-9))


def _write_metrics(path: Path, history: List[Dict[str, Any]]) -> None:
    columns: List[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())
