"""Exact conversions between MRML nodes and the core's SimpleITK images, arrays and ROIs.

Conventions
-----------
- Slicer's world is RAS (+x toward the patient's Right, +y Anterior, +z Superior), in mm.
  SimpleITK/ITK/DICOM use LPS. The two differ by flipping x and y
  (``paranasal_ssl.geometry.RAS_TO_LPS``).
- A volume node's ``IJKToRAS`` matrix maps voxel index (i, j, k) to RAS mm; its columns are the
  voxel axes scaled by the spacing. ``slicer.util.arrayFromVolume`` and
  ``sitk.GetArrayFromImage`` both index voxels ``[k, j, i]``, so arrays pass through unchanged.
- A linear parent transform is part of the geometry: images and ROIs are exchanged in WORLD
  coordinates (what the user sees). A volume whose slices are not a regular grid in the world
  (Slicer loads a tilted or gapped DICOM series with a sheared matrix and/or a regularisation
  transform) is resampled onto one (``warped_volume``); transforms that bend slices are
  refused (harden them first).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import RAS_TO_LPS, SinusROI
from ParanasalSSLLib import warped_volume

# ---------------------------------------------------------------------------------------------
# Matrices


def ijkToRasFromImage(image: sitk.Image) -> np.ndarray:
    """(4, 4) IJK->RAS matrix of a SimpleITK image (LPS origin/direction/spacing)."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), float)
    matrix = np.eye(4)
    matrix[:3, :3] = RAS_TO_LPS @ direction @ np.diag(spacing)
    matrix[:3, 3] = RAS_TO_LPS @ np.asarray(image.GetOrigin(), float)
    return matrix


def imageGeometryFromIjkToRas(ijkToRas: np.ndarray, source: str = "volume"
                              ) -> Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]:
    """(origin LPS mm, spacing mm (i, j, k), direction LPS row-major 9) of an IJK->RAS matrix.

    Raises ``InputError`` if the voxel axes are not orthogonal (sheared by a transform).
    """
    m = np.asarray(ijkToRas, float)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if (spacing <= 0).any():
        raise InputError(source, "voxel spacing is zero", expected="a non-degenerate volume")
    axesRas = m[:3, :3] / spacing
    if not np.allclose(axesRas.T @ axesRas, np.eye(3), atol=1e-5):
        raise InputError(source, "voxel axes are not orthogonal (sheared by a transform)",
                         expected="a volume with orthogonal axes; harden or remove the transform")
    directionLps = RAS_TO_LPS @ axesRas
    originLps = RAS_TO_LPS @ m[:3, 3]
    return tuple(originLps), tuple(spacing), tuple(directionLps.ravel())


def nodeToWorldMatrix(node) -> np.ndarray:
    """(4, 4) matrix of the node's parent transform chain (identity if none).

    Raises ``InputError`` for a non-linear transform, which no matrix can describe.
    """
    transformNode = node.GetParentTransformNode()
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise InputError(node.GetName(), f"is under the non-linear transform "
                         f"'{transformNode.GetName()}'", expected="no transform or a linear one; "
                         "harden the transform first (Data module, right-click, Harden)")
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volumeIjkToWorld(volumeNode) -> np.ndarray:
    """(4, 4) IJK->world RAS matrix of a volume node, parent transforms included."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return nodeToWorldMatrix(volumeNode) @ slicer.util.arrayFromVTKMatrix(matrix)


# ---------------------------------------------------------------------------------------------
# Volumes


def imageFromVolumeNode(volumeNode) -> sitk.Image:
    """The volume as a SimpleITK image (voxels copied, same dtype, LPS world geometry).

    If the slices are not a regular grid in the world (a sheared matrix, a regularisation
    transform: a tilted or gapped DICOM series as Slicer loads it) the image is those voxels
    resampled onto a regular world grid, with a note (``warped_volume.regularImage``): its grid
    is then not the node's.
    Raises ``InputError`` for an empty node, a multi-component (vector/RGB) volume or a
    transform that bends the slices.
    """
    name = volumeNode.GetName() if volumeNode else "volume"
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise InputError(name, "the volume has no voxels", expected="a loaded scalar volume")
    if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(name, "the volume has several components per voxel",
                         expected="a scalar (grey-value) volume")
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    if warped_volume.needsRegularGrid(volumeNode):
        return warped_volume.regularImage(volumeNode, array)
    image = sitk.GetImageFromArray(array)
    origin, spacing, direction = imageGeometryFromIjkToRas(volumeIjkToWorld(volumeNode), name)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def addVolumeFromImage(image: sitk.Image, name: str,
                       nodeClassName: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``slicer.mrmlScene`` holding ``image`` with its exact geometry."""
    array = sitk.GetArrayFromImage(image)
    return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRasFromImage(image), name=name,
                                          nodeClassName=nodeClassName)


