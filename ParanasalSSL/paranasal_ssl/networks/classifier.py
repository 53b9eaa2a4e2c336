"""Stage 4: encoder + small MLP head, normal (0) vs anomalous (1). No decoder runs here."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from paranasal_ssl.experiment import EncoderConfig
from paranasal_ssl.networks.encoder import ResNetEncoder3D


class SinusClassifier(nn.Module):
    """``(B, 1, S, S, S)`` crop -> ``(B,)`` anomaly logit.

    Head: global average pool of the last encoder stage, then ``Linear -> ReLU -> Dropout`` per
    hidden width and a final ``Linear(., 1)`` (the paper's 512-256-2 head with one logit instead of
    two softmax outputs: the same model, trained with class-weighted BCE).

    ``prior=True`` adds a linear ``prior`` on the pooled features whose logit is added to the
    head's: fine-tuning from the residual pretext copies the pretext network's sinus-level head
    (a distilled zero-label residual score) into it and zeroes the head's last layer, so with no
    labels the classifier ranks sinuses as the residual does and labels only correct it.
    """

    def __init__(self, config: EncoderConfig, hidden: Sequence[int] = (256,),
                 dropout: float = 0.0, prior: bool = False):
        super().__init__()
        self.encoder = ResNetEncoder3D(config)
        layers, c_in = [], self.encoder.out_channels
        for h in hidden:
            layers += [nn.Linear(c_in, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            c_in = h
        layers.append(nn.Linear(c_in, 1))
        self.head = nn.Sequential(*layers)
        self.prior = nn.Linear(self.encoder.out_channels, 1) if prior else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder.pooled(x)
        logit = self.head(pooled)
        if self.prior is not None:
            logit = logit + self.prior(pooled)
        return logit.squeeze(1)


def build_classifier(config: EncoderConfig, hidden: Sequence[int] = (256,),
                     dropout: float = 0.0, prior: bool = False) -> SinusClassifier:
    return SinusClassifier(config, hidden, dropout, prior)
