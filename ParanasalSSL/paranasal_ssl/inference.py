"""Analyse one scan: per side the anomaly probability (averaged over jittered crops), the CAE
residual heatmap and its thresholded region, mapped back into the scan's own geometry.

Arrays in the scan grid are indexed ``[k, j, i]`` like ``sitk.GetArrayFromImage(scan)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from paranasal_ssl.box_sides import box_side_notes
from paranasal_ssl.crop_cache import jitter_offsets
from paranasal_ssl.crops import extract_crop, normalise, paste, roi_box_mask, uncrop
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import REGION_CODES, SinusROI, check_side, lps_to_ras, ras_to_lps
from paranasal_ssl.head_frame import Midplane
from paranasal_ssl.modality import detect_modality, modality_evidence
from paranasal_ssl.model_bundle import ModelBundle, load_model
from paranasal_ssl.residual_maps import (
    crop_scores,
    global_rescale,
    raw_residuals,
    residual_filter,
    residual_of,
)
from paranasal_ssl.training.device import to_input

log = logging.getLogger(__name__)
DEFAULT_REGION_THRESHOLD = 0.5  # heatmap 0.5 = the 99.9th percentile of normal residuals


@dataclass
class SidePrediction:
    """One sinus. ``probability`` in [0, 1]; ``call`` normal / uncertain / anomalous;
    ``peak_ras`` RAS mm of the strongest residual (the box centre where there is none, with
    ``peak_value`` 0); ``region_volume_ml`` of the thresholded
    heatmap; ``residual_score`` the zero-label score. A model with a residual fusion
    (``residual_fusion.py``) also gives ``classifier_probability`` (the classifier alone) and
    ``focal_residual_score`` (crop-averaged); ``probability`` is then the fused one."""

    side: str
    roi: SinusROI
    probability: float
    crop_probabilities: List[float]
    call: str
    residual_score: float
    peak_ras: Tuple[float, float, float]
    peak_value: float
    region_volume_ml: float
    classifier_probability: Optional[float] = None
    focal_residual_score: Optional[float] = None

    def to_dict(self) -> dict:
        fused = {} if self.classifier_probability is None else {
            "classifier_probability": round(self.classifier_probability, 6),
            "focal_residual_score": self.focal_residual_score}
        return {"side": self.side, "probability": round(self.probability, 6), **fused,
                "call": self.call, "crop_probabilities": [round(p, 6) for p in
                                                          self.crop_probabilities],
                "residual_score": self.residual_score,
                "peak_ras": [round(v, 2) for v in self.peak_ras],
                "peak_value": round(self.peak_value, 4),
                "region_volume_ml": round(self.region_volume_ml, 4), "roi": self.roi.to_dict()}


@dataclass
class ScanPrediction:
    """Both sides of a scan plus the heatmap (float32, [0, 1]) and region (uint8: 1 left,
    2 right) as arrays in the scan's grid; ``reference`` carries the scan geometry."""

    sides: Dict[str, SidePrediction]
    heatmap: np.ndarray
    region: np.ndarray
    reference: sitk.Image
    model: dict = field(default_factory=dict)
    threshold: float = DEFAULT_REGION_THRESHOLD
    box_notes: List[str] = field(default_factory=list)  # a box on the other half of the head
    tta_crops: int = 1  # jittered crops averaged per side

    def heatmap_image(self) -> sitk.Image:
        return _like(self.heatmap, self.reference)

    def region_image(self) -> sitk.Image:
        return _like(self.region, self.reference)

    def summary(self) -> dict:
        out = {"model": self.model, "region_threshold": self.threshold,
               "tta_crops": self.tta_crops,
               "sides": {s: p.to_dict() for s, p in self.sides.items()}}
        if self.box_notes:
            out["box_notes"] = list(self.box_notes)
        return out


