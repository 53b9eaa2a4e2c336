"""One training loop for every stage: seeded epochs, validation, early stopping, checkpoints,
per-epoch metrics (CSV), progress, cancellation and exact resume.

Determinism: epoch ``e`` draws its sample order and augmentations from a generator seeded with
``(seed, e)`` and reseeds torch's global RNG (dropout) the same way, so a run resumed from
``last.pt`` after epoch ``e`` continues exactly as the uninterrupted run would (on CPU; some GPU
kernels are nondeterministic).

Distributed data parallel (``torchrun``, see :mod:`paranasal_ssl.training.distributed`): every
rank builds the same sample order from the same seeded generator and takes the same global
batch of ``batch_size`` sinuses; ``train_step`` receives the GLOBAL ``idx``, makes its random
draws for the whole batch (as one process would) and computes the loss of this rank's rows
(:func:`~paranasal_ssl.training.distributed.batch_rows`) as a mean over them. The loss is
weighted by the rows' share so that DDP's gradient average is the global batch's mean gradient
even when the batch does not divide evenly; batch norm uses global-batch statistics. The
reported loss is the global mean, validation runs on rank 0 and its metrics are broadcast (every
rank takes the same early-stopping decision), and only rank 0 writes checkpoints, metrics and
progress. The 2-process loss trajectory equals the 1-process one within float rounding (tested).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from paranasal_ssl.atomic import write_text
from paranasal_ssl.experiment import TrainConfig
from paranasal_ssl.progress import Progress, cancel_requested, check_cancelled, request_cancel
from paranasal_ssl.training import distributed as ddp
from paranasal_ssl.training.checkpoint import (
    load_weights,
    read_checkpoint,
    save_checkpoint,
    weights_copy,
)
from paranasal_ssl.training.device import autocast
from paranasal_ssl.training.optim import build_optimizer, lr_factor, set_lr

log = logging.getLogger(__name__)

# train_step(model, sample_indices, generator) -> scalar loss tensor: the mean over this rank's
# rows of the global batch ``sample_indices`` (all of them in one process)
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


# last.pt (with best.pt and metrics.csv) is written after the first epoch, then at most this
# often, and always at the end and on a cancel: a fine-tuning epoch takes well under a second
# on the CPU and writing a checkpoint each epoch cost ~25 ms of it (about 1.5 s of a benchmark
# cell). A crash loses at most this much training; results do not depend on it.
CHECKPOINT_EVERY_S = 30.0


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global RNG seeded with ``seed`` inside, restored after: initial weights built
    here are the same in every run and in every process of a distributed run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def fit(model: torch.nn.Module, *, cfg: TrainConfig, run_dir: Path, kind: str, signature: str,
        meta: Dict[str, Any], n_train: int, train_step: TrainStep, validate: Validate,
        monitor: str, mode: str, device: torch.device, resume: bool = False,
        stage: Optional[str] = None, params=None,
        after_step: Optional[AfterStep] = None,
        on_start: Optional[Callable[[], None]] = None) -> FitResult:
    """Train ``model`` in place and leave its BEST weights loaded; see the module docstring.

    ``run_dir`` receives ``best.pt``, ``last.pt`` and ``metrics.csv``. ``monitor`` names the key
    of ``validate``'s dict that selects the best epoch (``mode`` 'min' or 'max').
    ``after_step(model, steps_done, total_steps)``, if given, runs after each optimiser step
    with the global step count (so a schedule it follows resumes exactly).
    ``on_start()`` runs on the main process once the training may go on (e.g. to write the
    stage's settings beside its weights): not when a resume is refused.

    A resume continues the training with the settings it started with: ``meta["train_cfg"]``
    that differs from the one saved in ``last.pt`` (other than ``workers``) raises
    ``ConfigError`` before anything is written, also for a training that has finished (it is
    not trained further; without ``resume`` it is trained again).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = stage or kind
    optimizer = build_optimizer(params if params is not None else model.parameters(), cfg)
    bs = min(cfg.batch_size, n_train)
    world, main = ddp.world_size(), ddp.is_main()
    if bs < world:
        from paranasal_ssl.errors import ConfigError

        raise ConfigError(None, f"{stage}: a global batch of {bs} cannot be split over {world} "
                          "processes", field="batch_size", expected=f">= {world} samples")
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
        _refuse_other_settings(last, payload["meta"], meta, stage, payload["training_state"])
        load_weights(model, last, kind, signature)
        ts = payload["training_state"]
        if not ts.get("finished"):
            # a finished fit is resumed only for its best weights: an optimizer of another
            # layout (e.g. parameter groups added since) must not stop that
            optimizer.load_state_dict(ts["optimizer"])
        state.update({k: ts[k] for k in state if k in ts})
        log.info("%s: resuming after epoch %d", stage, state["epoch"] + 1)
    elif not resume and main:
        for stale in ("last.pt", "best.pt", "metrics.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    if main and on_start is not None:
        on_start()
    ddp.barrier()  # nobody starts while rank 0 may still be removing stale files

    swapped = ddp.sync_batchnorm(model, device) if world > 1 else []
    try:
        return _loop(model, optimizer, state, cfg, run_dir, kind, signature, meta, n_train, bs,
                     steps_per_epoch, train_step, validate, monitor, sign, device, stage,
                     after_step)
    finally:
        ddp.restore_batchnorm(swapped)


# Settings that do not change what a training computes: a resume may use others.
RESUME_FREE_SETTINGS = ("workers",)


def _refuse_other_settings(last: Path, saved_meta: Dict[str, Any], meta: Dict[str, Any],
                           stage: str, training_state: Dict[str, Any]) -> None:
    """``ConfigError`` naming each training setting of ``meta`` that differs from the one the
    checkpoint ``last`` was trained with (checkpoints without them are not checked)."""
    saved, now = saved_meta.get("train_cfg"), meta.get("train_cfg")
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return
    now = json.loads(json.dumps(now, default=str))  # as saved: tuples become lists
    # settings added since the checkpoint was saved are not compared: it has no value for them
    changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(set(saved) & set(now))
               if k not in RESUME_FREE_SETTINGS and saved[k] != now[k]]
    if not changed:
        return
    from paranasal_ssl.errors import ConfigError

    done = ("it has finished, and --resume does not train it further"
            if training_state.get("finished")
            else "--resume goes on with the settings it started with")
    raise ConfigError(last, f"{stage}: saved with other training settings "
                      f"({'; '.join(changed)}); {done}",
                      field="--set / --resume", expected="the settings it was trained with; "
                      "for others a new run folder (or the stage's command without --resume, "
                      "which trains it again here)")


def _loop(model, optimizer, state, cfg, run_dir, kind, signature, meta, n_train, bs,
          steps_per_epoch, train_step, validate, monitor, sign, device, stage, after_step
          ) -> FitResult:
    """The epochs of :func:`fit` (see there); ``state`` is fresh or resumed."""
    world, main = ddp.world_size(), ddp.is_main()
    last = run_dir / "last.pt"
    step_model = ddp.TrainView(model, device) if world > 1 else model
    total_steps = cfg.epochs * steps_per_epoch
    with Progress(stage, total=total_steps, unit="step") as progress:
        progress.done = (state["epoch"] + 1) * steps_per_epoch
        if progress._bar is not None:
            progress._bar.update(progress.done)
        epoch = state["epoch"] + 1
        best = None  # (weights, meta) of a best epoch not yet in best.pt
        written = None  # when last.pt was last written (None: not yet in this call)
        while epoch < cfg.epochs and not state["finished"]:
            t0 = time.perf_counter()
            gen = epoch_generator(cfg.seed, epoch)
            # dropout: another stream per rank (rank 0 keeps the one-process seed)
            torch.manual_seed(cfg.seed * 100_003 + epoch + 7919 * ddp.rank())
            order = torch.randperm(n_train, generator=gen)
            model.train()
            losses = []
            for s in range(steps_per_epoch):
                idx = order[(s * bs) % n_train:][:bs]
                set_lr(optimizer, cfg.lr, lr_factor(state["step"], steps_per_epoch, cfg))
                if world > 1:
                    loss, shared = _ddp_step(step_model, train_step, idx, gen, device)
                else:
                    with autocast(device):
                        loss = train_step(model, idx, gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # read back only now: on a GPU, reading the loss between the forward and the
                # backward pass would leave the GPU idle while the host queues the backward
                if world > 1:
                    step_loss, cancelled = shared.tolist()
                    if cancelled > 0:
                        request_cancel()
                        check_cancelled()
                else:
                    step_loss = loss.item()
                if not math.isfinite(step_loss):
                    raise FloatingPointError(f"{stage}: loss became {step_loss} at epoch "
                                             f"{epoch + 1}; lower the learning rate")
                state["step"] += 1
                if after_step is not None:
                    after_step(model, state["step"], total_steps)
                state["samples"] += len(idx)
                losses.append(step_loss)
                # under DDP a rank must not stop on its own cancel flag (the others would wait
                # for it in the next collective): the shared one above decides
                progress.update(1, check_cancel=world == 1, epoch=epoch + 1, loss=losses[-1])
            train_seconds = time.perf_counter() - t0
            model.eval()
            metrics = None
            if main:  # the plain module: DDP's forward would wait for the other ranks
                with torch.no_grad():
                    metrics = validate(model)
            metrics = ddp.broadcast_object(metrics)
            row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                   "lr": max(g["lr"] for g in optimizer.param_groups),
                   "seconds": round(train_seconds, 3),
                   **{k: float(v) for k, v in metrics.items()}}
            state["history"].append(row)
            state["seconds"] += train_seconds
            value = sign * metrics[monitor]
            if value < state["best"] - 1e-12:
                state.update(best=value, best_epoch=epoch, bad_epochs=0)
                if main:  # kept in memory until the next write (below)
                    best = (weights_copy(model),
                            {**meta, "epoch": epoch + 1, monitor: metrics[monitor]})
            else:
                state["bad_epochs"] += 1
            stop = (cfg.patience and state["bad_epochs"] >= cfg.patience
                    and epoch + 1 >= cfg.min_epochs)
            state["epoch"] = epoch
            state["finished"] = bool(stop) or epoch + 1 >= cfg.epochs
            if world > 1 and ddp.any_rank(cancel_requested(), device):
                request_cancel()  # every rank stops after this epoch's save, together
            if main and (written is None or state["finished"] or cancel_requested()
                         or time.perf_counter() - written >= CHECKPOINT_EVERY_S):
                # best.pt, metrics.csv and last.pt always describe the same epoch, so a
                # resume from last.pt finds the best weights and history it recorded
                if best is not None:
                    save_checkpoint(run_dir / "best.pt", best[0], kind, signature, best[1])
                    best = None
                _write_metrics(run_dir / "metrics.csv", state["history"])
                save_checkpoint(last, model, kind, signature, {**meta, "epoch": epoch + 1},
                                training_state={"optimizer": optimizer.state_dict(),
                                                **{k: state[k] for k in state}})
                written = time.perf_counter()
            log.info("%s epoch %d/%d: %s", stage, epoch + 1, cfg.epochs,
                     ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                               if isinstance(v, float)))
            check_cancelled()  # after saving: a cancelled run resumes from this epoch
            epoch += 1
    ddp.barrier()  # best.pt is complete before any rank reads it
    load_weights(model, run_dir / "best.pt", kind, signature)
    model.eval()
    stopped = state["epoch"] + 1 < cfg.epochs
    return FitResult(best_metric=sign * state["best"], best_epoch=state["best_epoch"] + 1,
                     epochs_run=state["epoch"] + 1, stopped_early=stopped,
                     history=state["history"], seconds=state["seconds"],
                     samples_per_second=state["samples"] / max(state["seconds"], 1e-9))


