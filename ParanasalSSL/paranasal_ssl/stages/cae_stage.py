"""Stage 1: train the convolutional autoencoder on NORMAL crops of the training split."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from paranasal_ssl.config import to_dict
from paranasal_ssl.errors import InputError
from paranasal_ssl.experiment import ExperimentConfig, save_experiment
from paranasal_ssl.networks import CAEEnsemble, build_cae, cae_signature
from paranasal_ssl.stages.data import crops_for, flat_tensor, pick_crops, sinus_tensor
from paranasal_ssl.stages.run import Run, splits_given
from paranasal_ssl.training.augment import AugmentConfig, augment, coarse_noise
from paranasal_ssl.training.device import prepare_model, resident, to_input
from paranasal_ssl.training.distributed import batch_rows
from paranasal_ssl.training.foreign_patch import foreign_patches
from paranasal_ssl.training.loop import FitResult, fit, seeded

log = logging.getLogger(__name__)
KIND = "cae"
# Normal anatomy varies by pose and size, not by noise/contrast: keep the CAE's augmentation
# spatial so its residuals stay sensitive to intensity changes inside the sinus.
CAE_AUGMENT = AugmentConfig(p_noise=0.0, p_blur=0.0, p_contrast=0.0, p_affine=0.5)


def cae_checkpoints(run_dir: Path, config: ExperimentConfig) -> List[Path]:
    """Best checkpoint of each ensemble member: ``RUN/cae/best.pt`` for member 0 (where a
    single-CAE run keeps it) and ``RUN/cae/member-<k>/best.pt`` for the others."""
    return [member_dir(Path(run_dir), k) / "best.pt" for k in range(config.cae.ensemble)]


def trained_cae_checkpoints(run: Run) -> List[Path]:
    """``cae_checkpoints`` of the run; InputError naming the first one not trained yet."""
    paths = cae_checkpoints(run.dir, run.config)
    for k, path in enumerate(paths):
        if not path.exists():
            what = "no trained CAE in this run" if k == 0 else \
                f"CAE {k + 1} of the ensemble of {len(paths)} (cae.ensemble) is not trained"
            raise InputError(path, what, expected="run `train-cae` first")
    return paths


def member_dir(run_dir: Path, k: int) -> Path:
    return run_dir / "cae" if k == 0 else run_dir / "cae" / f"member-{k}"


def cae_architecture(run: Run) -> dict:
    return {"crop_shape": run.config.data.crop.shape, **to_dict(run.config.cae)}


def _refuse_split_without_normals(run: Run, split: str) -> None:
    """Stage 1 learns normal anatomy on the training split and stops early on the validation
    split: say where the cohort's normal sinuses are, and how to get some into ``split``."""
    normals = {name: run.split(name, label=0) for name in ("train", "val", "test")}
    where = ", ".join(f"{len(n)} in {name}" for name, n in normals.items())
    subjects = len({r.subject_id for r in run.split("val" if split == "validation" else "train")})
    normal_subjects = {r.subject_id for records in normals.values() for r in records}
    if len(normal_subjects) < 2:  # no split puts them in both: only more normal scans help
        again = ""
    elif splits_given(run.records):
        again = ", or move subjects with normal sides in the manifest's split column"
    else:
        again = (", or split again (e.g. --set data.split.seed=1, or --set data.split.val=0.3 "
                 "--set data.split.train=0.5; allowed while the run has no trained stage)")
    raise InputError(run.manifest, f"the {split} split ({subjects} subjects) has no normal "
                     f"(label 0) sinus; the cohort's {sum(map(len, normals.values()))} normal "
                     f"sinuses ({len(normal_subjects)} subjects): {where}", field="label",
                     expected="normal sinuses in both the training and the validation split: "
                     f"add normal scans{again}")


