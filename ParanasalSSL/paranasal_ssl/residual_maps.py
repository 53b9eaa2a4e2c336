"""Residual maps |x - CAE(x)| and the scalings the pretext task, scores and heatmaps use.

All arrays are crops ``(B, 1, S, S, S)`` in normalised intensity space ([0, 1]).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d
from monai.networks.layers.simplelayers import separable_filtering


def median_filter3d(x: torch.Tensor, kernel: int, chunk_voxels: int = 2 ** 24) -> torch.Tensor:
    """3D median filter (cubic ``kernel``, replicate padding) of ``(B, C, D, H, W)``.

    Runs on any device, and gives the same result as scipy's median_filter with mode='nearest'
    (the lower median for an even count). A non-negative input (every residual map) takes a
    sparse path: the median of a neighbourhood is 0 wherever at most half of it is positive,
    so only the voxels with more positive neighbours are computed. An air-gated residual has
    about 3% positive voxels and 0.6% such neighbourhoods, and the filter, which was most of
    stage 2's time, runs many times faster. Work is cut into chunks of ``chunk_voxels`` values.
    """
    if kernel <= 1:
        return x
    p = kernel // 2
    xp = F.pad(x, (p,) * 6, mode="replicate")
    if x.numel() and bool((x >= 0).all()):
        return _median_nonnegative(x, xp, kernel, chunk_voxels)
    per_item = x[0].numel() * kernel ** 3
    step = max(1, chunk_voxels // max(per_item, 1))
    out = []
    for start in range(0, x.shape[0], step):
        u = xp[start:start + step].unfold(2, kernel, 1).unfold(3, kernel, 1).unfold(4, kernel, 1)
        out.append(u.reshape(*u.shape[:5], -1).median(dim=-1).values)
    return torch.cat(out)


def _median_nonnegative(x: torch.Tensor, xp: torch.Tensor, kernel: int,
                        chunk_voxels: int) -> torch.Tensor:
    """``median_filter3d`` of ``x >= 0`` (``xp``: ``x`` replicate-padded by ``kernel // 2``).

    ``torch.median`` of n values is the ((n - 1) // 2)-th smallest (0-based), which is 0 when
    at least (n + 1) // 2 of them are 0: only neighbourhoods with n - (n - 1) // 2 or more
    positive values can have a positive median, and only those are gathered and sorted.
    """
    n = kernel ** 3
    positives = F.avg_pool3d((xp > 0).to(torch.float32), kernel, stride=1) * n
    where = (positives.round() >= n - (n - 1) // 2).nonzero()  # (M, 5): b, c, d, h, w
    out = torch.zeros_like(x)
    if len(where) == 0:
        return out
    r = torch.arange(kernel, device=x.device)
    od, oh, ow = (g.reshape(-1) for g in torch.meshgrid(r, r, r, indexing="ij"))  # (n,) each
    step = max(1, chunk_voxels // n)
    for s in range(0, len(where), step):
        b, c, d, h, w = where[s:s + step].unbind(1)
        values = xp[b[:, None], c[:, None], d[:, None] + od, h[:, None] + oh, w[:, None] + ow]
        out[b, c, d, h, w] = values.median(dim=1).values  # values: (m, n)
    return out


def gaussian_filter3d(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, C, D, H, W)``, ``sigma`` in voxels, kernel cut at
    2 sigma, replicate padding (MONAI's sampled Gaussian, normalised to sum 1)."""
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=2.0, approx="sampled",
                         normalize=True).to(x.device, x.dtype)
    return separable_filtering(x, [kernel] * 3, mode="replicate")


@torch.no_grad()
def raw_residual(cae: torch.nn.Module, x: torch.Tensor, median_kernel: int,
                 sign: str = "positive", air_gate: Optional[float] = None,
                 material_max: Optional[float] = None,
                 gaussian_sigma: Optional[float] = None) -> torch.Tensor:
    """Filtered residual ``(B, 1, S, S, S)`` float32 in intensity units.

    ``sign="abs"``: ``|x - CAE(x)|`` (the paper). ``sign="positive"``: ``max(x - CAE(x), 0)``,
    material where the normal model predicts less. ``air_gate``: keep the residual only where
    ``CAE(x) < air_gate`` (where a normal sinus holds air). ``material_max``: keep it only where
    ``x < material_max`` (on CT: brighter than soft tissue is bone, teeth or metal, never a
    sinus finding). Then a median filter of ``median_kernel`` voxels, or with
    ``gaussian_sigma`` (voxels) a Gaussian instead. A ``CAEEnsemble`` gives the mean of its
    members' residual maps (each gated and filtered as above).
    """
    return raw_residuals(cae, x, [ResidualFilter(median_kernel, sign, air_gate, material_max,
                                                 gaussian_sigma)])[0]


class ResidualFilter(NamedTuple):
    """How one residual map is made from a crop and its reconstruction (see ``raw_residual``;
    ``rows``: the crops of the batch it is wanted for, all when None)."""

    median_kernel: int
    sign: str = "positive"
    air_gate: Optional[float] = None
    material_max: Optional[float] = None
    gaussian_sigma: Optional[float] = None
    rows: Optional[slice] = None


@torch.no_grad()
def raw_residuals(cae: torch.nn.Module, x: torch.Tensor, filters: Sequence[ResidualFilter]
                  ) -> List[torch.Tensor]:
    """One residual map per filter, ``(b, 1, S, S, S)`` each (``b``: the filter's rows), from
    ONE reconstruction of ``x`` by each CAE member: the CAE pass is most of a map's cost, and
    stage 2's map and the focal map differ only after it. Each equals ``raw_residual`` with
    that filter's settings on ``x[rows]``."""
    members = getattr(cae, "members", None) or [cae]
    totals: List[Optional[torch.Tensor]] = [None] * len(filters)
    for member in members:
        recon = member(x).float()
        for k, f in enumerate(filters):
            rows = f.rows if f.rows is not None else slice(None)
            r = _filtered(x[rows].float(), recon[rows], f)
            totals[k] = r if totals[k] is None else totals[k] + r
    return [t / len(members) if len(members) > 1 else t for t in totals]


def _filtered(x: torch.Tensor, recon: torch.Tensor, f: ResidualFilter) -> torch.Tensor:
    """The residual of crops ``x`` against their reconstruction ``recon``, gated and filtered
    as ``f`` says."""
    diff = x - recon
    r = diff.abs() if f.sign == "abs" else diff.clamp_min(0.0)
    if f.air_gate is not None:
        r = r * (recon < f.air_gate)
    if f.material_max is not None:
        r = r * (x < f.material_max)
    if f.gaussian_sigma is not None:
        return gaussian_filter3d(r, f.gaussian_sigma)
    return median_filter3d(r.contiguous(), f.median_kernel)


def residual_filter(config, data, rows: Optional[slice] = None) -> ResidualFilter:
    """The ``ResidualFilter`` of a ``ResidualConfig`` for crops made with the ``DataConfig``
    ``data`` (its CT window turns ``bone_gate_hu`` into input units, its crop spacing turns
    ``gaussian_sigma_mm`` into voxels)."""
    material_max = None
    if config.bone_gate_hu is not None and data.intensity.modality == "ct":
        lo, hi = data.intensity.ct_window_hu
        material_max = (config.bone_gate_hu - lo) / (hi - lo)
    sigma = None
    if config.smoothing == "gaussian":
        sigma = config.gaussian_sigma_mm / data.crop.spacing_mm
    return ResidualFilter(config.median_kernel, config.sign, config.air_gate, material_max,
                          sigma, rows)


def residual_of(cae: torch.nn.Module, x: torch.Tensor, config, data) -> torch.Tensor:
    """``raw_residual`` with the settings of a ``ResidualConfig`` (see ``residual_filter``)."""
    return raw_residuals(cae, x, [residual_filter(config, data)])[0]


def residuals_of(cae: torch.nn.Module, x: torch.Tensor, configs: Sequence, data
                 ) -> List[torch.Tensor]:
    """``residual_of`` for several ``ResidualConfig``s from one CAE pass over ``x``."""
    return raw_residuals(cae, x, [residual_filter(c, data) for c in configs])


def per_crop_rescale(r: torch.Tensor, percentiles: Sequence[float] = (1.0, 99.0)) -> torch.Tensor:
    """Each crop's residual rescaled so its percentiles map to 0 and 1, clipped (the paper's
    pretext target). The median filter commutes with this monotone map, so order is free."""
    flat = r.flatten(1).float()
    q = torch.tensor([percentiles[0] / 100.0, percentiles[1] / 100.0], device=r.device)
    lo_hi = torch.quantile(flat, q, dim=1)  # (2, B)
    lo = lo_hi[0].view(-1, *([1] * (r.dim() - 1)))
    hi = lo_hi[1].view(-1, *([1] * (r.dim() - 1)))
    return ((r - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)


def global_rescale(r: torch.Tensor, scale: float) -> torch.Tensor:
    """Residual in units of ``scale`` (twice the normal-crop quantile), clipped to [0, 1].

    Unlike the per-crop rescale this keeps magnitude: a normal crop stays mostly below 0.5.
    """
    return (r / max(scale, 1e-6)).clamp(0.0, 1.0)


def crop_scores(r: torch.Tensor, region: Optional[torch.Tensor], kind: str = "mean"
                ) -> torch.Tensor:
    """Zero-label anomaly score per crop ``(B,)``: mean, 99th percentile or maximum of the raw
    residual inside ``region`` (the sinus ROI box, ``(B, 1, S, S, S)`` bool) or the whole
    crop."""
    flat = r.flatten(1).float()
    if region is None:
        mask = torch.ones_like(flat, dtype=torch.bool)
    else:
        mask = region.flatten(1).to(flat.device)
    if kind == "mean":
        return (flat * mask).sum(1) / mask.sum(1).clamp_min(1)
    if kind == "max":
        return torch.where(mask, flat, torch.full_like(flat, -torch.inf)).amax(1).clamp_min(0)
    values = torch.where(mask, flat, torch.full_like(flat, float("nan")))
    return torch.nanquantile(values, 0.99, dim=1)
