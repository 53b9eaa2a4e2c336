"""The real head CT "Cranium" that Debian's ``invesalius-examples`` package ships (GPL-2).

``Cranium.inv3`` is a gzipped tar holding ``main.plist`` (shape, spacing, dtype) and
``matrix.dat``: raw little-endian int16 in HU, array ``(z, y, x) = (108, 256, 256)``, spacing
0.957 x 0.957 x 1.5 mm. The file stores no orientation. As InVesalius stores DICOM slices
bottom-up, slice 0 is inferior (teeth) and row 0 is POSTERIOR (the headrest arc); left-right cannot
be confirmed and column 0 is taken as the patient's right. In LPS that is direction
diag(1, -1, 1): i toward Left, j toward Anterior (-P), k toward Superior.
``scripts/fetch_cranium.sh`` unpacks the file without installing the package.
"""

from __future__ import annotations

import os
import plistlib
import tarfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.errors import InputError

DEFAULT_LOCATIONS = (
    "/tmp/paranasal-data/Cranium.inv3",
    "/usr/share/doc/invesalius-examples/examples/Cranium.inv3",
)


def find_cranium() -> Optional[Path]:
    """Path of Cranium.inv3 ($PARANASAL_CRANIUM, then the usual places), or None."""
    candidates = [os.environ.get("PARANASAL_CRANIUM", "")] + list(DEFAULT_LOCATIONS)
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def load_cranium(path: Union[str, Path, None] = None) -> sitk.Image:
    """Read Cranium.inv3 as an int16 HU image with LPS geometry centred on the volume centre."""
    path = Path(path) if path else find_cranium()
    if path is None or not path.is_file():
        raise InputError(path or "Cranium.inv3", "file not found",
                         expected="the invesalius-examples CT; run scripts/fetch_cranium.sh")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            meta = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            matrix = meta["matrix"]
            raw = tar.extractfile(members[matrix["filename"]]).read()
    except (tarfile.TarError, KeyError, OSError, plistlib.InvalidFileException) as exc:
        raise InputError(path, f"not a readable InVesalius project ({exc})") from None
    shape = tuple(int(v) for v in matrix["shape"])
    dtype = np.dtype(matrix["dtype"]).newbyteorder("<")
    array = np.frombuffer(raw, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise InputError(path, f"matrix has {array.size} values, header says shape {shape}")
    array = array.reshape(shape).astype(np.int16)
    spacing = [float(v) for v in meta["spacing"]]  # (x, y, z) mm
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    direction = np.diag([1.0, -1.0, 1.0])
    image.SetDirection(direction.ravel().tolist())
    size = np.array(image.GetSize(), float)
    centre_offset = direction @ ((size - 1) / 2.0 * np.array(spacing))
    image.SetOrigin((-centre_offset).tolist())
    return image
