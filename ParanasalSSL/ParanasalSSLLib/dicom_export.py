"""An analysis' regions as a DICOM SEG on the scan's own series (for PACS), when the scan was
loaded from Slicer's DICOM database.

Slicer's DICOM module names each loaded volume's source instances (attribute
``DICOM.instanceUIDs``) and its database knows their files. The regions (on the grid the scan
was analysed on: the node's own, or a regular world grid for a tilted series) are sampled onto
the grid the core reads that series with and written by ``paranasal_ssl.dicom_seg``: the SEG
``predict --dicom-seg`` writes for the same files and boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import slicer

from paranasal_ssl.geometry import REGION_CODES
from ParanasalSSLLib import mrml_bridge

INSTANCE_UIDS = "DICOM.instanceUIDs"  # set on volumes by Slicer's DICOM scalar volume plugin


def sourceFiles(scanNode) -> List[Path]:
    """The scan's DICOM files as Slicer's DICOM database has them ([] if it was not loaded
    from DICOM, or the database does not know every one of them)."""
    uids = (scanNode.GetAttribute(INSTANCE_UIDS) or "").split() if scanNode else []
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None:
        return []
    files = [database.fileForInstance(uid) for uid in uids]
    return [Path(f) for f in files] if all(files) else []


def exportRegionSeg(results, sourceFile: Path, path) -> Optional[Path]:
    """Write ``results``' regions (``AnalysisResults``) as a DICOM SEG at ``path`` on the
    series of ``sourceFile`` (one of the scan's DICOM files), one segment per side labelled
    with its probability and call. None when no side has a region."""
    import SimpleITK as sitk

    from paranasal_ssl.dicom_seg import write_region_seg_on_series

    heat = results.heatmapNode
    labels = np.zeros(tuple(reversed(heat.GetImageData().GetDimensions())), np.uint8)
    segmentation = results.regionsNode.GetSegmentation()
    for side, code in REGION_CODES.items():
        segmentId = segmentation.GetSegmentIdBySegmentName(f"{side} sinus anomaly region")
        if segmentId:
            labels[mrml_bridge.arrayFromSegment(results.regionsNode, segmentId, heat) > 0] = code
    region = sitk.GetImageFromArray(labels)
    origin, spacing, direction = mrml_bridge.imageGeometryFromIjkToRas(
        mrml_bridge.volumeIjkToWorld(heat), heat.GetName())
    region.SetOrigin(origin)
    region.SetSpacing(spacing)
    region.SetDirection(direction)
    descriptions = {side: f"{side} maxillary sinus, p = {s.probability:.2f} ({s.badge})"
                    for side, s in results.sides.items()}
    return write_region_seg_on_series(region, sourceFile, Path(path), descriptions=descriptions)


def exportIfDicom(results, directory: Path, stem: str, notes: List[str]) -> List[Path]:
    """``<stem>_regions.seg.dcm`` in ``directory`` when the scan came from Slicer's DICOM
    database; ``notes`` says why not when it did but the SEG cannot be written."""
    from paranasal_ssl.dicom_seg import highdicom_installed

    files = sourceFiles(results.scanNode)
    if not files:
        return []
    if not highdicom_installed():
        notes.append("no DICOM SEG: highdicom is not installed (pip install highdicom in "
                      "Slicer's Python console)")
        return []
    seg = exportRegionSeg(results, files[0], directory / f"{stem}_regions.seg.dcm")
    return [seg] if seg is not None else []
