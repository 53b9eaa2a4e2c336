"""Label-free reference scores per sinus: a plain intensity score and the focal residual score
(the CAE residual score and the pretext's own sinus-level score come from stages 2 and 3)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from paranasal_ssl.crops import roi_box_mask
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.residual_fusion import FOCAL_NAME, focal_folder, focal_run
from paranasal_ssl.stages.residual_stage import ResidualSet, residual_scores_for_records
from paranasal_ssl.stages.run import Run

# The focal residual (residual_fusion.py): on the development cohorts it ranked sinuses better
# with no label than this method's classifier with 10% of them, so the benchmark shows it
# beside the method's own residual.
__all__ = ["FOCAL_NAME", "central_box", "focal_residual_scores", "intensity_scores",
           "label_free_references"]

# Normalised intensity above which a voxel is "not air": -500 HU in the default CT window
# ([-1000, 600] -> [0, 1]); on MRI, a third of the per-crop 1st-99th percentile range.
NON_AIR_LEVEL = {"ct": (-500.0 + 1000.0) / 1600.0, "mri": 1.0 / 3.0}


def central_box(roi_mask: np.ndarray, keep: float = 0.5) -> np.ndarray:
    """The central ``keep`` fraction (per axis) of a box mask: roughly the sinus interior
    (the ROI box also holds walls and the tissue around a pyramid-shaped cavity)."""
    out = np.zeros_like(roi_mask)
    idx = np.argwhere(roi_mask)
    if idx.size == 0:
        return out
    lo, hi = idx.min(0), idx.max(0) + 1
    c, half = (lo + hi) / 2.0, (hi - lo) * keep / 2.0
    a, b = np.floor(c - half).astype(int), np.ceil(c + half).astype(int)
    out[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = True
    return out & roi_mask


def intensity_scores(run: Run, residuals: ResidualSet, records: Sequence[SinusRecord]
                     ) -> Dict[str, float]:
    """Fraction of non-air voxels in the central half of each sinus box (crop 0).

    The plain baseline a radiologist's eye uses: an opacified sinus is "white". On CT it is hard
    to beat for opacification and is reported honestly beside the learned methods.
    """
    level = NON_AIR_LEVEL[run.config.data.intensity.modality]
    index = {r.key: i for i, r in enumerate(residuals.crops.records)}
    out = {}
    for r in records:
        crop = np.asarray(residuals.crops.crops[index[r.key]][0], np.float32)
        region = central_box(roi_box_mask(r.roi, run.config.data.crop, r.side))
        out[r.key] = float((crop[region] > level).mean()) if region.any() else 0.0
    return out



def focal_residual_scores(run: Run, residuals: ResidualSet, records: Sequence[SinusRecord]
                          ) -> Optional[Dict[str, float]]:
    """Zero-label score per sinus key of ``records`` under the focal residual settings, with
    the run's CAEs (None when the run already uses them). Only these sinuses are computed; their
    maps are cached in ``RUN/external/<residuals' folder>-focal-<focal key>``."""
    focal = focal_run(run)
    if focal.config.residual == run.config.residual:
        return None
    return residual_scores_for_records(focal, records, focal_folder(run, residuals.folder))


def label_free_references(run: Run, residuals: ResidualSet, records: Sequence[SinusRecord],
                          with_prior: bool = True) -> Dict[str, Dict[str, float]]:
    """Score per sinus key of every label-free reference: the zero-label CAE residual, the
    focal residual, the intensity feature and (``with_prior``, when the run has it) the
    residual-pretext classifier before fine-tuning."""
    from paranasal_ssl.stages.evaluate_stage import prior_scores

    references = {"zero-label residual": residuals.scores}
    focal = focal_residual_scores(run, residuals, records)
    if focal is not None:
        references[FOCAL_NAME] = focal
    references["intensity (non-air fraction)"] = intensity_scores(run, residuals, records)
    prior = prior_scores(run, records, residuals) if with_prior else None
    if prior is not None:
        references["residual pretext before fine-tuning"] = prior
    return references
