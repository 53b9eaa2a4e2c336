"""The ResNet-style 3D encoder shared by the pretext network, the baselines and the classifier."""

from __future__ import annotations

from typing import List

import torch
from monai.networks.nets import ResNet
from torch import nn

from paranasal_ssl.experiment import EncoderConfig


class ResNetEncoder3D(nn.Module):
    """MONAI's 3D ResNet without its classification head, returning every stage's features.

    ``forward(x)`` with ``x`` of shape ``(B, 1, S, S, S)`` returns a list of 5 tensors: the stem
    output and layer1..layer4. With the paper's stem (k7, stride 2, max-pool) and S = 64 their
    spatial sizes are 32, 16, 8, 4, 2; ``out_channels`` is ``widths[-1]``.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.net = ResNet(block=config.block, layers=list(config.layers),
                          block_inplanes=list(config.widths), spatial_dims=3, n_input_channels=1,
                          conv1_t_size=config.stem_kernel, conv1_t_stride=config.stem_stride,
                          no_max_pool=not config.max_pool, feed_forward=False)
        # MONAI's ResNet sets its stem width to block_inplanes[0]; bottleneck blocks expand x4
        expansion = 4 if config.block == "bottleneck" else 1
        self.stage_channels = [config.widths[0]] + [w * expansion for w in config.widths]
        self.out_channels = self.stage_channels[-1]
        self.max_pool = config.max_pool
        self.pooling = config.pooling
        del self.net.avgpool  # pooling is the head's job

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        n = self.net
        stem = n.act(n.bn1(n.conv1(x)))
        h = n.maxpool(stem) if self.max_pool else stem
        f1 = n.layer1(h)
        f2 = n.layer2(f1)
        f3 = n.layer3(f2)
        f4 = n.layer4(f3)
        return [stem, f1, f2, f3, f4]

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        """``(B, C, s, s, s)`` last-stage features -> ``(B, C)``: global mean or max
        (``EncoderConfig.pooling``)."""
        if self.pooling == "max":
            return last.amax(dim=(2, 3, 4))
        return last.mean(dim=(2, 3, 4))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled last stage: ``(B, out_channels)``."""
        return self.pool(self.forward(x)[-1])


def build_encoder(config: EncoderConfig) -> ResNetEncoder3D:
    return ResNetEncoder3D(config)
