"""Batch augmentation on the training device, one random draw per sample.

Spatial transforms (left-right flip, small affine) are applied with the SAME parameters to the
crop and to any dense target (the residual map), so the target stays registered to its input.
Intensity transforms (noise, blur, contrast) touch the input only: the target is what the CAE
saw, not what the augmentation made. Flips are left-right only: flipping superior-inferior or
anterior-posterior would break gravity-dependent findings (fluid levels, floor cysts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from paranasal_ssl.training.distributed import BatchRows


@dataclass
class AugmentConfig:
    p_flip: float = 0.5
    p_affine: float = 0.5
    scale: Tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0
    translate_frac: float = 0.06  # of the crop edge (~4 mm on a 64 mm crop)
    p_noise: float = 0.3
    noise_std: float = 0.03
    p_blur: float = 0.2
    p_contrast: float = 0.3
    gamma: Tuple[float, float] = (0.8, 1.25)


def augment(x: torch.Tensor, target: Optional[torch.Tensor], gen: torch.Generator,
            cfg: Optional[AugmentConfig] = None, rows: Optional[BatchRows] = None
            ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Augment ``x`` ``(B, 1, D, H, W)`` in [0, 1] and a dense ``target`` of the same size.

    ``gen`` is a CPU generator: every draw comes from it (on a GPU the noise comes from
    per-sample seeds drawn from it), so a run resumed from a checkpoint sees the same
    augmentations as an uninterrupted one. The noise differs between CPU and GPU runs (see
    below); the other transforms do not.

    ``rows`` (distributed training): ``x`` holds only rows ``rows.slice`` of a global batch of
    ``rows.total``. Every random value is then drawn for the whole global batch, in the same
    order as one process would (including the draws made only when ANY sample of the batch
    needs them), and these rows keep theirs: each rank augments its samples exactly as the
    single-process run does.
    """
    cfg = cfg or AugmentConfig()
    rows = rows or BatchRows(0, x.shape[0], x.shape[0])
    if rows.size != x.shape[0]:
        raise ValueError(f"augment: {x.shape[0]} samples for rows {rows}")
    total, keep, b = rows.total, rows.slice, rows.size
    dev = x.device

    def chosen(p: float) -> torch.Tensor:
        """Which rows of the global batch a transform of probability ``p`` reaches (on the
        CPU: deciding what to do never waits for the GPU)."""
        return torch.rand(total, generator=gen) < p

    # A draw gated by "any sample of the batch needs it" tests the GLOBAL flags (so every rank
    # consumes the generator as one process does); gates without draws test the local ones.
    flip = chosen(cfg.p_flip)[keep]
    if flip.any():
        flip = flip.to(dev).view(b, 1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)  # axis i = left-right
        if target is not None:
            target = torch.where(flip, target.flip(-1), target)
    affine_all = chosen(cfg.p_affine)
    if affine_all.any():
        theta = _random_affine(total, gen, cfg)[keep]
        use = affine_all[keep]
        if use.any():
            # only the rows drawn for it: the others are left as they are (a resampling with
            # the identity returns a 32^3 crop exactly and others within ~1e-6), at no cost
            grid = F.affine_grid(theta[use].to(dev), [int(use.sum()), *x.shape[1:]],
                                 align_corners=False)
            where = _row_index(use, dev)
            x = _resample_rows(x, where, grid)
            if target is not None:
                target = _resample_rows(target, where, grid)
    gamma_all = chosen(cfg.p_contrast)
    if gamma_all.any():
        lo, hi = cfg.gamma
        g = torch.exp(torch.rand(total, generator=gen) * (math.log(hi) - math.log(lo))
                      + math.log(lo))
        g = torch.where(gamma_all, g, torch.ones_like(g))[keep].to(dev).view(b, 1, 1, 1, 1)
        x = x.clamp(0, 1) ** g
    blur_on = chosen(cfg.p_blur)[keep]
    if blur_on.any():
        # only the rows drawn for it (a fifth of them): each crop is blurred on its own, so
        # they get the values a blur of the whole batch would give, at a fifth of the cost
        where = _row_index(blur_on, dev)
        x = x.index_copy(0, where, _blur(x.index_select(0, where)))
    noise_all = chosen(cfg.p_noise)
    if noise_all.any():
        use = noise_all[keep]
        if dev.type == "cpu":
            # the whole global batch's noise from the CPU generator: every result made on a
            # CPU so far drew it so, and stays reproducible
            noise = torch.randn(total, *x.shape[1:], generator=gen)[keep] * cfg.noise_std
            x = x + noise * use.view(b, 1, 1, 1, 1)
        else:
            # One seed per sample, noise for the drawn rows only, made on the GPU: the CPU
            # draw above took 0.18 s a step of 128 crops of 64^3 (33 M values on one core),
            # and the GPU waited for it: on an H200 the pretext epoch ran at 0.64 of the
            # network's own speed, 1.05 with this. A row's noise depends on its seed alone,
            # so each rank makes exactly the single-process noise of its rows.
            seeds = torch.randint(2 ** 62, (total,), generator=gen)[keep]
            x = seeded_noise(x, use, seeds, cfg.noise_std)
    return x.clamp(0.0, 1.0), target


