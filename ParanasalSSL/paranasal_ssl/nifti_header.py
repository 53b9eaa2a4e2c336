"""A NIfTI-1 file's header read without ITK: to catch a sheared sform and a truncated file.

ITK represents only orthonormal orientations. A NIfTI whose sform is sheared - typically a
gantry-tilted CT converted without tilt correction: each slice shifted in its own plane - is
refused by ITK when the file has no qform, and read through its qform when it has one: the
shear silently dropped, the head misplaced by up to centimetres, with only a console warning.
``scan_io.read_scan`` checks the header first and, for a sheared sform, places each slice where
the sform says and resamples onto a regular grid (``slice_geometry``), as for a tilted DICOM
series. The sform maps voxel (i, j, k) to RAS mm (NIfTI convention).

ITK also reads a NIfTI whose voxel data stop early (an interrupted copy or download, plain or
gzipped) without a word, the missing voxels zero: ``check_complete`` compares the data with
what the header promises.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import tempfile
import zlib
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


def check_complete(path: PathLike) -> None:
    """Raise ``InputError`` if the NIfTI-1 file ``path`` holds fewer bytes than its header's
    vox_offset + voxel count x bytes per voxel (other files: nothing checked).

    A gzipped file's trailer gives its uncompressed size (mod 2^32) in 4 bytes; when that is
    the expected size the file is whole (a truncated file ends in arbitrary compressed bytes),
    otherwise - a cut file, trailing extra bytes, several gzip members - it is decompressed to
    count. Only then does this cost a full decompression.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return
    header = _header(path)
    mark = _endian(header) if header else None
    if mark is None:
        return  # no NIfTI-1 header: ITK's own error, or NIfTI-2
    dims = struct.unpack_from(mark + "8h", header, 40)
    bitpix = struct.unpack_from(mark + "h", header, 72)[0]
    vox_offset = int(struct.unpack_from(mark + "f", header, 108)[0])
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or min(dims[1:dims[0] + 1]) < 1:
        return  # a header ITK refuses anyway
    expected = max(vox_offset, HEADER_BYTES) + int(np.prod(dims[1:dims[0] + 1])) * bitpix // 8
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, 2)
            if struct.unpack("<I", f.read(4))[0] == expected % (1 << 32):
                return
        held = _gzip_content_bytes(path)
    else:
        held = path.stat().st_size
    if held < expected:
        raise InputError(path, f"the file is cut short: {held} of the {expected} bytes its "
                         "header promises (header and voxel data)",
                         expected="a complete file (copy or download it again)")


def _gzip_content_bytes(path: Path) -> int:
    """Bytes that decompress from ``path`` before its data end or break off."""
    total, inflater = 0, zlib.decompressobj(zlib.MAX_WBITS | 16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                total += len(inflater.decompress(chunk))
            except zlib.error:
                return total
            while inflater.eof and inflater.unused_data:  # the next gzip member
                rest = inflater.unused_data
                inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                try:
                    total += len(inflater.decompress(rest))
                except zlib.error:
                    return total
    return total
