"""Air cavities that the edge of a scan's field cuts open, closed again for the ROI suggestion.

A head CT whose field is off the midline or cut close around the face can end inside a
maxillary sinus. That sinus's air then runs out of the scan, the head mask's hole filling
takes it for the room's air (it reaches the edge of the array), and the suggestion loses the
sinus and mirrors the other side, 8-16 mm off. Where the field cuts a cavity open, the cavity
shows on the scan's outer face as air enclosed by tissue *within that face* (its bony walls
all round), while the room's air at a face always reaches the face's own border. A "lid" of
that shape with a rim, over the face's outer 2 mm and 4 mm beyond it, painted as tissue on the
search grid, makes the cavity a hole of the head again at the cost of its outer 2 mm. Only the
faces of index axes that are not mostly superior get lids: in axial slices the hole filling
already closes what the top and bottom faces cut.
"""

from __future__ import annotations

import math
from typing import List

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

LID_DEPTH_MM = 4.0  # beyond the face: thicker than the search grid's 1-1.5 mm and its erosion
FACE_DEPTH_MM = 2.0  # the face's outer layers: their enclosed air shapes the lid, which covers them
RIM_MM = 3.0  # the lid's margin around that air, in the face
MIN_POCKET_MM2 = 20.0  # smaller enclosed air in a face (noise, a bone's marrow) is left alone
MAX_SUPERIOR_COSINE = 0.7  # index axes closer than ~45 deg to superior are not lidded


def field_edge_lids(image: sitk.Image, air_below: float) -> List[sitk.Image]:
    """uint8 images, one per outer face of ``image`` not mostly superior that shows air (below
    ``air_below``, the image's units: HU on CT) enclosed by tissue within the face: the face's
    outer ``FACE_DEPTH_MM`` and ``LID_DEPTH_MM`` beyond it, on ``image``'s spacing and axes, 1
    over that enclosed air (in those outer layers) and ``RIM_MM`` round it, 0 elsewhere. Empty
    where no face shows any (a head with room around it, or a field that cuts no cavity
    open)."""
    array = sitk.GetArrayViewFromImage(image)  # [k, j, i]
    if array.ndim != 3 or min(array.shape) < 3:
        return []
    spacing = np.array(image.GetSpacing(), float)  # (i, j, k) mm
    direction = np.array(image.GetDirection(), float).reshape(3, 3)  # columns: i, j, k in LPS
    lids = []
    for axis in range(3):  # numpy axis; image index axis 2 - axis
        index_axis = 2 - axis
        if abs(direction[2, index_axis]) > MAX_SUPERIOR_COSINE:
            continue
        n = array.shape[axis]
        face_layers = min(n, max(1, math.ceil(FACE_DEPTH_MM / spacing[index_axis])))
        depth = max(1, math.ceil(LID_DEPTH_MM / spacing[index_axis]))
        pixel_mm2 = float(np.prod(np.delete(spacing, index_axis)))
        in_face = np.delete(spacing, index_axis)[::-1]  # numpy order of the face's 2 axes
        ring = np.maximum(1, np.round(RIM_MM / in_face)).astype(int)
        for layers, first in ((range(face_layers), -depth), (range(n - face_layers, n),
                                                             n - face_layers)):
            pockets = np.zeros(np.delete(array.shape, axis), bool)
            for layer in layers:
                pockets |= _enclosed_air(np.take(array, layer, axis=axis) < air_below,
                                         MIN_POCKET_MM2 / pixel_mm2)
            if not pockets.any():
                continue
            # over the cavity's rim too: its thin walls at the edge do not survive the head
            # mask's opening, and the grid is turned against the face
            pockets = ndi.binary_dilation(pockets, np.ones(2 * ring + 1, bool))
            lid = sitk.GetImageFromArray(np.repeat(np.expand_dims(pockets, axis),
                                                   depth + face_layers,
                                                   axis=axis).astype(np.uint8))
            start = [0, 0, 0]
            start[index_axis] = first
            lid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(
                [float(v) for v in start]))
            lid.SetSpacing(image.GetSpacing())
            lid.SetDirection(image.GetDirection())
            lids.append(lid)
    return lids


def _enclosed_air(air: np.ndarray, min_pixels: float) -> np.ndarray:
    """bool like ``air`` (2D): the air components of at least ``min_pixels`` pixels that do not
    reach the face's border (every side of them is tissue)."""
    pockets = ndi.binary_fill_holes(~air) & air
    if not pockets.any():
        return pockets
    labels, count = ndi.label(pockets)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]
