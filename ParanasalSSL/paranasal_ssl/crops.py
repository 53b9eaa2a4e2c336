"""Cut a sinus crop from a scan, and put crop-space arrays back into the scan's geometry.

A crop is a cube of ``shape`` voxels at isotropic ``spacing`` mm, centred on the ROI centre and
aligned with the ROI's axes. Crop arrays are indexed ``[k, j, i]``; for an axis-aligned ROI that
is [Superior, Anterior, patient-Right] (i grows toward the patient's right). Right-side crops are
mirrored along i so both sinuses look like a left one (lateral wall at low i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.config import CropConfig, IntensityConfig
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import RAS_TO_LPS, SinusROI, check_side

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}
MIN_COVERAGE = 0.5  # refuse crops with less than half of their voxels inside the scan


@dataclass(frozen=True)
class CropGeometry:
    """Where a crop sits in the world (LPS), so it can be mapped back exactly.

    ``origin_lps``: centre of voxel [0, 0, 0] in mm; ``spacing``: mm (isotropic);
    ``direction_lps``: 3x3, columns are the crop's i, j, k axes in LPS; ``shape``: voxels per edge;
    ``mirrored``: the array was flipped along i (right side).
    """

    origin_lps: Tuple[float, float, float]
    spacing: float
    direction_lps: Tuple[float, ...]
    shape: int
    mirrored: bool

    def reference_image(self) -> sitk.Image:
        ref = sitk.Image([self.shape] * 3, sitk.sitkUInt8)
        ref.SetOrigin(self.origin_lps)
        ref.SetSpacing([self.spacing] * 3)
        ref.SetDirection(self.direction_lps)
        return ref

    def points_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous crop indices (N, 3) in (i, j, k) order -> LPS points (N, 3), mm."""
        d = np.asarray(self.direction_lps, float).reshape(3, 3)
        return np.asarray(self.origin_lps) + (np.asarray(ijk, float) * self.spacing) @ d.T


