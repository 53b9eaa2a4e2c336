"""Pretrain the shared encoder with a generic self-supervised baseline (labels unused).

Data: every sinus of the training split. Each step takes a batch of sinuses and draws, per
sinus, two cached jittered crops (different ones where the cache holds more than one) and
augments each with its own generator (the project's ``augment``: left-right flip, small
affine, gamma, blur, noise). Masked image modelling uses one view. Validation: the validation
split with views fixed once (crops 0 and 1, augmentations from a fixed seed), in batches of the
training batch size (NT-Xent depends on the batch), giving ``val_loss`` (the monitored metric)
and the per-dimension std of the L2-normalised projections and pooled encoder features
(``val_std_projection``, ``val_std_encoder``, in evaluation mode; collapse -> 0);
``train_std_encoder`` and ``train_std_projection`` are the same statistics on the training
batches (training-mode batch norm), averaged over the epoch.

Budget: ``run.config.pretext_train`` (epochs, batch size, optimiser, schedule), the same for
every method and for the residual pretext task. ``METHOD_DEFAULTS`` changes a setting for one
method only while that setting still has its profile value: a value the user set (at run
creation or with ``--set pretext_train.KEY=VALUE``) always wins. What was used is recorded in
``baseline.json``, ``config.json`` and the checkpoints' meta.

Distributed (``torchrun``): every draw (crop choices, augmentations, MIM masks) is made for the
whole global batch in one-process order and each rank keeps its rows; SimCLR contrasts each
rank's rows with the global batch; batch norm (heads and BYOL's target too) uses global-batch
statistics; the training embedding statistics are those of the global batch. The loss
trajectory is then the single-process one (tested). Rank 0 alone writes the outputs.

Outputs, ``RUN/baselines/<method>/``: ``best.pt`` and ``last.pt`` (kind ``encoder``: only the
encoder's state dict, signed with :func:`encoder_signature`, ready for
``finetune(run, ..., init=path)``), ``metrics.csv``, ``config.json``, ``baseline.json`` and
``training/`` (the whole network with heads, target network and optimiser state, for
``--resume``).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from paranasal_ssl.atomic import write_json
from paranasal_ssl.baselines import METHODS, build_baseline
from paranasal_ssl.baselines.heads import embedding_std
from paranasal_ssl.errors import ConfigError
from paranasal_ssl.experiment import TrainConfig, profile_config, save_experiment
from paranasal_ssl.hashing import stable_hash
from paranasal_ssl.stages.data import crops_for, sinus_tensor
from paranasal_ssl.stages.pretext_stage import encoder_architecture, encoder_signature
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training.augment import augment
from paranasal_ssl.training.checkpoint import load_weights, save_checkpoint
from paranasal_ssl.training.device import prepare_model, resident, to_input
from paranasal_ssl.training.distributed import (
    BatchRows,
    barrier,
    batch_rows,
    gather_rows,
    is_main,
)
from paranasal_ssl.training.loop import FitResult, fit

log = logging.getLogger(__name__)

# Per-method departures from the profile's pretext_train, applied only to settings still at
# their profile value. Epochs, batch size, optimiser and schedule are never changed here: every
# method gets the residual pretext task's budget. The profiles' learning rates already fit:
# paper = LARS 0.15 at batch 128 = SimCLR's 0.3 x B / 256 (BYOL's 0.2 x B / 256 is close);
# cpu-small = AdamW 1e-3, with which all four methods learn on 32^3 phantom crops.
METHOD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "simclr": {},
    "byol": {},
    # SimSiam's weight decay (1e-4) instead of SimCLR's 1e-6 (the paper profile's): decay is part
    # of what keeps predictor-based, negative-free methods from collapsing (Tian et al. 2021)
    "simsiam": {"weight_decay": 1e-4},
    "mim": {},
}
VAL_SEED = 1_234_567  # fixed validation views and masks: val_loss is comparable across epochs


def baseline_train_config(run: Run, method: str) -> Tuple[TrainConfig, Dict[str, Any]]:
    """``run.config.pretext_train`` with the method's defaults where the user left the profile
    value; returns the config and the settings that were changed."""
    tcfg = run.config.pretext_train
    profile = profile_config(run.config.profile).pretext_train
    applied = {k: v for k, v in METHOD_DEFAULTS[method].items()
               if getattr(tcfg, k) == getattr(profile, k)}
    return replace(tcfg, **applied), applied


def draw_views(crops: torch.Tensor, idx: torch.Tensor, gen: torch.Generator, n_views: int,
               do_augment: bool, device: torch.device, rows: Optional[BatchRows] = None
               ) -> List[torch.Tensor]:
    """``n_views`` batches ``(B, 1, S, S, S)`` on ``device`` from ``crops`` ``(N, n, 1, S, S,
    S)``: per sinus ``idx`` one cached jitter per view (distinct where ``n > 1``), each view
    augmented with its own generator seeded from ``gen``.

    ``rows`` (DDP): every choice is drawn for the whole global batch ``idx``, in one-process
    order, and only these rows are returned (``rows.size`` samples per view)."""
    n = crops.shape[1]
    rows = rows or BatchRows(0, len(idx), len(idx))
    first = torch.randint(n, (len(idx),), generator=gen)
    views = []
    for v in range(n_views):
        which = first
        if v and n > 1:  # shift by 1..n-1: another cached jitter than the first view's
            which = (first + torch.randint(1, n, (len(idx),), generator=gen)) % n
        x = to_input(crops[idx[rows.slice], which[rows.slice]], device)
        if do_augment:
            view_gen = torch.Generator().manual_seed(
                int(torch.randint(2 ** 62, (1,), generator=gen)))
            x, _ = augment(x, None, view_gen, rows=rows)
        views.append(x)
    return views


def _fixed_val_views(crops: torch.Tensor, n_views: int, do_augment: bool) -> List[torch.Tensor]:
    """Validation views ``(Nv, 1, S, S, S)`` float16 (CPU), drawn once: crop ``v`` of each sinus
    for view ``v`` (crop 0 if the cache has one), augmented from ``VAL_SEED``."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    out = []
    for v in range(n_views):
        x = crops[:, min(v, crops.shape[1] - 1)].float()
        if do_augment:
            x, _ = augment(x, None, gen)
        out.append(x.half())
    return out


