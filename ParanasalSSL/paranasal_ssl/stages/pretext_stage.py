"""Stage 3: pretrain an encoder-decoder to predict the CAE residual map from the crop.

Training data: every sinus of the training split, labelled or not (labels are not used).
The input and its residual target get the same spatial augmentation; noise, blur and contrast
changes touch only the input. Loss: BCE-with-logits against the soft residual target (the
paper's final choice).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from paranasal_ssl.config import to_dict
from paranasal_ssl.errors import InputError
from paranasal_ssl.experiment import save_experiment
from paranasal_ssl.hashing import stable_hash
from paranasal_ssl.networks import build_pretext
from paranasal_ssl.residual_maps import global_rescale, per_crop_rescale
from paranasal_ssl.stages.data import flat_tensor, roi_masks, sinus_tensor
from paranasal_ssl.stages.residual_stage import ResidualSet, compute_residuals
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training.augment import augment
from paranasal_ssl.training.device import prepare_model, resident, to_input
from paranasal_ssl.training.distributed import batch_rows
from paranasal_ssl.training.loop import FitResult, fit, seeded

log = logging.getLogger(__name__)
KIND = "pretext"


def encoder_signature(run: Run) -> str:
    """Architecture key of the shared encoder (pretext, baselines and classifier use it)."""
    encoder = to_dict(run.config.encoder)
    if encoder["pooling"] == "mean":
        # added after models were saved: the default leaves their signatures as they were
        del encoder["pooling"]
    return stable_hash({"encoder": encoder, "crop": run.config.data.crop.shape})


def encoder_architecture(run: Run) -> dict:
    return {"crop_shape": run.config.data.crop.shape, **to_dict(run.config.encoder)}


def residual_targets(run: Run, residuals: ResidualSet, keys, n: int) -> torch.Tensor:
    """``(len(keys) * n, 1, S, S, S)`` float16 pretext targets in [0, 1]."""
    index = {r.key: i for i, r in enumerate(residuals.crops.records)}
    raw = torch.from_numpy(np.stack([np.asarray(residuals.maps[index[k]][:n], np.float32)
                                     for k in keys]))
    raw = raw.reshape(-1, 1, *raw.shape[2:])
    cfg = run.config.residual
    if cfg.target == "per-crop":
        target = torch.cat([per_crop_rescale(raw[i:i + 64], cfg.percentiles)
                            for i in range(0, len(raw), 64)])
    else:
        target = global_rescale(raw, residuals.heatmap_scale)
    return target.half()


def pretrain(run: Run, resume: bool = False) -> FitResult:
    """Fit the residual predictor; writes ``RUN/pretext/{best.pt,last.pt,metrics.csv}``."""
    cfg = run.config
    residuals = compute_residuals(run)
    available = {r.key for r in residuals.crops.records}
    train_keys = [r.key for r in run.split("train") if r.key in available]
    val_keys = [r.key for r in run.split("val") if r.key in available]
    if not train_keys or not val_keys:
        raise InputError(run.manifest, "no training or validation sinus for pretraining",
                         expected="sinuses in both the train and val splits")
    n = cfg.data.crop.train_crops_per_side
    crops = residuals.crops
    train_x = sinus_tensor(crops.subset(train_keys), n)
    train_y = residual_targets(run, residuals, train_keys, n).view(train_x.shape)
    val_x = flat_tensor(crops.subset(val_keys), 1)
    val_y = residual_targets(run, residuals, val_keys, 1)
    log.info("pretext: %d training sinuses (%d jittered crops each), %d validation crops",
             len(train_x), n, len(val_x))
    device = run.device
    rcfg = cfg.residual
    use_score = rcfg.pretext_score_weight > 0
    if use_score:  # sinus-level targets per (sinus, jitter): (N, n) and (Nv,)
        q = rcfg.pretext_score_quantile
        train_s = sinus_scores(train_y, roi_masks(crops.subset(train_keys).records, run, n), q)
        val_s = sinus_scores(val_y, roi_masks(crops.subset(val_keys).records, run, 1), q)
    train_x, train_y = resident(train_x, device), resident(train_y, device)
    with seeded(cfg.pretext_train.seed):
        net = build_pretext(cfg.encoder, cfg.data.crop.shape, score_head=use_score)
    # Start the output at the targets' mean: residual targets are mostly zero, and Adam moves
    # a bias by about one learning rate per step, so from logit 0 it would spend thousands of
    # steps learning "mostly nothing" before any anomaly-specific feature.
    mean_target = float(train_y.float().mean().clamp(1e-4, 1 - 1e-4))
    with torch.no_grad():
        net.head.bias.fill_(math.log(mean_target / (1 - mean_target)))
    model = prepare_model(net, device)
    tcfg = cfg.pretext_train

    def train_step(m, idx, gen):
        rows = batch_rows(len(idx))  # this process's share of the global batch (all of it)
        which = torch.randint(n, (len(idx),), generator=gen)  # one jittered crop per sinus
        idx, which = idx[rows.slice], which[rows.slice]
        x = to_input(train_x[idx, which], device)
        y = to_input(train_y[idx, which], device)
        if tcfg.augment:
            x, y = augment(x, y, gen, rows=rows)
        if not use_score:
            return pretext_loss(m(x).float(), y, rcfg)
        # copied before the forward pass: a host-to-GPU copy waits for the work queued before
        # it, so after the forward it would hold the GPU idle until the forward finished
        score_target = train_s[idx, which].to(device)
        logits, score = m(x, with_score=True)
        return pretext_loss(logits.float(), y, rcfg, score.float(), score_target)

    def validate(m):
        total, l1, loss, batches = 0.0, 0.0, 0.0, 0
        for s in range(0, len(val_x), 16):
            x, y = to_input(val_x[s:s + 16], device), to_input(val_y[s:s + 16], device)
            if use_score:
                logits, score = m(x, with_score=True)
                loss += pretext_loss(logits.float(), y, rcfg, score.float(),
                                     val_s[s:s + 16].to(device)).item()
            else:
                logits = m(x)
                loss += pretext_loss(logits.float(), y, rcfg).item()
            logits = logits.float()
            batches += 1
            total += F.binary_cross_entropy_with_logits(logits, y, reduction="sum").item()
            l1 += (torch.sigmoid(logits) - y).abs().sum().item()
        count = val_y.numel()
        return {"val_loss": loss / batches, "val_bce": total / count, "val_l1": l1 / count}

    out = run.stage_dir("pretext")
    meta = {"architecture": encoder_architecture(run), "train_cfg": asdict(tcfg),
            "residuals": residuals.folder.name, "n_train_sinuses": len(train_x)}
    return fit(model, cfg=tcfg, run_dir=out, kind=KIND, signature=encoder_signature(run),
               meta=meta, n_train=len(train_x), train_step=train_step, validate=validate,
               monitor="val_loss", mode="min", device=device, resume=resume, stage="pretrain",
               on_start=lambda: save_experiment(cfg, out / "config.json", stage="pretext",
                                                manifest=str(run.manifest),
                                                residuals=str(residuals.folder)))


def sinus_scores(targets: torch.Tensor, boxes: torch.Tensor, q: float = 0.99) -> torch.Tensor:
    """Sinus-level soft targets: the ``q`` quantile of each target map inside its ROI box.

    ``targets`` ``(N, n, 1, S, S, S)`` or ``(N, 1, S, S, S)`` in [0, 1], ``boxes`` the matching
    ``(N * n, 1, S, S, S)`` bool masks -> ``(N, n)`` or ``(N,)``: near 0 when the CAE found no
    material where air belongs, near 1 when it did.
    """
    flat = targets.reshape(len(boxes), -1).float()
    inside = torch.where(boxes.reshape(len(boxes), -1), flat, torch.full_like(flat, float("nan")))
    return torch.nanquantile(inside, q, dim=1).nan_to_num(0.0).reshape(targets.shape[:-4])


def pretext_loss(logits: torch.Tensor, target: torch.Tensor, cfg, score_logits=None,
                 score_target=None) -> torch.Tensor:
    """BCE-with-logits on the residual map (the paper), plus the optional soft Dice on the map
    (over the whole batch, so crops with an empty target are fine) and BCE on the sinus-level
    score."""
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if cfg.pretext_dice_weight > 0:
        p = torch.sigmoid(logits)
        dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
        loss = loss + cfg.pretext_dice_weight * (1 - dice)
    if score_logits is not None:
        loss = loss + cfg.pretext_score_weight * F.binary_cross_entropy_with_logits(
            score_logits, score_target)
    return loss