def seeded_noise(x: torch.Tensor, rows: torch.Tensor, seeds: torch.Tensor,
                 std: float) -> torch.Tensor:
    """``x`` ``(B, C, D, H, W)`` plus Gaussian noise of ``std`` on its ``rows`` (a CPU boolean
    mask), each row's noise drawn on ``x``'s device from a generator seeded with its entry of
    ``seeds`` ``(B,)`` (CPU int64): the same row and seed give the same noise in any batch."""
    if not rows.any():
        return x
    gen = torch.Generator(device=x.device)
    noise = torch.stack([torch.randn(x.shape[1:], generator=gen.manual_seed(int(seeds[i])),
                                     device=x.device, dtype=x.dtype)
                         for i in rows.nonzero().flatten().tolist()])
    return x.index_add(0, _row_index(rows, x.device), noise, alpha=std)


def _row_index(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The positions of a CPU boolean mask's True rows, on ``device``: indexing a GPU batch
    with these does not stop the host to count them, as a boolean mask on the GPU would."""
    return rows.nonzero().flatten().to(device)


def _resample_rows(x: torch.Tensor, rows: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``x`` with its ``rows`` (positions, on ``x``'s device) resampled on ``grid`` (one per
    such row); border padding: the crop edge continues instead of a black frame appearing."""
    picked = F.grid_sample(x.index_select(0, rows), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    return x.index_copy(0, rows, picked)


def _random_affine(b: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """``(B, 3, 4)`` matrices for ``affine_grid``: rotation about each axis, isotropic scale,
    translation."""
    ang = (torch.rand(b, 3, generator=gen) * 2 - 1) * math.radians(cfg.rotate_deg)
    lo, hi = cfg.scale
    s = torch.rand(b, generator=gen) * (hi - lo) + lo
    t = (torch.rand(b, 3, generator=gen) * 2 - 1) * cfg.translate_frac * 2  # grid spans [-1, 1]
    cx, cy, cz = torch.cos(ang).unbind(1)
    sx, sy, sz = torch.sin(ang).unbind(1)
    one, zero = torch.ones(b), torch.zeros(b)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(b, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(b, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(b, 3, 3)
    r = rz @ ry @ rx / s.view(b, 1, 1)
    return torch.cat([r, t.view(b, 3, 1)], dim=2)


def _blur(x: torch.Tensor, sigma: float = 0.8) -> torch.Tensor:
    """Separable Gaussian blur (kernel 5, replicate padding) over the three spatial axes of
    ``(B, C, D, H, W)``, as five shifted, weighted copies per axis: element-wise arithmetic, so
    a crop's result does not depend on the batch around it (a convolution's can move by float
    rounding with the batch size), and 25x faster on CPU than a 1-D ``conv3d`` per axis."""
    k = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    out = x
    for axis in range(3):
        dim, n = 2 + axis, x.shape[2 + axis]
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 2
        padded = F.pad(out, pad, mode="replicate")
        acc = padded.narrow(dim, 0, n) * k[0]
        for j in range(1, 5):
            acc = acc + padded.narrow(dim, j, n) * k[j]
        out = acc
    return out


def coarse_noise(x: torch.Tensor, grid: int, std: float, gen: torch.Generator,
                 rows: Optional[BatchRows] = None) -> torch.Tensor:
    """Smooth Gaussian noise for a denoising CAE, ``(B, 1, S, S, S)`` like ``x``.

    Drawn on a ``grid^3`` lattice (std ``std``, intensity units of the [0, 1] crop) and
    upsampled trilinearly, so it forms blobs of ``S / grid`` voxels rather than speckle: the
    "coarse noise" of Kascenas et al. (MIDL 2022), whose denoising autoencoder learns to remove
    blob-sized departures from normal anatomy, the scale of sinus findings, instead of copying
    them. Drawn for the whole global batch (``rows``: this process's share), like ``augment``.
    """
    rows = rows or BatchRows(0, x.shape[0], x.shape[0])
    lattice = torch.randn(rows.total, 1, grid, grid, grid, generator=gen)[rows.slice]
    noise = F.interpolate(lattice.to(x.device), size=x.shape[2:], mode="trilinear",
                          align_corners=False)
    return noise.to(x.dtype) * std
