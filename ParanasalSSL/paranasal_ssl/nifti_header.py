"""A NIfTI-1 file's sform, read from its header without ITK, to catch a sheared one.

ITK represents only orthonormal orientations. A NIfTI whose sform is sheared - typically a
gantry-tilted CT converted without tilt correction: each slice shifted in its own plane - is
refused by ITK when the file has no qform, and read through its qform when it has one: the
shear silently dropped, the head misplaced by up to centimetres, with only a console warning.
``scan_io.read_scan`` checks the header first and, for a sheared sform, places each slice where
the sform says and resamples onto a regular grid (``slice_geometry``), as for a tilted DICOM
series. The sform maps voxel (i, j, k) to RAS mm (NIfTI convention).
"""

from __future__ import annotations

import gzip
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import RAS_TO_LPS
from paranasal_ssl.slice_geometry import SliceStack, checked_stack

PathLike = Union[str, Path]
HEADER_BYTES = 348  # NIfTI-1; NIfTI-2 files (540) are left to ITK
SHEAR_TOLERANCE = 1e-4  # |cosine| between two voxel axes above this: sheared, not rounding


def _header(path: Path) -> Optional[bytes]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read(HEADER_BYTES)
    except (OSError, EOFError):
        return None
    return data if len(data) == HEADER_BYTES else None


def _endian(header: bytes) -> Optional[str]:
    for mark in ("<", ">"):
        if struct.unpack_from(mark + "i", header, 0)[0] == HEADER_BYTES:
            return mark
    return None


def sheared_sform(path: PathLike) -> Optional[np.ndarray]:
    """The (4, 4) voxel -> RAS mm sform of a NIfTI-1 file when it is set and its voxel axes
    are not mutually perpendicular; None for any other file."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    header = _header(path)
    mark = _endian(header) if header else None
    if mark is None or struct.unpack_from(mark + "h", header, 254)[0] <= 0:  # sform_code
        return None
    sform = np.eye(4)
    sform[:3] = np.array(struct.unpack_from(mark + "12f", header, 280), float).reshape(3, 4)
    axes = sform[:3, :3] / np.linalg.norm(sform[:3, :3], axis=0)
    cosines = axes.T @ axes - np.eye(3)
    return sform if np.abs(cosines).max() > SHEAR_TOLERANCE else None


def read_sheared_nifti(path: PathLike, sform: np.ndarray) -> tuple[sitk.Image, SliceStack]:
    """The voxels of ``path`` (read by ITK from a copy whose header orientation is cleared, so
    it neither refuses nor reorients them) and where each slice lies by ``sform``: slice ``k``
    at sform @ (0, 0, k), its rows and columns along the sform's first two axes (LPS)."""
    path = Path(path)
    lps = RAS_TO_LPS @ sform[:3, :3]
    origin = RAS_TO_LPS @ sform[:3, 3]
    spacing_i, spacing_j = np.linalg.norm(lps[:, 0]), np.linalg.norm(lps[:, 1])
    row, column = lps[:, 0] / spacing_i, lps[:, 1] / spacing_j
    if abs(row @ column) > SHEAR_TOLERANCE:
        raise InputError(path, "its sform shears the slices' own rows and columns",
                         field="sform", expected="perpendicular in-plane axes (only the slice "
                         "axis may be tilted, as a gantry tilt does)")
    with tempfile.TemporaryDirectory(prefix="paranasal-nifti-") as tmp:
        plain = Path(tmp) / "voxels.nii"
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        header = bytearray(_header(plain))
        mark = _endian(bytes(header))
        struct.pack_into(mark + "hh", header, 252, 0, 0)  # qform_code, sform_code: unset
        with open(plain, "r+b") as f:
            f.write(header)
        try:
            image = sitk.ReadImage(str(plain))
        except RuntimeError as exc:
            raise InputError(path, f"cannot read its voxels ({str(exc).strip()[-200:]})") \
                from None
    depth = image.GetDepth()
    positions = origin + np.arange(depth)[:, None] * lps[:, 2]
    orientation = np.concatenate([row, column])
    stack = checked_stack(positions, np.tile(orientation, (depth, 1)), (spacing_i, spacing_j),
                          (image.GetHeight(), image.GetWidth()), path)
    return image, stack