def pretrain_baseline(run: Run, method: str, resume: bool = False) -> Tuple[FitResult, Path]:
    """Pretrain ``method`` (simclr, byol, simsiam or mim) on the training split; returns the fit
    result and ``RUN/baselines/<method>`` (``best.pt``: the encoder, kind ``encoder``)."""
    if method not in METHODS:
        raise ConfigError(None, f"unknown baseline {method!r}", field="--method",
                          expected=" / ".join(METHODS))
    cfg = run.config
    tcfg, applied = baseline_train_config(run, method)
    n = cfg.data.crop.train_crops_per_side
    train_set = crops_for(run, run.split("train"), "baseline pretraining", "crops (train)")
    val_set = crops_for(run, run.split("val"), "baseline validation", "crops (val)")
    device = run.device
    train_x = resident(sinus_tensor(train_set, n), device)  # (N, n, 1, S, S, S) float16
    with torch.random.fork_rng(devices=[]):  # seeded initial weights: a rerun is identical
        torch.manual_seed(tcfg.seed)
        model = build_baseline(method, cfg.encoder, cfg.data.crop.shape)
    model = prepare_model(model, device)
    val_views = _fixed_val_views(sinus_tensor(val_set, min(2, n)), model.n_views, tcfg.augment)
    log.info("baseline %s: %d training sinuses (%d jittered crops each), %d validation sinuses",
             method, len(train_x), n, len(val_views[0]))
    bs = min(tcfg.batch_size, len(train_x))
    train_stds: Dict[str, List[float]] = {}

    def train_step(m, idx, gen):
        rows = batch_rows(len(idx))  # this process's share of the global batch (all of it)
        views = draw_views(train_x, idx, gen, m.n_views, tcfg.augment, device, rows)
        loss, embeddings = m.loss(views, gen)
        for key, emb in embeddings.items():  # statistics of the global batch, for rank 0
            with torch.no_grad():
                emb = gather_rows(emb.detach().float(), rows)
            if is_main():
                train_stds.setdefault(key, []).append(embedding_std(emb))
        return loss

    def validate(m):
        gen = torch.Generator().manual_seed(VAL_SEED)  # the same masks every epoch
        total, count, projections, feats = 0.0, 0, [], []
        for s in range(0, len(val_views[0]), bs):
            views = [to_input(v[s:s + bs], device) for v in val_views]
            loss, embeddings = m.loss(views, gen)
            total, count = total + float(loss) * len(views[0]), count + len(views[0])
            if "projection" in embeddings:
                projections.append(embeddings["projection"].float().cpu())
            # the unmasked first view for every method: what fine-tuning will see
            feats.append(m.encoder.pooled(views[0]).float().cpu())
        row = {"val_loss": total / count, "val_std_encoder": embedding_std(torch.cat(feats))}
        if projections:
            row["val_std_projection"] = embedding_std(torch.cat(projections))
        for key, values in sorted(train_stds.items()):  # this epoch's training batches
            row[f"train_std_{key}"] = sum(values) / len(values)
        train_stds.clear()
        return row

    def after_step(m, steps_done, total_steps):
        m.after_step(steps_done, total_steps)

    out = run.stage_dir("baselines", method)
    sig = encoder_signature(run)
    settings = model.settings()
    full_kind = f"baseline-{method}"
    full_sig = stable_hash({"encoder": sig, "method": method, "settings": settings})
    meta = {"method": method, "settings": settings, "architecture": encoder_architecture(run),
            "train_cfg": asdict(tcfg), "method_defaults_applied": applied,
            "n_train_sinuses": len(train_x), "n_val_sinuses": len(val_views[0])}
    run_cfg = replace(cfg, pretext_train=tcfg)
    params = [p for p in model.parameters() if p.requires_grad]  # not BYOL's target
    result = fit(model, cfg=tcfg, run_dir=out / "training", kind=full_kind, signature=full_sig,
                 meta=meta, n_train=len(train_x), train_step=train_step, validate=validate,
                 monitor="val_loss", mode="min", device=device, resume=resume,
                 stage=f"baseline {method}", params=params,
                 after_step=after_step if hasattr(model, "after_step") else None,
                 on_start=lambda: save_experiment(run_cfg, out / "config.json",
                                                  stage=f"baseline-{method}",
                                                  manifest=str(run.manifest)))
    if is_main():
        _export_encoders(model, method, out, full_kind, full_sig, sig, meta, result, run)
    barrier()  # the exported encoders exist on return, on every rank
    return result, out


