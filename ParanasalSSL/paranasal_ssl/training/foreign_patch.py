"""Foreign patches: a self-supervised corruption that a "healing" CAE learns to undo.

A plain autoencoder with enough capacity copies whatever it is shown, findings included: on
the phantom CT cohort the CAE reconstructs a completely opacified sinus as soft tissue, so the
residual there is near zero. Pasting a piece of the crop's own anatomy, moved from elsewhere,
into a random ellipsoid and training the CAE to give back the clean crop (as in foreign-patch
interpolation, Tan et al. 2022, and CutPaste, Li et al. 2021) teaches it to replace material
that does not belong at a place by what normal anatomy puts there: air inside the sinus. No
finding model is used: the patch is whatever the crop holds elsewhere (bone, soft tissue, air).
"""

from __future__ import annotations

from typing import Optional

import torch

from paranasal_ssl.training.distributed import BatchRows


def foreign_patches(x: torch.Tensor, prob: float, max_radius: float, gen: torch.Generator,
                    rows: Optional[BatchRows] = None) -> torch.Tensor:
    """``x`` ``(B, 1, S, S, S)`` with a foreign patch blended into a fraction ``prob`` of crops.

    Per corrupted crop: an ellipsoid centred in the middle half of the crop (where the sinus
    is), semi-axes uniform in [1.5, ``max_radius`` * S] voxels each, filled with the crop
    itself rolled by a random shift of up to S / 2 voxels per axis, blended with weight
    uniform in [0.5, 1] and a one-voxel soft edge. Every value is drawn for the global batch
    (``rows``: this process's share), so a distributed run corrupts as one process does.
    """
    rows = rows or BatchRows(0, x.shape[0], x.shape[0])
    total, keep = rows.total, rows.slice
    s = x.shape[-1]
    apply = (torch.rand(total, generator=gen) < prob)[keep]
    centre = (s / 4 + torch.rand(total, 3, generator=gen) * s / 2)[keep]
    radii = (1.5 + torch.rand(total, 3, generator=gen) * max(max_radius * s - 1.5, 0.0))[keep]
    shift = torch.randint(-(s // 2), s // 2 + 1, (total, 3), generator=gen)[keep]
    weight = (0.5 + 0.5 * torch.rand(total, generator=gen))[keep]
    if not bool(apply.any()):
        return x
    grid = torch.arange(s, dtype=torch.float32, device=x.device)
    out = x.clone()
    for b in apply.nonzero().flatten().tolist():
        c, r = centre[b].to(x.device), radii[b].to(x.device)
        dist = (((grid[:, None, None] - c[0]) / r[0]) ** 2
                + ((grid[None, :, None] - c[1]) / r[1]) ** 2
                + ((grid[None, None, :] - c[2]) / r[2]) ** 2).sqrt()  # 1 on the surface
        # soft edge about one voxel wide: ramp from 1 inside to 0 one voxel outside
        edge = ((1.0 - dist) * r.min() + 1.0).clamp(0.0, 1.0) * float(weight[b])
        donor = torch.roll(x[b], shifts=tuple(shift[b].tolist()), dims=(1, 2, 3))
        out[b] = x[b] * (1 - edge.to(x.dtype)) + donor * edge.to(x.dtype)
    return out
