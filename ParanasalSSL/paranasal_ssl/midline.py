"""Where is the head's mid-sagittal plane, and how is the head turned?

Used through ``head_frame``: to tell a sinus box on the wrong half of the head (``box_sides``)
and to split the face into its two halves when suggesting boxes (``roi_suggest``), whose frame
follows the head's yaw and roll found the same way (``head_roll``, ``head_yaw_and_roll``: the
turn whose frame the scan mirrors best).

The midline is the plane the scan is most nearly the mirror image of: on a 3 mm grid along a
frame's axes (the scan's LPS axes, or the head's), the plane across the first axis (sagittal
in an upright head) that minimises the mean absolute difference between
each voxel and its mirror image, over the pairs that both lie in the scan and hold some tissue,
divided by the spread of the values compared (a strip of uniform soft tissue at the edge of a
field cut close around the face would otherwise match its mirror image best).
Only pairs inside the field of view count, so a field cut off on one side (a cone-beam field
centred on a cheek) still finds the middle from what it shows of both halves, where the head's
centre of mass (the estimate before) moves with the cut. Planes near the edge of the field,
compared over a narrow strip, can match by chance: a plane needs ``MIN_HALF_MM`` of scan on
both sides and ``MIN_OVERLAP`` of the largest number of pairs any plane has. Where no plane
qualifies the centre of mass stands in. Measured by ``benchmarks/midline_check.py`` (README).
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

CT_TISSUE_HU = -400.0
MIRROR_GRID_MM = 3.0  # the mirror search's grid: sinuses, orbits and septum are larger
MIN_HALF_MM = 15.0  # a plane needs at least this much of the scan on both of its sides
MIN_PAIRS = 1000  # voxel pairs compared (27 mL at 3 mm) for a plane to count
MIN_OVERLAP = 0.4  # and at least this share of the most pairs any plane has
STEP = 4  # voxels: the centre of mass of a head needs no more
ROLL_GRID_MM = 4.5  # the roll search compares whole halves of the face: a coarser grid will do
TURN_GRID_STEP_DEG = 10.0  # the yaw-and-roll search's first grid of angles: the match is
TURN_GRID_COARSE_MM = 6.0  # sharp within about 8 deg of the true turn, so a coarse grid will do
TURN_STEPS_DEG = (8.0, 4.0, 2.0)  # yaw and roll searches: coarse to fine
MAX_ROLL_DEG = 24.0
ROLL_WINDOW_MM = 45.0  # planes searched this far either side of the tissue's centre
OUTSIDE = -1e30  # resampling value outside the scan
# A turned frame's plane must mirror at least this much better than the scan's axes' to be
# kept. Heads turned 25 deg or tilted 15 deg match 0.3-0.73 times the upright plane's, and a
# phantom's own few degrees 0.5-0.84; on fields cut off on one side the two are close (median
# 0.99), and there a spurious match near the cut won by 7% and put the midline 43 mm off.
TURNED_MARGIN = 0.85


def _tissue(array: np.ndarray, modality: str) -> Optional[np.ndarray]:
    """Tissue voxels (CT: above -400 HU; MRI: above a quarter of the 75th percentile of the
    voxels brighter than the darkest 1%); None if the image is one value."""
    if modality == "ct":
        return array > CT_TISSUE_HU
    bright = array[array > np.percentile(array, 1)]
    if bright.size == 0:
        return None
    return array > 0.25 * np.percentile(bright, 75)


def tissue_centre(image: sitk.Image, modality: str) -> Optional[np.ndarray]:
    """LPS (mm) of the tissue's centre of mass, every ``STEP``-th voxel along each axis; None
    if the image holds no tissue."""
    array = sitk.GetArrayViewFromImage(image)[::STEP, ::STEP, ::STEP].astype(np.float32)
    tissue = _tissue(array, modality)
    if tissue is None or not tissue.any():
        return None
    k, j, i = (float(np.mean(axis)) * STEP for axis in np.nonzero(tissue))
    return np.array(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))


def mirror_plane(image: sitk.Image, modality: str, rotation: Optional[np.ndarray] = None,
                 grid_mm: float = MIRROR_GRID_MM,
                 window: Optional[Tuple[float, float]] = None) -> Optional[Tuple[float, float]]:
    """The plane about which the scan best matches its mirror image: (its coordinate in mm
    along the first axis of ``rotation``, its mirror difference). ``rotation``: 3x3, columns =
    axes in LPS; default the LPS axes, where RAS x = -coordinate. The search runs on a
    ``grid_mm`` grid along those axes over the scan's bounding box, in half-voxel steps, over
    the planes between ``window`` (mm along that axis; default all); None if no plane
    qualifies (module docstring). Differences are comparable between rotations: a head turned
    about its long axis matches best in a frame turned with it."""
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, float)
    size = np.array(image.GetSize())
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint(
        [float(x), float(y), float(z)]) for x in (0, size[0] - 1) for y in (0, size[1] - 1)
        for z in (0, size[2] - 1)]) @ rotation  # in the frame's axes
    lo = corners.min(0)
    shape = np.ceil((corners.max(0) - lo) / grid_mm).astype(int) + 1
    reference = sitk.Image([int(v) for v in shape], sitk.sitkUInt8)
    reference.SetOrigin((rotation @ lo).tolist())
    reference.SetSpacing([grid_mm] * 3)
    reference.SetDirection(rotation.ravel().tolist())
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
    least = int(np.ceil(MIN_HALF_MM / grid_mm))
    min_pairs = MIN_PAIRS * (MIRROR_GRID_MM / grid_mm) ** 3  # the same volume on any grid
    first, last = 2 * least, 2 * (columns - 1 - least)
    if window is not None:  # grid columns, doubled: half-voxel steps
        first = max(first, int(np.floor(2 * (window[0] - lo[0]) / grid_mm)))
        last = min(last, int(np.ceil(2 * (window[1] - lo[0]) / grid_mm)))
    # one row per grid column: a plane's column pairs are then whole rows (fast to gather)
    values, inside, tissue = (np.ascontiguousarray(a.transpose(2, 0, 1).reshape(columns, -1))
                              for a in (values, inside, tissue))
    planes = []  # (pairs compared, spread-normalised difference, plane in grid columns)
    for twice_plane in range(first, last + 1):
        # column pairs (i, twice_plane - i) on either side of the plane at twice_plane / 2:
        # i down from i0, j up from j0, as slices (views: no copy of the rows)
        i0 = (twice_plane - 1) // 2
        j0 = twice_plane - i0
        n = min(i0 + 1, columns - j0)
        if n < least:
            continue
        i, j = slice(i0, i0 - n if i0 >= n else None, -1), slice(j0, j0 + n)
        pairs = inside[i] & inside[j] & (tissue[i] | tissue[j])
        count = int(np.count_nonzero(pairs))
        if count >= min_pairs:
            a, b = values[i][pairs], values[j][pairs]
            spread = _mean(np.abs(a - _mean(a))) + _mean(np.abs(b - _mean(b)))
            difference = float(_mean(np.abs(a - b)) / (spread + 1e-6))
            planes.append((count, difference, twice_plane / 2.0))
    if not planes:
        return None
    most = max(count for count, _, _ in planes)
    _, difference, plane = min((p for p in planes if p[0] >= MIN_OVERLAP * most),
                               key=lambda p: p[1])
    return float(lo[0] + plane * grid_mm), difference


def _mean(values: np.ndarray):
    """``values.mean()`` of a 1-D float32 array, the same float32 value without the wrapper's
    checks: a head's turn search takes ~40,000 of them, and the checks were a quarter of it."""
    return np.add.reduce(values) / values.size


