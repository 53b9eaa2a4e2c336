"""Stage 1: the paper's 3D convolutional autoencoder (CAE) for normal sinus crops."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from paranasal_ssl.config import to_dict
from paranasal_ssl.experiment import CAEConfig
from paranasal_ssl.hashing import stable_hash

# CAEConfig fields that do not change the network's weights' shapes
TRAINING_FIELDS = ("ensemble", "noise_std", "noise_grid", "foreign_patch_prob",
                   "foreign_patch_radius")
_ACT = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})


class ConvAutoencoder3D(nn.Module):
    """``(B, 1, S, S, S)`` in [0, 1] -> reconstruction of the same shape in [0, 1].

    Encoder: ``len(channels)`` x [Conv3d(k, stride 2), BatchNorm, LeakyReLU] (S -> S / 2^n), a 1x1
    conv to ``bottleneck_channels`` and a linear map to a ``latent_dim`` code. The decoder mirrors
    it with trilinear upsampling (no transposed convolutions: no checkerboard residuals).
    """

    def __init__(self, crop_shape: int, channels=(16, 32, 64), kernel_size: int = 5,
                 bottleneck_channels: int = 4, latent_dim: int = 512):
        super().__init__()
        n = len(channels)
        if crop_shape % (2 ** n):
            raise ValueError(f"crop shape {crop_shape} is not divisible by 2^{n}")
        self.crop_shape = crop_shape
        self.code_shape = (bottleneck_channels,) + (crop_shape // 2 ** n,) * 3
        code_size = bottleneck_channels * (crop_shape // 2 ** n) ** 3
        enc, c_in = [], 1
        for c in channels:
            enc.append(Convolution(3, c_in, c, strides=2, kernel_size=kernel_size, act=_ACT,
                                   norm="batch"))
            c_in = c
        enc.append(Convolution(3, c_in, bottleneck_channels, kernel_size=1, act=_ACT,
                               norm="batch"))
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Linear(code_size, latent_dim)
        self.from_latent = nn.Linear(latent_dim, code_size)
        dec = [Convolution(3, bottleneck_channels, channels[-1], kernel_size=1, act=_ACT,
                           norm="batch")]
        rev = list(channels[::-1])
        for c_hi, c_lo in zip(rev[:-1], rev[1:]):
            dec.append(nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False))
            dec.append(Convolution(3, c_hi, c_lo, kernel_size=kernel_size, act=_ACT,
                                   norm="batch"))
        # mirror of the first encoder layer: back to full size and one channel, no norm/act
        dec.append(nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False))
        dec.append(nn.Conv3d(channels[0], 1, kernel_size=kernel_size, padding=kernel_size // 2))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S, S)`` -> latent code ``(B, latent_dim)``."""
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> reconstruction ``(B, 1, S, S, S)`` in [0, 1]."""
        h = self.from_latent(z).view(z.shape[0], *self.code_shape)
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class CAEEnsemble(nn.Module):
    """Several CAEs of the same architecture (``config.ensemble`` of them, one per seed).

    Stage 2 averages the members' residual maps (``residual_maps.raw_residual`` looks for
    ``members``), not their reconstructions: the mean of the residuals is what was checked on
    the validation split. ``forward`` (the mean reconstruction) exists for code that only
    needs a module, e.g. the batch-norm folding check of ``model_bundle.for_inference``.
    """

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def build_cae(config: CAEConfig, crop_shape: int) -> ConvAutoencoder3D:
    """One CAE (one member of the ensemble) of ``config``'s architecture."""
    return ConvAutoencoder3D(crop_shape, tuple(config.channels), config.kernel_size,
                             config.bottleneck_channels, config.latent_dim)


def cae_signature(config: CAEConfig, crop_shape: int) -> str:
    """Architecture hash a CAE checkpoint is checked against. The ensemble size and the
    denoising noise are left out: they say how many checkpoints there are and how they were
    trained, not what shape their weights have (and runs saved before those fields existed
    keep their signature)."""
    arch = {k: v for k, v in to_dict(config).items() if k not in TRAINING_FIELDS}
    return stable_hash({"cae": arch, "crop": crop_shape})
