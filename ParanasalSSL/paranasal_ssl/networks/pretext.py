"""Stage 3: encoder + U-Net decoder that predicts the CAE residual map from the crop."""

from __future__ import annotations

from typing import List

import torch
from monai.networks.blocks import Convolution
from torch import nn

from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.networks.encoder import ResNetEncoder3D


class _UpBlock(nn.Module):
    """Trilinear x2 upsampling, concatenation with a skip (if any), two conv-BN-ReLU."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv = nn.Sequential(
            Convolution(3, c_in + c_skip, c_out, kernel_size=3, act="relu", norm="batch"),
            Convolution(3, c_out, c_out, kernel_size=3, act="relu", norm="batch"))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class ResidualPredictor(nn.Module):
    """``(B, 1, S, S, S)`` crop -> ``(B, 1, S, S, S)`` residual-map LOGITS (use BCE-with-logits).

    The decoder climbs from the last encoder stage back to the input size, doubling the size at
    each step and concatenating the deepest encoder feature of matching size (U-Net skips).
    """

    def __init__(self, config: EncoderConfig, crop_shape: int, score_head: bool = False):
        super().__init__()
        self.encoder = ResNetEncoder3D(config)
        # optional sinus-level output on the pooled last stage (what the classifier will use)
        self.score_head = nn.Linear(self.encoder.out_channels, 1) if score_head else None
        sizes = self._feature_sizes(crop_shape)
        # deepest feature per spatial size, for the skips
        self._skip_of_size = {}
        for idx, size in enumerate(sizes):
            self._skip_of_size[size] = idx
        size, c_in = sizes[-1], self.encoder.stage_channels[-1]
        blocks, self._skip_index = [], []
        widths = list(config.decoder_widths)
        step = 0
        while size < crop_shape:
            size *= 2
            skip = self._skip_of_size.get(size)
            c_skip = self.encoder.stage_channels[skip] if skip is not None else 0
            c_out = widths[min(step, len(widths) - 1)]
            blocks.append(_UpBlock(c_in, c_skip, c_out))
            self._skip_index.append(skip)
            c_in, step = c_out, step + 1
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv3d(c_in, 1, kernel_size=1)

    def _feature_sizes(self, crop_shape: int) -> List[int]:
        with torch.no_grad():
            was_training = self.encoder.training
            self.encoder.eval()
            feats = self.encoder(torch.zeros(1, 1, crop_shape, crop_shape, crop_shape))
            self.encoder.train(was_training)
        return [int(f.shape[-1]) for f in feats]

    def forward(self, x: torch.Tensor, with_score: bool = False):
        """Map logits ``(B, 1, S, S, S)``; with ``with_score`` also ``(B,)`` score logits."""
        feats = self.encoder(x)
        h = feats[-1]
        for block, skip in zip(self.decoder, self._skip_index):
            h = block(h, feats[skip] if skip is not None else None)
        logits = self.head(h)
        if not with_score:
            return logits
        return logits, self.score_head(self.encoder.pool(feats[-1])).squeeze(1)


def build_pretext(config: EncoderConfig, crop_shape: int,
                  score_head: bool = False) -> ResidualPredictor:
    return ResidualPredictor(config, crop_shape, score_head)
