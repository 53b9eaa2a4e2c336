"""Where does a fine-tuned classifier look? Grad-CAM maps on crops, scored against masks."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from paranasal_ssl.crops import roi_box_mask
from paranasal_ssl.evaluation import aggregate_localisation
from paranasal_ssl.networks import SinusClassifier
from paranasal_ssl.training.device import to_input

# Grad-CAM needs a feature map fine enough to point at a finding: the last stage of the
# encoder is 2 x 2 x 2 for a 32^3 crop (its peak is a block an eighth of the crop, which
# never lies inside a mask), so the map is taken at the deepest stage with this many voxels
# per edge (8^3 for 32^3 crops: one cell per 8 mm at 2 mm).
MIN_CAM_EDGE = 8


def cam_stage(stage_shapes: List[int]) -> int:
    """Index of the deepest stage whose edge is at least ``MIN_CAM_EDGE`` voxels (else 0)."""
    fine = [i for i, edge in enumerate(stage_shapes) if edge >= MIN_CAM_EDGE]
    return fine[-1] if fine else 0


def grad_cam(model: SinusClassifier, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """Grad-CAM of the anomaly logit at the deepest encoder stage of at least ``MIN_CAM_EDGE``
    voxels per edge (:func:`cam_stage`), upsampled to the crop.

    ``x`` ``(B, 1, S, S, S)`` -> ``(B, S, S, S)`` maps in [0, 1] (each map scaled by its max).
    """
    model.eval()
    maps = []
    for start in range(0, len(x), 16):
        xb = to_input(x[start:start + 16], device)
        with torch.enable_grad():
            stages = model.encoder(xb)
            k = cam_stage([f.shape[-1] for f in stages])
            feats = stages[k]
            feats.retain_grad()
            pooled = stages[-1].mean(dim=(2, 3, 4))  # as SinusClassifier.forward
            logit = model.head(pooled)
            if model.prior is not None:  # the logit the model outputs includes its prior
                logit = logit + model.prior(pooled)
            logit.sum().backward()
        weights = feats.grad.mean(dim=(2, 3, 4), keepdim=True)
        cam = F.relu((weights * feats).sum(1, keepdim=True)).detach()
        cam = F.interpolate(cam.float(), size=x.shape[2:], mode="trilinear", align_corners=False)
        cam = cam[:, 0] / cam.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1, 1)
        maps.append(cam.cpu().numpy())
        model.zero_grad(set_to_none=True)
    return np.concatenate(maps)


def classifier_localisation(model: SinusClassifier, run, residuals, records,
                            device: torch.device) -> Optional[dict]:
    """Grad-CAM vs ground-truth masks on the anomalous sinuses of ``records`` (crop 0), inside
    the ROI box. Maps are scaled per crop, so only ranking metrics are meaningful (no FP mL)."""
    index = {r.key: i for i, r in enumerate(residuals.crops.records)}
    chosen: List = [r for r in records if r.label == 1
                    and residuals.crops.masks[index[r.key]] is not None
                    and (residuals.crops.masks[index[r.key]] > 0).any()]
    if not chosen:
        return None
    x = torch.from_numpy(np.stack([np.asarray(residuals.crops.crops[index[r.key]][0])
                                   for r in chosen]))[:, None]
    cams = grad_cam(model, x, device)
    masks = [residuals.crops.masks[index[r.key]] > 0 for r in chosen]
    regions = [roi_box_mask(r.roi, run.config.data.crop, r.side) for r in chosen]
    loc = aggregate_localisation(list(cams), masks, regions=regions)
    loc.pop("per_case", None)
    loc.pop("pooled", None)  # per-crop scaling: pooled rankings would mix scales
    return loc
