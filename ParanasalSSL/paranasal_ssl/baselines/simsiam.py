"""SimSiam (Chen & He 2021): predict the other view's projection, with a stop-gradient.

Encoder -> projector ``[Linear -> BN -> ReLU] x 2 -> Linear -> BN(affine=False)`` (widths
``C, 2C, 2C, 2C``) -> predictor bottleneck ``Linear(2C, C/2) -> BN -> ReLU -> Linear(C/2, 2C)``
(SimSiam's 2048 -> 512 -> 2048 ratio of 4). Loss: ``(D(p1, sg(z2)) + D(p2, sg(z1))) / 2`` with
``D`` the negative cosine similarity and ``sg`` the stop-gradient; in [-1, 1]. No momentum
network and no negatives: the stop-gradient and the predictor are what prevent collapse (the
published paper's code ran without them and was collapse-prone).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from paranasal_ssl.baselines.heads import mlp, negative_cosine
from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.networks.encoder import ResNetEncoder3D


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
                 ) -> torch.Tensor:
    """Symmetric negative cosine of ``(B, d)`` predictions ``p`` against DETACHED projections
    ``z`` of the other view: no gradient reaches the target branch."""
    return 0.5 * (negative_cosine(p1, z2.detach()) + negative_cosine(p2, z1.detach()))


class SimSiam(nn.Module):
    """Encoder + projector + predictor, one set of weights for both views."""

    n_views = 2

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.encoder = ResNetEncoder3D(config)
        c = self.encoder.out_channels
        self.dim, self.bottleneck = 2 * c, max(8, c // 2)
        self.projector = mlp(c, [self.dim, self.dim], self.dim, last_bn=True)
        self.predictor = mlp(self.dim, [self.bottleneck], self.dim)

    def loss(self, views: List[torch.Tensor], gen: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``views``: two ``(B, 1, S, S, S)`` batches -> (SimSiam loss, first view's ``(B, C)``
        pooled features and ``(B, 2C)`` projections). The projections end in an affine-free
        batch norm, so in training mode their spread is fixed near 1/sqrt(2C): watch the
        encoder's for collapse."""
        x1, x2 = views
        h1 = self.encoder.pooled(x1)  # views separately, as SimSiam's reference
        z1, z2 = self.projector(h1), self.projector(self.encoder.pooled(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return simsiam_loss(p1, p2, z1, z2), {"encoder": h1, "projection": z1}

    def settings(self) -> Dict[str, object]:
        c = self.encoder.out_channels
        return {"loss": "symmetric negative cosine with stop-gradient",
                "projector": [c, self.dim, self.dim, self.dim, "BN(affine=False)"],
                "predictor": [self.dim, self.bottleneck, self.dim], "momentum": None}
