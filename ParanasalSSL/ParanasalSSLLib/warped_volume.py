"""A volume whose slices are not a regular grid in the world, as a regular image there.

Slicer loads a DICOM series whose slices are off a regular grid (a tilted gantry, which head CT
often uses, or missing slices) in one of two ways: the slices stacked with a *sheared*
IJK-to-RAS matrix (its k axis along the tilt: current Slicer, whose ITK reader no longer forces
orthogonal axes), and/or under a *regularisation* grid transform that moves each slice to where
its header puts it (the DICOM module's default "apply regularization transform": gaps, and tilt
in older Slicer). The core needs one regular grid. Rather than resampling every voxel through
the inverted transform (what hardening it does), a 3 x 3 lattice of each slice is carried
through the matrix and the transform chain, and if every slice is only moved in its own plane
and along its normal, the volume is resampled onto a regular grid by the core's
``slice_geometry.regularise``: the same code, the same linear interpolation and the same note
as a tilted series read from files, so Slicer and ``predict`` analyse the same voxels. A
transform that bends or turns slices (a registration warp) is refused by name.

World is RAS in mm (Slicer); the stack handed to the core is LPS (DICOM, ITK). Arrays ``[k, j, i]``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import RAS_TO_LPS

LATTICE = (0.0, 0.5, 1.0)  # where in each slice (fractions of its width and height) to check


def isUnderNonLinearTransform(node) -> bool:
    transformNode = node.GetParentTransformNode() if node is not None else None
    return transformNode is not None and not transformNode.IsTransformToWorldLinear()


def needsRegularGrid(volumeNode) -> bool:
    """True if the volume's voxels are not a regular grid in the world: a non-linear transform
    above it, or voxel axes that are not orthogonal (sheared) once its linear transforms are
    applied. Its image for the core is then resampled (``regularImage``)."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        return False
    if isUnderNonLinearTransform(volumeNode):
        return True
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToWorld = slicer.util.arrayFromVTKMatrix(matrix)
    transformNode = volumeNode.GetParentTransformNode()
    if transformNode is not None:
        toWorld = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(toWorld)
        ijkToWorld = slicer.util.arrayFromVTKMatrix(toWorld) @ ijkToWorld
    axes = ijkToWorld[:3, :3] / np.maximum(np.linalg.norm(ijkToWorld[:3, :3], axis=0), 1e-12)
    return not np.allclose(axes.T @ axes, np.eye(3), atol=1e-5)


def _slicePoints(volumeNode) -> np.ndarray:
    """(slices, 3, 3, 3): world RAS mm of a 3 x 3 lattice of pixel centres of every slice
    (``LATTICE`` of its i and j ranges), carried through the whole parent transform chain."""
    ni, nj, nk = volumeNode.GetImageData().GetDimensions()
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
    toWorld = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(volumeNode.GetParentTransformNode(),
                                                         None, toWorld)
    points = np.empty((nk, len(LATTICE), len(LATTICE), 3))
    for k in range(nk):
        for b, fj in enumerate(LATTICE):
            for a, fi in enumerate(LATTICE):
                local = ijkToRas @ [fi * (ni - 1), fj * (nj - 1), k, 1.0]
                points[k, b, a] = toWorld.TransformPoint(local[:3])
    return points


def sliceStack(volumeNode):
    """Where the IJK-to-RAS matrix and the parent transforms put each slice ``k`` of
    ``volumeNode``, as the core's ``SliceStack`` (LPS mm). Raises ``InputError`` if they bend,
    turn or skew the slices, i.e. do more than move each one (no stack of slices describes
    that)."""
    # scipy (through slice_geometry) may not be installed when the module loads
    from paranasal_ssl.slice_geometry import TOLERANCE_MM, checked_stack

    name = volumeNode.GetName()
    ni, nj, _ = volumeNode.GetImageData().GetDimensions()
    points = _slicePoints(volumeNode)
    origin = points[:, 0, 0]
    rowStep = (points[:, 0, -1] - origin) / max(ni - 1, 1)  # world mm per i, per slice
    columnStep = (points[:, -1, 0] - origin) / max(nj - 1, 1)
    fractions = np.array(LATTICE)
    # where each slice's lattice would lie if the slice were only moved: [k, b (j), a (i)]
    moved = (origin[:, None, None]
             + fractions[None, None, :, None] * (ni - 1) * rowStep[:, None, None]
             + fractions[None, :, None, None] * (nj - 1) * columnStep[:, None, None])
    bent = float(np.linalg.norm(points - moved, axis=-1).max())
    # the same in-plane axes in every slice: across the slice, at most TOLERANCE_MM apart
    turned = float(max(np.linalg.norm(rowStep - rowStep[0], axis=1).max() * (ni - 1),
                       np.linalg.norm(columnStep - columnStep[0], axis=1).max() * (nj - 1)))
    spacing = np.linalg.norm([rowStep[0], columnStep[0]], axis=1)
    skew = abs(float(rowStep[0] @ columnStep[0])) / float(spacing.prod()) * max(ni, nj)
    if max(bent, turned) > TOLERANCE_MM or skew * spacing.max() > TOLERANCE_MM:
        transformNode = volumeNode.GetParentTransformNode()
        if isUnderNonLinearTransform(volumeNode):
            raise InputError(name, f"is under the non-linear transform "
                             f"'{transformNode.GetName()}', which bends or turns its slices "
                             f"(up to {max(bent, turned):.2f} mm), not only moves them as "
                             "Slicer's acquisition regularisation does",
                             expected="no transform, a linear one or a slice regularisation; "
                             "harden the transform first (Data module, right-click, Harden)")
        raise InputError(name, "the rows and columns of its slices are not perpendicular "
                         "(a sheared IJK-to-RAS matrix)", expected="a volume whose slices "
                         "have perpendicular rows and columns; harden or remove the transform")
    rowLps = RAS_TO_LPS @ (rowStep[0] / spacing[0])
    columnLps = RAS_TO_LPS @ (columnStep[0] / spacing[1])
    positions = origin @ RAS_TO_LPS.T
    orientations = np.tile(np.concatenate([rowLps, columnLps]), (len(positions), 1))
    return checked_stack(positions, orientations, (float(spacing[0]), float(spacing[1])),
                         (nj, ni), name)


def regularImage(volumeNode, array: np.ndarray) -> sitk.Image:
    """``array`` (``[k, j, i]``, the node's voxels) on a regular world grid (LPS geometry):
    resampled where the matrix or the transforms put slices off a regular grid, with the note
    the core's readers give (``slice_geometry.NOTE_KEY``: the summary's ``scan_notes``)."""
    from paranasal_ssl.slice_geometry import placed, regularised

    stack = sliceStack(volumeNode)
    image = sitk.GetImageFromArray(array)
    if stack.is_regular():  # the matrix and transforms keep the slices a regular grid
        return placed(image, stack)
    transform = volumeNode.GetParentTransformNode()
    return regularised(image, stack, f"; from the volume's transform '{transform.GetName()}'"
                       if isUnderNonLinearTransform(volumeNode) else "",
                       source=f"volume '{volumeNode.GetName()}'")
