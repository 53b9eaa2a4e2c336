"""Projection and prediction MLPs of the self-supervised baselines, and collapse statistics.

Every head maps ``(B, in_dim)`` to ``(B, out_dim)``. Hidden layers are ``Linear -> BatchNorm1d
-> ReLU`` (the Linear has no bias: the BatchNorm after it has one). Widths are set relative to
the encoder's output width ``C`` (128 on cpu-small, 512 on the paper's ResNet-18) in
:mod:`paranasal_ssl.baselines` so that both profiles get heads of a sensible size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, last_bn: bool = False) -> nn.Sequential:
    """``Linear -> BN -> ReLU`` per hidden width, then ``Linear(., out_dim)``.

    ``last_bn`` appends an affine-free ``BatchNorm1d`` (SimSiam's projector ends with one, which
    the SimSiam paper found to stabilise training).
    """
    layers = []
    c = in_dim
    for h in hidden:
        layers += [nn.Linear(c, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        c = h
    layers.append(nn.Linear(c, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-cos(p_i, z_i)`` for ``(B, d)`` inputs, in float32; in [-1, 1].

    The caller decides whether ``z`` is a stop-gradient target (detach it there, not here, so
    the tests can see where the gradient is cut).
    """
    return -F.cosine_similarity(p.float(), z.float(), dim=1, eps=1e-8).mean()


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> float:
    """Mean per-dimension standard deviation of the L2-normalised ``(B, d)`` embeddings.

    The collapse monitor of the SimSiam paper: a collapsed network maps every input to one
    point (std -> 0); embeddings spread over the unit sphere give about ``1 / sqrt(d)``.
    """
    if z.shape[0] < 2:
        return float("nan")
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())
