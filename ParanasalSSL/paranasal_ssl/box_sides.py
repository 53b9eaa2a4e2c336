"""Is each sinus box on its own side of the head?

In radiological view the patient's right is on the screen's left. A "left" box put on the
screen's left sinus lies on the patient's right, and every result for it would be reported,
reviewed and exported under the wrong side's name. Two boxes are compared with each other
(``geometry.check_sides_in_place``); each box is also compared with the head's midline, so a
single box on the wrong side, or both boxes on one sinus, is caught too.

The midline is the RAS x of the head's centre of mass (tissue voxels, every 4th voxel along
each axis). A maxillary sinus centre lies 20-35 mm from the midline; a box is refused only when
its centre is more than ``MIDLINE_MARGIN_MM`` past the midline on the other side, so the
estimate may be off by 30 mm (a head off-centre in a cut field of view, the table) before a
correct box is refused.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.errors import InputError
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


def check_boxes_on_their_sides(image: sitk.Image, rois: Mapping[str, Optional[SinusROI]],
                               source=None, modality: Optional[str] = None) -> None:
    """Raise ``InputError`` naming ``source`` if the left box lies right of the right one, or
    a box lies clearly on the other half of the head (RAS: +x is the patient's right)."""
    check_sides_in_place(rois, source)
    boxes = {check_side(side, source): roi for side, roi in rois.items() if roi is not None}
    if not boxes:
        return
    midline = head_midline_x(image, modality)
    if midline is None:
        return
    for side, roi in boxes.items():
        toward_own_side = (midline - roi.center[0]) if side == "left" else (roi.center[0] - midline)
        if toward_own_side < -MIDLINE_MARGIN_MM:
            other = "right" if side == "left" else "left"
            raise InputError(source, f"the {side} box (centre at RAS x {roi.center[0]:.1f} mm) "
                             f"lies {-toward_own_side:.0f} mm into the patient's {other} half of "
                             f"the head (midline near x {midline:.1f} mm): on the {other} sinus?",
                             field="roi", expected=f"the {side} box on the patient's {side} "
                             "sinus (in radiological view the patient's left is on the screen's "
                             "right)")
