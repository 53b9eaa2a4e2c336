"""Stage 1: train the convolutional autoencoder on NORMAL crops of the training split."""

from __future__ import annotations

import logging
from dataclasses import asdict

import torch
import torch.nn.functional as F

from paranasal_ssl.config import to_dict
from paranasal_ssl.errors import InputError
from paranasal_ssl.experiment import save_experiment
from paranasal_ssl.hashing import stable_hash
from paranasal_ssl.networks import build_cae
from paranasal_ssl.stages.data import crops_for, flat_tensor, pick_crops, sinus_tensor
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training.augment import AugmentConfig, augment
from paranasal_ssl.training.device import prepare_model, resident, to_input
from paranasal_ssl.training.distributed import batch_rows, is_main
from paranasal_ssl.training.loop import FitResult, fit, seeded

log = logging.getLogger(__name__)
KIND = "cae"
# Normal anatomy varies by pose and size, not by noise/contrast: keep the CAE's augmentation
# spatial so its residuals stay sensitive to intensity changes inside the sinus.
CAE_AUGMENT = AugmentConfig(p_noise=0.0, p_blur=0.0, p_contrast=0.0, p_affine=0.5)


def cae_signature(run: Run) -> str:
    return stable_hash({"cae": to_dict(run.config.cae), "crop": run.config.data.crop.shape})


def cae_architecture(run: Run) -> dict:
    return {"crop_shape": run.config.data.crop.shape, **to_dict(run.config.cae)}


def train_cae(run: Run, resume: bool = False) -> FitResult:
    """Fit the CAE; writes ``RUN/cae/{best.pt,last.pt,metrics.csv,config.json}``."""
    cfg = run.config
    train_normals = run.split("train", label=0)
    val_normals = run.split("val", label=0)
    if not train_normals:
        raise InputError(run.manifest, "the training split has no normal (label 0) sinus",
                         field="label", expected="normal sinuses to learn normal anatomy from")
    if not val_normals:
        raise InputError(run.manifest, "the validation split has no normal sinus",
                         field="label", expected="normal sinuses for early stopping")
    n = cfg.data.crop.train_crops_per_side
    train = sinus_tensor(crops_for(run, train_normals, "CAE training", "crops (train)"), n)
    val = flat_tensor(crops_for(run, val_normals, "CAE validation", "crops (val)"), 1)
    log.info("CAE: %d normal training sinuses (%d jittered crops each), %d validation crops",
             len(train), n, len(val))
    device = run.device
    train = resident(train, device)
    tcfg = cfg.cae_train
    with seeded(tcfg.seed):
        model = prepare_model(build_cae(cfg.cae, cfg.data.crop.shape), device)

    def train_step(m, idx, gen):
        rows = batch_rows(len(idx))  # this process's share of the global batch (all of it)
        x = to_input(pick_crops(train, idx, gen, rows), device)
        if tcfg.augment:
            x, _ = augment(x, None, gen, CAE_AUGMENT, rows)
        return F.l1_loss(m(x), x)

    def validate(m):
        total = 0.0
        for start in range(0, len(val), 32):
            x = to_input(val[start:start + 32], device)
            total += F.l1_loss(m(x), x, reduction="sum").item()
        return {"val_l1": total / val[:, 0].numel()}

    out = run.stage_dir("cae")
    if is_main():
        save_experiment(cfg, out / "config.json", stage="cae", manifest=str(run.manifest))
    meta = {"architecture": cae_architecture(run), "train_cfg": asdict(tcfg),
            "n_train_sinuses": len(train)}
    return fit(model, cfg=tcfg, run_dir=out, kind=KIND, signature=cae_signature(run), meta=meta,
               n_train=len(train), train_step=train_step, validate=validate, monitor="val_l1",
               mode="min", device=device, resume=resume, stage="train-cae")


def load_cae(run: Run) -> torch.nn.Module:
    from paranasal_ssl.training.checkpoint import load_weights

    model = build_cae(run.config.cae, run.config.data.crop.shape)
    path = run.dir / "cae" / "best.pt"
    if not path.exists():
        raise InputError(path, "no trained CAE in this run", expected="run `train-cae` first")
    load_weights(model, path, KIND, cae_signature(run))
    return prepare_model(model, run.device).eval()
