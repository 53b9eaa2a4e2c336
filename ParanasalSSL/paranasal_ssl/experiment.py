"""The whole experiment's configuration (data, networks, training per stage) and its profiles.

``cpu-small`` keeps the method but shrinks it for a 2-core CPU (CI, demo): 32^3 crops at 2 mm,
narrow networks. ``paper`` follows Bhattacharya et al. 2024: 64^3 crops at 1 mm, the paper's CAE,
a ResNet-18 encoder with a U-Net decoder, LARS for the pretext task; it is meant for a GPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from paranasal_ssl.config import (
    CropConfig,
    DataConfig,
    IntensityConfig,
    _require,
    from_dict,
    load_json,
    save_config,
    to_dict,
)
from paranasal_ssl.errors import ConfigError
from paranasal_ssl.version import code_version


@dataclass
class CAEConfig:
    """Stage 1 autoencoder: ``len(channels)`` x [Conv3d k, stride 2, BN, LeakyReLU], a 1x1 conv
    to ``bottleneck_channels``, a linear ``latent_dim`` code, and a mirrored trilinear decoder."""

    channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    kernel_size: int = 5
    bottleneck_channels: int = 4
    latent_dim: int = 512
    # Number of CAEs (seeds cae_train.seed, +1, ...) whose residual maps are averaged in
    # stage 2. Why: which seed a single CAE gets decides much of its residual's worth (zero-
    # label validation AUPRC 0.766 / 0.670 / 0.605 for seeds 0 / 1 / 2 on the phantom CT
    # cohort, and the best-reconstructing CAE separated worst, so validation L1 cannot pick
    # one); the mean of three gave 0.751. 1 (the paper) for runs saved before this field.
    ensemble: int = 1
    # Denoising CAE (0 = off, the paper): train on x + coarse noise (std ``noise_std`` on a
    # ``noise_grid``^3 lattice, upsampled) to reconstruct the clean x, so the CAE learns to
    # remove blob-like departures from normal anatomy instead of copying them through. Off:
    # on the phantom CT validation split std 0.2 on a 4^3 lattice gave a worse zero-label
    # residual (mean of 3 seeds 0.706 vs 0.751 for plain CAEs).
    noise_std: float = 0.0
    noise_grid: int = 4
    # Healing CAE (0 = off, the paper; 0.5 in both profiles): paste a shifted piece of the crop
    # itself into a random ellipsoid (semi-axes up to ``foreign_patch_radius`` x the crop edge)
    # in this fraction of training crops, and reconstruct the clean crop
    # (training/foreign_patch.py), so that material where normal anatomy holds air is not
    # copied through. Why: a plain CAE reconstructs a filled sinus as filled. On the phantom
    # validation splits (3 seeds each) the zero-label AUPRC of the mean residual rose from
    # 0.751 to 0.792 (CT) and 0.484 to 0.701 (MRI) with semi-axes up to 0.25 of the crop, and
    # to 0.844 and 0.756 with up to 0.45 (the default: a patch must be able to fill a sinus);
    # the heatmap's voxel AUPRC from 0.067 to 0.171 (CT) and 0.081 to 0.189 (MRI).
    foreign_patch_prob: float = 0.0
    foreign_patch_radius: float = 0.45


@dataclass
class EncoderConfig:
    """ResNet-style 3D encoder (MONAI ResNet) shared by the pretext net and the classifier."""

    block: str = "basic"  # basic (ResNet-18/34) or bottleneck
    layers: List[int] = field(default_factory=lambda: [2, 2, 2, 2])
    widths: List[int] = field(default_factory=lambda: [64, 128, 256, 512])
    stem_kernel: int = 7
    stem_stride: int = 2
    max_pool: bool = True
    decoder_widths: List[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    # how the last stage becomes one feature vector per crop (classifier, sinus-level score
    # head, baselines' projectors): "mean" (global average, the paper's) or "max" (a focal
    # finding in one cell of the last stage is not diluted by the others). Max was worse for
    # this method on the development cohorts, with either residual (pretext before fine-tuning
    # 0.867 / 0.859 against 0.875 / 0.872 on CT / MRI; benchmarks/pretext_variant_check.py),
    # so it stays an option.
    pooling: str = "mean"


@dataclass
class ResidualConfig:
    """Stage 2: residual maps between a crop and its CAE reconstruction (normalised space).

    ``sign="abs"`` with ``air_gate=None`` is the paper's |x - CAE(x)|. The default keeps only
    x - CAE(x) > 0 where the CAE expects air (reconstruction below ``air_gate``): every finding of
    the maxillary sinus is material (mucosa, fluid, polyp, cyst) filling space that holds air in
    a normal sinus, and air is dark on CT and on every MRI sequence. The absolute residual of a
    bottleneck CAE is dominated by the sharp bony walls it cannot reproduce (on the phantom
    validation split its zero-label AUPRC was at prevalence, against 0.61 for the gated one).

    "Expects air" is a reconstruction below ``air_gate`` = 0.5 in normalised units: -200 HU in
    the CT window, below fat and every soft tissue, mucosa and fluid (0.56-0.66) and above the
    blurred air; on MRI's per-crop [0, 1] scale about half the level of mucosa and fluid on
    FLAIR/T2 (~0.9). It also keeps out the bright bony walls a CAE blurs on CT (MRI bone is
    dark). The gate was 0.35 (-440 HU) before; on MRI that level cut away half the thickening
    the CAE half-predicts beside the wall. On the cpu-small validation splits 0.5 gave
    zero-label AUPRC 0.844 -> 0.860 (CT), 0.756 -> 0.846 (MRI), 0.864 -> 0.862 (screening CT)
    and heatmap voxel AUPRC 0.17 -> 0.26, 0.19 -> 0.50, 0.10 -> 0.14; runs saved before keep
    0.35.
    """

    median_kernel: int = 5  # 3D median filter (paper's final choice at 1 mm)
    sign: str = "positive"  # positive: x - CAE(x) > 0; abs: |x - CAE(x)| (paper)
    air_gate: Optional[float] = 0.5  # keep residual where CAE(x) < gate (None: everywhere)
    percentiles: List[float] = field(default_factory=lambda: [1.0, 99.0])  # per-crop rescale
    # pretext target scaling: "global" keeps magnitude (a normal crop stays near 0);
    # "per-crop" (the paper) stretches every crop's residual to [0, 1], normal ones included
    target: str = "global"
    heatmap_quantile: float = 0.999  # of normal-crop residuals: 0.5 on the heatmap scale
    # Extra pretext terms (0 and 0 = the paper's BCE on the map only). ``pretext_score_weight``:
    # a sinus-level target for the pooled encoder features (the classifier's input), the 99th
    # percentile of the residual target inside the sinus box. Why it is on by default: the U-Net
    # skips let the decoder predict the map from shallow features, so the deepest stage - the
    # only one the classifier sees - was weakly trained (validation AUPRC at 5% labels 0.59
    # without, 0.69 with, plus the prior below). ``pretext_dice_weight``: a soft Dice on the map.
    pretext_score_weight: float = 1.0
    pretext_dice_weight: float = 0.0
    score: str = "mean"  # zero-label score of a crop: mean, p99 or max of the raw residual
    # Focal findings (off by default; all four together: ``--set residual.smoothing=gaussian
    # --set residual.bone_gate_hu=150 --set residual.score=max --set
    # residual.pretext_score_quantile=1``). Retention cysts (mean ~6 mm, 3-20) and polyps (5-15
    # mm) are a few voxels at 2 mm, and the 10 mm median filter keeps a voxel only where over
    # half of its 125 neighbours are positive: it erases them (on the independent CT cohort an
    # 8-12 mm cyst-only side scored like a normal one). The median is there to remove the CAE's
    # errors at bright bony walls, positive residuals where it expects air on CT.
    # ``bone_gate_hu`` (CT only) removes those at their source instead: keep the residual only
    # where the scan is below this many HU (every finding is soft tissue or fluid, 10-40 HU,
    # fungal ~64; compact bone is +250 and more; 150 is midway). Then a light Gaussian
    # (``smoothing="gaussian"``, sigma ``gaussian_sigma_mm``) keeps 4 mm findings, and the crop
    # score ``max`` finds one focus that a mean over the box dilutes. ``pretext_score_quantile``:
    # the quantile of the target map inside the box that the pretext's sinus-level head learns.
    # On development cohorts (200 new phantoms per modality; never a test set) the zero-label
    # AUPRC rose from 0.862 to 0.903 (CT) and 0.856 to 0.893 (MRI) (cysts and polyps most;
    # ``benchmarks/residual_score_check.py``), but the method itself fell: pretext before
    # fine-tuning 0.875 -> 0.855 (CT), 0.872 -> 0.864 (MRI), fine-tuned at 10% labels 0.873 ->
    # 0.857, 0.871 -> 0.869 (``benchmarks/results/focal_residual_method_check_*.json``),
    # probably because the sinus-level head reads an average over the last stage, which carries
    # a volume better than one focus's maximum. Not the default for that reason; a classifier
    # that takes the explicit residual score would be the way to use it.
    smoothing: str = "median"  # median (median_kernel voxels) or gaussian (gaussian_sigma_mm)
    gaussian_sigma_mm: float = 2.0
    bone_gate_hu: Optional[float] = None  # CT: residual only where the scan is below this
    pretext_score_quantile: float = 0.99


@dataclass
class TrainConfig:
    """One training stage's optimisation settings."""

    epochs: int = 100
    batch_size: int = 16
    optimizer: str = "adam"  # adam, adamw, sgd, lars
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    schedule: str = "constant"  # constant or cosine
    patience: int = 10  # early stopping on the validation metric (0 = off)
    min_epochs: int = 1
    max_steps_per_epoch: int = 0  # 0 = one pass over the data
    augment: bool = True
    workers: int = 0
    seed: int = 0

    def validate(self, prefix: str) -> None:
        _require(self.epochs >= 1, f"{prefix}.epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, ">= 1")
        _require(self.optimizer in ("adam", "adamw", "sgd", "lars"), f"{prefix}.optimizer",
                 self.optimizer, "adam, adamw, sgd or lars")
        _require(self.schedule in ("constant", "cosine"), f"{prefix}.schedule", self.schedule,
                 "constant or cosine")
        _require(self.lr > 0, f"{prefix}.lr", self.lr, "> 0")


@dataclass
class FinetuneConfig:
    """Stage 4: pretrained encoder + MLP head, normal vs anomalous."""

    head_hidden: List[int] = field(default_factory=lambda: [256])
    dropout: float = 0.0
    label_fraction: float = 1.0
    label_seed: int = 0
    freeze_encoder: bool = False
    # learning rate of a PRETRAINED encoder relative to the head's (random initialisation
    # always trains at the full rate): Adam moves every weight by about the learning rate per
    # step whatever the gradient's size, so a few dozen labels can pull a good encoder away.
    # 0.1 chosen on development cohorts (benchmarks/finetune_recipe_check.py); was 1.
    encoder_lr_scale: float = 0.1
    uncertain_band: List[float] = field(default_factory=lambda: [0.35, 0.65])
    # start from the pretext's sinus-level head when it has one (see SinusClassifier.prior)
    score_prior: bool = True
    # add the CAE's focal residual score to the classifier's (residual_fusion.py); needs the
    # run's CAE(s), and applies to every classifier fine-tuned in the run. On in both profiles:
    # on the development cohorts this method at 10% labels went from 0.873 / 0.871 to 0.904 /
    # 0.904 (CT / MRI; benchmarks/score_fusion_check.py). Off here so that runs saved before
    # it existed keep their behaviour.
    residual_fusion: bool = False


@dataclass
class ExperimentConfig:
    """Everything that determines a run; saved as ``config.json`` in every run folder."""

    profile: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    cae: CAEConfig = field(default_factory=CAEConfig)
    cae_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, patience=10))
    residual: ResidualConfig = field(default_factory=ResidualConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pretext_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=100, batch_size=128, optimizer="lars", lr=0.15, weight_decay=1e-6,
        warmup_epochs=10, schedule="cosine", patience=0))
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=100, batch_size=16, lr=1e-4, patience=15))

    def validate(self) -> ExperimentConfig:
        self.data.validate()
        for name in ("cae_train", "pretext_train", "finetune_train"):
            getattr(self, name).validate(name)
        _require(self.cae.ensemble >= 1, "cae.ensemble", self.cae.ensemble, ">= 1")
        _require(self.cae.noise_std >= 0, "cae.noise_std", self.cae.noise_std, ">= 0")
        _require(0 <= self.cae.foreign_patch_prob <= 1, "cae.foreign_patch_prob",
                 self.cae.foreign_patch_prob, "between 0 and 1")
        _require(0 < self.cae.foreign_patch_radius <= 0.5, "cae.foreign_patch_radius",
                 self.cae.foreign_patch_radius, "above 0 and at most 0.5 (of the crop edge)")
        _require(1 <= self.cae.noise_grid <= self.data.crop.shape, "cae.noise_grid",
                 self.cae.noise_grid, "between 1 and the crop size")
        _require(self.residual.target in ("per-crop", "global"), "residual.target",
                 self.residual.target, "per-crop or global")
        _require(self.residual.sign in ("positive", "abs"), "residual.sign", self.residual.sign,
                 "positive or abs")
        _require(self.residual.median_kernel % 2 == 1, "residual.median_kernel",
                 self.residual.median_kernel, "an odd number")
        _require(self.residual.score in ("mean", "p99", "max"), "residual.score",
                 self.residual.score, "mean, p99 or max")
        _require(self.residual.smoothing in ("median", "gaussian"), "residual.smoothing",
                 self.residual.smoothing, "median or gaussian")
        _require(self.residual.gaussian_sigma_mm > 0, "residual.gaussian_sigma_mm",
                 self.residual.gaussian_sigma_mm, "a width in mm above 0")
        _require(0 < self.residual.pretext_score_quantile <= 1,
                 "residual.pretext_score_quantile", self.residual.pretext_score_quantile,
                 "a quantile in (0, 1]")
        _require(0 < self.residual.heatmap_quantile < 1, "residual.heatmap_quantile",
                 self.residual.heatmap_quantile, "a quantile above 0 and below 1 (e.g. 0.999)")
        _require(0 < self.finetune.encoder_lr_scale <= 1, "finetune.encoder_lr_scale",
                 self.finetune.encoder_lr_scale, "above 0 and at most 1")
        _require(0 < self.finetune.label_fraction <= 1, "finetune.label_fraction",
                 self.finetune.label_fraction, "a fraction in (0, 1]")
        _require(self.encoder.pooling in ("mean", "max"), "encoder.pooling",
                 self.encoder.pooling, "mean or max")
        _require(self.encoder.block in ("basic", "bottleneck"), "encoder.block",
                 self.encoder.block, "basic or bottleneck")
        _require(len(self.encoder.layers) == len(self.encoder.widths) == 4, "encoder.layers",
                 self.encoder.layers, "4 stages (with 4 widths)")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return to_dict(self)


