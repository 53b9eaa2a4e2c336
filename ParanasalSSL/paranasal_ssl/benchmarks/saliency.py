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


def grad_cam(model: SinusClassifier, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """Grad-CAM of the anomaly logit on the last encoder stage, upsampled to the crop.

    ``x`` ``(B, 1, S, S, S)`` -> ``(B, S, S, S)`` maps in [0, 1] (each map scaled by its max).
    """
    model.eval()
    maps = []
    for start in range(0, len(x), 16):
        xb = to_input(x[start:start + 16], device)
        with torch.enable_grad():
            feats = model.encoder(xb)[-1]
            feats.retain_grad()
            logit = model.head(feats.mean(dim=(2, 3, 4))).squeeze(1)
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