def crop_geometry(roi: SinusROI, crop: CropConfig, side: str,
                  offset_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> CropGeometry:
    """Crop grid for ``roi``; ``offset_mm`` shifts the centre along the ROI axes (jitter)."""
    side = check_side(side)
    spacing = crop.spacing_mm if crop.fov == "fixed" else float(roi.size.max()) / crop.shape
    axes_lps = RAS_TO_LPS @ roi.axes
    center_lps = RAS_TO_LPS @ (roi.center + roi.axes @ np.asarray(offset_mm, float))
    half = (crop.shape - 1) / 2.0 * spacing
    origin = center_lps - axes_lps @ np.full(3, half)
    return CropGeometry(tuple(origin), float(spacing), tuple(axes_lps.ravel()), crop.shape,
                        bool(crop.mirror_right and side == "right"))


def coverage(image: sitk.Image, geom: CropGeometry, samples: int = 6) -> float:
    """Fraction of the crop (sampled on a ``samples``^3 grid) that lies inside the scan."""
    t = np.linspace(0, geom.shape - 1, samples)
    ijk = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
    pts = geom.points_lps(ijk)
    idx = _physical_to_continuous_index(image, pts)
    size = np.asarray(image.GetSize(), float)
    inside = ((idx >= -0.5) & (idx <= size - 0.5)).all(axis=1)
    return float(inside.mean())


def extract_crop(image: sitk.Image, roi: SinusROI, crop: CropConfig, side: str,
                 pad_value: float, offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
                 source: Optional[str] = None) -> Tuple[np.ndarray, CropGeometry]:
    """Resample the crop of ``roi`` from ``image``.

    Returns a float32 array ``[k, j, i]`` of shape (shape, shape, shape) in the scan's units (HU
    on CT) and its geometry. Voxels outside the scan get ``pad_value``. Raises ``InputError`` if
    less than half the crop lies inside the scan.
    """
    geom = crop_geometry(roi, crop, side, offset_mm)
    frac = coverage(image, geom)
    if frac < MIN_COVERAGE:
        raise InputError(source, f"the {side} ROI (centre RAS {np.round(roi.center, 1).tolist()} "
                         f"mm) lies {100 * (1 - frac):.0f}% outside the scan",
                         field=f"roi_{side}", expected="a box inside the scan's field of view")
    source_image = image
    if crop.interpolation == "bspline":
        # B-spline coefficients are computed over the whole input: cut a padded box first
        # (about 30x faster on a full CT, same result inside the crop).
        source_image = _cut_box(image, geom, pad_voxels=4)
    out = sitk.Resample(source_image, geom.reference_image(), sitk.Transform(),
                        _INTERPOLATORS[crop.interpolation], float(pad_value), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(out)
    if geom.mirrored:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array), geom


def uncrop(array: np.ndarray, geom: CropGeometry, reference: sitk.Image,
           interpolation: str = "linear") -> Tuple[np.ndarray, Tuple[slice, slice, slice]]:
    """Map a crop-space array back onto the grid of ``reference`` (the scan).

    Returns ``(values, box)``: ``values`` is a float32 array covering only the scan voxels the
    crop touches, and ``box`` the ``[k, j, i]`` slices of the scan array it belongs to. Voxels the
    crop does not cover are 0. Use ``paste`` to put it into a full-size array.
    """
    a = np.asarray(array, dtype=np.float32)
    if a.shape != (geom.shape,) * 3:
        raise ValueError(f"crop array shape {a.shape} does not match crop grid {geom.shape}^3")
    if geom.mirrored:
        a = a[:, :, ::-1]
    crop_image = sitk.GetImageFromArray(np.ascontiguousarray(a))
    crop_image.SetOrigin(geom.origin_lps)
    crop_image.SetSpacing([geom.spacing] * 3)
    crop_image.SetDirection(geom.direction_lps)
    lo, hi = _index_box(reference, geom, pad_voxels=1)
    if (hi < lo).any():
        return np.zeros((0, 0, 0), np.float32), (slice(0, 0),) * 3
    sub = sitk.Image([int(v) for v in (hi - lo + 1)], sitk.sitkFloat32)
    sub.SetSpacing(reference.GetSpacing())
    sub.SetDirection(reference.GetDirection())
    sub.SetOrigin(reference.TransformIndexToPhysicalPoint([int(v) for v in lo]))
    out = sitk.Resample(crop_image, sub, sitk.Transform(), _INTERPOLATORS[interpolation], 0.0,
                        sitk.sitkFloat32)
    box = tuple(slice(int(lo[d]), int(hi[d]) + 1) for d in (2, 1, 0))
    return sitk.GetArrayFromImage(out), box


def paste(full: np.ndarray, values: np.ndarray, box: Tuple[slice, ...], mode: str = "max") -> None:
    """Write ``values`` into ``full[box]`` in place; ``mode`` 'max' keeps the larger (two sides)."""
    if values.size == 0:
        return
    if mode == "max":
        np.maximum(full[box], values, out=full[box])
    else:
        full[box] = values


def normalise(array: np.ndarray, intensity: IntensityConfig) -> np.ndarray:
    """Scan values -> [0, 1] float32 (CT: fixed HU window; MRI: per-crop percentiles)."""
    a = np.asarray(array, dtype=np.float32)
    if intensity.modality == "ct":
        lo, hi = intensity.ct_window_hu
    else:
        lo, hi = np.percentile(a, intensity.mri_percentiles)
        if hi - lo < 1e-6:
            return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _physical_to_continuous_index(image: sitk.Image, pts_lps: np.ndarray) -> np.ndarray:
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    sp = np.asarray(image.GetSpacing(), float)
    o = np.asarray(image.GetOrigin(), float)
    # index = diag(1/sp) D^-1 (p - o); D is orthonormal so D^-1 = D^T
    return ((np.asarray(pts_lps) - o) @ d) / sp


def _index_box(image: sitk.Image, geom: CropGeometry, pad_voxels: int) -> Tuple[np.ndarray,
                                                                              np.ndarray]:
    """Inclusive (i, j, k) index box of ``image`` covering the crop, clipped to the image."""
    n = geom.shape - 1
    corners = np.array([[x, y, z] for x in (-0.5, n + 0.5) for y in (-0.5, n + 0.5)
                        for z in (-0.5, n + 0.5)], float)
    idx = _physical_to_continuous_index(image, geom.points_lps(corners))
    size = np.asarray(image.GetSize())
    lo = np.maximum(np.floor(idx.min(0)).astype(int) - pad_voxels, 0)
    hi = np.minimum(np.ceil(idx.max(0)).astype(int) + pad_voxels, size - 1)
    return lo, hi


def _cut_box(image: sitk.Image, geom: CropGeometry, pad_voxels: int) -> sitk.Image:
    lo, hi = _index_box(image, geom, pad_voxels)
    if (hi < lo).any():
        return image
    return sitk.RegionOfInterest(image, [int(v) for v in (hi - lo + 1)], [int(v) for v in lo])


def roi_box_mask(roi: SinusROI, crop: CropConfig, side: str,
                 offset_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """``(S, S, S)`` bool: voxels of the crop (as returned by ``extract_crop``) inside the ROI box.

    Crops are aligned with the ROI axes, so the box is a slab per axis, shifted by the crop's
    jitter offset (mm) and mirrored with right-side crops.
    """
    s = crop.shape
    spacing = crop.spacing_mm if crop.fov == "fixed" else float(roi.size.max()) / s
    pos = (np.arange(s) - (s - 1) / 2.0) * spacing  # mm from the crop centre along each axis
    off = np.asarray(offset_mm, float)
    mirrored = crop.mirror_right and check_side(side) == "right"
    inside = []
    for axis in range(3):
        p = -pos if (axis == 0 and mirrored) else pos  # array index runs the other way
        inside.append(np.abs(p + off[axis]) <= roi.size[axis] / 2.0)
    return inside[2][:, None, None] & inside[1][None, :, None] & inside[0][None, None, :]