def paper_profile() -> ExperimentConfig:
    """The paper's sizes (64^3 at 1 mm, ResNet-18 encoder); three healing CAEs and the
    residual fusion as in every profile."""
    return ExperimentConfig(profile="paper", cae=CAEConfig(ensemble=3, foreign_patch_prob=0.5),
                            finetune=FinetuneConfig(residual_fusion=True))


def cpu_small_profile() -> ExperimentConfig:
    """The method at a size a 2-core CPU trains in minutes: 32^3 crops at 2 mm (64 mm FOV)."""
    return ExperimentConfig(
        profile="cpu-small",
        data=DataConfig(crop=CropConfig(shape=32, spacing_mm=2.0, jitter_mm=2.0,
                                        train_crops_per_side=4, test_crops_per_side=5),
                        intensity=IntensityConfig()),
        cae=CAEConfig(channels=[16, 32, 64], kernel_size=5, bottleneck_channels=4,
                      latent_dim=256, ensemble=3, foreign_patch_prob=0.5),
        cae_train=TrainConfig(epochs=30, batch_size=16, lr=1e-3, patience=6),
        residual=ResidualConfig(median_kernel=5),  # 10 mm at 2 mm: wider than bony walls
        encoder=EncoderConfig(layers=[1, 1, 1, 1], widths=[16, 32, 64, 128], stem_kernel=3,
                              stem_stride=2, max_pool=False, decoder_widths=[32, 16, 8, 8]),
        pretext_train=TrainConfig(epochs=20, batch_size=16, optimizer="adamw", lr=1e-3,
                                  weight_decay=1e-4, warmup_epochs=1, schedule="cosine",
                                  patience=0),
        finetune=FinetuneConfig(head_hidden=[64], dropout=0.2, residual_fusion=True),
        finetune_train=TrainConfig(epochs=40, batch_size=16, optimizer="adam", lr=3e-4,
                                   weight_decay=1e-4, patience=10, min_epochs=5),
    )


