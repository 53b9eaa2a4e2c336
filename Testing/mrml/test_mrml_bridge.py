"""Volume/ROI nodes <-> core images, crops and ROIs: geometry exact, checked against SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from helpers.images import oblique_image, rotation
from paranasal_ssl.config import CropConfig
from paranasal_ssl.crops import extract_crop
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI
from ParanasalSSLLib import mrml_bridge as bridge


def _assertSameGeometry(a: sitk.Image, b: sitk.Image, atol=1e-6):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=atol)


@pytest.fixture
def obliqueFile(tmp_path):
    """An oblique, anisotropic int16 image written to NRRD (the file Slicer would load)."""
    image = oblique_image(shape=(20, 30, 40), spacing=(0.7, 0.9, 2.5), degrees=17.0)
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _loadWithSlicerReader(slicerApp, path):
    node = slicerApp.logics["volumes"].AddArchetypeVolume(str(path), "scan")
    assert node is not None
    return node


def test_volume_node_loaded_by_slicer_gives_the_same_image_as_simpleitk(slicerApp, obliqueFile):
    node = _loadWithSlicerReader(slicerApp, obliqueFile)
    reference = sitk.ReadImage(str(obliqueFile))
    image = bridge.imageFromVolumeNode(node)
    _assertSameGeometry(image, reference)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    # the node's own IJK->RAS is the LPS geometry with x and y flipped
    np.testing.assert_allclose(bridge.volumeIjkToWorld(node), bridge.ijkToRasFromImage(reference),
                               atol=1e-6)
    # one voxel: SimpleITK's LPS point of (i, j, k) == RAS point of the node, x/y negated
    ijk = (7, 11, 3)
    lps = np.array(reference.TransformIndexToPhysicalPoint(ijk))
    ras = bridge.volumeIjkToWorld(node) @ np.array([*ijk, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-6)


def test_image_to_volume_node_and_back_is_exact(slicerApp):
    image = oblique_image(shape=(9, 13, 17), spacing=(0.45, 1.3, 3.0), degrees=-31.0, seed=3)
    node = bridge.addVolumeFromImage(image, "roundTrip")
    back = bridge.imageFromVolumeNode(node)
    _assertSameGeometry(back, image, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert back.GetPixelID() == image.GetPixelID()


def test_linear_parent_transform_is_part_of_the_geometry(slicerApp, obliqueFile):
    node = _loadWithSlicerReader(slicerApp, obliqueFile)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "move")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(1, 25.0)
    matrix[:3, 3] = [5.0, -7.5, 12.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    image = bridge.imageFromVolumeNode(node)
    ijk = (3, 4, 5)
    ras = matrix @ bridge.ijkToRasFromImage(sitk.ReadImage(str(obliqueFile))) @ [*ijk, 1.0]
    lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
    np.testing.assert_allclose(lps, ras[:3] * [-1, -1, 1], atol=1e-6)


def test_a_bending_non_linear_transform_is_refused_with_a_clear_message(slicerApp,
                                                                        obliqueFile):
    """(A transform that only moves slices, as Slicer's regularisation of a tilted series, is
    applied instead: test_warped_volume.py.)"""
    node = _loadWithSlicerReader(slicerApp, obliqueFile)
    dims = node.GetImageData().GetDimensions()
    centre = (bridge.volumeIjkToWorld(node) @ [*(np.array(dims) / 2.0), 1.0])[:3]
    transformNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    spline = vtk.vtkThinPlateSplineTransform()  # corners of a box kept, its centre pushed
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for corner in np.array(np.meshgrid(*[[-30.0, 30.0]] * 3)).reshape(3, -1).T:
        source.InsertNextPoint(*(centre + corner))
        target.InsertNextPoint(*(centre + corner))
    source.InsertNextPoint(*centre)
    target.InsertNextPoint(*(centre + [0.0, 0.0, 4.0]))
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.SetBasisToR()
    transformNode.SetAndObserveTransformToParent(spline)
    node.SetAndObserveTransformNodeID(transformNode.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp', which bends.*harden"):
        bridge.imageFromVolumeNode(node)


def test_crop_through_the_volume_node_equals_crop_from_the_file(slicerApp, obliqueFile):
    node = _loadWithSlicerReader(slicerApp, obliqueFile)
    reference = sitk.ReadImage(str(obliqueFile))
    centreRas = bridge.volumeIjkToWorld(node) @ [20, 15, 10, 1.0]
    roi = SinusROI.from_values(centreRas[:3], (20.0, 24.0, 18.0), rotation(2, 12.0))
    roiNode = bridge.addRoiNode(roi, "leftRoi")
    crop = CropConfig(shape=16, spacing_mm=1.0)
    viaNodes, geomNodes = extract_crop(bridge.imageFromVolumeNode(node),
                                       bridge.sinusRoiFromRoiNode(roiNode), crop, "right", -1024)
    viaFile, geomFile = extract_crop(reference, roi, crop, "right", -1024)
    # geometry agrees to ~1e-7 mm; on this noise image (jumps of up to 2500 HU per voxel) that
    # moves linear interpolation by a few thousandths of a HU
    np.testing.assert_allclose(viaNodes, viaFile, atol=0.02)
    np.testing.assert_allclose(geomNodes.origin_lps, geomFile.origin_lps, atol=1e-9)
    assert viaNodes.std() > 0  # the crop holds real voxels, not padding


def test_roi_node_round_trip_keeps_centre_size_and_rotation(slicerApp):
    axes = rotation(2, 30.0) @ rotation(0, -12.0)
    roi = SinusROI.from_values((31.5, -12.25, 40.0), (25.0, 38.0, 44.0), axes)
    node = bridge.addRoiNode(roi, "rightRoi")
    back = bridge.sinusRoiFromRoiNode(node)
    np.testing.assert_allclose(back.center, roi.center, atol=1e-9)
    np.testing.assert_allclose(back.size, roi.size, atol=1e-9)
    np.testing.assert_allclose(back.axes, roi.axes, atol=1e-9)
    # what Slicer shows (the world corners of the box) are the SinusROI's corners
    objectToWorld = slicer.util.arrayFromVTKMatrix(node.GetObjectToWorldMatrix())
    size = np.array(node.GetSize())
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    corners = (objectToWorld @ np.c_[signs * size / 2, np.ones(8)].T).T[:, :3]
    np.testing.assert_allclose(corners, roi.corners_ras(), atol=1e-9)
    centre = [0.0, 0.0, 0.0]
    node.GetCenterWorld(centre)
    np.testing.assert_allclose(centre, roi.center, atol=1e-9)


def test_roi_node_under_a_linear_transform_is_exchanged_in_world_coordinates(slicerApp):
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(0, 40.0)
    matrix[:3, 3] = [-3.0, 8.0, 1.5]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    node.SetAndObserveTransformNodeID(transform.GetID())
    roi = SinusROI.from_values((10.0, 20.0, 30.0), (20.0, 30.0, 40.0), rotation(1, 15.0))
    bridge.updateRoiNodeFromSinusRoi(node, roi)
    back = bridge.sinusRoiFromRoiNode(node)
    np.testing.assert_allclose(back.center, roi.center, atol=1e-9)
    np.testing.assert_allclose(back.axes, roi.axes, atol=1e-9)
    np.testing.assert_allclose(back.size, roi.size, atol=1e-9)


def test_unplaced_roi_is_refused(slicerApp):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "empty")
    with pytest.raises(InputError, match="no size"):
        bridge.sinusRoiFromRoiNode(node)


def test_array_in_scan_geometry_becomes_a_volume_with_the_scan_geometry(slicerApp, obliqueFile):
    scan = _loadWithSlicerReader(slicerApp, obliqueFile)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    scan.SetAndObserveTransformNodeID(transform.GetID())
    heat = np.random.default_rng(0).random((20, 30, 40)).astype(np.float32)
    node = bridge.addVolumeLike(scan, heat, "heat")
    np.testing.assert_allclose(bridge.volumeIjkToWorld(node), bridge.volumeIjkToWorld(scan))
    assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), heat)
    with pytest.raises(ValueError, match="does not match the grid"):
        bridge.addVolumeLike(scan, heat[:, :, :-1], "bad")


def test_label_array_becomes_a_segmentation_with_names_colours_and_volume(slicerApp, obliqueFile):
    scan = _loadWithSlicerReader(slicerApp, obliqueFile)
    labels = np.zeros((20, 30, 40), np.uint8)
    labels[2:6, 5:12, 8:20] = 1
    labels[10:14, 15:25, 20:30] = 2
    seg = bridge.addSegmentationFromLabelArray(
        labels, scan, "regions", [(1, "left region", (1.0, 0.4, 0.0)),
                                  (2, "right region", (0.0, 0.6, 1.0))])
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    left = segmentation.GetSegmentIdBySegmentName("left region")
    right = segmentation.GetSegmentIdBySegmentName("right region")
    np.testing.assert_allclose(segmentation.GetSegment(right).GetColor(), (0.0, 0.6, 1.0))
    np.testing.assert_array_equal(bridge.arrayFromSegment(seg, left, scan), labels == 1)
    np.testing.assert_array_equal(bridge.arrayFromSegment(seg, right, scan), labels == 2)
    voxelMl = 0.7 * 0.9 * 2.5 / 1000.0
    assert bridge.maskVolumeMl(labels == 1, scan) == pytest.approx(4 * 7 * 12 * voxelMl)


def test_results_go_into_a_folder_beside_the_scan_in_its_study(slicerApp, obliqueFile):
    scan = _loadWithSlicerReader(slicerApp, obliqueFile)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
    study = sh.CreateStudyItem(patient, "study")
    sh.CreateItem(study, scan)  # as the DICOM module would have placed it
    heat = bridge.addVolumeLike(scan, np.zeros((20, 30, 40), np.float32), "heat")
    folder = bridge.resultsFolderItem(scan, "ParanasalSSL results")
    bridge.placeInFolder([heat], folder)
    assert sh.GetItemParent(folder) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(heat)) == folder
    assert bridge.resultsFolderItem(scan, "ParanasalSSL results") == folder  # found, not re-made


def test_remove_nodes_leaves_nothing_behind(slicerApp, obliqueFile):
    scan = _loadWithSlicerReader(slicerApp, obliqueFile)
    before = slicer.mrmlScene.GetNumberOfNodes()
    heat = bridge.addVolumeLike(scan, np.zeros((20, 30, 40), np.float32), "heat")
    seg = bridge.addSegmentationFromLabelArray(np.ones((20, 30, 40), np.uint8), scan, "s",
                                               [(1, "all", (1, 0, 0))])
    assert slicer.mrmlScene.GetNumberOfNodes() > before
    bridge.removeNodes([heat, seg])
    assert slicer.mrmlScene.GetNumberOfNodes() == before


def _shItems(scene) -> int:
    sh = scene.GetSubjectHierarchyNode()
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    return ids.GetNumberOfIds()


def test_removed_nodes_take_their_subject_hierarchy_items_along(slicerApp, obliqueFile):
    """Without the application nothing removes a node's item with the node: removeNodes does,
    keeping other nodes' items that sat below it and dropping node-less ones (segments)."""
    scan = _loadWithSlicerReader(slicerApp, obliqueFile)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    folder = bridge.resultsFolderItem(scan, "results")
    baseline = _shItems(slicer.mrmlScene)
    for _ in range(3):  # repeated: the item count comes back to the same number each time
        heat = bridge.addVolumeLike(scan, np.zeros((20, 30, 40), np.float32), "heat")
        other = bridge.addVolumeLike(scan, np.zeros((20, 30, 40), np.float32), "other")
        bridge.placeInFolder([heat], folder)
        heatItem = sh.GetItemByDataNode(heat)
        sh.SetItemParent(sh.CreateItem(sh.GetSceneItemID(), other), heatItem)
        sh.CreateFolderItem(heatItem, "a node-less child")
        assert _shItems(slicer.mrmlScene) == baseline + 3
        bridge.removeNodes([heat])
        assert sh.GetItemParent(sh.GetItemByDataNode(other)) == folder  # moved up, kept
        bridge.removeNodes([other])
        assert _shItems(slicer.mrmlScene) == baseline
    assert not bridge.removeFolderIfEmpty(slicer.mrmlScene, sh.GetItemParent(folder))
    assert bridge.removeFolderIfEmpty(slicer.mrmlScene, folder)
    assert _shItems(slicer.mrmlScene) == baseline - 1