def midline_plane(image: sitk.Image, modality: str,
                  rotation: np.ndarray) -> Optional[Tuple[np.ndarray, float]]:
    """The plane of best mirror symmetry, searched along the axes of ``rotation`` (3x3,
    columns = a head frame's axes in LPS, turned by the head's yaw and roll) and, where the
    frame is turned, along the scan's LPS axes too (the yaw comes from the head's outline,
    which a field cut off on one side distorts). The turned frame's plane is kept only where it
    mirrors clearly better (``TURNED_MARGIN``). Returns (unit normal in LPS, toward the
    patient's left; offset in mm): the plane holds the LPS points q with normal . q = offset.
    None if no plane qualifies."""
    rotation = np.asarray(rotation, float)
    turned = mirror_plane(image, modality, rotation)
    if np.allclose(rotation, np.eye(3)):
        return None if turned is None else (rotation[:, 0].copy(), turned[0])
    upright = mirror_plane(image, modality, np.eye(3))
    if upright is not None and (turned is None or turned[1] >= TURNED_MARGIN * upright[1]):
        coordinate, turn = upright[0], np.eye(3)
    elif turned is not None:
        coordinate, turn = turned[0], rotation
    else:
        return None
    return turn[:, 0].copy(), float(coordinate)


def roll_rotation(degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about a frame's second (antero-posterior) axis, in the
    frame's axes: ``rotation @ roll_rotation(d)`` is ``rotation``'s frame rolled."""
    r = np.deg2rad(degrees)
    c, s = np.cos(r), np.sin(r)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def yaw_rotation(degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about a frame's third (superior) axis, in the frame's
    axes: ``rotation @ yaw_rotation(d)`` is ``rotation``'s frame turned."""
    r = np.deg2rad(degrees)
    c, s = np.cos(r), np.sin(r)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def head_roll(image: sitk.Image, modality: str, rotation: np.ndarray) -> float:
    """The head's roll in degrees (a tilt towards one shoulder: about the antero-posterior
    axis, the second of ``rotation``, 3x3 columns = a head frame's axes in LPS): the roll
    whose frame the scan best mirrors onto itself. A rolled head's mid-sagittal plane is not
    vertical, so a vertical plane splits its face at the wrong place at the sinuses' height
    (47 mm below the centre a 10 deg roll moves the midline 8 mm). Hill-climbs from 0 in
    ``TURN_STEPS_DEG`` steps up to ``MAX_ROLL_DEG``; 0 where no plane qualifies."""
    score = _MirrorScore(image, modality, lambda roll: rotation @ roll_rotation(roll))
    return _climb(score, (0.0,), (MAX_ROLL_DEG,), TURN_STEPS_DEG)[0]


def head_yaw_and_roll(image: sitk.Image, modality: str,
                      max_yaw_deg: float) -> Tuple[float, float]:
    """The head's yaw (turned about the superior axis, up to ``max_yaw_deg``) and roll in
    degrees, about the scan's LPS axes: those whose frame the scan best mirrors onto itself.
    For fields whose outline does not show the head's long axis (one cut close around the
    face is wider than deep). The match is sharp within about 8 deg of the true turn and flat
    beyond it, and a yaw is only found with the right roll, so a grid of both
    (``TURN_GRID_STEP_DEG`` apart, on a ``TURN_GRID_COARSE_MM`` grid) comes first, then a
    hill-climb in the finer ``TURN_STEPS_DEG``;
    (0, 0) where no plane qualifies."""
    def turned(yaw, roll):
        return yaw_rotation(yaw) @ roll_rotation(roll)

    coarse = _MirrorScore(image, modality, turned, TURN_GRID_COARSE_MM)
    grid = [(yaw, roll) for yaw in _angles(max_yaw_deg, TURN_GRID_STEP_DEG)
            for roll in _angles(MAX_ROLL_DEG, TURN_GRID_STEP_DEG)]
    start = min(grid, key=lambda angles: (coarse(*angles), np.abs(angles).sum()))
    if not np.isfinite(coarse(*start)):
        return 0.0, 0.0
    score = _MirrorScore(image, modality, turned)
    yaw, roll = _climb(score, start, (max_yaw_deg, MAX_ROLL_DEG), TURN_STEPS_DEG[1:])
    return yaw, roll


def _angles(limit: float, step: float) -> List[float]:
    """0, +/-step, +/-2 step ... within +/-limit."""
    count = int(limit // step)
    return [float(step * n) for n in range(-count, count + 1)]


class _MirrorScore:
    """The scan's mirror difference in the frame ``turned(*angles)`` (3x3, columns = axes in
    LPS): ``mirror_plane`` on a ``grid_mm`` grid over planes within ``ROLL_WINDOW_MM`` of the
    tissue's centre; inf where no plane qualifies. Remembered per angles."""

    def __init__(self, image: sitk.Image, modality: str, turned,
                 grid_mm: float = ROLL_GRID_MM):
        self.image, self.modality, self.turned, self.grid_mm = image, modality, turned, grid_mm
        self.centre = tissue_centre(image, modality)
        self.scores: dict = {}

    def __call__(self, *angles: float) -> float:
        if angles not in self.scores:
            found = None
            if self.centre is not None:
                turn = np.asarray(self.turned(*angles), float)
                middle = float(turn[:, 0] @ self.centre)
                found = mirror_plane(self.image, self.modality, turn, self.grid_mm,
                                     (middle - ROLL_WINDOW_MM, middle + ROLL_WINDOW_MM))
            self.scores[angles] = np.inf if found is None else found[1]
        return self.scores[angles]


def _climb(score: _MirrorScore, start: Tuple[float, ...], limits: Tuple[float, ...],
           steps) -> Tuple[float, ...]:
    """Hill-climbs ``score`` from ``start`` over each step in ``steps`` (degrees, coarse to
    fine): moves to the best neighbour (every angle -step, 0 or +step, within ``limits``)
    while that is better."""
    best = tuple(start)
    for step in steps:
        while True:
            neighbours = [tuple(b + d * step for b, d in zip(best, move))
                          for move in itertools.product((-1, 0, 1), repeat=len(best)) if any(move)]
            neighbours = [n for n in neighbours
                          if all(abs(v) <= limit for v, limit in zip(n, limits))]
            better = min(neighbours, key=lambda n: score(*n), default=best)
            if score(*better) >= score(*best):
                break
            best = better
    return best
