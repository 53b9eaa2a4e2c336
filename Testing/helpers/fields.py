"""A linear intensity field written as scans whose slices lie anywhere (tilted, gapped,
oblique): every voxel of a scan read back must hold the field's value at its point."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from helpers.images import write_dicom_series
from paranasal_ssl.scan_io import image_from_array

SPACING = (0.9, 1.1, 2.0)  # i, j, k (mm)
SHAPE = (24, 18, 20)  # k, j, i


def field(points: np.ndarray) -> np.ndarray:
    """A linear intensity field (what a scan of it holds), points (n, 3) LPS mm -> values."""
    return 200.0 + 0.5 * points[:, 0] + 10.0 * points[:, 1] + 3.0 * points[:, 2]


def slice_points(origin, rows: int, columns: int, row, column, spacing) -> np.ndarray:
    """Physical points (rows, columns, 3) of a slice's pixels."""
    j, i = np.mgrid[0:rows, 0:columns]
    return (np.asarray(origin) + i[..., None] * spacing[0] * np.asarray(row)
            + j[..., None] * spacing[1] * np.asarray(column))


def write_scan_of_field(folder, positions, row=(1, 0, 0), column=(0, 1, 0)):
    """A DICOM series of ``field`` with slice k at positions[k] (LPS mm)."""
    rows, columns = SHAPE[1], SHAPE[2]
    slices = [np.rint(field(slice_points(p, rows, columns, row, column, SPACING)
                            .reshape(-1, 3))).reshape(rows, columns) for p in positions]
    image = image_from_array(np.stack(slices).astype(np.int16), SPACING, positions[0],
                             np.column_stack([row, column, np.cross(row, column)]).ravel())
    return write_dicom_series(image, folder, positions=positions)


def voxel_points(image: sitk.Image) -> np.ndarray:
    """Physical points (k, j, i, 3) of every voxel of ``image`` (LPS mm)."""
    k, j, i = np.mgrid[0:image.GetDepth(), 0:image.GetHeight(), 0:image.GetWidth()]
    index = np.stack([i, j, k], axis=-1) * np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + index @ direction.T


def assert_holds_the_field(image: sitk.Image):
    """Each voxel away from the margin equals the field at its point, to rounding (1 HU)."""
    values = sitk.GetArrayFromImage(image).astype(float)
    inside = ndimage.binary_erosion(values > values.min(), iterations=2)
    assert inside.sum() > 0.2 * values.size
    expected = field(voxel_points(image)[inside])
    assert np.abs(values[inside] - expected).max() <= 1.0
