"""SimCLR (Chen et al. 2020): contrast two augmented views of each sinus against the batch.

Encoder -> global average pool ``(B, C)`` -> projector ``Linear(C, C) -> BN -> ReLU ->
Linear(C, 128)`` -> NT-Xent with temperature 0.1 (SimCLR's default for its batch sizes; the
paper's baseline used 0.07). Both views go through the network as one ``2B`` batch, so batch
norm sees both views, as SimCLR's global batch norm does. Under DDP every rank contrasts its
rows with the projections of the whole global batch (gathered from all ranks), as one process.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from paranasal_ssl.baselines.heads import mlp
from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.networks.encoder import ResNetEncoder3D
from paranasal_ssl.training.distributed import current_rows, gather_rows, world_size


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
            anchors: Optional[slice] = None) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy of ``(B, d)`` paired embeddings.

    Each of the ``2B`` embeddings has its pair as the positive and the other ``2B - 2`` as
    negatives; the loss is the mean over all ``2B`` anchors of
    ``-log(exp(s_pos / t) / sum_{k != i} exp(s_ik / t))`` with cosine similarities ``s``.
    Any ``B >= 1`` works (``B = 1`` has no negatives: loss 0); ``cross_entropy`` evaluates the
    log-sum-exp stably, in float32 even under autocast.

    ``anchors`` (distributed training): ``z1``, ``z2`` hold the GLOBAL batch and the mean runs
    over the anchors of these rows only (of both views), each still contrasted with all ``2B``.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    ids = torch.arange(2 * b, device=z.device)
    if anchors is not None:
        ids = torch.cat([ids[:b][anchors], ids[b:][anchors]])
    sim = (z if anchors is None else z[ids]) @ z.t() / temperature  # (anchors, 2B)
    self_pair = ids[:, None] == torch.arange(2 * b, device=z.device)[None, :]
    sim = sim.masked_fill(self_pair, float("-inf"))  # an embedding is not its own negative
    return F.cross_entropy(sim, (ids + b) % (2 * b))  # the positive: the other view


class SimCLR(nn.Module):
    """Encoder + projector trained with NT-Xent on two views ``(B, 1, S, S, S)``."""

    n_views = 2

    def __init__(self, config: EncoderConfig, temperature: float = 0.1, proj_dim: int = 128):
        super().__init__()
        self.encoder = ResNetEncoder3D(config)
        c = self.encoder.out_channels
        self.projector = mlp(c, [c], proj_dim)
        self.temperature = temperature
        self.proj_dim = proj_dim

    def loss(self, views: List[torch.Tensor], gen: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``views``: two ``(B, 1, S, S, S)`` batches -> (NT-Xent loss, first view's ``(B, C)``
        pooled features and ``(B, 128)`` projections, for the collapse statistics)."""
        h = self.encoder.pooled(torch.cat(views))
        z1, z2 = self.projector(h).chunk(2)
        embeddings = {"encoder": h[:len(z1)], "projection": z1}
        rows = current_rows()
        if rows is None or world_size() == 1:
            return nt_xent(z1, z2, self.temperature), embeddings
        # DDP: this rank's anchors against the negatives of the global batch. Scaled by the
        # loop (rows * world / batch) and averaged by DDP, the gradient is the one-process one:
        # the gather's backward sums every rank's gradient with respect to these rows.
        z = gather_rows(torch.cat([z1, z2], dim=1), rows)
        g1, g2 = z.chunk(2, dim=1)
        return nt_xent(g1, g2, self.temperature, anchors=rows.slice), embeddings

    def settings(self) -> Dict[str, object]:
        c = self.encoder.out_channels
        return {"loss": "NT-Xent", "temperature": self.temperature,
                "projector": [c, c, self.proj_dim], "views_in_one_batch": True}
