"""Normalised sinus crops for a manifest, computed once per configuration and cached on disk.

Each sinus gets ``n`` crops: crop 0 centred on the ROI, crops 1..n-1 jittered by a seeded random
offset of up to ``jitter_mm`` per axis (the same offsets every time for the same sinus). A scan is
read once for both of its sides. Cache files live in ``CACHE/crops-<config key>/<sinus key>.npy``
(float16, ``(n, S, S, S)``, values in [0, 1]) with the ground-truth anomaly mask of crop 0 beside
it (``.mask.npy``, uint8 codes) when the manifest names a mask. A bad case is reported and
skipped; the others go on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from paranasal_ssl.atomic import atomic_path
from paranasal_ssl.config import DataConfig, to_dict
from paranasal_ssl.crops import extract_crop, normalise
from paranasal_ssl.errors import InputError
from paranasal_ssl.hashing import (
    content_key,
    content_key_known,
    load_content_memo,
    save_content_memo,
    stable_hash,
)
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.progress import Progress
from paranasal_ssl.scan_io import read_scan, reader_version

log = logging.getLogger(__name__)
CACHE_FORMAT = 1  # bump when the crop code changes what it writes


def jitter_offsets(key: str, n: int, jitter_mm: float) -> np.ndarray:
    """``(n, 3)`` offsets in mm along the ROI axes; row 0 is zero. Seeded by the sinus key."""
    seed = int(stable_hash(key, 8), 16)
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-jitter_mm, jitter_mm, size=(n, 3))
    offsets[0] = 0.0
    return offsets


def config_key(data: DataConfig, n_crops: int) -> str:
    return stable_hash({"format": CACHE_FORMAT, "crop": to_dict(data.crop),
                        "intensity": to_dict(data.intensity), "n": n_crops}, 12)


def record_key(record: SinusRecord) -> str:
    """Cache key of a sinus: what its scan and mask files hold (not where they are, so a cohort
    copied or moved with its caches is not cropped again), its side, ROI and case id, and for
    inputs whose reading has changed (DICOM, sheared NIfTI: ``scan_io.reader_version``) which
    reading code made the crops."""
    key = {"image": content_key(record.image), "side": record.side,
           "roi": record.roi.to_dict(), "case": record.case_id,
           "mask": content_key(record.mask) if record.mask else None}
    reader = reader_version(record.image)
    if reader is not None:  # other scans keep the keys their caches were made with
        key["reader"] = reader
    return stable_hash(key, 16)


@dataclass
class CropSet:
    """Crops of a list of sinuses.

    ``crops[i]``: ``(n, S, S, S)`` float16 array (memory-mapped) for ``records[i]``;
    ``masks[i]``: ``(S, S, S)`` uint8 anomaly codes of crop 0, or None; ``failures``: sinus key ->
    reason for the sinuses that could not be cropped (left out of ``records``).
    """

    records: List[SinusRecord]
    crops: List[np.ndarray]
    masks: List[Optional[np.ndarray]]
    failures: Dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if r.label is None else r.label for r in self.records])

    def subset(self, keys: Sequence[str]) -> CropSet:
        index = {r.key: i for i, r in enumerate(self.records)}
        idx = [index[k] for k in keys if k in index]
        return CropSet([self.records[i] for i in idx], [self.crops[i] for i in idx],
                       [self.masks[i] for i in idx], dict(self.failures))

    def stacked(self, n: Optional[int] = None) -> np.ndarray:
        """All crops in memory: ``(N, n, S, S, S)`` float16."""
        return np.stack([np.asarray(c[:n]) for c in self.crops]) if self.crops else np.zeros(0)


def build_crop_set(records: Sequence[SinusRecord], data: DataConfig, cache_dir: Path,
                   n_crops: int, workers: int = 0, stage: str = "crops") -> CropSet:
    """Crop every record (from cache where possible). See the module docstring."""
    folder = Path(cache_dir) / f"crops-{config_key(data, n_crops)}"
    folder.mkdir(parents=True, exist_ok=True)
    memo = Path(cache_dir) / "content_keys.json"  # scans are hashed once per cache, not per call
    known = load_content_memo(memo)
    _fingerprint_new_scans(records, f"{stage}: reading new scans")
    keys = {r.key: record_key(r) for r in records}
    save_content_memo(memo, known)
    todo: Dict[Path, List[SinusRecord]] = defaultdict(list)
    for r in records:
        if not (folder / f"{keys[r.key]}.npy").exists():
            todo[r.image].append(r)
    failures: Dict[str, str] = {}
    if todo:
        jobs = list(todo.items())
        with Progress(stage, total=len(jobs), unit="scan") as progress:
            for _image, errors in _run_jobs(jobs, data, folder, keys, n_crops, workers):
                failures.update(errors)
                progress.update(1)
        for key, why in failures.items():
            log.warning("skipped %s: %s", key, why)
    kept, crops, masks = [], [], []
    for r in records:
        path = folder / f"{keys[r.key]}.npy"
        if r.key in failures or not path.exists():
            failures.setdefault(r.key, "not cropped")
            continue
        kept.append(r)
        crops.append(np.load(path, mmap_mode="r"))
        mask_path = folder / f"{keys[r.key]}.mask.npy"
        masks.append(np.load(mask_path) if mask_path.exists() else None)
    return CropSet(kept, crops, masks, failures)


def _fingerprint_new_scans(records: Sequence[SinusRecord], stage: str) -> None:
    """Hash the scans and masks this cache has not met yet, with a progress bar: the first
    time, a real cohort's files are read once in full (about a minute for 1,000 CTs of
    100 MB), which would otherwise pass in silence before the crops' own bar starts."""
    paths = {p for r in records for p in (r.image, r.mask) if p}
    new = sorted(str(p) for p in paths if not content_key_known(p))
    if not new:
        return
    with Progress(stage, total=len(new), unit="file") as progress:
        for path in new:
            content_key(path)
            progress.update(1)


