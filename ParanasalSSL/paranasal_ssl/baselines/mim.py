"""Masked image modelling for the 3D CNN encoder, in the spirit of SparK (Tian et al. 2023).

The crop ``(B, 1, S, S, S)`` is cut into cubic patches of edge ``S / 4`` (a 4 x 4 x 4 grid);
a random 60% of the patches of each crop are masked. Sparse convolutions are not available, so
masking is dense: masked voxels are replaced by one learned value (a mask token, initialised
to 0.5, mid-range of the [0, 1] intensities). The encoder and a light decoder -- the
stage-3 network :class:`ResidualPredictor` (the same ResNet encoder with its U-Net decoder and a
1x1 output convolution) -- reconstruct the crop; the loss is the mean squared error over the
MASKED voxels only (visible voxels would be a copy task). Only the encoder is kept.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.networks.pretext import ResidualPredictor
from paranasal_ssl.training.distributed import current_rows


def random_patch_mask(batch: int, size: int, patch: int, ratio: float,
                      gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(B, 1, size, size, size)`` bool, True where masked: exactly ``round(ratio * n)`` of the
    ``n = ceil(size / patch)^3`` patches of each sample, drawn with ``gen`` (CPU)."""
    g = math.ceil(size / patch)
    n = g ** 3
    k = min(n, max(1, round(ratio * n)))
    ranks = torch.rand(batch, n, generator=gen).argsort(dim=1)
    grid = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, ranks[:, :k], True)
    grid = grid.view(batch, 1, g, g, g)
    for axis in (2, 3, 4):
        grid = grid.repeat_interleave(patch, dim=axis)
    return grid[:, :, :size, :size, :size].contiguous()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               count: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error over the voxels where ``mask`` is True; ``(B, 1, S, S, S)`` each.
    ``count``: the divisor instead of the number of masked voxels (see ``MaskedImageModel``)."""
    m = mask.to(torch.float32)
    err = (pred.float() - target.float()) ** 2
    return (err * m).sum() / (m.sum() if count is None else count).clamp_min(1.0)


class MaskedImageModel(nn.Module):
    """Encoder + U-Net decoder that inpaints masked patches of one view."""

    n_views = 1

    def __init__(self, config: EncoderConfig, crop_shape: int, patch: Optional[int] = None,
                 mask_ratio: float = 0.6):
        super().__init__()
        self.net = ResidualPredictor(config, crop_shape)
        self.crop_shape = crop_shape
        self.patch = patch or max(1, crop_shape // 4)
        self.mask_ratio = mask_ratio
        self.mask_token = nn.Parameter(torch.tensor(0.5))
        self._pooled: Optional[torch.Tensor] = None
        # keep the pooled last encoder stage of each forward for the collapse statistics
        self.net.encoder.register_forward_hook(self._keep_pooled)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def _keep_pooled(self, module, inputs, feats) -> None:
        self._pooled = module.pool(feats[-1]).detach()

    def loss(self, views: List[torch.Tensor], gen: Optional[torch.Generator] = None
             ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``views``: one ``(B, 1, S, S, S)`` batch; masks drawn with ``gen`` -> (masked MSE,
        ``(B, C)`` pooled encoder features of the masked input)."""
        x = views[0]
        rows = current_rows()
        count = None
        if rows is None:
            mask = random_patch_mask(len(x), self.crop_shape, self.patch, self.mask_ratio, gen)
        else:  # DDP: masks drawn for the global batch as one process would; these rows' kept
            mask = random_patch_mask(rows.total, self.crop_shape, self.patch, self.mask_ratio,
                                     gen)
            # divide by the global batch's masked voxels, rescaled to these rows' share: the
            # loop's rows/batch weighting then sums the ranks' losses to the global masked MSE
            count = mask.sum().float() * (rows.size / rows.total)
            mask = mask[rows.slice]
        mask = mask.to(x.device)
        visible = torch.where(mask, self.mask_token.to(x.dtype), x)
        pred = self.net(visible)
        if count is not None:
            count = count.to(x.device)
        return masked_mse(pred, x, mask, count), {"encoder": self._pooled}

    def settings(self) -> Dict[str, object]:
        return {"loss": "MSE on masked voxels", "patch": self.patch,
                "mask_ratio": self.mask_ratio, "mask_fill": "learned scalar (init 0.5)",
                "decoder": "ResidualPredictor U-Net decoder (encoder.decoder_widths)"}
