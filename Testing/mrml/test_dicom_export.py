"""Export of an analysis of a scan loaded from DICOM: the regions also as a DICOM SEG on the
scan's own series, the same SEG ``predict --dicom-seg`` writes for the files (a tilted series,
analysed in Slicer on the regular grid). Without highdicom the panel's line says so."""

from __future__ import annotations

import sys

import numpy as np
import pydicom
import SimpleITK as sitk
import slicer
from slicer_dicom import DicomDatabase, loadSeriesAsSlicerDoes

from helpers.images import tilted_copy, write_dicom_series
from paranasal_ssl.dicom_seg import write_region_seg
from paranasal_ssl.inference import predict_scan
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.scan_io import read_scan
from ParanasalSSLLib import analysis, results
from ParanasalSSLLib import mrml_bridge as bridge


def _frames(path, uids):
    import highdicom as hd

    seg = hd.seg.segread(path)
    labels = {number: d.SegmentLabel.split()[0]
              for number, d in enumerate(seg.SegmentSequence, start=1)}
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True)
    return frames, labels, seg


def test_a_tilted_dicom_scan_exports_the_seg_predict_writes(sickCase, trained_run, tmp_path,
                                                            monkeypatch):
    run, _ = trained_run
    tilted, positions = tilted_copy(sitk.ReadImage(str(sickCase.image)), 20.0)
    folder = write_dicom_series(tilted, tmp_path / "dicom", positions=positions)
    files = sorted(folder.glob("*.dcm"))
    monkeypatch.setattr(slicer, "dicomDatabase", DicomDatabase(files), raising=False)
    node = loadSeriesAsSlicerDoes(folder, "tilted CT")
    res = analysis.analyzeScan(node, sickCase.rois, run.dir, device="cpu")
    notes = []
    written = results.exportResults(res, tmp_path / "export", notes)
    assert notes == [] and (tmp_path / "export" / "tilted_CT_regions.seg.dcm") in written
    # predict on the files, its region written as a SEG by the core
    rois = {side: bridge.sinusRoiFromRoiNode(roi) for side, roi in sickCase.rois.items()}
    expected = predict_scan(read_scan(folder), rois, load_model(run.dir, "cpu"))
    write_region_seg(expected.region_image(), folder, tmp_path / "core.seg.dcm")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    ours, ourLabels, seg = _frames(tmp_path / "export" / "tilted_CT_regions.seg.dcm", uids)
    theirs, theirLabels, _ = _frames(tmp_path / "core.seg.dcm", uids)
    assert ours.any()
    np.testing.assert_array_equal(
        np.vectorize(lambda n: {"left": 1, "right": 2}.get(ourLabels.get(n), 0))(ours),
        np.vectorize(lambda n: {"left": 1, "right": 2}.get(theirLabels.get(n), 0))(theirs))
    side = sickCase.sickSide
    label = next(d.SegmentLabel for d in seg.SegmentSequence if d.SegmentLabel.startswith(side))
    assert f"p = {res.sides[side].probability:.2f} ({res.sides[side].badge})" in label
    # without highdicom: the rest is written and the panel's line says why there is no SEG
    monkeypatch.setitem(sys.modules, "highdicom", None)
    notes = []
    written = results.exportResults(res, tmp_path / "again", notes)
    assert len(written) == 3 and notes == [
        "no DICOM SEG: highdicom is not installed (pip install highdicom in Slicer's Python "
        "console)"]
