"""Suggest left and right maxillary-sinus boxes on a head scan (no Slicer, no network).

The maxillary sinuses are the largest paired air cavities of the face: either side of the nasal
cavity, below the orbits, above the teeth, mirror images of each other across the mid-sagittal
plane. The heuristic looks for exactly that:

1. resample the scan onto a grid aligned with the head (``grid_mm``; ``head_frame``: turned by
   the head's yaw and roll, estimated once for every grid) so oblique scans and turned or
   tilted heads work too;
2. head mask (largest tissue component, holes filled) and the air inside it (CT: below -400 HU;
   MRI: darker than 30% of the head's median after light smoothing, i.e. "dark cavities"); on
   CT a cavity that the field's edge cuts open is closed there first (``field_edge``), and its
   box, covering the part in the scan, is flagged;
3. drop the air within ``midline_band_mm`` of the midline (the plane the scan best mirrors onto
   itself, ``midline.midline_plane``: the nasal cavity), open the rest by one
   voxel to cut the thin ostia, and label the cavities;
4. score every left/right pair by its smaller volume, its mirror symmetry, and whether there is
   air (the nasal cavity) between the two: frontal sinuses have a bony septum there, mastoid
   cells the brainstem;
5. box = the cavity's bounding box plus a margin.

On MRI, when nothing fits on that grid, the search is repeated on a 1 mm grid: the air left in
a small or thickened sinus may be only a few mm across, and at 1.5 mm the smoothing and the
opening (counted in voxels) erase it. Not first: at 1 mm thin dark cortical bone survives the
opening too and can join a sinus to its neighbours.

When only one side has a plausible cavity (the other may be opacified: exactly the cases the
module looks for) the found side is mirrored across the midline. When no candidate has air
medial to it (on MRI a narrow airway between bright turbinates can vanish at the grid's
resolution) candidates without it are taken. When nothing fits, boxes are placed at a typical
offset from the head's centre of mass, inside the head. Every fallback, and every MRI
suggestion, is flagged ``confidence="low"`` so the user checks them. All positions are RAS mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from paranasal_ssl.errors import InputError
from paranasal_ssl.field_edge import field_edge_lids
from paranasal_ssl.geometry import SinusROI, moved_inside_scan
from paranasal_ssl.head_frame import (
    CT_AIR_HU,
    HeadFrame,
    Midplane,
    covering_frame,
    head_mask,
    head_rotation,
)
from paranasal_ssl.midline import midline_plane
from paranasal_ssl.modality import detect_modality

LID_HU = 0.0  # soft tissue: neither air nor bone
MRI_DARK_FRACTION = 0.3  # of the head's median intensity
MRI_MIN_CORE_ML = 0.05
MRI_RETRY_GRID_MM = 1.0  # the finer grid an MRI is searched again on when nothing fits
MAX_POSTERIOR_MM = 10.0  # a sinus centre is never clearly behind the head's centre of mass
MIN_CAVITY_ML = 0.5
LATERAL_RANGE_MM = (12.0, 55.0)  # centre of a maxillary sinus from the midline
MAX_ASYMMETRY_MM = 20.0
TYPICAL_OFFSET_MM = {"lateral": 27.0, "anterior": 55.0, "inferior": 40.0}  # from head COM
TYPICAL_SIZE_MM = (40.0, 42.0, 45.0)  # (R-L, A-P, S-I) box when nothing is measured


@dataclass(frozen=True)
class Cavity:
    """One air cavity: volume (mL), centre and bounding box in the head frame's mm."""

    volume_ml: float
    center: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray
    core_ml: float = 0.0  # what survives an erosion by 2 voxels: thick cavities, not bone
    cut: bool = False  # runs out of the scan's field (closed by a ``field_edge`` lid)


@dataclass
class RoiSuggestion:
    """Suggested boxes. ``confidence``: 'high' (a symmetric pair of cavities was found) or 'low'
    (fallback or MRI: check the boxes). ``method`` names what produced each side."""

    rois: Dict[str, SinusROI]
    confidence: str
    method: str
    notes: List[str] = field(default_factory=list)
    air_ml: Dict[str, float] = field(default_factory=dict)
    # the head's mid-plane the face was split at (None where no plane mirrors well enough),
    # for the wrong-side check of ``predict`` on these boxes, which would otherwise search it
    # again (``head_frame.head_midplane`` does the same search)
    midplane: Optional[Midplane] = None

    @property
    def low_confidence(self) -> bool:
        return self.confidence != "high"


