"""Scans keep their geometry through every format; bad scans get one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.images import oblique_image, write_dicom_series
from paranasal_ssl.errors import InputError
from paranasal_ssl.scan_io import image_from_array, read_header, read_scan, write_image


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tol=1e-4):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_file_round_trip_keeps_oblique_anisotropic_geometry(tmp_path, suffix):
    image = oblique_image()
    path = write_image(image, tmp_path / f"scan{suffix}")
    back = read_scan(path)
    assert_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(back))
    header = read_header(path)
    assert header["size"] == image.GetSize()
    np.testing.assert_allclose(header["direction"], image.GetDirection(), atol=1e-4)


def test_dicom_series_round_trip(tmp_path):
    image = oblique_image(shape=(8, 24, 20))
    folder = write_dicom_series(image, tmp_path / "dicom")
    back = read_scan(folder)
    assert_same_geometry(image, back, tol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(back))
    # one file of the series reads the whole series
    one = read_scan(sorted(folder.glob("*.dcm"))[3])
    assert one.GetSize() == image.GetSize()


def test_dicom_folder_with_two_series_names_them(tmp_path):
    folder = tmp_path / "mixed"
    write_dicom_series(oblique_image(shape=(4, 10, 12)), folder, series_uid="1.2.3.4.1",
                       description="scout")
    second = folder / "b"
    write_dicom_series(oblique_image(shape=(6, 10, 12), seed=1), second, series_uid="1.2.3.4.2",
                       description="thin bone")
    for f in second.iterdir():
        f.rename(folder / f"b_{f.name}")
    with pytest.raises(InputError) as err:
        read_scan(folder)
    assert "2 DICOM series" in str(err.value) and str(folder) in str(err.value)
    assert '1.2.3.4.1 (4 slices, "scout", e.g. slice' in str(err.value)
    assert '1.2.3.4.2 (6 slices, "thin bone", e.g. b_slice' in str(err.value)
    assert read_scan(folder, series_uid="1.2.3.4.2").GetSize() == (12, 10, 6)
    assert read_scan(folder / "b_slice0002.dcm").GetSize() == (12, 10, 6)  # a file chooses


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as err:
        read_scan(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="cannot read image") as err:
        read_scan(bad)
    assert "broken.nii.gz" in str(err.value)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_a_file_cut_short_is_refused_not_read_as_zeros(tmp_path, suffix):
    """An interrupted copy: ITK reads a cut NIfTI (plain or gzipped) without a word, the rest
    of the voxels zero; NRRD and MHA it refuses itself."""
    whole = write_image(oblique_image(shape=(12, 20, 16)), tmp_path / f"whole{suffix}")
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as err:
        read_scan(cut)
    assert str(cut) in str(err.value)
    if suffix.startswith(".nii"):
        voxels = 12 * 20 * 16 * 2  # int16
        assert f"cut short: {'' if suffix == '.nii.gz' else len(data) * 2 // 3}" in str(err.value)
        assert f"of the {voxels + 352} bytes its header promises" in str(err.value)
    read_scan(whole)  # the whole file still reads


def test_a_dicom_slice_cut_short_is_named_in_the_note(tmp_path):
    """GDCM drops a slice file whose pixel data stop early, without a word: the series reads
    with a gap there (resampled over, as any missing slice), and the note names the file."""
    from paranasal_ssl.scan_io import scan_notes

    folder = write_dicom_series(oblique_image(shape=(8, 24, 20)), tmp_path / "dicom")
    assert scan_notes(read_scan(folder)) == []
    damaged = sorted(folder.glob("*.dcm"))[4]
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-300])
    notes = scan_notes(read_scan(folder))
    assert len(notes) == 1 and "slice gaps" in notes[0]
    assert f"could not read 1 file(s) of the series, cut short or damaged (copy them again): " \
        f"{damaged.name}" in notes[0]


def test_whole_nifti_with_extra_bytes_or_several_gzip_members_still_reads(tmp_path):
    import gzip

    image = oblique_image(shape=(6, 10, 8))
    plain = write_image(image, tmp_path / "scan.nii", compress=False).read_bytes()
    padded = tmp_path / "padded.nii.gz"  # trailing bytes after the voxels (allowed)
    padded.write_bytes(gzip.compress(plain + b"\0" * 100))
    members = tmp_path / "members.nii.gz"  # as bgzip writes: several gzip members in a row
    members.write_bytes(gzip.compress(plain[:500]) + gzip.compress(plain[500:]))
    for path in (padded, members):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_scan(path)),
                                      sitk.GetArrayFromImage(image))


def test_2d_image_refused(tmp_path):
    flat = sitk.Image(32, 32, sitk.sitkInt16)
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(flat, str(path))
    with pytest.raises(InputError, match="2D") as err:
        read_scan(path)
    assert "expected a 3D volume" in str(err.value)
    thin = image_from_array(np.zeros((1, 32, 32), np.int16))
    sitk.WriteImage(thin, str(tmp_path / "thin.nrrd"))
    with pytest.raises(InputError, match="2D in effect"):
        read_scan(tmp_path / "thin.nrrd")


def test_nan_values_refused(tmp_path):
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3] = np.nan
    # NRRD keeps NaN (the NIfTI writer turns it into 0)
    path = write_image(image_from_array(array), tmp_path / "nan.nrrd")
    with pytest.raises(InputError, match="1 voxel\\(s\\) are NaN"):
        read_scan(path)


def test_atomic_write_leaves_existing_file_intact_on_failure(tmp_path):
    path = tmp_path / "scan.nii.gz"
    write_image(oblique_image(), path)
    before = path.read_bytes()
    with pytest.raises(InputError, match="unknown image suffix"):
        write_image(oblique_image(), tmp_path / "scan.txt")
    with pytest.raises(RuntimeError):  # ITK cannot write an empty image
        write_image(sitk.Image(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nii.gz"]
