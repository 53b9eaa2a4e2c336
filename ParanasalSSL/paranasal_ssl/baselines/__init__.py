"""Generic self-supervised baselines on the project's shared encoder: SimCLR, BYOL, SimSiam and
masked image modelling (SparK-style). Same crops, augmentations, splits and fine-tuning as the
residual method; see :func:`paranasal_ssl.baselines.train.pretrain_baseline`.

Each method is an ``nn.Module`` with an ``encoder`` (:class:`ResNetEncoder3D`, the part kept
for fine-tuning), ``n_views`` (crops per sinus per step), ``loss(views, gen) -> (loss,
embeddings)`` with ``views`` a list of ``(B, 1, S, S, S)`` batches and ``embeddings`` a dict of
``(B, d)`` tensors ("encoder": pooled features, "projection" where the method has a projector)
for the collapse statistics, ``settings()`` (a description for the run's records) and,
optionally, ``after_step(steps_done, total_steps)`` run after each optimiser step.
"""

from __future__ import annotations

from torch import nn

from paranasal_ssl.errors import ConfigError
from paranasal_ssl.experiment import EncoderConfig

METHODS = ("simclr", "byol", "simsiam", "mim")


def build_baseline(method: str, config: EncoderConfig, crop_shape: int) -> nn.Module:
    """The method's network on a fresh (randomly initialised) encoder."""
    from paranasal_ssl.baselines.byol import BYOL
    from paranasal_ssl.baselines.mim import MaskedImageModel
    from paranasal_ssl.baselines.simclr import SimCLR
    from paranasal_ssl.baselines.simsiam import SimSiam

    if method == "simclr":
        return SimCLR(config)
    if method == "byol":
        return BYOL(config)
    if method == "simsiam":
        return SimSiam(config)
    if method == "mim":
        return MaskedImageModel(config, crop_shape)
    raise ConfigError(None, f"unknown baseline {method!r}", field="--method",
                      expected=" / ".join(METHODS))


__all__ = ["METHODS", "build_baseline"]
