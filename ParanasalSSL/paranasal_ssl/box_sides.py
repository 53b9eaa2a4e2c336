"""Is each sinus box on its own side of the head?

In radiological view the patient's right is on the screen's left. A "left" box put on the
screen's left sinus lies on the patient's right, and every result for it would be reported,
reviewed and exported under the wrong side's name. Two boxes are compared with each other
(``geometry.check_sides_in_place``: certain, so a refusal); each box is also compared with the
head's midline, which catches a single box on the wrong side, or both boxes on one sinus, and
gives a warning: the midline is an estimate.

The midline is the RAS x of the head's centre of mass (tissue voxels, every 4th voxel along
each axis): within 5.3 mm of the middle between the sinuses on 120 CT and MRI phantoms, whose
sinus centres lie 20 mm or more from it. A box is flagged when its centre lies more than
``MIDLINE_MARGIN_MM`` past the midline on the other side. A field of view centred far to one
side (a small cone-beam field centred on a cheek) pulls the centre of mass with it and could
flag a box wrongly, hence a warning, not a refusal.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.geometry import SinusROI, check_side, check_sides_in_place, lps_to_ras
from paranasal_ssl.modality import detect_modality

MIDLINE_MARGIN_MM = 10.0
CT_TISSUE_HU = -400.0
STEP = 4  # voxels: the centre of mass of a head needs no more


def head_midline_x(image: sitk.Image, modality: Optional[str] = None) -> Optional[float]:
    """RAS x (mm) of the centre of mass of the head's tissue in ``image`` (CT: above -400 HU;
    MRI: above a quarter of the 75th percentile of the brighter voxels); None if none."""
    array = sitk.GetArrayViewFromImage(image)[::STEP, ::STEP, ::STEP].astype(np.float32)
    if (modality or detect_modality(image)) == "ct":
        tissue = array > CT_TISSUE_HU
    else:
        bright = array[array > np.percentile(array, 1)]
        if bright.size == 0:
            return None
        tissue = array > 0.25 * np.percentile(bright, 75)
    if not tissue.any():
        return None
    k, j, i = (float(np.mean(axis)) * STEP for axis in np.nonzero(tissue))
    return float(lps_to_ras(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))[0])


def box_side_notes(image: sitk.Image, rois: Mapping[str, Optional[SinusROI]],
                   source=None, modality: Optional[str] = None) -> List[str]:
    """Raise ``InputError`` naming ``source`` if the left box lies right of the right one
    (certain); return a warning for each box that lies clearly on the other half of the head
    (RAS: +x is the patient's right). A warning, not a refusal: the midline is an estimate."""
    check_sides_in_place(rois, source)
    boxes = {check_side(side, source): roi for side, roi in rois.items() if roi is not None}
    midline = head_midline_x(image, modality) if boxes else None
    if midline is None:
        return []
    notes = []
    for side, roi in sorted(boxes.items()):
        toward_own_side = (midline - roi.center[0]) if side == "left" else (roi.center[0] - midline)
        if toward_own_side < -MIDLINE_MARGIN_MM:
            other = "right" if side == "left" else "left"
            notes.append(f"the {side} box (centre at RAS x {roi.center[0]:.1f} mm) lies "
                         f"{-toward_own_side:.0f} mm into the patient's {other} half of the head "
                         f"(midline near x {midline:.1f} mm): is it on the {other} sinus? (In "
                         "radiological view the patient's left is on the screen's right.)")
    return notes

