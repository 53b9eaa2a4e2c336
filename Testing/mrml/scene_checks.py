"""Checks on a scene shared by the MRML suites (imported by the test modules beside it)."""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from paranasal_ssl.geometry import SinusROI


def counts(scene):
    """(nodes, subject-hierarchy items below the scene item)."""
    sh = scene.GetSubjectHierarchyNode()
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    return scene.GetNumberOfNodes(), ids.GetNumberOfIds()


def assertSameGeometry(node, scan):
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(a)
    scan.GetIJKToRASMatrix(b)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(a),
                               slicer.util.arrayFromVTKMatrix(b), atol=1e-9)
    assert node.GetImageData().GetDimensions() == scan.GetImageData().GetDimensions()
    assert node.GetTransformNodeID() == scan.GetTransformNodeID()


def turned(roi: SinusROI, degrees: float) -> SinusROI:
    """``roi`` turned about the superior axis (a yawed box)."""
    a = np.radians(degrees)
    yaw = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0, 0, 1.0]])
    return SinusROI.from_values(roi.center, roi.size, yaw @ roi.axes)
