"""Lids for cavities that the edge of a scan's field cuts open (``field_edge``)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.field_edge import field_edge_lids
from paranasal_ssl.scan_io import image_from_array

SPACING = (0.8, 1.0, 2.0)  # i, j, k (mm)


def _block(cavity_i: slice, room: bool = False) -> sitk.Image:
    """A 40 x 30 x 20 (i, j, k) soft-tissue block (40 HU) with an air cavity (-1000 HU) at
    columns ``cavity_i``, rows 10-19, slices 5-14; ``room``: air along the block's first 5
    rows too (the room in front of a face)."""
    array = np.full((20, 30, 40), 40.0, np.float32)
    array[5:15, 10:20, cavity_i] = -1000.0
    if room:
        array[:, :5, :] = -1000.0
    return image_from_array(array, SPACING, (10.0, -20.0, 5.0), np.eye(3).ravel())


def test_a_cavity_cut_open_by_a_side_face_gets_a_lid_just_beyond_it():
    image = _block(slice(30, 40))  # the cavity reaches the last column (i = 39)
    lids = field_edge_lids(image, -400.0)
    assert len(lids) == 1
    lid = lids[0]
    lid_array = sitk.GetArrayViewFromImage(lid)  # [k, j, i]
    # along i: the face's outer 2 mm (3 columns at 0.8 mm) and 4 mm (5 columns) beyond it
    assert lid.GetSize() == (8, 30, 20) and lid.GetSpacing() == image.GetSpacing()
    first = lid.TransformIndexToPhysicalPoint((0, 0, 0))
    assert np.allclose(first, image.TransformIndexToPhysicalPoint((37, 0, 0)))
    covered = lid_array.any(axis=2)  # [k, j]: the lid's shape on the face
    assert covered[5:15, 10:20].all()  # the cavity's section ...
    assert covered[3:17, 7:23].all() and not covered[:2].any() and not covered[:, :6].any()
    # ... with a rim of 3 mm round it (2 slices, 3 rows), and nothing further out


def test_no_lid_for_a_whole_cavity_for_room_air_or_on_the_top_and_bottom_faces():
    assert field_edge_lids(_block(slice(15, 25)), -400.0) == []  # inside the field
    # room air reaches the face's border: not a cavity the field cut open
    assert field_edge_lids(_block(slice(15, 25), room=True), -400.0) == []
    # a cavity cut open by the top face (k): the in-slice hole filling closes it already
    array = np.full((20, 30, 40), 40.0, np.float32)
    array[12:, 10:20, 15:25] = -1000.0
    assert field_edge_lids(image_from_array(array, SPACING, (0.0, 0.0, 0.0),
                                            np.eye(3).ravel()), -400.0) == []


def test_the_search_grid_reaches_over_the_lids_on_the_scan_own_grid_points():
    """The grid grows by whole steps to hold the lid beyond the face, so the scan is sampled
    at the same points as without lids (an uncut scan's search does not move)."""
    from paranasal_ssl.head_frame import covering_frame

    image = _block(slice(30, 40))
    lid = field_edge_lids(image, -400.0)[0]
    c, s = np.cos(np.deg2rad(11.0)), np.sin(np.deg2rad(11.0))
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # a yaw of 11 deg
    alone = covering_frame(image, rotation, 1.5)
    grown = covering_frame(image, rotation, 1.5, also=[lid])
    steps = np.linalg.solve(rotation, grown.origin - alone.origin) / 1.5
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert grown.shape[2] > alone.shape[2]  # wider along the frame's x, where the lid lies
    far = lid.TransformIndexToPhysicalPoint([v - 1 for v in lid.GetSize()])  # the lid's corner
    inside = np.linalg.solve(rotation, np.asarray(far) - grown.origin) / 1.5
    assert (inside >= -0.5).all() and (inside <= np.array(grown.shape[::-1]) - 0.5).all()