def train_cae(run: Run, resume: bool = False) -> List[FitResult]:
    """Fit the ``cae.ensemble`` CAEs (seeds ``cae_train.seed + k``) one after the other;
    each writes ``best.pt``, ``last.pt``, ``metrics.csv`` and ``config.json`` in its folder
    (``cae_checkpoints``). Returns one result per member."""
    cfg = run.config
    train_normals = run.split("train", label=0)
    val_normals = run.split("val", label=0)
    if not train_normals or not val_normals:
        _refuse_split_without_normals(run, "training" if not train_normals else "validation")
    n = cfg.data.crop.train_crops_per_side
    train = sinus_tensor(crops_for(run, train_normals, "CAE training", "crops (train)"), n)
    val = flat_tensor(crops_for(run, val_normals, "CAE validation", "crops (val)"), 1)
    log.info("CAE: %d normal training sinuses (%d jittered crops each), %d validation crops, "
             "%d member(s)", len(train), n, len(val), cfg.cae.ensemble)
    train = resident(train, run.device)
    return [_fit_member(run, k, train, val, resume) for k in range(cfg.cae.ensemble)]


def _fit_member(run: Run, k: int, train: torch.Tensor, val: torch.Tensor,
                resume: bool) -> FitResult:
    """Member ``k``: the same data and schedule as member 0, seed ``cae_train.seed + k``."""
    cfg, device = run.config, run.device
    tcfg = replace(cfg.cae_train, seed=cfg.cae_train.seed + k)
    n = cfg.data.crop.train_crops_per_side
    with seeded(tcfg.seed):
        model = prepare_model(build_cae(cfg.cae, cfg.data.crop.shape), device)

    def train_step(m, idx, gen):
        rows = batch_rows(len(idx))  # this process's share of the global batch (all of it)
        x = to_input(pick_crops(train, idx, gen, rows), device)
        if tcfg.augment:
            x, _ = augment(x, None, gen, CAE_AUGMENT, rows)
        x_in = x  # healing and denoising corrupt the input; the clean crop is the target
        if cfg.cae.foreign_patch_prob > 0:
            x_in = foreign_patches(x, cfg.cae.foreign_patch_prob, cfg.cae.foreign_patch_radius,
                                   gen, rows)
        if cfg.cae.noise_std > 0:
            x_in = x_in + coarse_noise(x, cfg.cae.noise_grid, cfg.cae.noise_std, gen, rows)
        return F.l1_loss(m(x_in), x)

    def validate(m):
        total = 0.0
        for start in range(0, len(val), 32):
            x = to_input(val[start:start + 32], device)
            total += F.l1_loss(m(x), x, reduction="sum").item()
        return {"val_l1": total / val[:, 0].numel()}

    out = member_dir(run.dir, k)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"architecture": cae_architecture(run), "train_cfg": asdict(tcfg),
            "n_train_sinuses": len(train), "member": k, "crops_per_sinus": n}
    stage = "train-cae" if cfg.cae.ensemble == 1 else f"train-cae {k + 1}/{cfg.cae.ensemble}"
    return fit(model, cfg=tcfg, run_dir=out, kind=KIND,
               signature=cae_signature(cfg.cae, cfg.data.crop.shape), meta=meta,
               n_train=len(train), train_step=train_step, validate=validate, monitor="val_l1",
               mode="min", device=device, resume=resume, stage=stage,
               on_start=lambda: save_experiment(cfg, out / "config.json", stage="cae",
                                                manifest=str(run.manifest), member=k))


def load_cae(run: Run) -> torch.nn.Module:
    """The run's CAE in eval mode on its device: a ``CAEEnsemble`` when ``cae.ensemble > 1``."""
    from paranasal_ssl.training.checkpoint import load_weights

    members = []
    for path in trained_cae_checkpoints(run):
        model = build_cae(run.config.cae, run.config.data.crop.shape)
        load_weights(model, path, KIND, cae_signature(run.config.cae, run.config.data.crop.shape))
        members.append(model)
    model = members[0] if len(members) == 1 else CAEEnsemble(members)
    return prepare_model(model, run.device).eval()