def suggest_rois(image: sitk.Image, modality: Optional[str] = None, grid_mm: float = 1.5,
                 margin_mm: float = 5.0, midline_band_mm: float = 12.0,
                 source: Optional[str] = None) -> RoiSuggestion:
    """Left and right maxillary-sinus ROIs (``SinusROI``, RAS mm) for ``image``; ``source``
    names the scan in the ``InputError`` raised when there is no head to place them in.

    The boxes are aligned with the head: their axes follow the head's yaw (rotation about the
    superior axis, from the shape of the head) and roll (tilt towards a shoulder, from its
    mirror symmetry): ``head_frame.head_rotation``.
    """
    modality = modality or detect_modality(image)
    grids = [grid_mm]
    if modality != "ct" and grid_mm > MRI_RETRY_GRID_MM:
        grids.append(MRI_RETRY_GRID_MM)
    rotation = head_rotation(image, modality)
    found_plane = midline_plane(image, modality, rotation)  # once for every grid
    midplane = Midplane(*found_plane) if found_plane is not None else None
    # a sinus cut open by the field's edge, closed there so the head's hole filling keeps it
    lids = field_edge_lids(image, CT_AIR_HU) if modality == "ct" else []
    for grid in grids:
        frame, head, head_com, choice = _search(image, modality, covering_frame(
            image, rotation, grid, also=lids), midplane, midline_band_mm, source, lids)
        if choice is not None:
            break
    notes: List[str] = []
    if choice is None:
        notes.append("no sinus-like cavities found; boxes placed at a typical offset from the "
                     "head's centre: move them onto the sinuses")
        boxes = _inside_scan(image, _typical_boxes(frame, head_com, head), notes)
        return RoiSuggestion(boxes, "low", "typical-offset", notes, {"left": 0.0, "right": 0.0},
                             midplane)
    found, mirrored_side, airway = choice
    boxes = _inside_scan(image, {side: _box(frame, c, margin_mm) for side, c in found.items()},
                         notes)
    ml = {side: round(c.volume_ml, 2) for side, c in found.items()}
    method = "ct-air-cavities" if modality == "ct" else "mri-dark-cavities"
    if mirrored_side is not None:
        ml[mirrored_side] = 0.0
        method = "one-side-mirrored"
        notes.append(f"no air-filled {mirrored_side} sinus found (opacified?); its box mirrors "
                     "the other side across the midline")
    cut = sorted(side for side, c in found.items() if c.cut and side != mirrored_side)
    for side in cut:
        notes.append(f"the {side} sinus runs out of the scan's field: its box covers the part "
                     "inside; check it")
    if not airway:
        method = "one-side-mirrored-without-airway" if mirrored_side else "pair-without-airway"
        notes.append("no nasal airway seen medial to the cavities (thin or swollen passages, or "
                     "not the maxillary sinuses): check the boxes")
    if modality != "ct":
        notes.append("MRI: dark cavities taken as air; check the boxes")
    sure = modality == "ct" and mirrored_side is None and airway and not cut
    return RoiSuggestion(boxes, "high" if sure else "low", method, notes, ml, midplane)


def _search(image: sitk.Image, modality: str, frame: HeadFrame, midplane: Optional[Midplane],
            midline_band_mm: float, source: Optional[str], lids: Sequence[sitk.Image] = ()):
    """Steps 1-4 on ``frame``'s grid: (frame, head mask [k, j, i], head centre of mass in
    frame mm (x, y, z) moved onto ``midplane``, ``_choose``'s answer or None). ``lids``:
    ``field_edge.field_edge_lids`` of a CT: tissue of the head, at the field's edge."""
    grid_mm = frame.grid_mm
    array = frame.resample(image)
    lidded = None
    for lid in lids:
        covered = frame.resample(lid, nearest=True) > 0
        lidded = covered if lidded is None else lidded | covered
    if lidded is not None:
        array[lidded] = LID_HU  # not air
    head = head_mask(array, modality, lidded)
    if not head.any():
        raise InputError(source, "no head found in the image (no tissue above the background)",
                         field="sinus boxes", expected="a head CT or MRI to suggest them on")
    head_com = np.array(ndi.center_of_mass(head))[::-1] * grid_mm  # frame mm (x, y, z)
    # the midline: the plane of mirror symmetry (a field cut off on one side moves the COM)
    if midplane is not None:
        head_com[0] += midplane.along(frame.to_lps(head_com), frame.rotation[:, 0])
    mid_x = float(head_com[0])
    air = _air_mask(array, modality, head)
    edge = None if lidded is None else ndi.binary_dilation(lidded, iterations=3)
    cavities = _cavities(air, grid_mm, mid_x, midline_band_mm, edge)
    if modality != "ct":
        # on MRI thin dense bone is as dark as air: keep cavities with a thick core
        cavities = [c for c in cavities if c.core_ml >= MRI_MIN_CORE_ML]
    # maxillary sinuses lie in the front half of the head (frame y runs posterior, as LPS)
    cavities = [c for c in cavities if c.center[1] <= head_com[1] + MAX_POSTERIOR_MM]
    return frame, head, head_com, _choose(cavities, air, grid_mm, mid_x)


