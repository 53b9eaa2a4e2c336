"""Is each sinus box on its own side of the head?

In radiological view the patient's right is on the screen's left. A "left" box put on the
screen's left sinus lies on the patient's right, and every result for it would be reported,
reviewed and exported under the wrong side's name. Two boxes are compared with each other
(``geometry.check_sides_in_place``: certain, so a refusal); each box is also compared with the
head's midline, which catches a single box on the wrong side, or both boxes on one sinus, and
gives a warning: the midline is an estimate.

The midline is the RAS x of the plane the scan is most nearly the mirror image of: on a 3 mm
grid along the RAS axes, the sagittal plane that minimises the mean absolute difference between
each voxel and its mirror image, over the pairs that both lie in the scan and hold some tissue,
divided by the spread of the values compared (a strip of uniform soft tissue at the edge of a
field cut close around the face would otherwise match its mirror image best).
Only pairs inside the field of view count, so a field cut off on one side (a cone-beam field
centred on a cheek) still finds the middle from what it shows of both halves, where the head's
centre of mass (the estimate before) moves with the cut. Planes near the edge of the field,
compared over a narrow strip, can match by chance: a plane needs ``MIN_HALF_MM`` of scan on
both sides and ``MIN_OVERLAP`` of the largest number of pairs any plane has. Where no plane
qualifies the centre of mass stands in. Measured by ``benchmarks/midline_check.py`` (README).
A box is flagged when its centre lies more than ``MIDLINE_MARGIN_MM`` past the midline on the
other side: a warning, not a refusal, because a head turned far about its long axis, or a field
holding one side only, defeats the estimate.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.geometry import SinusROI, check_side, check_sides_in_place, lps_to_ras
from paranasal_ssl.modality import detect_modality

MIDLINE_MARGIN_MM = 10.0
CT_TISSUE_HU = -400.0
MIRROR_GRID_MM = 3.0  # the mirror search's grid: sinuses, orbits and septum are larger
MIN_HALF_MM = 15.0  # a plane needs at least this much of the scan on both of its sides
MIN_PAIRS = 1000  # voxel pairs compared (27 mL at 3 mm) for a plane to count
MIN_OVERLAP = 0.4  # and at least this share of the most pairs any plane has
STEP = 4  # voxels: the centre of mass of a head needs no more
OUTSIDE = -1e30  # resampling value outside the scan


def head_midline_x(image: sitk.Image, modality: Optional[str] = None) -> Optional[float]:
    """RAS x (mm) of the head's mid-sagittal plane in ``image``: the plane of best mirror
    symmetry, or the tissue's centre of mass where the field is too narrow for that; None if
    the image holds no tissue."""
    modality = modality or detect_modality(image)
    found = _mirror_plane_x(image, modality)
    return found if found is not None else _tissue_centre_x(image, modality)


def _tissue(array: np.ndarray, modality: str) -> Optional[np.ndarray]:
    """Tissue voxels (CT: above -400 HU; MRI: above a quarter of the 75th percentile of the
    voxels brighter than the darkest 1%); None if the image is one value."""
    if modality == "ct":
        return array > CT_TISSUE_HU
    bright = array[array > np.percentile(array, 1)]
    if bright.size == 0:
        return None
    return array > 0.25 * np.percentile(bright, 75)


def _tissue_centre_x(image: sitk.Image, modality: str) -> Optional[float]:
    """RAS x (mm) of the tissue's centre of mass, every ``STEP``-th voxel along each axis."""
    array = sitk.GetArrayViewFromImage(image)[::STEP, ::STEP, ::STEP].astype(np.float32)
    tissue = _tissue(array, modality)
    if tissue is None or not tissue.any():
        return None
    k, j, i = (float(np.mean(axis)) * STEP for axis in np.nonzero(tissue))
    return float(lps_to_ras(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))[0])


def _mirror_plane_x(image: sitk.Image, modality: str) -> Optional[float]:
    """RAS x (mm) of the sagittal plane about which the scan best matches its mirror image,
    searched in half-voxel steps of a ``MIRROR_GRID_MM`` grid along the LPS axes over the
    scan's bounding box; None if no plane qualifies (module docstring)."""
    size = np.array(image.GetSize())
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint(
        [float(x), float(y), float(z)]) for x in (0, size[0] - 1) for y in (0, size[1] - 1)
        for z in (0, size[2] - 1)])
    lo = corners.min(0)
    shape = np.ceil((corners.max(0) - lo) / MIRROR_GRID_MM).astype(int) + 1
    reference = sitk.Image([int(v) for v in shape], sitk.sitkUInt8)
    reference.SetOrigin(lo.tolist())
    reference.SetSpacing([MIRROR_GRID_MM] * 3)
    array = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(),
                                                 sitk.sitkLinear, OUTSIDE, sitk.sitkFloat32))
    inside = array > OUTSIDE / 2
    if not inside.any():
        return None
    tissue = _tissue(np.where(inside, array, array[inside].min()), modality)
    if tissue is None:
        return None
    if modality == "ct":  # air to dense bone on one scale
        values = np.clip(array, -1000.0, 1500.0) / 1000.0
    else:  # arbitrary units: scale by the bright end
        top = float(np.percentile(array[inside], 99))
        values = np.clip(array / top, 0.0, 1.5) if top > 0 else array
    columns = array.shape[2]
    least = int(np.ceil(MIN_HALF_MM / MIRROR_GRID_MM))
    planes = []  # (pairs compared, mean absolute difference, plane in grid columns)
    for twice_plane in range(2 * least, 2 * (columns - 1 - least) + 1):
        # column pairs (i, twice_plane - i) on either side of the plane at twice_plane / 2
        i = np.arange((twice_plane - 1) // 2, -1, -1)
        j = twice_plane - i
        keep = j < columns
        i, j = i[keep], j[keep]
        if len(i) < least:
            continue
        pairs = inside[:, :, i] & inside[:, :, j] & (tissue[:, :, i] | tissue[:, :, j])
        count = int(pairs.sum())
        if count >= MIN_PAIRS:
            a, b = values[:, :, i][pairs], values[:, :, j][pairs]
            spread = np.abs(a - a.mean()).mean() + np.abs(b - b.mean()).mean()
            difference = float(np.abs(a - b).mean() / (spread + 1e-6))
            planes.append((count, difference, twice_plane / 2.0))
    if not planes:
        return None
    most = max(count for count, _, _ in planes)
    _, _, plane = min((p for p in planes if p[0] >= MIN_OVERLAP * most), key=lambda p: p[1])
    return float(-(lo[0] + plane * MIRROR_GRID_MM))  # LPS-aligned grid: RAS x = -LPS x


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

