"""DICOM series off a regular grid (gantry tilt, a missing slice) are read where their slices
really lie: every voxel of the scan read back holds the value of the point it stands for."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.fields import SHAPE, SPACING, assert_holds_the_field, field, write_scan_of_field
from helpers.images import write_dicom_series
from paranasal_ssl.errors import InputError
from paranasal_ssl.scan_io import read_scan, scan_notes


def test_a_tilted_gantry_series_is_resampled_where_its_slices_lie(tmp_path):
    tilt = np.deg2rad(20)
    positions = [(-5.0, 3.0 + k * SPACING[2] * np.tan(tilt), 7.0 + k * SPACING[2])
                 for k in range(SHAPE[0])]
    folder = write_scan_of_field(tmp_path / "tilted", positions)
    image = read_scan(folder)
    assert image.GetSpacing() == pytest.approx(SPACING)  # 2.0 between slices, not 2.13
    assert np.allclose(np.asarray(image.GetDirection()).reshape(3, 3), np.eye(3))
    assert image.GetDepth() == SHAPE[0]
    shift = (SHAPE[0] - 1) * SPACING[2] * np.tan(tilt)  # last slice's, along j (mm)
    assert image.GetHeight() == SHAPE[1] + round(shift / SPACING[1])  # holds every slice
    assert_holds_the_field(image)
    assert image.GetPixelID() == sitk.sitkInt16
    (note,) = scan_notes(image)
    assert "20.0 deg" in note and "gantry tilt" in note


def test_a_missing_slice_is_interpolated_not_stretched_over(tmp_path):
    positions = [(-5.0, 3.0, 7.0 + k * SPACING[2]) for k in range(SHAPE[0])]
    folder = write_scan_of_field(tmp_path / "gap", positions)
    (folder / "slice0010.dcm").unlink()
    image = read_scan(folder)
    assert image.GetSpacing()[2] == pytest.approx(2.0)
    assert image.GetDepth() == SHAPE[0]  # the missing slice back, in between its neighbours
    assert_holds_the_field(image)
    assert "2.00 to 4.00 mm" in scan_notes(image)[0]


def test_a_series_missing_a_block_of_slices_is_refused_by_name(tmp_path):
    """Six 2 mm slices missing (14 mm between neighbours) are interpolated over; seven (16 mm,
    beyond ``MAX_GAP_MM``) would invent half a sinus's height, and the series is refused."""
    positions = [(-5.0, 3.0, 7.0 + k * SPACING[2]) for k in range(SHAPE[0])]
    for missing, refused in ((6, False), (7, True)):
        folder = write_scan_of_field(tmp_path / f"gap{missing}", positions)
        for k in range(3, 3 + missing):
            (folder / f"slice{k:04d}.dcm").unlink()
        if not refused:
            assert "2.00 to 14.00 mm" in scan_notes(read_scan(folder))[0]
            continue
        with pytest.raises(InputError, match=rf"gap{missing} \[slice positions\]: slices 3 and 4 "
                           rf"of {SHAPE[0] - missing} lie 16.0 mm apart .* usual gap being "
                           r"2.00 mm: slices are missing there; expected a complete series"):
            read_scan(folder)


def test_an_oblique_regular_series_is_read_as_is(tmp_path):
    row = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    column = np.array([0.0, np.cos(0.2), np.sin(0.2)])
    column -= (column @ row) * row
    column /= np.linalg.norm(column)
    normal = np.cross(row, column)
    positions = [np.array([-5.0, 3.0, 7.0]) + k * SPACING[2] * normal for k in range(SHAPE[0])]
    folder = write_scan_of_field(tmp_path / "oblique", positions, row, column)
    image = read_scan(folder)
    assert scan_notes(image) == []
    assert image.GetSize() == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert_holds_the_field(image)


def test_two_slices_at_one_place_are_refused_by_name(tmp_path):
    positions = [(-5.0, 3.0, 7.0 + k * SPACING[2]) for k in range(SHAPE[0])]
    folder = write_scan_of_field(tmp_path / "twice", positions)
    copy = sitk.ReadImage(str(folder / "slice0005.dcm"))
    copy.SetMetaData("0008|0018", copy.GetMetaData("0008|0018") + ".99")  # its own instance
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(folder / "slice0005b.dcm"))
    writer.Execute(copy)
    with pytest.raises(InputError, match="0.000 mm apart") as error:
        read_scan(folder)
    assert str(folder) in str(error.value)


def test_a_slice_of_another_orientation_is_refused_by_name(tmp_path):
    positions = [(-5.0, 3.0, 7.0 + k * SPACING[2]) for k in range(SHAPE[0])]
    folder = write_scan_of_field(tmp_path / "mixed", positions)
    other = write_scan_of_field(tmp_path / "other", positions[:1], row=(1, 0, 0),
                                column=(0, 0, -1))
    scout = sitk.ReadImage(str(other / "slice0000.dcm"))
    for tag in ("0020|000e", "0020|000d", "0020|0052"):  # into the first series
        scout.SetMetaData(tag, sitk.ReadImage(str(folder / "slice0000.dcm")).GetMetaData(tag))
    scout.SetMetaData("0008|0018", scout.GetMetaData("0008|0018") + ".77")
    scout.SetMetaData("0020|0032", "-5\\3\\100")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(folder / "scout.dcm"))
    writer.Execute(scout)
    shutil.rmtree(other)
    with pytest.raises(InputError, match="oriented differently"):
        read_scan(folder)