def _inside_scan(image: sitk.Image, boxes: Dict[str, SinusROI], notes: List[str]
                 ) -> Dict[str, SinusROI]:
    """``boxes`` moved inside the scan (``geometry.moved_inside_scan``), with a note per box
    moved by 1 mm or more. A cavity at the edge of the field, a side mirrored across the
    midline, or a typical offset on an oblique scan cut close around the face can place a box
    partly outside the scan, where analysis would refuse it; inside, the user sees and drags it."""
    out = {}
    for side, roi in boxes.items():
        out[side], distance = moved_inside_scan(image, roi)
        if distance >= 1.0:
            notes.append(f"the {side} box was moved {distance:.0f} mm to lie inside the scan")
    return out


# -- steps --------------------------------------------------------------------------------------


def _air_mask(array: np.ndarray, modality: str, head: np.ndarray) -> np.ndarray:
    inner = ndi.binary_erosion(head, iterations=2)  # not the air touching the skin
    if modality == "ct":
        dark = array < CT_AIR_HU
    else:
        # MRI air is noisy and partial-volumed: smooth a little, then call anything darker than
        # 30% of the head's median "air" (thin dark cortical bone is removed by the opening)
        dark = ndi.gaussian_filter(array, 1.0) < MRI_DARK_FRACTION * np.median(array[head])
    return dark & inner


def _cavities(air: np.ndarray, grid_mm: float, mid_x: float, band_mm: float,
              edge: Optional[np.ndarray] = None) -> List[Cavity]:
    """Air cavities away from the midline band, in frame mm; ``cut`` where one meets
    ``edge`` (bool like ``air``: next to the field's edge where a lid closed it)."""
    x = np.arange(air.shape[2]) * grid_mm
    lateral = air & (np.abs(x - mid_x) > band_mm)[None, None, :]
    lateral = ndi.binary_opening(lateral, iterations=1)
    labels, _ = ndi.label(lateral)
    cavities = []
    voxel_ml = grid_mm ** 3 / 1000.0
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        mask = labels[box] == index
        volume = float(mask.sum()) * voxel_ml
        if volume < MIN_CAVITY_ML:
            continue
        core = float(ndi.binary_erosion(mask, iterations=2).sum()) * voxel_ml
        kji = np.array(ndi.center_of_mass(mask)) + [s.start for s in box]
        lo = np.array([box[2].start, box[1].start, box[0].start], float) * grid_mm
        hi = np.array([box[2].stop - 1, box[1].stop - 1, box[0].stop - 1], float) * grid_mm
        cut = edge is not None and bool(edge[box][mask].any())
        cavities.append(Cavity(volume, kji[::-1] * grid_mm, lo, hi, core, cut))
    return cavities


def _side(cavity: Cavity, mid_x: float) -> str:
    return "left" if cavity.center[0] > mid_x else "right"  # LPS-like frame: +x toward left


def _lateral_ok(cavity: Cavity, mid_x: float) -> bool:
    distance = abs(cavity.center[0] - mid_x)
    return LATERAL_RANGE_MM[0] <= distance <= LATERAL_RANGE_MM[1]


def _mirror(cavity: Cavity, mid_x: float) -> Cavity:
    def flip(p):
        q = np.array(p, float)
        q[0] = 2 * mid_x - q[0]
        return q

    return Cavity(cavity.volume_ml, flip(cavity.center), flip(cavity.box_hi),
                  flip(cavity.box_lo), cavity.core_ml, cavity.cut)


def _air_between(air: np.ndarray, grid_mm: float, center: np.ndarray,
                 half_mm: Tuple[float, float, float] = (8.0, 15.0, 15.0)) -> float:
    """Air fraction of a box around ``center`` (frame mm): the nasal cavity between sinuses."""
    c = np.asarray(center) / grid_mm
    h = np.asarray(half_mm) / grid_mm
    lo = np.maximum(np.floor(c - h).astype(int), 0)
    hi = np.minimum(np.ceil(c + h).astype(int) + 1, np.array(air.shape[::-1]))
    if (hi <= lo).any():
        return 0.0
    return float(air[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]].mean())


