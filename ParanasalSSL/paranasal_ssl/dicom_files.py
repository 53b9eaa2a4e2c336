"""Find DICOM files and series the way users hand them over: slices without a ``.dcm`` suffix
(``IM000001``, UIDs as names: what PACS and CD exports write), and series in sub-folders of the
folder given (a CD with a DICOMDIR, ``PATIENT/STUDY/SERIES/`` trees, a study with one folder
per series). A file is DICOM if it says so (``DICM`` at byte 128, DICOM Part 10) or ends in
``.dcm``. A folder's series are those of its own files; only when it holds none are its
sub-folders searched (so a flat series folder costs what it did).

GDCM's folder scan stops at the first file it cannot parse (a one-frame RT dose beside a
planning CT does that) and finds no series at all; the folder's series are then found from
their headers instead (pydicom), image files only, as GDCM lists them.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

PathLike = Union[str, Path]
MAGIC_OFFSET = 128  # DICOM Part 10: a 128-byte preamble, then "DICM"
MAX_FILES_PROBED = 2000  # how many files ``holds_dicom`` opens before it says no


def is_dicom_file(path: PathLike) -> bool:
    """True for a ``.dcm`` file or a file that starts like a DICOM Part 10 file."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as stream:
            stream.seek(MAGIC_OFFSET)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def is_dicomdir(path: PathLike) -> bool:
    """The index file of a DICOM CD/DVD (no image: its folder holds the series)."""
    return Path(path).name.upper() == "DICOMDIR" and Path(path).is_file()


def _files(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` (hidden ones and hidden folders skipped), folder by folder."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def holds_dicom(folder: PathLike) -> bool:
    """True if ``folder`` or a sub-folder holds a DICOM file (the first ``MAX_FILES_PROBED``
    files are looked at; a ``.dcm`` file or a DICOMDIR answers at once). ``predict``'s
    ``*.seg.dcm`` files do not count: a prediction folder is not a scan."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for count, path in enumerate(_files(folder)):
        if count >= MAX_FILES_PROBED:
            return False
        if path.name.lower().endswith(".seg.dcm"):  # predict's DICOM SEG, not a scan
            continue
        if is_dicomdir(path) or is_dicom_file(path):
            return True
    return False


def series_ids(folder: PathLike) -> Dict[str, bool]:
    """Series UIDs in ``folder`` -> whether they were found in sub-folders (``False``: in the
    folder itself, which is then the only place looked at)."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    own = _ids(reader, folder)
    if own:
        return {uid: False for uid in own}
    found: Dict[str, bool] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if Path(root) != folder and files:
            for uid in _ids(reader, Path(root)):
                found.setdefault(uid, True)
    return found


def series_files(folder: PathLike, uid: str, nested: bool) -> List[str]:
    """The files of series ``uid`` in GDCM's slice order (sub-folders included if ``nested``)."""
    reader = sitk.ImageSeriesReader()
    try:
        return list(reader.GetGDCMSeriesFileNames(str(folder), uid, False, nested))
    except RuntimeError:  # a file GDCM cannot parse stops its scan (module docstring)
        return series_by_header(Path(folder), nested).get(uid, [])


def _ids(reader: sitk.ImageSeriesReader, folder: Path) -> List[str]:
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found": we say it
    try:
        return list(reader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:  # a file GDCM cannot parse stops its scan (module docstring)
        return list(series_by_header(folder, nested=False))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)


def series_by_header(folder: Path, nested: bool) -> Dict[str, List[str]]:
    """Series UID -> its image files in ``folder`` (and its sub-folders if ``nested``), read
    from the headers with pydicom, in slice order: by position along the slice normal
    (ImagePositionPatient . (row x column direction)), then InstanceNumber, then name. Files
    pydicom cannot parse and files without an image (no Rows: SR, RT plan) are left out.
    Remembered while the folders are unchanged: listing and reading a series ask again."""
    folder = Path(folder)
    folders = [root for root, _, _ in os.walk(folder)] if nested else [folder]
    changed = max(os.stat(f).st_mtime_ns for f in folders)  # a file added or removed
    found = _series_by_header(str(folder), nested, changed)  # paths as given, like GDCM's
    return {uid: list(files) for uid, files in found.items()}


@functools.lru_cache(maxsize=8)
def _series_by_header(folder_name: str, nested: bool, _mtime_ns: int) -> Dict[str, List[str]]:
    folder = Path(folder_name)
    tags = ["SeriesInstanceUID", "Rows", "ImagePositionPatient", "ImageOrientationPatient",
            "InstanceNumber"]
    paths = _files(folder) if nested else (
        p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith("."))
    found: Dict[str, List[Tuple[float, int, str]]] = defaultdict(list)
    for path in paths:
        try:
            header = _quiet_header(path, tags)
            uid = str(header.get("SeriesInstanceUID", ""))
            if not uid or "Rows" not in header:
                continue
            position = np.array([float(v) for v in header.get("ImagePositionPatient") or []])
            cosines = np.array([float(v) for v in header.get("ImageOrientationPatient") or []])
            height = float(position @ np.cross(cosines[:3], cosines[3:])) \
                if position.size == 3 and cosines.size == 6 else 0.0
            number = int(header.get("InstanceNumber") or 0)
        except Exception:  # noqa: BLE001 - a header pydicom cannot parse holds no slice
            continue
        found[uid].append((height, number, str(path)))
    return {uid: [name for *_, name in sorted(files)] for uid, files in found.items()}


def _quiet_header(path: Path, tags: List[str]):
    """The header of ``path``, without pydicom's warnings about the oddities of files that
    are not the series being looked for (they go to both ``warnings`` and its logger)."""
    import pydicom

    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    finally:
        logger.setLevel(level)


def unread_members(files: Sequence[str], uid: str) -> List[Path]:
    """DICOM files beside the series ``files`` whose header names series ``uid`` but which GDCM
    left out of it: pixel data cut short or damaged. GDCM drops such a file without a word and
    its slice becomes a gap, resampled over; this names it. Only read when there is a gap."""
    import pydicom

    listed = {Path(f).resolve() for f in files}
    unread = []
    for folder in sorted({Path(f).parent for f in files}):
        for path in sorted(folder.iterdir()):
            if path.resolve() in listed or path.name.lower().endswith(".seg.dcm") \
                    or not is_dicom_file(path):
                continue
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True,
                                         specific_tags=["SeriesInstanceUID"])
            except Exception:  # noqa: BLE001 - a header pydicom cannot parse names no series
                continue
            if str(header.get("SeriesInstanceUID", "")) == uid:
                unread.append(path)
    return unread
