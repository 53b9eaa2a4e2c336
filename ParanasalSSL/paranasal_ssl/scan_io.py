"""Read and write scans through SimpleITK, keeping their physical geometry.

SimpleITK works in LPS world coordinates (DICOM/ITK convention); everything in this module stays
in LPS. Conversion to and from the RAS millimetres that users and Slicer speak is in
``geometry.py``. Arrays from ``sitk.GetArrayFromImage`` are indexed ``[k, j, i]`` (z, y, x).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.atomic import atomic_path
from paranasal_ssl.dicom_files import (
    is_dicom_file,
    is_dicomdir,
    series_files,
    series_ids,
    unread_members,
)
from paranasal_ssl.errors import InputError
from paranasal_ssl.nifti_header import check_complete, read_sheared_nifti, sheared_sform
from paranasal_ssl.slice_geometry import (
    NOTE_KEY,
    enhanced_frames,
    placed,
    regularised,
    sorted_stack,
    stack_from_series_reader,
)

PathLike = Union[str, Path]
log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Bumped when reading an input of this kind gives other voxels or geometry than before, so
# caches keyed by a scan's content (crops, residual maps) are cut again: DICOM 1 = series off a
# regular grid resampled; 2 = multi-frame frames placed by their own positions, series in
# sub-folders, files without a suffix. NIfTI with a sheared sform 1 = placed by that sform.
READER_VERSIONS = {"dicom": 2, "sheared-nifti": 1}


def read_scan(path: PathLike, series_uid: Optional[str] = None) -> sitk.Image:
    """Read a 3D scalar scan: a NIfTI/NRRD/MHA file, or DICOM: a folder holding one series
    (in it or in its sub-folders, e.g. a CD), a DICOMDIR, or one file of a series (named
    anything: ``dicom_files``).

    A DICOM series whose slices are off a regular grid (gantry tilt, missing slices), or a
    NIfTI whose sform tilts its slices, is resampled onto one (``slice_geometry``), with a
    warning and a note (``scan_notes``).
    Raises ``InputError`` naming the file for a missing, unreadable or cut-short file, a 2D or
    4D image, a vector image, NaN/inf values, a DICOM folder with several series (pass
    ``series_uid``) or a series no grid can hold (mixed orientations, two slices at one place).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        image = _read_dicom_folder(path, series_uid)
    elif is_dicomdir(path):  # a CD's index: the series are in its folder
        image = _read_dicom_folder(path.parent, series_uid)
    elif is_dicom_input(path):
        image = _read_dicom_folder(path.parent, series_uid or _series_of_file(path))
    else:
        check_complete(path)  # ITK fills a cut-short NIfTI with zeros, silently
        sform = sheared_sform(path)  # None unless a NIfTI whose sform tilts its slices
        if sform is not None:  # ITK would drop the tilt (or refuse the file)
            image = _read_sheared_nifti(path, sform)
        else:
            try:
                image = sitk.ReadImage(str(path))
            except RuntimeError as exc:
                raise InputError(path, f"cannot read image ({_first_line(exc)})",
                                 expected="a NIfTI, NRRD, MHA file or a DICOM folder") from None
    check_scan(image, path)
    return image


def check_scan(image: sitk.Image, source: PathLike) -> None:
    """Refuse images the pipeline cannot use, with a message naming ``source``."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(source, f"image has {image.GetNumberOfComponentsPerPixel()} components "
                         "per voxel", expected="a scalar (grey-value) volume")
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(source, f"image is {image.GetDimension()}D (size {size})",
                         expected="a 3D volume")
    if min(size) < 2:
        raise InputError(source, f"image is 2D in effect (size {size})",
                         expected="a 3D volume with at least 2 voxels along each axis")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise InputError(source, f"{bad} voxel(s) are NaN or infinite",
                             expected="finite intensities")


def read_header(path: PathLike) -> dict:
    """Geometry of an image file without reading its voxels (about 1-5 ms).

    Returns size (i, j, k), spacing (mm), origin (LPS mm) and direction (row-major 3x3, LPS).
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image header ({_first_line(exc)})") from None
    return {
        "size": reader.GetSize(),
        "spacing": reader.GetSpacing(),
        "origin": reader.GetOrigin(),
        "direction": reader.GetDirection(),
    }


