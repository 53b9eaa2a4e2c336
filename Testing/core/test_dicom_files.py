"""DICOM as users hand it over: slices named without ``.dcm`` (PACS exports), a CD with its
DICOMDIR and PATIENT/STUDY/SERIES folders, a study with one folder per series. Each reads as
the series it holds, the same voxels as the plain folder; several series are named with the
sub-folder that holds each."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.images import oblique_image, write_dicom_cd, write_dicom_series
from paranasal_ssl.errors import InputError
from paranasal_ssl.hashing import content_key
from paranasal_ssl.review.case_list import open_case_list
from paranasal_ssl.scan_io import is_dicom_input, read_scan


def _same(image: sitk.Image, reference: sitk.Image):
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image),
                                  sitk.GetArrayFromImage(reference))


def _without_suffix(folder):
    for k, path in enumerate(sorted(folder.glob("*.dcm")), start=1):
        path.rename(folder / f"IM{k:06d}")
    return folder


def test_slices_named_without_a_suffix_read_as_their_series(tmp_path):
    image = oblique_image(shape=(8, 24, 20))
    folder = _without_suffix(write_dicom_series(image, tmp_path / "cases" / "anon"))
    one = folder / "IM000003"
    assert is_dicom_input(one)  # it says DICM at byte 128
    _same(read_scan(one), image)  # was "image is 2D in effect": the one slice alone
    _same(read_scan(folder), image)
    # predict's output kept beside the scans is no case, though its SEG is DICOM
    seg = tmp_path / "cases" / "preds" / "anon" / "region.seg.dcm"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(one.read_bytes())
    cases = open_case_list(tmp_path / "cases").cases
    assert [c.case_id for c in cases] == ["anon"]


def test_a_cd_reads_from_its_root_or_its_dicomdir(tmp_path):
    image = oblique_image(shape=(8, 24, 20))
    cd = write_dicom_cd([write_dicom_series(image, tmp_path / "staging")],
                        tmp_path / "cases" / "cd")
    assert (cd / "DICOMDIR").is_file() and not list(cd.glob("IM*"))  # slices below
    _same(read_scan(cd), image)  # was "no DICOM series found in this folder"
    _same(read_scan(cd / "DICOMDIR"), image)
    (slice_file,) = [p for p in cd.rglob("IM*") if p.name.endswith("3")][:1]
    _same(read_scan(slice_file), image)
    assert [c.case_id for c in open_case_list(tmp_path / "cases").cases] == ["cd"]
    # caches keyed by content see a change below the root
    before = content_key(cd)
    with open(slice_file, "ab") as stream:
        stream.write(b"\0\0")
    assert content_key(cd) != before


def test_a_study_with_a_folder_per_series_names_each_by_its_folder(tmp_path):
    study = tmp_path / "study"
    scout = oblique_image(shape=(4, 10, 12))
    bone = oblique_image(shape=(6, 10, 12), seed=1)
    _without_suffix(write_dicom_series(scout, study / "SE1", series_uid="1.2.3.4.1",
                                       description="scout"))
    _without_suffix(write_dicom_series(bone, study / "SE2", series_uid="1.2.3.4.2",
                                       description="thin bone"))
    with pytest.raises(InputError) as err:
        read_scan(study)
    message = str(err.value)
    assert "2 DICOM series" in message and "its own folder" in message
    assert '1.2.3.4.1 (4 slices, "scout", e.g. SE1/IM0000' in message
    assert '1.2.3.4.2 (6 slices, "thin bone", e.g. SE2/IM0000' in message
    _same(read_scan(study, series_uid="1.2.3.4.2"), bone)
    _same(read_scan(study / "SE2"), bone)
    _same(read_scan(study / "SE1" / "IM000002"), scout)


def test_an_empty_tree_says_where_it_looked(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no images")
    with pytest.raises(InputError, match="no DICOM series found in this folder or its sub-"):
        read_scan(tmp_path / "empty")


def test_a_flat_series_folder_keeps_the_content_key_caches_were_made_with(tmp_path):
    folder = write_dicom_series(oblique_image(shape=(4, 10, 12)), tmp_path / "flat")
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):  # the key before sub-folders counted
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert content_key(folder) == digest.hexdigest()[:16]


def test_a_series_description_chooses_the_series_of_each_study(tmp_path):
    """Whole studies as exported (scout and CT in one CD each): ``--series-description``
    makes each case the matching series; a study without exactly one match says why."""
    from paranasal_ssl.cli.predict_many import jobs_from_case_list
    from paranasal_ssl.scan_io import series_matching

    studies = tmp_path / "studies"
    bones = {}
    for name, seed in (("p1", 0), ("p2", 1), ("p3", 2)):
        _without_suffix(write_dicom_series(oblique_image(shape=(4, 10, 12), seed=seed),
                                           studies / name / "SE1", description="Scout",
                                           series_uid=f"1.2.3.{seed}.1"))
        if name != "p3":  # p3: the CT is missing from its CD
            bones[name] = oblique_image(shape=(6, 10, 12), seed=10 + seed)
            _without_suffix(write_dicom_series(bones[name], studies / name / "SE2",
                                               description="Sinus 1.0 BONE",
                                               series_uid=f"1.2.3.{seed}.2"))
    cases = {c.case_id: c for c in open_case_list(studies, "bone").cases}
    for name, bone in bones.items():
        assert cases[name].problem is None and cases[name].image.parent.name == "SE2"
        _same(read_scan(cases[name].image), bone)
    assert "0 of its DICOM series have 'bone' in their description" in cases["p3"].problem
    assert '"Scout"' in cases["p3"].problem  # the series there, to choose from
    jobs = {j.case_id: j for j in jobs_from_case_list(studies, "both", "bone")}
    assert jobs["p1"].image == cases["p1"].image and jobs["p3"].problem
    with pytest.raises(InputError, match="2 of its DICOM series have 's' in"):
        series_matching(studies / "p1", "s")
    assert open_case_list(studies).cases[0].image == studies / "p1"  # no text: as it was


def test_a_planning_export_with_a_file_gdcm_cannot_scan_still_reads_its_ct(tmp_path):
    """A radiotherapy export: CT slices beside an RT dose file whose header stops GDCM's folder
    scan (pydicom's real one-frame RT dose; GDCM found no series at all, so a CT slice given as
    the image was 'not found'). The folder's series then come from the headers."""
    import shutil

    import pydicom

    dose = Path(pydicom.__file__).parent / "data" / "test_files" / "rtdose_1frame.dcm"
    image = oblique_image(shape=(8, 24, 20))
    folder = _without_suffix(write_dicom_series(image, tmp_path / "export", description="CT"))
    shutil.copy(dose, folder / "RD.dose.dcm")
    with pytest.raises(RuntimeError):  # the GDCM behaviour this works around
        sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    _same(read_scan(folder / "IM000005"), image)  # one CT slice chooses the CT series
    with pytest.raises(InputError, match=r'holds 2 DICOM series: .*\(8 slices, "CT"'):
        read_scan(folder)
    ct_uid = pydicom.dcmread(folder / "IM000001", stop_before_pixels=True).SeriesInstanceUID
    _same(read_scan(folder, series_uid=ct_uid), image)