def call_band(band: Tuple[float, float], threshold: Optional[float]) -> Tuple[float, float]:
    """The uncertain band around the model's decision threshold: ``band`` (configured around
    0.5) moved in logit space so that its middle is ``threshold``. Keeps the call on the same
    side as the decision (review's model label, evaluate's confusion counts): with a threshold
    of 0.2 a side at p = 0.3 is anomalous, not normal. No threshold: ``band`` as it is."""
    if threshold is None:
        return tuple(band)
    lo, hi = (float(np.clip(v, 1e-6, 1 - 1e-6)) for v in band)
    shift = _logit(float(np.clip(threshold, 1e-3, 1 - 1e-3))) - (_logit(lo) + _logit(hi)) / 2
    return tuple(round(float(1 / (1 + np.exp(-(_logit(v) + shift)))), 4) for v in (lo, hi))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def classify_call(p: float, band: Tuple[float, float]) -> str:
    """'normal' below the band, 'anomalous' above it, 'uncertain' inside it."""
    lo, hi = band
    return "normal" if p < lo else ("anomalous" if p > hi else "uncertain")


def predict_scan(image: sitk.Image, rois: Dict[str, SinusROI],
                 model: Union[ModelBundle, str, Path], device: str = "auto",
                 tta_crops: Optional[int] = None, threshold: float = DEFAULT_REGION_THRESHOLD,
                 check_modality: bool = True, source: Optional[str] = None,
                 midplane: Optional[Midplane] = None) -> ScanPrediction:
    """Analyse ``image`` (a SimpleITK scan) for each side in ``rois`` (RAS mm boxes).
    ``midplane``: the head's mid-plane when known (from a ROI suggestion on this scan), for
    the wrong-side box check; searched otherwise.

    Networks run under ``torch.inference_mode`` (no autograd bookkeeping at all)."""
    bundle = model if isinstance(model, ModelBundle) else load_model(model, device)
    if not rois:
        raise InputError(source, "no sinus ROI given", field="roi",
                         expected="a left and/or right ROI in RAS millimetres")
    cfg = bundle.config
    seen = detect_modality(image)
    if check_modality and seen != bundle.modality:
        raise InputError(source, f"the scan looks like {seen.upper()} "
                         f"({modality_evidence(image)}) but the model was trained on "
                         f"{bundle.modality.upper()}", field="modality",
                         expected=f"{_article(bundle.modality)} {bundle.modality.upper()} scan"
                         + (" in Hounsfield units (air near -1000; a CT stored without its "
                            "rescale intercept reads as MRI)" if bundle.modality == "ct"
                            else "") + f", or {_article(seen)} {seen.upper()} model")
    box_notes = box_side_notes(image, rois, source, seen, midplane)  # a swapped pair raises
    for note in box_notes:
        log.warning("%s: %s", source or "scan", note)
    n = tta_crops or cfg.data.crop.test_crops_per_side
    grid_shape = tuple(reversed(image.GetSize()))
    heatmap = np.zeros(grid_shape, np.float32)
    region = np.zeros(grid_shape, np.uint8)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    band = call_band(tuple(bundle.info.get("uncertain_band", cfg.finetune.uncertain_band)),
                     bundle.info.get("threshold"))
    sides: Dict[str, SidePrediction] = {}
    # every crop of every side first, then ONE classifier and ONE CAE forward pass: a batch of
    # 2 x n crops keeps 2 CPU cores busier than two batches of n
    batches, geoms, side_offsets = [], {}, {}
    for side_name, roi in rois.items():
        side = check_side(side_name)
        # Test-time jitter depends on the side only: the same image gives the same answer
        # whatever its file is called (a temporary copy in Slicer, the original on disk).
        offsets = jitter_offsets(f"test-time:{side}", n, cfg.data.crop.jitter_mm)
        side_offsets[side] = offsets[:n]
        for c in range(n):
            crop, geom = extract_crop(image, roi, cfg.data.crop, side, cfg.data.intensity.pad_value,
                                      offsets[c], source=source)
            batches.append(normalise(crop, cfg.data.intensity))
            geoms.setdefault(side, geom)
    with torch.inference_mode():
        x = to_input(torch.from_numpy(np.stack(batches))[:, None], bundle.device)
        all_probs = torch.sigmoid(bundle.classifier(x).float()).cpu().numpy().reshape(-1, n)
        # the heatmap: crop 0 of each side; the fused score: every crop (averaged like the
        # classifier's), from the same CAE pass
        fusion = bundle.fusion
        if fusion is None:
            residuals = residual_of(bundle.cae, x[::n], cfg.residual, cfg.data).cpu()
        else:
            focal_cfg = fusion.residual_config()
            residuals, focal = (m.cpu() for m in raw_residuals(bundle.cae, x, [
                residual_filter(cfg.residual, cfg.data, rows=slice(None, None, n)),
                residual_filter(focal_cfg, cfg.data)]))
    for k, (side_name, roi) in enumerate(rois.items()):
        side = check_side(side_name)
        probs, r, geom0 = all_probs[k], residuals[k:k + 1], geoms[side]
        box = torch.from_numpy(roi_box_mask(roi, cfg.data.crop, side))[None, None]
        score = float(crop_scores(r, box, cfg.residual.score)[0])
        heat = global_rescale(r, bundle.heatmap_scale)[0, 0].numpy() * box[0, 0].numpy()
        values, sl = uncrop(heat, geom0, image)
        paste(heatmap, values, sl, mode="max")
        side_region = (values >= threshold) & (values > 0)
        code = REGION_CODES[side]
        region[sl][side_region] = code
        peak_lps, peak_value = strongest_residual(values, sl, image, roi)
        p = classifier_p = float(probs.mean())
        focal_score = None
        if fusion is not None:
            boxes = torch.from_numpy(np.stack([roi_box_mask(roi, cfg.data.crop, side, off)
                                               for off in side_offsets[side]]))[:, None]
            focal_score = float(crop_scores(focal[k * n:(k + 1) * n], boxes,
                                            focal_cfg.score).mean())
            p = float(fusion.probability([classifier_p], [focal_score])[0])
        sides[side] = SidePrediction(
            side=side, roi=roi, probability=p, crop_probabilities=probs.tolist(),
            call=classify_call(p, band), residual_score=score,
            peak_ras=tuple(float(v) for v in lps_to_ras(peak_lps)), peak_value=peak_value,
            region_volume_ml=float(side_region.sum()) * voxel_ml,
            classifier_probability=classifier_p if fusion is not None else None,
            focal_residual_score=focal_score)
    info = {"name": bundle.name, "modality": bundle.modality,
            "code_version": bundle.info.get("code_version"),
            "label_fraction": bundle.info.get("label_fraction"),
            "decision_threshold": bundle.info.get("threshold"), "uncertain_band": list(band),
            "residual_fusion": bundle.fusion is not None}
    return ScanPrediction(sides, heatmap, region, image, info, threshold, box_notes, n)


def _article(modality: str) -> str:
    return "an" if modality == "mri" else "a"  # "an MRI", "a CT"


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def strongest_residual(values: np.ndarray, box: Tuple[slice, slice, slice], image: sitk.Image,
                       roi: SinusROI) -> Tuple[Tuple[float, float, float], float]:
    """(LPS mm, value) of the heatmap's maximum: ``values`` covers the scan voxels ``box``
    (``uncrop``'s answer). Where the heatmap is zero throughout (no residual in the box) the
    box centre, value 0: the argmax of zeros would be the corner of the crop's bounding box,
    tens of mm away, and Slicer and the review jump to this point."""
    if values.size == 0 or not values.max() > 0:
        return tuple(ras_to_lps(roi.center)), 0.0
    index = np.unravel_index(int(np.argmax(values)), values.shape)
    k, j, i = (int(index[d] + box[d].start) for d in range(3))
    return image.TransformIndexToPhysicalPoint([i, j, k]), float(values[index])