def write_image(image: sitk.Image, path: PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary file, then rename). The format follows the suffix."""
    path = Path(path)
    if not path.name.lower().endswith(IMAGE_SUFFIXES + (".seg.nrrd",)):
        raise InputError(path, "unknown image suffix", expected=" or ".join(IMAGE_SUFFIXES))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def image_from_array(array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                     origin: Sequence[float] = (0.0, 0.0, 0.0),
                     direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    """Build an image from a ``[k, j, i]`` array with LPS geometry (spacing in (i, j, k) order)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in np.asarray(direction, dtype=float).ravel()])
    return image


def copy_geometry(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image holding ``array`` (``[k, j, i]``, same shape as ``reference``) in its geometry."""
    expected = tuple(reversed(reference.GetSize()))
    if tuple(array.shape) != expected:
        raise ValueError(f"array shape {array.shape} does not match image grid {expected}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.CopyInformation(reference)
    return image


def is_dicom_input(path: PathLike) -> bool:
    """True for what ``read_scan`` reads as DICOM: a folder, a DICOMDIR, or a file of a series
    (a ``.dcm`` suffix or DICOM's own marker, whatever the file is called)."""
    path = Path(path)
    if path.is_dir() or is_dicomdir(path):
        return True
    return not path.name.lower().endswith(IMAGE_SUFFIXES) and is_dicom_file(path)


def reader_version(path: PathLike) -> Optional[str]:
    """Which reading code an input goes through when that code has changed (``READER_VERSIONS``:
    DICOM, sheared NIfTI), for cache keys; None for every other file, whose keys stay as they
    were."""
    path = Path(path)
    if not path.exists():
        return None
    if is_dicom_input(path):
        return f"dicom-{READER_VERSIONS['dicom']}"
    try:
        sheared = sheared_sform(path) is not None
    except (InputError, OSError, ValueError):
        return None
    return f"sheared-nifti-{READER_VERSIONS['sheared-nifti']}" if sheared else None


def dicom_series_files(path: PathLike, series_uid: Optional[str] = None) -> List[str]:
    """The files of the DICOM series ``read_scan(path, series_uid)`` reads, in its slice order
    (slice k of the image = file k)."""
    path = Path(path)
    if path.is_dir():
        return _series_files(path, series_uid)
    if is_dicomdir(path):
        return _series_files(path.parent, series_uid)
    return _series_files(path.parent, series_uid or _series_of_file(path))


def scan_notes(image: sitk.Image) -> List[str]:
    """What reading changed about a scan (e.g. a tilted DICOM series resampled), for reports."""
    return [image.GetMetaData(NOTE_KEY)] if image.HasMetaDataKey(NOTE_KEY) else []


def _read_dicom_folder(folder: Path, series_uid: Optional[str]) -> sitk.Image:
    series_uid, files = _chosen_series(folder, series_uid)
    if len(files) == 1:  # one multi-frame file (enhanced CT/MR): its frames carry the geometry
        return _read_multiframe(Path(files[0]), series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, to check the grid
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's "non uniform sampling": ours below
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"cannot read the DICOM series ({_first_line(exc)})",
                         field=f"series {series_uid}" if series_uid else None) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    stack = stack_from_series_reader(reader, image, folder)
    if stack.is_regular():
        return image
    unread = unread_members(files, series_uid)
    suffix = (f"; GDCM could not read {len(unread)} file(s) of the series, cut short or damaged "
              f"(copy them again): {', '.join(p.name for p in unread[:5])}"
              f"{' ...' if len(unread) > 5 else ''}") if unread else ""
    return _regularised(image, stack, folder, suffix)


def _regularised(image: sitk.Image, stack, source: PathLike, note_suffix: str = ""):
    """``image`` resampled where ``stack`` puts its slices, with a warning and a note."""
    regular = regularised(image, stack, note_suffix, source)
    log.warning("%s: %s", source, regular.GetMetaData(NOTE_KEY))
    return regular


def _read_sheared_nifti(path: Path, sform: np.ndarray) -> sitk.Image:
    """A NIfTI whose sform tilts its slices (``nifti_header``): resampled onto a regular grid
    where the sform puts each slice, with a warning and a note."""
    image, stack = read_sheared_nifti(path, sform)
    return _regularised(image, stack, path,
                        " (from the file's sheared sform, which ITK cannot represent)")


def _read_multiframe(path: Path, series_uid: Optional[str]) -> sitk.Image:
    """A single-file series. The series reader makes a multi-frame file a 4D image of one
    volume; the file reader gives the 3D volume, but GDCM stacks the frames regularly from the
    first one (a tilted gantry's shifts, a missing frame: silently dropped). Where the file
    gives each frame its position (Enhanced CT/MR), the frames are placed there: sorted along
    their normal and, off a regular grid, resampled like a series (with the same note)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot read the DICOM file ({_first_line(exc)})",
                         field=f"series {series_uid}" if series_uid else None) from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    frames = _frame_geometry(path)
    if frames is None or image.GetDimension() != 3 or len(frames[0]) != image.GetDepth():
        return image
    stack, order = sorted_stack(*frames, path)
    volume = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image)[order])
    return placed(volume, stack) if stack.is_regular() else _regularised(volume, stack, path)


def _frame_geometry(path: Path):
    """``slice_geometry.enhanced_frames`` of a multi-frame file (headers only), or None."""
    import pydicom

    try:
        return enhanced_frames(pydicom.dcmread(str(path), stop_before_pixels=True))
    except (pydicom.errors.InvalidDicomError, OSError, AttributeError, ValueError) as exc:
        log.warning("%s: per-frame positions unreadable (%s); GDCM's geometry used", path, exc)
        return None


def _series_files(folder: Path, series_uid: Optional[str]) -> List[str]:
    return _chosen_series(folder, series_uid)[1]


def _chosen_series(folder: Path, series_uid: Optional[str]) -> Tuple[str, List[str]]:
    """(UID, files in slice order) of the series ``series_uid`` in ``folder``, or of its only
    series when ``series_uid`` is None."""
    series = series_ids(folder)  # uid -> found in sub-folders
    if not series:
        raise InputError(folder, "no DICOM series found in this folder or its sub-folders",
                         expected="a folder of DICOM slices, or a NIfTI/NRRD/MHA file")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(_describe_series(folder, uid, nested)
                                for uid, nested in series.items())
            raise InputError(folder, f"the folder holds {len(series)} DICOM series: {listing}",
                             expected="one series: pass --series-uid UID, or give one file "
                             "of the series (or its own folder) as the image (a case list or "
                             "manifest can too), or for a list of studies --series-description "
                             "TEXT")
        series_uid = next(iter(series))
    elif series_uid not in series:
        raise InputError(folder, f"series {series_uid} not found", field="series_uid",
                         expected=f"one of {list(series)}")
    return series_uid, series_files(folder, series_uid, series[series_uid])


def series_matching(path: PathLike, description: str) -> Path:
    """One file of the DICOM series at ``path`` (a folder, a CD, a DICOMDIR) whose
    SeriesDescription contains ``description`` (case-insensitive): it stands for that series
    wherever a scan path goes. A file given already chooses its series and is returned as it
    is. Raises ``InputError`` listing the series unless exactly one matches."""
    path = Path(path)
    if path.is_file() and not is_dicomdir(path):
        return path
    folder = path.parent if is_dicomdir(path) else path
    series = series_ids(folder)
    found = {uid: series_files(folder, uid, nested) for uid, nested in series.items()}
    matches = [uid for uid, files in found.items()
               if description.lower() in _series_description(files[0]).lower()]
    if len(matches) != 1:
        listing = "; ".join(_describe_series(folder, uid, nested)
                            for uid, nested in series.items()) or "none"
        raise InputError(folder, f"{len(matches)} of its DICOM series have '{description}' in "
                         f"their description (series: {listing})", field="series description",
                         expected="exactly one matching series: a longer or other text, or a "
                         "file of the series as the scan")
    return Path(found[matches[0]][0])


def _series_description(file: str) -> str:
    header = sitk.ImageFileReader()
    header.SetFileName(file)
    try:
        header.ReadImageInformation()
        return header.GetMetaData("0008|103e").strip() \
            if header.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        return ""


def _describe_series(folder: Path, uid: str, nested: bool) -> str:
    """``uid (N slices, "description", e.g. file)``: enough to choose a series by."""
    files = series_files(folder, uid, nested)
    description = _series_description(files[0])
    name = Path(files[0]).relative_to(folder).as_posix() if nested else Path(files[0]).name
    return f'{uid} ({len(files)} slices, "{description}", e.g. {name})'


def _series_of_file(path: Path) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        return reader.GetMetaData("0020|000e").strip()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read DICOM file ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages put the useful sentence last; keep it short.
    return lines[-1][:200] if lines else type(exc).__name__