def _choose(cavities: List[Cavity], air: np.ndarray, grid_mm: float, mid_x: float
            ) -> Optional[Tuple[Dict[str, Cavity], Optional[str], bool]]:
    """The maxillary pair, or one side plus the side to mirror, and whether air was seen between
    them; None if nothing fits.

    Hypotheses are symmetric pairs with air between them, and single cavities with air medial to
    them (the other side mirrored, half weight). Among those scoring at least a quarter of the
    best, the most inferior wins: the maxillary sinuses lie below the frontal sinuses. Only when
    no hypothesis has that air (on MRI a narrow nasal airway between bright T2 turbinates can
    vanish at the grid's resolution) do the hypotheses without it count.
    """
    plausible = [c for c in cavities if _lateral_ok(c, mid_x)]
    hypotheses = []  # (score, mean z, found, mirrored side)
    without_airway = []  # the same with no air seen medial to them
    for a in plausible:
        for b in plausible:
            if not (_side(a, mid_x) == "left" and _side(b, mid_x) == "right"):
                continue
            offset = a.center - b.center
            separation = abs(offset[0])
            asymmetry = float(np.hypot(offset[1], offset[2]))
            if asymmetry > MAX_ASYMMETRY_MM or not 24.0 <= separation <= 110.0:
                continue
            between = _air_between(air, grid_mm, (a.center + b.center) / 2)
            score = min(a.volume_ml, b.volume_ml) * np.exp(-asymmetry / 15.0) * (0.5 + between)
            hypothesis = (score, (a.center[2] + b.center[2]) / 2, {"left": a, "right": b}, None)
            # no airway between them: probably not the maxillary pair (frontal sinuses have a
            # bony septum there, mastoid cells the brainstem)
            (hypotheses if between >= 0.03 else without_airway).append(hypothesis)
    for c in plausible:
        if c.volume_ml < 2 * MIN_CAVITY_ML:
            continue
        middle = c.center.copy()
        middle[0] = mid_x
        between = _air_between(air, grid_mm, middle)
        side = _side(c, mid_x)
        other = "right" if side == "left" else "left"
        score = 0.5 * c.volume_ml * (0.5 + between)
        hypothesis = (score, c.center[2], {side: c, other: _mirror(c, mid_x)}, other)
        (hypotheses if between >= 0.03 else without_airway).append(hypothesis)
    airway = bool(hypotheses)
    hypotheses = hypotheses or without_airway
    if not hypotheses:
        return None
    best = max(h[0] for h in hypotheses)
    kept = [h for h in hypotheses if h[0] >= 0.25 * best]
    # lowest first; a pair beats a mirrored single at (nearly) the same height
    kept.sort(key=lambda h: (round(h[1] / 10.0), h[3] is not None, -h[0]))
    _, _, found, mirrored = kept[0]
    return found, mirrored, airway


def _box(frame: HeadFrame, cavity: Cavity, margin_mm: float) -> SinusROI:
    """The box around ``cavity`` plus ``margin_mm`` on every side (20-70 mm edges)."""
    size = np.clip(cavity.box_hi - cavity.box_lo + 2 * margin_mm, 20.0, 70.0)
    return frame.roi((cavity.box_lo + cavity.box_hi) / 2.0, size)


def _typical_boxes(frame: HeadFrame, head_com: np.ndarray, head: np.ndarray
                   ) -> Dict[str, SinusROI]:
    """Boxes at a typical adult offset from the head's centre of mass, kept inside the head's
    bounding box (frame mm): on a scan cut close around the face the offset would leave the
    field of view, and a box the user can see and drag beats one that analysis refuses."""
    off = TYPICAL_OFFSET_MM
    half = np.array(TYPICAL_SIZE_MM) / 2.0
    k, j, i = np.nonzero(head)
    lo = np.array([i.min(), j.min(), k.min()], float) * frame.grid_mm
    hi = np.array([i.max(), j.max(), k.max()], float) * frame.grid_mm
    middle = (lo + hi) / 2.0
    rois = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):  # frame x (LPS-like): +x toward left
        # frame y runs posterior (LPS): anterior is -y; frame z superior
        center = head_com + [sign * off["lateral"], -off["anterior"], -off["inferior"]]
        center = np.clip(center, np.minimum(lo + half, middle), np.maximum(hi - half, middle))
        rois[side] = frame.roi(center, 2 * half)
    return rois