def _export_encoders(model, method: str, out: Path, full_kind: str, full_sig: str, sig: str,
                     meta: Dict[str, Any], result: FitResult, run: Run) -> None:
    """Write the encoder alone (kind ``encoder``) of the best and the last epoch, the metrics
    and a summary. ``model`` holds the best weights (``fit`` leaves them loaded)."""
    best_row = result.history[result.best_epoch - 1] if result.history else {}
    save_checkpoint(out / "best.pt", model.encoder, "encoder", sig,
                    {**meta, "epoch": result.best_epoch, **best_row})
    last = build_baseline(method, run.config.encoder, run.config.data.crop.shape)
    load_weights(last, out / "training" / "last.pt", full_kind, full_sig)
    save_checkpoint(out / "last.pt", last.encoder, "encoder", sig,
                    {**meta, "epoch": result.epochs_run,
                     **(result.history[-1] if result.history else {})})
    shutil.copyfile(out / "training" / "metrics.csv", out / "metrics.csv")
    write_json(out / "baseline.json", {
        **meta, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "best_val_loss": result.best_metric, "samples_per_second": result.samples_per_second,
        "train_seconds": result.seconds,
        # std of L2-normalised embeddings spread evenly over the unit sphere of dimension d is
        # 1/sqrt(d) (pooled ReLU features stay in one orthant, so somewhat less); collapse: 0
        "collapse_reference_std": {"encoder": 1.0 / math.sqrt(model.encoder.out_channels)},
        "encoder_best": "best.pt", "encoder_last": "last.pt"})
    log.info("baseline %s: best epoch %d (val_loss %.4g) -> %s", method, result.best_epoch,
             result.best_metric, out / "best.pt")
