"""The highlighted residual region as a DICOM Segmentation (SEG) that references the scan's own
DICOM series, so PACS and DICOM viewers show it over the slices it was computed on.

Uses highdicom (optional: ``pip install highdicom``, or the package's ``dicom`` extra). Frame
``k`` of the SEG is slice ``k`` of the series (file ``k`` of ``scan_io.dicom_series_files``):
the region's grid is that series' own when it is regular, and is sampled at each slice's pixels
when ``read_scan`` resampled a tilted or gapped series.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.atomic import atomic_path
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import REGION_CODES
from paranasal_ssl.scan_io import dicom_series_files, is_dicom_input
from paranasal_ssl.slice_geometry import (
    enhanced_frames,
    frame_stack,
    on_source_slices,
    stack_from_datasets,
)
from paranasal_ssl.version import code_version

SERIES_NUMBER = 9301  # a number of its own, so viewers list the SEG apart from the scan


def highdicom_installed() -> bool:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def require_highdicom() -> None:
    """Raise a clear error, before any work, when highdicom is not installed."""
    if not highdicom_installed():
        raise InputError(None, "writing DICOM SEG needs the highdicom package",
                         field="--dicom-seg", expected="pip install highdicom")


# what a SEG refers to: without them no viewer can place it on the series
REFERENCED_TAGS = ("FrameOfReferenceUID", "StudyInstanceUID")


def check_dicom_input(path: Path, series_uid: Optional[str] = None) -> None:
    """A SEG refers to the scan's own DICOM series: refuse any other input, or a series
    without the tags a SEG refers to, by name (before any work is done on it)."""
    if not is_dicom_input(path):
        raise InputError(path, "a DICOM SEG refers to the scan's DICOM series",
                         field="--dicom-seg",
                         expected="a DICOM folder or file of a series as the scan")
    _check_referenced_tags(dicom_series_files(path, series_uid)[0])


def _check_referenced_tags(first_file) -> None:
    import pydicom

    header = pydicom.dcmread(first_file, stop_before_pixels=True)
    missing = [k for k in REFERENCED_TAGS if not getattr(header, k, None)]
    if missing:
        raise InputError(first_file, f"the series has no {' or '.join(missing)}, which a "
                         "DICOM SEG must refer to", field=", ".join(missing),
                         expected="a DICOM series with these tags (or predict without "
                         "--dicom-seg: the heatmap and region are written as NIfTI/NRRD)")


def write_region_seg(region_image: sitk.Image, dicom_input: Path, out: Path,
                     series_uid: Optional[str] = None,
                     descriptions: Optional[Dict[str, str]] = None) -> Optional[Path]:
    """Write ``region_image`` (uint8 in the grid ``read_scan`` gave: 1 left, 2 right) as a
    binary DICOM SEG with one segment per side that has voxels, a frame per slice of the
    series. A series read onto a regular grid (tilted, missing slices) has its region sampled
    back at each slice's pixels. Returns ``out``, or None when no side has any voxel (an empty
    SEG is not written). ``descriptions``: side -> segment label."""
    require_highdicom()
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # not a line per copied module

    files = dicom_series_files(dicom_input, series_uid)
    _check_referenced_tags(files[0])
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]  # headers suffice
    frames = int(getattr(sources[0], "NumberOfFrames", 1) or 1)
    if len(sources) == 1 and frames > 1:  # one multi-frame file: a SEG frame per its frames
        geometry = enhanced_frames(sources[0])
        region = sitk.GetArrayFromImage(region_image) if geometry is None else \
            on_source_slices(region_image, frame_stack(*geometry))
    else:
        frames = len(sources)
        stack = stack_from_datasets(sources, dicom_input)
        region = sitk.GetArrayFromImage(region_image) if stack.is_regular() else \
            on_source_slices(region_image, stack)
    if region.shape != (frames, int(sources[0].Rows), int(sources[0].Columns)):
        raise InputError(dicom_input, f"region of shape {region.shape} does not match the "
                         f"series ({frames} slices of {sources[0].Rows} x "
                         f"{sources[0].Columns})", expected="the region predicted on this series")
    version = code_version()
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ParanasalSSL residual heatmap", version=version,
        family=codes.DCM.ArtificialIntelligence)
    present = [s for s, code in REGION_CODES.items() if (region == code).any()]
    if not present:
        return None
    labels = np.zeros(region.shape, np.uint8)  # segment numbers 1..n, in the order of present
    segments = []
    for number, side in enumerate(present, start=1):
        labels[region == REGION_CODES[side]] = number
        segments.append(hd.seg.SegmentDescription(
            segment_number=number,
            # a DICOM LO value: at most 64 characters
            segment_label=(descriptions or {}).get(side, f"{side} maxillary sinus")[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    with warnings.catch_warnings():
        # the patient's name is copied from the scan as it is: its form is not ours to warn of
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=labels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="ParanasalSSL", manufacturer_model_name="maxillary sinus anomaly heatmap",
            software_versions=version, device_serial_number="none",
            series_description="ParanasalSSL highlighted region")
    out = Path(out)
    with atomic_path(out) as tmp:
        seg.save_as(str(tmp))
    return out


def write_region_seg_on_series(region: sitk.Image, dicom_input: Path, out: Path,
                               series_uid: Optional[str] = None,
                               descriptions: Optional[Dict[str, str]] = None) -> Optional[Path]:
    """``write_region_seg`` for a region on any grid (e.g. the one Slicer analysed the series
    on): sampled first (nearest neighbour, LPS world) onto the grid ``read_scan`` gives the
    series, which the SEG's frames are cut from. Identical grids leave every voxel as it is."""
    from paranasal_ssl.scan_io import read_scan

    reference = read_scan(dicom_input, series_uid)
    on_series = sitk.Resample(sitk.Cast(region, sitk.sitkUInt8), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return write_region_seg(on_series, dicom_input, out, series_uid, descriptions)
