"""BYOL (Grill et al. 2020): predict a momentum target network's projection of the other view.

Online: encoder -> projector ``Linear(C, 2C) -> BN -> ReLU -> Linear(2C, 128)`` -> predictor
``Linear(128, 2C) -> BN -> ReLU -> Linear(2C, 128)``. Target: an exponential moving average
(EMA) of the online encoder and projector, never trained by gradients (stop-gradient). Loss,
symmetric over the two views: ``(2 - 2 cos(q1, z2')) + (2 - 2 cos(q2, z1'))``, batch means; in
[0, 8]. The EMA rate follows BYOL's cosine schedule from ``base_tau`` (0.99) to 1 over training
and is applied after every optimiser step (``after_step``); batch-norm statistics of the target
are copied from the online network.
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from paranasal_ssl.baselines.heads import mlp, negative_cosine
from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.networks.encoder import ResNetEncoder3D


def byol_tau(step: int, total: int, base_tau: float = 0.99) -> float:
    """EMA rate for update ``step`` (0-based) of ``total``: ``1 - (1 - base)(cos(pi k/K) + 1)/2``,
    ``base_tau`` at the first update, 1 at the end."""
    progress = min(1.0, step / max(1, total))
    return 1.0 - (1.0 - base_tau) * (math.cos(math.pi * progress) + 1.0) / 2.0


class BYOL(nn.Module):
    """Online network (trained) and EMA target (``requires_grad`` off) on two views."""

    n_views = 2

    def __init__(self, config: EncoderConfig, proj_dim: int = 128, base_tau: float = 0.99):
        super().__init__()
        self.encoder = ResNetEncoder3D(config)
        c = self.encoder.out_channels
        self.projector = mlp(c, [2 * c], proj_dim)
        self.predictor = mlp(proj_dim, [2 * c], proj_dim)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_parameters():
            p.requires_grad_(False)
        self.base_tau = base_tau
        self.proj_dim = proj_dim

    def _target_parameters(self):
        yield from self.target_encoder.parameters()
        yield from self.target_projector.parameters()

    def _pairs(self):
        """(online, target) modules whose weights the EMA ties together."""
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def loss(self, views: List[torch.Tensor], gen: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``views``: two ``(B, 1, S, S, S)`` batches -> (symmetric BYOL loss, first view's
        ``(B, C)`` pooled features and ``(B, 128)`` online projections)."""
        x1, x2 = views
        h1 = self.encoder.pooled(x1)  # views separately, as BYOL's reference
        z1, z2 = self.projector(h1), self.projector(self.encoder.pooled(x2))
        q1, q2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():  # stop-gradient: the target is only moved by the EMA
            t1 = self.target_projector(self.target_encoder.pooled(x1))
            t2 = self.target_projector(self.target_encoder.pooled(x2))
        # 2 - 2 cos = squared distance of the L2-normalised vectors
        loss = (2 + 2 * negative_cosine(q1, t2)) + (2 + 2 * negative_cosine(q2, t1))
        return loss, {"encoder": h1, "projection": z1}

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target <- tau * target + (1 - tau) * online`` for the weights; BN buffers copied."""
        for online, target in self._pairs():
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(tau).add_(po.detach(), alpha=1.0 - tau)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)

    def after_step(self, steps_done: int, total_steps: int) -> None:
        self.update_target(byol_tau(steps_done - 1, total_steps, self.base_tau))

    def settings(self) -> Dict[str, object]:
        c = self.encoder.out_channels
        return {"loss": "symmetric 2 - 2 cos(prediction, target projection)",
                "projector": [c, 2 * c, self.proj_dim],
                "predictor": [self.proj_dim, 2 * c, self.proj_dim],
                "ema": f"cosine tau from {self.base_tau} to 1, after every optimiser step",
                "target_bn_buffers": "copied from the online network"}
