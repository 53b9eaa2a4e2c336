"""Analysis results as nodes: geometry, summary, replacement, rollback, export, save and reload."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from helpers.images import oblique_image
from ParanasalSSLLib import heatmap_display, results
from ParanasalSSLLib import mrml_bridge as bridge

SHAPE = (20, 30, 40)


@pytest.fixture
def scan(slicerApp):
    return bridge.addVolumeFromImage(oblique_image(shape=SHAPE, spacing=(0.7, 0.9, 2.5)), "CT 1")


def _prediction():
    heat = np.zeros(SHAPE, np.float32)
    heat[4:8, 5:12, 5:15] = 0.8
    heat[6, 8, 9] = 0.95  # left peak
    heat[10:14, 15:25, 25:35] = 0.6
    left = (heat >= 0.5) & (np.arange(SHAPE[2]) < 20)[None, None, :]
    right = (heat >= 0.5) & (np.arange(SHAPE[2]) >= 20)[None, None, :]
    return heat, {"left": left.astype(np.uint8), "right": right.astype(np.uint8)}


def test_badges_follow_the_uncertain_band():
    assert [results.badge(p) for p in (0.1, 0.35, 0.5, 0.65, 0.9)] == [
        "normal", "uncertain", "uncertain", "uncertain", "anomalous"]


def test_analysis_results_become_nodes_in_the_scan_geometry(slicerApp, scan):
    heat, masks = _prediction()
    res = results.addAnalysisResults(scan, heat, masks, {"left": 0.91, "right": 0.42},
                                     threshold=0.5, opacity=0.7)
    np.testing.assert_allclose(bridge.volumeIjkToWorld(res.heatmapNode),
                               bridge.volumeIjkToWorld(scan))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(res.heatmapNode), heat)
    segmentation = res.regionsNode.GetSegmentation()
    for side in ("left", "right"):
        segmentId = segmentation.GetSegmentIdBySegmentName(f"{side} sinus anomaly region")
        np.testing.assert_array_equal(bridge.arrayFromSegment(res.regionsNode, segmentId, scan),
                                      masks[side])
        voxelMl = 0.7 * 0.9 * 2.5 / 1000
        assert res.sides[side].regionVolumeMl == pytest.approx(masks[side].sum() * voxelMl)
    assert res.sides["left"].badge == "anomalous" and res.sides["right"].badge == "uncertain"
    assert res.sides["left"].text() == "0.91 (anomalous)"
    np.testing.assert_allclose(res.sides["left"].peakRas,
                               (bridge.volumeIjkToWorld(scan) @ [9, 8, 6, 1.0])[:3])
    np.testing.assert_allclose(res.strongestPeakRas(), res.sides["left"].peakRas)
    composite = slicerApp.sliceLogics["Red"].GetSliceCompositeNode()
    assert composite.GetForegroundVolumeID() == res.heatmapNode.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    folder = sh.GetItemParent(sh.GetItemByDataNode(res.heatmapNode))
    assert sh.GetItemName(folder) == results.FOLDER_NAME
    assert sh.GetItemParent(sh.GetItemByDataNode(res.regionsNode)) == folder


def test_a_new_analysis_replaces_the_previous_results_without_leaking_nodes(slicerApp, scan):
    heat, masks = _prediction()
    first = results.addAnalysisResults(scan, heat, masks, {"left": 0.9, "right": 0.1})
    count = slicer.mrmlScene.GetNumberOfNodes()
    second = results.addAnalysisResults(scan, heat * 0.5, masks, {"left": 0.2, "right": 0.1})
    assert slicer.mrmlScene.GetNumberOfNodes() == count
    assert first.heatmapNode.GetScene() is None and first.regionsNode.GetScene() is None
    assert results.resultNodes(scan) == [second.heatmapNode, second.regionsNode]


def test_a_failed_analysis_leaves_nothing_half_made_and_keeps_the_previous_results(
        slicerApp, scan):
    heat, masks = _prediction()
    first = results.addAnalysisResults(scan, heat, masks, {"left": 0.9, "right": 0.1})
    count = slicer.mrmlScene.GetNumberOfNodes()
    badMasks = {"left": masks["left"][:, :, :-1]}  # wrong grid: fails after the heatmap exists
    with pytest.raises((ValueError, IndexError)):
        results.addAnalysisResults(scan, heat, badMasks, {"left": 0.5})
    assert slicer.mrmlScene.GetNumberOfNodes() == count
    assert results.resultNodes(scan) == [first.heatmapNode, first.regionsNode]


def test_export_writes_heatmap_in_the_scan_geometry(slicerApp, scan, tmp_path):
    heat, masks = _prediction()
    res = results.addAnalysisResults(scan, heat, masks, {"left": 0.9, "right": 0.1})
    written = results.exportResults(res, tmp_path)
    assert [p.name for p in written] == ["CT_1_heatmap.nrrd", "CT_1_heatmap.nii.gz",
                                         "CT_1_regions.seg.nrrd"]
    scanImage = bridge.imageFromVolumeNode(scan)
    for path in written[:2]:
        image = sitk.ReadImage(str(path))
        np.testing.assert_allclose(image.GetOrigin(), scanImage.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), scanImage.GetDirection(), atol=1e-5)
        np.testing.assert_allclose(image.GetSpacing(), scanImage.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), heat)


def test_a_scene_with_results_saves_and_reloads_intact(slicerApp, scan, secondScene, tmp_path):
    heat, masks = _prediction()
    res = results.addAnalysisResults(scan, heat, masks, {"left": 0.9, "right": 0.1},
                                     threshold=0.45)
    scanId, heatId = scan.GetID(), res.heatmapNode.GetID()
    mrml = results.saveScene(slicer.mrmlScene, tmp_path / "case.mrml")
    assert sorted(p.name for p in (tmp_path / "Data").iterdir()) == [
        "CT_1.nrrd", "CT_1_anomaly_regions.seg.nrrd", "CT_1_residual_heatmap.nrrd",
        "ParanasalSSL_Heat.csv"]

    loaded = secondScene.scene
    loaded.SetURL(str(mrml))
    assert loaded.Import()
    scanBack, heatBack = loaded.GetNodeByID(scanId), loaded.GetNodeByID(heatId)
    np.testing.assert_allclose(bridge.volumeIjkToWorld(heatBack), bridge.volumeIjkToWorld(scan),
                               atol=1e-6)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(heatBack), heat)
    assert heatBack.GetAttribute(results.RESULT_OF) == scanBack.GetID()
    display = heatBack.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.45)
    colorNode = display.GetColorNode()
    assert colorNode.GetAttribute(heatmap_display.ROLE_ATTRIBUTE) == heatmap_display.HEAT_COLOR_ROLE
    assert colorNode.GetNumberOfColors() == 256
    regions = [n for n in results.resultNodes(scanBack) if n.IsA("vtkMRMLSegmentationNode")][0]
    segmentation = regions.GetSegmentation()
    leftId = segmentation.GetSegmentIdBySegmentName("left sinus anomaly region")
    np.testing.assert_array_equal(bridge.arrayFromSegment(regions, leftId, scanBack),
                                  masks["left"])
