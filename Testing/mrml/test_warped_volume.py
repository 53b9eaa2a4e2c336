"""A DICOM series off a regular grid, loaded as Slicer's DICOM module loads it by default (the
slices stacked regularly under a regularisation grid transform, ``slicer_dicom``): the module
analyses it where its slices really lie, exactly as the core reads the same files, and shows
the results there. Transforms that bend slices are still refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from slicer_dicom import addGridTransform, loadSeriesAsSlicerDoes

from helpers.fields import SHAPE, SPACING, assert_holds_the_field, write_scan_of_field
from helpers.images import tilted_copy, write_dicom_series
from paranasal_ssl.errors import InputError
from paranasal_ssl.inference import predict_scan
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.roi_suggest import suggest_rois
from paranasal_ssl.scan_io import read_scan, scan_notes
from ParanasalSSLLib import analysis, analysis_job, warped_volume
from ParanasalSSLLib import mrml_bridge as bridge
from ParanasalSSLLib.job_runner import SUCCEEDED


def _assertSameImage(image, reference):
    assert image.GetSize() == reference.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(image, get)(), getattr(reference, get)(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image),
                                  sitk.GetArrayFromImage(reference))


@pytest.mark.parametrize("irregularity, slicerLoads", [
    ("tilt", "sheared matrix"), ("tilt", "grid transform"),
    ("missing slice", "grid transform"), ("tilt and missing slice", "both")])
def test_a_series_off_a_regular_grid_is_the_scan_the_core_reads_from_its_files(
        slicerApp, tmp_path, irregularity, slicerLoads):
    tilt = np.tan(np.deg2rad(20)) if "tilt" in irregularity else 0.0
    positions = [(-5.0, 3.0 + k * SPACING[2] * tilt, 7.0 + k * SPACING[2])
                 for k in range(SHAPE[0])]
    folder = write_scan_of_field(tmp_path / "series", positions)
    if "missing slice" in irregularity:
        (folder / "slice0010.dcm").unlink()
    node = loadSeriesAsSlicerDoes(folder, orthogonal=slicerLoads == "grid transform")
    # the nodes Slicer gives the user: current Slicer shears the matrix for a tilt
    assert warped_volume.isUnderNonLinearTransform(node) == (slicerLoads != "sheared matrix")
    assert warped_volume.needsRegularGrid(node)
    image = bridge.imageFromVolumeNode(node)
    assert_holds_the_field(image)
    _assertSameImage(image, read_scan(folder))
    (note,) = scan_notes(image)
    assert ("gantry tilt" in note) == bool(tilt)
    assert ("2.00 to 4.00 mm" in note) == ("missing slice" in irregularity)
    assert ("'CT acquisition transform'" in note) == (slicerLoads != "sheared matrix")


def test_a_regular_series_loads_without_a_transform_and_reads_as_is(slicerApp, tmp_path):
    positions = [(-5.0, 3.0, 7.0 + k * SPACING[2]) for k in range(SHAPE[0])]
    node = loadSeriesAsSlicerDoes(write_scan_of_field(tmp_path / "series", positions))
    assert node.GetParentTransformNode() is None and not warped_volume.needsRegularGrid(node)
    image = bridge.imageFromVolumeNode(node)
    assert scan_notes(image) == []
    assert_holds_the_field(image)


def test_a_transform_that_bends_the_slices_is_refused_by_name(slicerApp, tmp_path):
    positions = [(-5.0, 3.0, 7.0 + k * SPACING[2]) for k in range(SHAPE[0])]
    node = loadSeriesAsSlicerDoes(write_scan_of_field(tmp_path / "series", positions))
    # 3 x 3 x 3 grid nodes over the volume, the middle one pushed
    warp = addGridTransform(node, "warp", (3, 3, 3), [
        s * n / 2 for s, n in zip(node.GetSpacing(), node.GetImageData().GetDimensions())])
    slicer.util.arrayFromGridTransform(warp)[1, 1, 1] = (0.0, 0.0, 3.0)
    slicer.util.arrayFromGridTransformModified(warp)
    with pytest.raises(InputError, match="non-linear transform 'warp', which bends.*Harden"):
        bridge.imageFromVolumeNode(node)


def test_a_tilted_scan_in_slicer_is_analysed_where_its_slices_lie(sickCase, trained_run,
                                                                  tmp_path):
    """Analyze on the regularised node (in this process and as the background job) gives what
    ``predict`` gives on the files, on the same grid, with the note in the panel's line."""
    run, _ = trained_run
    tilted, positions = tilted_copy(sitk.ReadImage(str(sickCase.image)), 20.0)
    folder = write_dicom_series(tilted, tmp_path / "dicom", positions=positions)
    node = loadSeriesAsSlicerDoes(folder, "tilted CT")
    read = read_scan(folder)
    rois = {side: bridge.sinusRoiFromRoiNode(roi) for side, roi in sickCase.rois.items()}
    expected = predict_scan(read, rois, load_model(run.dir, "cpu"), source="tilted CT")
    inProcess = analysis.analyzeScan(node, sickCase.rois, run.dir, device="cpu")
    job = analysis_job.AnalysisJob(node, sickCase.rois, run.dir, "cpu", workRoot=tmp_path)
    job.start()
    assert job.wait(180) == SUCCEEDED, job.message
    for res in (inProcess, job.results):
        heat = res.heatmapNode
        assert heat.GetParentTransformNode() is None  # on the world grid it was analysed on
        _assertSameImage(sitk.Cast(bridge.imageFromVolumeNode(heat), sitk.sitkFloat32),
                         sitk.Cast(_withArray(read, expected.heatmap), sitk.sitkFloat32))
        side = sickCase.sickSide
        assert res.sides[side].probability == pytest.approx(expected.sides[side].probability,
                                                            abs=1e-5)
        assert res.sides[side].regionVolumeMl == pytest.approx(
            expected.sides[side].region_volume_ml)
        segmentId = res.regionsNode.GetSegmentation().GetSegmentIdBySegmentName(
            f"{side} sinus anomaly region")
        np.testing.assert_array_equal(bridge.arrayFromSegment(res.regionsNode, segmentId, heat),
                                      expected.region == analysis.REGION_CODES[side])
        assert "gantry tilt" in analysis.finishedText(res)
    assert "gantry tilt" in job.message
    # Suggest on the same node: the boxes suggest_rois gives on the files
    suggestion, _ = analysis.suggestRoiNodes(node)
    onFiles = suggest_rois(read)
    for side in ("left", "right"):
        np.testing.assert_allclose(suggestion.rois[side].center, onFiles.rois[side].center,
                                   atol=1e-6)


def _withArray(grid: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array, np.float32))
    image.CopyInformation(grid)
    return image
