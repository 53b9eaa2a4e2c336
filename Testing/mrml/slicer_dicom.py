"""Load a DICOM series into the scene the way Slicer's DICOM module does by default: the slices
stacked as one regular volume by the archetype reader, and, where the slices are off a regular
grid (a tilted gantry, a missing slice), a grid transform with a displacement at the four
corners of every slice that moves each slice to where its header puts it (the module's
"apply regularization transform"). Modelled on the behaviour of Slicer's
DICOMScalarVolumePlugin and archetype reader, so the module is tested on the nodes a user gets.

Current Slicer's reader keeps a tilted series' slices where they are with a sheared IJK-to-RAS
matrix (ITK no longer forces orthogonal axes), so only gaps need the transform; older Slicer
(``orthogonal=True``) stacked the slices along their normal and the transform carried the tilt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from paranasal_ssl.geometry import RAS_TO_LPS

CORNER_TOLERANCE_MM = 1e-3  # Slicer's default: below it no transform is added


def _header(path: Path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()

    def numbers(tag):
        return np.array([float(v) for v in reader.GetMetaData(tag).split("\\")])

    # PixelSpacing is (between rows, between columns) = (along j, along i)
    return numbers("0020|0032"), numbers("0020|0037"), numbers("0028|0030")[::-1]


def _instanceUid(path: Path) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetMetaData("0008|0018").strip()


class DicomDatabase:
    """Slicer's DICOM database (``slicer.dicomDatabase``) as far as the module asks it: the file
    of an instance UID. slicer-core has no database; this one indexes the given files."""

    def __init__(self, files):
        self.files = {_instanceUid(path): str(path) for path in files}

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")  # as ctkDICOMDatabase: "" for an unknown instance


def loadSeriesAsSlicerDoes(folder: Path, name: str = "CT", orthogonal: bool = False):
    """The volume node of the series in ``folder`` (under a regularisation grid transform
    node when its slices need one)."""
    headers = {path: _header(path) for path in sorted(Path(folder).glob("*.dcm"))}
    orientation = next(iter(headers.values()))[1]
    normal = np.cross(orientation[:3], orientation[3:])
    files = sorted(headers, key=lambda path: headers[path][0] @ normal)
    fileList = vtk.vtkStringArray()
    for path in files:
        fileList.InsertNextValue(str(path))
    volume = slicer.modules.volumes.logic().AddArchetypeScalarVolume(str(files[0]), name, 0,
                                                                     fileList)
    # as the plugin does: the source instances, which its DICOM database maps to files
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(_instanceUid(path) for path in files))
    ni, nj, nk = volume.GetImageData().GetDimensions()
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
    if orthogonal:  # k along the slices' normal, spaced as the first two slices' origins
        first, second = (headers[path][0] for path in files[:2])
        ijkToRas[:3, 2] = RAS_TO_LPS @ normal * np.linalg.norm(second - first)
        volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRas))
    source, target = np.zeros((nk, 2, 2, 3)), np.zeros((nk, 2, 2, 3))
    for k, path in enumerate(files):
        position, cosines, spacing = headers[path]
        for b in range(2):
            for a in range(2):
                source[k, b, a] = (ijkToRas @ [a * ni, b * nj, k, 1.0])[:3]
                target[k, b, a] = RAS_TO_LPS @ (position + a * ni * spacing[0] * cosines[:3]
                                                + b * nj * spacing[1] * cosines[3:])
    if np.abs(target - source).max() <= CORNER_TOLERANCE_MM:
        return volume
    spacing = volume.GetSpacing()  # one grid node per slice corner
    node = addGridTransform(volume, f"{name} acquisition transform", (2, 2, nk),
                            (spacing[0] * ni, spacing[1] * nj, spacing[2]))
    slicer.util.arrayFromGridTransform(node)[:] = target - source
    slicer.util.arrayFromGridTransformModified(node)
    return volume


def addGridTransform(volume, name: str, dimensions, spacing):
    """A grid transform node (all displacements 0, ``dimensions`` nodes ``spacing`` mm apart
    along the volume's axes, from its origin) placed above ``volume``."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    grid = vtk.vtkImageData()
    grid.SetOrigin(*volume.GetOrigin())
    grid.SetDimensions(*dimensions)
    grid.SetSpacing(*spacing)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grid.GetPointData().GetScalars().Fill(0.0)
    transform = slicer.vtkOrientedGridTransform()
    direction = vtk.vtkMatrix4x4()
    volume.GetIJKToRASDirectionMatrix(direction)
    transform.SetGridDirectionMatrix(direction)
    transform.SetDisplacementGridData(grid)
    node.SetAndObserveTransformToParent(transform)
    volume.SetAndObserveTransformNodeID(node.GetID())
    return node