def _run_jobs(jobs, data, folder, keys, n_crops, workers):
    if workers <= 1 or len(jobs) == 1:  # a pool of one only adds start-up time
        for image, recs in jobs:
            yield image, _crop_case(image, recs, data, folder, keys, n_crops)
        return
    # spawn, not fork: forking a process that already runs torch/OpenMP threads can deadlock
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                             initializer=_limit_threads) as pool:
        futures = {pool.submit(_crop_case, image, recs, data, folder, keys, n_crops): image
                   for image, recs in jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _limit_threads() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _crop_case(image_path: Path, records: List[SinusRecord], data: DataConfig, folder: Path,
               keys: Dict[str, str], n_crops: int) -> Dict[str, str]:
    """Crop all sides of one scan into the cache; returns {sinus key: error} for failures."""
    errors: Dict[str, str] = {}
    try:
        image = read_scan(image_path)
    except InputError as exc:
        return {r.key: str(exc) for r in records}
    mask_image = None
    for r in records:
        try:
            if r.mask is not None and mask_image is None:
                mask_image = read_scan(r.mask)
            stack = np.empty((n_crops,) + (data.crop.shape,) * 3, np.float16)
            offsets = jitter_offsets(r.key, n_crops, data.crop.jitter_mm)
            for c in range(n_crops):
                crop, _ = extract_crop(image, r.roi, data.crop, r.side,
                                       data.intensity.pad_value, offsets[c], source=str(r.image))
                stack[c] = normalise(crop, data.intensity)
            if mask_image is not None:
                nearest = type(data.crop)(**{**to_dict(data.crop), "interpolation": "nearest"})
                m, _ = extract_crop(mask_image, r.roi, nearest, r.side, 0.0, source=str(r.mask))
                with atomic_path(folder / f"{keys[r.key]}.mask.npy") as tmp:
                    np.save(tmp, m.astype(np.uint8), allow_pickle=False)
            with atomic_path(folder / f"{keys[r.key]}.npy") as tmp:
                np.save(tmp, stack, allow_pickle=False)
        except (InputError, RuntimeError) as exc:
            errors[r.key] = str(exc)
    return errors