PROFILES = {"paper": paper_profile, "cpu-small": cpu_small_profile}


def profile_config(name: str) -> ExperimentConfig:
    if name not in PROFILES:
        raise ConfigError(None, f"unknown profile {name!r}", field="profile",
                          expected=" or ".join(PROFILES))
    return PROFILES[name]().validate()


def override(config: ExperimentConfig, assignments: List[str]) -> ExperimentConfig:
    """Apply ``--set section.key=value`` overrides (values parsed as JSON, else strings)."""
    import json

    data = config.to_dict()
    for item in assignments:
        if "=" not in item:
            raise ConfigError(None, f"override {item!r} has no '='", field="--set",
                              expected="section.key=value, e.g. cae_train.epochs=5")
        dotted, value = item.split("=", 1)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        node = data
        parts = dotted.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                sections = sorted(k for k, v in node.items() if isinstance(v, dict))
                raise ConfigError(None, f"no section {p!r}", field=dotted,
                                  expected=f"one of {sections}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(None, f"no setting {parts[-1]!r}", field=dotted,
                              expected=f"one of {sorted(node)}")
        node[parts[-1]] = parsed
    return from_dict(ExperimentConfig, data).validate()


# Top-level entries of a saved config.json that describe the run rather than configure it.
METADATA_KEYS = ("code_version", "environment", "command", "created", "manifest", "stage",
                 "residuals", "member")


def save_experiment(config: ExperimentConfig, path: Union[str, Path], **extra: Any) -> None:
    save_config(config, path, code_version=code_version(), **extra)


def load_experiment(path: Union[str, Path]) -> ExperimentConfig:
    data = load_json(path)
    for key in METADATA_KEYS:
        data.pop(key, None)
    return from_dict(ExperimentConfig, data, source=path).validate()


def clone(config: ExperimentConfig) -> ExperimentConfig:
    return copy.deepcopy(config)
