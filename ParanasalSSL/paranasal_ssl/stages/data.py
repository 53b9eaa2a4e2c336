"""Crops and residual maps as in-memory tensors for training and scoring."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from paranasal_ssl.crop_cache import CropSet, build_crop_set, jitter_offsets
from paranasal_ssl.crops import roi_box_mask
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training import distributed as ddp
from paranasal_ssl.training.distributed import BatchRows


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
    if ddp.world_size() > 1:
        # under torchrun each rank crops its share of the scans into the shared cache first
        # (a scan's sides stay together: it is read once); then everyone reads the cache
        images = list(dict.fromkeys(r.image for r in records))
        mine = set(images[ddp.rank()::ddp.world_size()])
        build_crop_set([r for r in records if r.image in mine], run.config.data,
                       run.cache_dir, n_crops(run), workers=run.workers, stage=stage)
        ddp.barrier()
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


def pick_crops(crops: torch.Tensor, idx: torch.Tensor, gen: torch.Generator,
               rows: Optional[BatchRows] = None) -> torch.Tensor:
    """One random jittered crop per sinus: ``crops`` ``(N, n, 1, S, S, S)``, ``idx`` ``(B,)``
    sinus indices -> ``(B, 1, S, S, S)``. An epoch is one pass over sinuses; over epochs every
    cached jitter is seen. ``rows``: draw for all of ``idx``, return only these rows (DDP)."""
    which = torch.randint(crops.shape[1], (len(idx),), generator=gen)
    if rows is not None:
        idx, which = idx[rows.slice], which[rows.slice]
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