def _ddp_step(view: ddp.TrainView, train_step: TrainStep, idx: torch.Tensor,
              gen: torch.Generator, device: torch.device):
    """One rank's share of a step: (loss to backpropagate, float64 ``(2,)`` tensor that becomes
    [global mean loss, cancel requests] once read).

    The local mean is scaled by ``rows * world / batch`` so that DDP's average over ranks is the
    global batch mean (a factor of exactly 1 when the batch divides evenly). The global loss and
    a cancel request travel in one small all-reduce on the loss's device (NCCL reduces GPU
    tensors only), so every rank sees the same value (a non-finite loss stops all of them) and a
    cancel on any rank stops all at the same step. The caller reads it after the backward pass.
    """
    rows = ddp.batch_rows(len(idx))
    view.calls = 0
    with autocast(device), ddp.step_rows(rows):
        loss = train_step(view, idx, gen)
    if view.calls == 0:
        raise RuntimeError("train_step did not call the model (or model.loss): under DDP its "
                           "gradients would not be averaged over the ranks")
    share = rows.size / rows.total
    flag = torch.tensor([float(cancel_requested())], dtype=torch.float64, device=loss.device)
    shared = torch.cat([loss.detach().double().reshape(1) * share, flag])
    ddp.all_reduce_sum(shared)
    return loss * (share * ddp.world_size()), shared


def _write_metrics(path: Path, history: List[Dict[str, Any]]) -> None:
    columns: List[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())
