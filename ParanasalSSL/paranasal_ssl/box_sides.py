"""Is each sinus box on its own side of the head?

In radiological view the patient's right is on the screen's left. A "left" box put on the
screen's left sinus lies on the patient's right, and every result for it would be reported,
reviewed and exported under the wrong side's name. Two boxes are compared with each other
(``geometry.check_sides_in_place``: certain, so a refusal); each box is also compared with the
head's midline, which catches a single box on the wrong side, or both boxes on one sinus, and
gives a warning: the midline is an estimate.

The midline is ``head_frame.head_midplane``: the plane of best mirror symmetry, turned with
the head (yaw and roll), since a head turned 25 deg moves an upright plane's midline at the
sinuses by 14-36 mm, enough to flag a correct box or pass one on the other sinus. A box is
flagged when its centre lies more than ``MIDLINE_MARGIN_MM`` past that plane on the other side:
a warning, not a refusal, because a head turned past what the frame follows, or a field
holding one side only, defeats the estimate.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import SimpleITK as sitk

from paranasal_ssl.geometry import SinusROI, check_side, check_sides_in_place
from paranasal_ssl.head_frame import Midplane, head_midplane

MIDLINE_MARGIN_MM = 10.0


def box_side_notes(image: sitk.Image, rois: Mapping[str, Optional[SinusROI]],
                   source=None, modality: Optional[str] = None,
                   midplane: Optional[Midplane] = None) -> List[str]:
    """Raise ``InputError`` naming ``source`` if the left box lies right of the right one
    (certain); return a warning for each box that lies clearly on the other half of the head
    (RAS: +x is the patient's right). A warning, not a refusal: the midline is an estimate.
    ``midplane``: the head's mid-plane when already known (a suggestion's), else searched."""
    check_sides_in_place(rois, source)
    boxes = {check_side(side, source): roi for side, roi in rois.items() if roi is not None}
    if boxes and midplane is None:
        midplane = head_midplane(image, modality)
    if not boxes or midplane is None:
        return []
    notes = []
    for side, roi in sorted(boxes.items()):
        toward_left = midplane.toward_left_mm(roi.center)
        toward_own_side = toward_left if side == "left" else -toward_left
        if toward_own_side < -MIDLINE_MARGIN_MM:
            other = "right" if side == "left" else "left"
            notes.append(f"the {side} box (centre at RAS x {roi.center[0]:.1f} mm) lies "
                         f"{-toward_own_side:.0f} mm into the patient's {other} half of the head "
                         f"(midline near x {midplane.x_at(roi.center):.1f} mm at its level): is "
                         f"it on the {other} sinus? (In radiological view the patient's left is "
                         "on the screen's right.)")
    return notes

