"""Sinus boxes in RAS millimetres, and their conversion to SimpleITK's LPS world.

Users, manifests and Slicer give positions in RAS (x toward the patient's Right, y Anterior,
z Superior); ITK and DICOM use LPS. The two differ by flipping the first two axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from paranasal_ssl.errors import InputError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])  # its own inverse
SIDES = ("left", "right")
REGION_CODES = {"left": 1, "right": 2}  # values of a predicted region image, per side


def ras_to_lps(point: Sequence[float]) -> np.ndarray:
    """A point or vector (3,) or points (N, 3) from RAS to LPS (and back: same matrix)."""
    return np.asarray(point, dtype=float) * np.array([-1.0, -1.0, 1.0])


lps_to_ras = ras_to_lps


@dataclass(frozen=True)
class SinusROI:
    """A box around one maxillary sinus, in RAS millimetres.

    ``center_ras``: box centre (mm). ``size_mm``: edge lengths along the box's own axes (mm).
    ``axes_ras``: 3x3 matrix whose COLUMNS are the box axes in RAS (identity = R, A, S), as in a
    Slicer Markups ROI's object-to-world rotation.
    """

    center_ras: Tuple[float, float, float]
    size_mm: Tuple[float, float, float]
    axes_ras: Tuple[Tuple[float, float, float], ...] = field(
        default=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))

    @classmethod
    def from_values(cls, center: Sequence[float], size: Sequence[float],
                    axes: Sequence[Sequence[float]] | None = None, source: str | None = None,
                    field_name: str = "roi") -> SinusROI:
        """Build and validate a ROI; ``source``/``field_name`` name the input in errors."""
        c = np.asarray(center, dtype=float).ravel()
        s = np.asarray(size, dtype=float).ravel()
        if c.shape != (3,) or not np.isfinite(c).all():
            raise InputError(source, f"ROI centre {list(c)} is not 3 finite numbers",
                             field=field_name, expected="R A S in millimetres")
        if s.shape != (3,) or not np.isfinite(s).all() or (s <= 0).any():
            raise InputError(source, f"ROI size {list(s)} is invalid", field=field_name,
                             expected="3 positive edge lengths in millimetres")
        a = np.eye(3) if axes is None else np.asarray(axes, dtype=float).reshape(3, 3)
        if not np.allclose(a.T @ a, np.eye(3), atol=1e-2):
            raise InputError(source, "ROI axes are not orthonormal", field=field_name,
                             expected="a rotation matrix (columns = box axes in RAS)")
        if axes is not None:  # axes written to 3 decimals are off by up to 2e-3: the nearest
            u, _, vt = np.linalg.svd(a)  # orthonormal matrix (the same one if it already is)
            a = u @ vt
        return cls(tuple(c), tuple(s), tuple(map(tuple, a)))

    @property
    def axes(self) -> np.ndarray:
        """(3, 3) float array; columns are the box axes in RAS."""
        return np.asarray(self.axes_ras, dtype=float)

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.center_ras, dtype=float)

    @property
    def size(self) -> np.ndarray:
        return np.asarray(self.size_mm, dtype=float)

    @property
    def volume_ml(self) -> float:
        return float(np.prod(self.size)) / 1000.0

    def corners_ras(self) -> np.ndarray:
        """(8, 3) corner points in RAS mm."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return self.center + (signs * self.size / 2.0) @ self.axes.T

    def to_dict(self) -> dict:
        return {"center_ras": list(self.center_ras), "size_mm": list(self.size_mm),
                "axes_ras": [list(r) for r in self.axes_ras]}


def check_side(side: str, source: str | None = None) -> str:
    s = str(side).strip().lower()
    aliases = {"l": "left", "r": "right"}
    s = aliases.get(s, s)
    if s not in SIDES:
        raise InputError(source, f"unknown side {side!r}", field="side", expected="left or right")
    return s


def check_sides_in_place(rois: Mapping[str, Optional[SinusROI]], source=None,
                         where: str = "") -> None:
    """Refuse a left box whose centre lies to the patient's right of the right box's (RAS: +x
    is the patient's right). Boxes placed by screen side in radiological view - the patient's
    right on the screen's left - are swapped: each sinus's result would be reported, reviewed
    and exported under the other side's name, and its crop read mirrored (right crops are
    mirrored to look like left ones). ``where`` (e.g. "case a") prefixes the message."""
    boxes = {check_side(side, source): roi for side, roi in rois.items() if roi is not None}
    if "left" not in boxes or "right" not in boxes:
        return
    left, right = boxes["left"].center[0], boxes["right"].center[0]
    if left > right:
        raise InputError(source, f"{where}{': ' if where else ''}the left box (centre at RAS x "
                         f"{left:.1f} mm) lies to the patient's right of the right box (x "
                         f"{right:.1f} mm): left and right swapped?", field="roi",
                         expected="the left box on the patient's left, at a smaller RAS x (in "
                         "radiological view the patient's left is on the screen's right)")


def moved_inside_scan(image, roi: SinusROI) -> Tuple[SinusROI, float]:
    """``roi`` moved, without turning or resizing, to lie inside the field of view of
    ``image`` (a SimpleITK image; centred on it along an axis where the box is longer than the
    scan), and how far it moved (mm). Works on the scan's voxel grid, so oblique scans too."""
    matrix = np.asarray(image.GetDirection(), float).reshape(3, 3) @ np.diag(image.GetSpacing())
    lo_bound = np.full(3, -0.5)
    hi_bound = np.asarray(image.GetSize(), float) - 0.5
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    corners_lps = (roi.center + (signs * (roi.size / 2.0)) @ roi.axes.T) @ RAS_TO_LPS
    index = (corners_lps - np.asarray(image.GetOrigin(), float)) @ np.linalg.inv(matrix).T
    lo, hi = index.min(0), index.max(0)
    shift = np.where(lo < lo_bound, lo_bound - lo, 0.0) + np.where(hi > hi_bound,
                                                                  hi_bound - hi, 0.0)
    too_long = (hi - lo) > (hi_bound - lo_bound)
    shift[too_long] = ((lo_bound + hi_bound) / 2.0 - (lo + hi) / 2.0)[too_long]
    move_ras = RAS_TO_LPS @ (matrix @ shift)
    moved = SinusROI.from_values(roi.center + move_ras, roi.size, roi.axes)
    return moved, float(np.linalg.norm(move_ras))