def test_an_enhanced_multi_frame_ct_is_read_as_its_slices_are(tmp_path):
    """One multi-frame file (Enhanced CT): the same scan as the single-frame series, voxel for
    voxel once resampled (its frames may run the other way)."""
    from helpers.images import oblique_image, write_enhanced_ct

    image = oblique_image(shape=(12, 20, 24), spacing=(0.8, 0.9, 2.5))
    single = read_scan(write_dicom_series(image, tmp_path / "single"))
    enhanced = read_scan(write_enhanced_ct(image, tmp_path / "enhanced"))
    assert enhanced.GetDimension() == 3 and enhanced.GetSize() == single.GetSize()
    on_single = sitk.Resample(enhanced, single, sitk.Transform(), sitk.sitkNearestNeighbor,
                              -5000)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_single),
                                  sitk.GetArrayFromImage(single))
    assert read_scan(tmp_path / "enhanced" / "enhanced.dcm").GetSize() == single.GetSize()


@pytest.mark.parametrize("irregularity", ["tilt", "missing frame"])
def test_an_enhanced_ct_with_frames_off_a_regular_grid_is_read_where_they_lie(tmp_path,
                                                                              irregularity):
    """GDCM stacks a multi-frame file's frames regularly from the first (the tilt's shifts
    and a gap silently dropped); its per-frame positions place them instead."""
    from helpers.images import write_enhanced_ct

    tilt = np.tan(np.deg2rad(20)) if irregularity == "tilt" else 0.0
    positions = [(-5.0, 3.0 + k * SPACING[2] * tilt, 7.0 + k * SPACING[2])
                 for k in range(SHAPE[0])]
    series = write_scan_of_field(tmp_path / "series", positions)
    if irregularity == "missing frame":
        (series / "slice0010.dcm").unlink()
        del positions[10]
    files = sorted(str(p) for p in series.glob("*.dcm"))
    frames = sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(files)))
    frames.SetSpacing(SPACING)
    folder = write_enhanced_ct(frames, tmp_path / "enhanced", positions=positions)
    image = read_scan(folder)
    assert_holds_the_field(image)
    single = read_scan(series)
    assert image.GetSize() == single.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), single.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(single))
    (note,) = scan_notes(image)
    assert ("gantry tilt" in note) == bool(tilt)


def write_nifti_of_field(path, sform, keep_qform: bool):
    """A NIfTI-1 file of ``field`` whose sform (voxel -> RAS mm) is ``sform``; with
    ``keep_qform`` it also holds the unsheared qform SimpleITK writes (what ITK then reads)."""
    import gzip
    import struct

    k, j, i = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    voxels = np.stack([i, j, k, np.ones_like(i)], axis=-1).reshape(-1, 4).astype(float)
    lps = (voxels @ sform.T)[:, :3] * np.array([-1.0, -1.0, 1.0])
    values = np.rint(field(lps)).reshape(SHAPE).astype(np.int16)
    plain = path.with_name("plain.nii")
    sitk.WriteImage(sitk.GetImageFromArray(values), str(plain))
    header = bytearray(plain.read_bytes())
    struct.pack_into("<hh", header, 252, 1 if keep_qform else 0, 1)  # qform_code, sform_code
    struct.pack_into("<12f", header, 280, *sform[:3].ravel())
    data = bytes(header)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    plain.unlink()
    return path


@pytest.mark.parametrize("keep_qform", [False, True])
def test_a_nifti_with_a_tilted_sform_is_read_where_its_slices_lie(tmp_path, keep_qform):
    """A gantry-tilted CT converted to NIfTI without tilt correction: ITK refused it (no
    qform) or read it through its qform with the tilt dropped (up to 16 mm off here)."""
    tilt = np.tan(np.deg2rad(20))
    sform = np.array([[-SPACING[0], 0, 0, 5.0], [0, -SPACING[1], -tilt * SPACING[2], -3.0],
                      [0, 0, SPACING[2], 7.0], [0, 0, 0, 1]])
    path = write_nifti_of_field(tmp_path / "tilted.nii.gz", sform, keep_qform)
    image = read_scan(path)
    assert image.GetSpacing() == pytest.approx(SPACING, rel=1e-6)
    assert_holds_the_field(image)
    assert "gantry tilt" in scan_notes(image)[0] and "sform" in scan_notes(image)[0]


def test_a_nifti_sform_shearing_rows_and_columns_is_refused_by_name(tmp_path):
    sform = np.array([[-SPACING[0], 0.3, 0, 5.0], [0, -SPACING[1], 0, -3.0],
                      [0, 0, SPACING[2], 7.0], [0, 0, 0, 1]])
    path = write_nifti_of_field(tmp_path / "skewed.nii", sform, keep_qform=False)
    with pytest.raises(InputError, match="shears the slices' own rows and columns") as error:
        read_scan(path)
    assert str(path) in str(error.value)
