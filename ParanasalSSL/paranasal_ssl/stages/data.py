"""Crops and residual maps as in-memory tensors for training and scoring."""

from __future__ import annotations

from typing import List, Sequence

import torch

from paranasal_ssl.crop_cache import CropSet, build_crop_set, jitter_offsets
from paranasal_ssl.crops import roi_box_mask
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.stages.run import Run


def n_crops(run: Run) -> int:
    """Crops cached per sinus: enough for training jitter and for test-time averaging."""
    c = run.config.data.crop
    return max(c.train_crops_per_side, c.test_crops_per_side)


def crops_for(run: Run, records: Sequence[SinusRecord], what: str,
              stage: str = "crops") -> CropSet:
    """Crops of ``records`` (cached); refuses an empty result naming ``what`` it was for."""
    if not records:
        raise InputError(run.manifest, f"no sinus available for {what}",
                         expected="a manifest whose splits contain such sinuses")
    crop_set = build_crop_set(records, run.config.data, run.cache_dir, n_crops(run),
                              workers=run.workers, stage=stage)
    if not crop_set.records:
        first = next(iter(crop_set.failures.values()), "unknown reason")
        raise InputError(run.manifest, f"no sinus could be cropped for {what} ({first})")
    return crop_set


def sinus_tensor(crop_set: CropSet, n: int) -> torch.Tensor:
    """``(N, n, 1, S, S, S)`` float16: crops 0..n-1 of every sinus."""
    stacked = crop_set.stacked(n)
    return torch.from_numpy(stacked[:, :, None])


def pick_crops(crops: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random jittered crop per sinus: ``crops`` ``(N, n, 1, S, S, S)``, ``idx`` ``(B,)``
    sinus indices -> ``(B, 1, S, S, S)``. An epoch is one pass over sinuses; over epochs every
    cached jitter is seen."""
    which = torch.randint(crops.shape[1], (len(idx),), generator=gen)
    return crops[idx, which]


def flat_tensor(crop_set: CropSet, n: int) -> torch.Tensor:
    """``(N * n, 1, S, S, S)`` float16: crops 0..n-1 of every sinus, sinus-major."""
    stacked = crop_set.stacked(n)
    return torch.from_numpy(stacked.reshape(-1, 1, *stacked.shape[2:]))


def roi_masks(records: Sequence[SinusRecord], run: Run, n: int) -> torch.Tensor:
    """``(N * n, 1, S, S, S)`` bool: voxels of each cached crop inside its sinus ROI box."""
    crop = run.config.data.crop
    s = crop.shape
    out = torch.zeros(len(records) * n, 1, s, s, s, dtype=torch.bool)
    for i, r in enumerate(records):
        for c, off in enumerate(jitter_offsets(r.key, n, crop.jitter_mm)[:n]):
            out[i * n + c, 0] = torch.from_numpy(roi_box_mask(r.roi, crop, r.side, off))
    return out


def labels_tensor(records: Sequence[SinusRecord]) -> torch.Tensor:
    labels: List[int] = []
    for r in records:
        if r.label is None:
            raise InputError(None, f"sinus {r.key} has no label", field="label")
        labels.append(int(r.label))
    return torch.tensor(labels, dtype=torch.float32)