def _onGridOf(referenceVolumeNode, array, what: str) -> np.ndarray:
    """``array`` as a numpy array, or a ValueError naming the volume if its shape is not the
    volume's grid ``[k, j, i]``."""
    array = np.asarray(array)
    dims = tuple(reversed(referenceVolumeNode.GetImageData().GetDimensions()))
    if tuple(array.shape) != dims:
        raise ValueError(f"{what} shape {array.shape} does not match the grid of "
                         f"'{referenceVolumeNode.GetName()}' {dims} ([k, j, i])")
    return array


def addVolumeLike(referenceVolumeNode, array: np.ndarray, name: str,
                  nodeClassName: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node holding ``array`` (``[k, j, i]``, the reference's grid) in the
    reference's geometry: same IJK->RAS matrix and same parent transform."""
    array = _onGridOf(referenceVolumeNode, array, "array")
    scene = referenceVolumeNode.GetScene()
    node = scene.AddNewNodeByClass(nodeClassName, name)
    matrix = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(referenceVolumeNode.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    return node


def voxelVolumeMl(volumeNode) -> float:
    """Volume of one voxel in millilitres (world geometry)."""
    return abs(float(np.linalg.det(volumeIjkToWorld(volumeNode)[:3, :3]))) / 1000.0


def maskVolumeMl(mask: np.ndarray, referenceVolumeNode) -> float:
    """Volume in mL of the non-zero voxels of ``mask`` (``[k, j, i]`` in the reference grid)."""
    return float(np.count_nonzero(mask)) * voxelVolumeMl(referenceVolumeNode)


# ---------------------------------------------------------------------------------------------
# Markups ROI <-> SinusROI


def sinusRoiFromRoiNode(roiNode) -> SinusROI:
    """The markups ROI as a ``SinusROI`` (RAS world mm; axes = the ROI's object-to-world rotation).

    Raises ``InputError`` if the ROI has no size yet (not placed).
    """
    objectToWorld = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix())
    scale = np.linalg.norm(objectToWorld[:3, :3], axis=0)
    size = np.asarray(roiNode.GetSize(), float) * scale
    if not (size > 0).all():
        raise InputError(roiNode.GetName(), "the ROI has no size yet",
                         expected="a placed ROI box around one maxillary sinus")
    return SinusROI.from_values(objectToWorld[:3, 3], size, objectToWorld[:3, :3] / scale,
                                source=roiNode.GetName())


def updateRoiNodeFromSinusRoi(roiNode, roi: SinusROI) -> None:
    """Set centre, size and orientation of ``roiNode`` so it shows ``roi`` in world RAS."""
    objectToWorld = np.eye(4)
    objectToWorld[:3, :3] = roi.axes
    objectToWorld[:3, 3] = roi.center
    objectToNode = np.linalg.inv(nodeToWorldMatrix(roiNode)) @ objectToWorld
    with slicer.util.NodeModify(roiNode):
        roiNode.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(objectToNode))
        roiNode.SetCenter(*objectToNode[:3, 3])
        roiNode.SetSize(*roi.size)


def addRoiNode(roi: SinusROI, name: str, color: Optional[Sequence[float]] = None):
    """A new markups ROI node in ``slicer.mrmlScene`` showing ``roi``."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    node.CreateDefaultDisplayNodes()
    if color is not None and node.GetDisplayNode() is not None:
        node.GetDisplayNode().SetSelectedColor(*color)
    updateRoiNodeFromSinusRoi(node, roi)
    return node


# ---------------------------------------------------------------------------------------------
# Label arrays -> segmentation


def addSegmentationFromLabelArray(labelArray: np.ndarray, referenceVolumeNode, name: str,
                                  segments: Iterable[Tuple[int, str, Sequence[float]]]):
    """A segmentation node whose segments are ``labelArray == value``.

    ``labelArray``: integer ``[k, j, i]`` array in the reference volume's grid.
    ``segments``: (label value, segment name, RGB colour 0-1) for each segment.
    The binary labelmaps are written directly in the reference geometry (no temporary nodes).
    """
    labelArray = _onGridOf(referenceVolumeNode, labelArray, "label array")
    scene = referenceVolumeNode.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    try:
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        node.SetAndObserveTransformNodeID(referenceVolumeNode.GetTransformNodeID())
        matrix = vtk.vtkMatrix4x4()
        referenceVolumeNode.GetIJKToRASMatrix(matrix)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        for value, segmentName, color in segments:
            segmentId = node.GetSegmentation().AddEmptySegment(segmentName, segmentName,
                                                                 [float(c) for c in color])
            image = _orientedImage((labelArray == value).astype(np.uint8), matrix)
            if not logic.SetBinaryLabelmapToSegment(image, node, segmentId, logic.MODE_REPLACE):
                raise RuntimeError(f"could not write segment '{segmentName}'")
    except Exception:
        removeNodes([node])
        raise
    return node


def _orientedImage(mask: np.ndarray, ijkToRas: vtk.vtkMatrix4x4):
    from vtkmodules.util import numpy_support

    image = slicer.vtkOrientedImageData()
    k, j, i = mask.shape
    image.SetDimensions(i, j, k)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.ravel()
    image.SetImageToWorldMatrix(ijkToRas)
    return image


def arrayFromSegment(segmentationNode, segmentId: str, referenceVolumeNode) -> np.ndarray:
    """Binary uint8 ``[k, j, i]`` array of one segment resampled to the reference grid.

    Unlike ``slicer.util.arrayFromSegmentBinaryLabelmap`` this creates no temporary nodes.
    """
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    segmentImage = slicer.vtkOrientedImageData()
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentationNode, segmentId,
                                                        segmentImage):
        raise RuntimeError(f"segment '{segmentId}' has no binary labelmap")
    reference = slicer.vtkOrientedImageData()
    dims = referenceVolumeNode.GetImageData().GetDimensions()
    reference.SetDimensions(*dims)
    reference.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    matrix = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(matrix)
    reference.SetImageToWorldMatrix(matrix)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        segmentImage, reference, resampled)
    from vtkmodules.util import numpy_support

    flat = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    # segments may share one labelmap layer, each with its own label value
    labelValue = segmentationNode.GetSegmentation().GetSegment(segmentId).GetLabelValue()
    return (flat.reshape(tuple(reversed(dims))) == labelValue).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Subject hierarchy and clean-up


def resultsFolderItem(referenceNode, folderName: str) -> int:
    """Subject-hierarchy folder ``folderName`` beside ``referenceNode`` (inside its study when the
    scan was loaded from DICOM), created if needed. Returns the folder's item ID."""
    shNode = referenceNode.GetScene().GetSubjectHierarchyNode()
    parent = shNode.GetItemParent(_shItem(shNode, referenceNode))
    children = vtk.vtkIdList()
    shNode.GetItemChildren(parent, children)
    for index in range(children.GetNumberOfIds()):
        child = children.GetId(index)
        if shNode.GetItemName(child) == folderName and shNode.GetItemDataNode(child) is None:
            return child
    return shNode.CreateFolderItem(parent, folderName)


def placeInFolder(nodes: Iterable, folderItem: int) -> None:
    """Move the nodes' subject-hierarchy items under ``folderItem``."""
    for node in nodes:
        if node is None:
            continue
        shNode = node.GetScene().GetSubjectHierarchyNode()
        shNode.SetItemParent(_shItem(shNode, node), folderItem)


def _shItem(shNode, node) -> int:
    """The node's subject-hierarchy item. Inside Slicer every node has one; without the
    application (tests, PythonSlicer) it is created at the scene level when missing."""
    item = shNode.GetItemByDataNode(node)
    if item == shNode.GetInvalidItemID():
        item = shNode.CreateItem(shNode.GetSceneItemID(), node)
    return item


def removeNodes(nodes: Iterable) -> None:
    """Remove nodes with their display and storage nodes and their subject-hierarchy items (as
    the Slicer application does; without it the items would stay behind, empty)."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        scene = node.GetScene()
        attached = []
        for getCount, getNth in (("GetNumberOfDisplayNodes", "GetNthDisplayNode"),
                                 ("GetNumberOfStorageNodes", "GetNthStorageNode")):
            if hasattr(node, getCount):
                attached += [getattr(node, getNth)(i) for i in range(getattr(node, getCount)())]
        _removeShItem(node)
        scene.RemoveNode(node)
        for other in attached:
            if other is not None and other.GetScene() is not None:
                scene.RemoveNode(other)


def _removeShItem(node) -> None:
    """Remove the node's subject-hierarchy item, if it has one. Child items of other nodes move
    up to the item's parent; child items without a node (e.g. segments) go with it."""
    shNode = node.GetScene().GetSubjectHierarchyNode()
    item = shNode.GetItemByDataNode(node) if shNode is not None else 0
    if not item or item == shNode.GetInvalidItemID():
        return
    parent = shNode.GetItemParent(item)
    children = vtk.vtkIdList()
    shNode.GetItemChildren(item, children)
    for index in range(children.GetNumberOfIds()):
        child = children.GetId(index)
        if shNode.GetItemDataNode(child) is not None:
            shNode.SetItemParent(child, parent)
    shNode.RemoveItem(item, False, True)  # keep the node: the caller removes it


def removeFolderIfEmpty(scene, folderItem: int) -> bool:
    """Remove the subject-hierarchy folder ``folderItem`` if nothing is left in it."""
    shNode = scene.GetSubjectHierarchyNode()
    if folderItem == shNode.GetInvalidItemID() or shNode.GetItemDataNode(folderItem) is not None:
        return False
    children = vtk.vtkIdList()
    shNode.GetItemChildren(folderItem, children)
    if children.GetNumberOfIds():
        return False
    return bool(shNode.RemoveItem(folderItem))
