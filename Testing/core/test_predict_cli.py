"""``paranasal-ssl predict`` from the command line: boxes given or suggested (printed as options
that give the same analysis again), folders and lists of scans, and the region as a DICOM SEG
on the scan's own slices."""

from __future__ import annotations

import csv
import json
import shlex
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.images import tilted_copy, write_dicom_series
from paranasal_ssl.cli.main import main
from paranasal_ssl.geometry import ras_to_lps
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.version import code_version


@pytest.fixture(scope="module")
def sick_case(tiny_cohort):
    """(image path, {side: manifest ROI}) of a case with an opacified side."""
    records = read_manifest(tiny_cohort)
    sick = next(r for r in records if "opacification" in " ".join(r.anomaly_types))
    return sick.image, {r.side: r.roi for r in records if r.case_id == sick.case_id}


def _predict(run, image, out, *options):
    return main(["predict", "--model", str(run.dir), "--image", str(image), "--out", str(out),
                 "--device", "cpu", "--progress", "none", *options])


def test_a_side_without_a_box_names_the_ways_to_give_one(trained_run, sick_case, tmp_path,
                                                         capsys):
    run, _ = trained_run
    image, _ = sick_case
    assert _predict(run, image, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "[--roi-left]" in err and "--suggest-rois" in err and str(image.name) in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_suggested_boxes_are_recorded_and_printed_as_reusable_options(trained_run, sick_case,
                                                                      tmp_path, capsys):
    run, _ = trained_run
    image, truth = sick_case
    right = truth["right"]
    given = [f"{v:g}" for v in (*right.center_ras, *right.size_mm)]
    assert _predict(run, image, tmp_path / "a", "--suggest-rois", "--roi-right", *given) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    left = summary["sides"]["left"]
    assert left["roi_source"].startswith("suggested (") and "confidence" in left["roi_source"]
    assert summary["sides"]["right"]["roi_source"] == "command line"
    # the suggestion lands on the sinus the phantom's manifest boxes
    assert np.linalg.norm(np.subtract(left["roi"]["center_ras"], truth["left"].center)) < 15
    # the printed options reproduce the analysis (to the rounding of the printed box)
    line = next(x for x in printed.splitlines() if x.startswith("left box suggested"))
    options = shlex.split(line.split(": ", 1)[1])
    assert "--roi-right" not in line and options[0] == "--roi-left"
    assert _predict(run, image, tmp_path / "b", *options, "--roi-right", *given) == 0
    again = json.loads((tmp_path / "b" / "summary.json").read_text())["sides"]
    assert again["left"]["roi_source"] == "command line"
    np.testing.assert_allclose(again["left"]["roi"]["center_ras"], left["roi"]["center_ras"],
                               atol=0.06)
    assert again["left"]["probability"] == pytest.approx(left["probability"], abs=0.02)


def test_suggest_rois_with_a_manifest_points_to_a_case_list(trained_run, tiny_cohort,
                                                           tmp_path, capsys):
    run, _ = trained_run
    assert main(["predict", "--model", str(run.dir), "--manifest", str(tiny_cohort),
                 "--out", str(tmp_path), "--suggest-rois", "--progress", "none"]) == 2
    assert "--cases for scans without boxes" in capsys.readouterr().err


def test_a_folder_or_list_of_scans_without_boxes_is_predicted_with_suggested_ones(
        trained_run, tiny_cohort, tmp_path):
    run, _ = trained_run
    records = read_manifest(tiny_cohort)
    first, second = sorted({r.case_id for r in records})[:2]
    image = {r.case_id: r.image for r in records}
    folder = tmp_path / "scans"
    folder.mkdir()
    for case in (first, second):
        shutil.copy(image[case], folder / f"{case}.nii.gz")
    assert main(["predict", "--model", str(run.dir), "--cases", str(folder), "--out",
                 str(tmp_path / "from_folder"), "--device", "cpu", "--progress", "none"]) == 0
    table = _rows(tmp_path / "from_folder" / "predictions.csv")
    assert sorted(table) == [(c, s) for c in (first, second) for s in ("left", "right")]
    assert all(row["roi_source"].startswith("suggested (") and not row["error"]
               for row in table.values())
    summary = json.loads((tmp_path / "from_folder" / first / "summary.json").read_text())
    assert summary["roi_suggestion"]["confidence"] in ("high", "low")
    # what made them, to reproduce them: per case and for the whole table
    made = summary["predicted_with"]
    assert made["code_version"] == code_version() and made["model_folder"] == str(run.dir)
    assert shlex.split(made["command"])[:3] == ["paranasal-ssl", "predict", "--model"]
    assert summary["tta_crops"] == run.config.data.crop.test_crops_per_side
    record = json.loads((tmp_path / "from_folder" / "predictions.json").read_text())
    assert (record["cases"], record["cases_failed"], record["rows"]) == (2, 0, 4)
    assert record["command"] == made["command"] and record["environment"]["python"]

    # a CSV list: one side with its box, one scan missing (an error row; the rest goes on)
    truth = next(r for r in records if r.case_id == first and r.side == "left").roi
    box = ",".join(f"{v:g}" for v in (*truth.center_ras, *truth.size_mm))
    (tmp_path / "list.csv").write_text(
        "image,side,roi_center_r,roi_center_a,roi_center_s,roi_size_r,roi_size_a,roi_size_s\n"
        f"scans/{first}.nii.gz,left,{box}\nscans/{first}.nii.gz,right,,,,,,\n"
        "scans/gone.nii.gz,,,,,,,\n")
    assert main(["predict", "--model", str(run.dir), "--cases", str(tmp_path / "list.csv"),
                 "--out", str(tmp_path / "from_list"), "--device", "cpu",
                 "--progress", "none"]) == 1
    table = _rows(tmp_path / "from_list" / "predictions.csv")
    assert table[(first, "left")]["roi_source"] == "case list"
    assert table[(first, "right")]["roi_source"].startswith("suggested (")
    assert table[("gone", "left")]["error"] and not table[(first, "left")]["error"]
    assert json.loads((tmp_path / "from_list" / "predictions.json").read_text())[
        "cases_failed"] == 1


def _rows(path):
    with open(path, newline="") as f:
        return {(row["case_id"], row["side"]): row for row in csv.DictReader(f)}


def test_dicom_seg_refers_to_the_scans_own_slices_and_equals_the_region(trained_run, sick_case,
                                                                         tmp_path):
    import highdicom as hd
    import pydicom

    run, _ = trained_run
    image, truth = sick_case
    scan = sitk.ReadImage(str(image))
    folder = write_dicom_series(scan, tmp_path / "dicom")
    boxes = [f"{v:g}" for v in (*truth["left"].center_ras, *truth["left"].size_mm)]
    boxes += ["--roi-right"] + [f"{v:g}" for v in (*truth["right"].center_ras,
                                                     *truth["right"].size_mm)]
    assert _predict(run, folder, tmp_path / "out", "--dicom-seg", "--threshold", "0.2",
                    "--format", "nrrd", "--roi-left", *boxes) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dicom_seg"] == "region.seg.dcm"
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "region.nrrd")))
    assert region.any()
    seg = hd.seg.segread(tmp_path / "out" / "region.seg.dcm")
    files = sorted(folder.glob("*.dcm"), key=lambda f: int(pydicom.dcmread(
        f, stop_before_pixels=True).InstanceNumber))  # slice k was written as instance k + 1
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True)
    sides = [d.SegmentLabel.split()[0] for d in seg.SegmentSequence]
    codes = {"left": 1, "right": 2}
    back = np.zeros_like(region)
    for number, side in enumerate(sides, start=1):
        back[frames == number] = codes[side]
        assert f"p = {summary['sides'][side]['probability']:.2f}" in \
            seg.SegmentSequence[number - 1].SegmentLabel
    np.testing.assert_array_equal(back, region)
    assert seg.FrameOfReferenceUID == pydicom.dcmread(files[0]).FrameOfReferenceUID


def test_a_tilted_dicom_series_is_analysed_where_its_slices_lie(trained_run, sick_case,
                                                                tmp_path):
    """Read as ITK stacks it, a 20-degree tilt shears the head by +/- 2 cm; regularised, the
    analysis matches the untilted scan's, and the SEG's frames lie on the region."""
    import highdicom as hd
    import pydicom

    run, _ = trained_run
    image, truth = sick_case
    boxes = []
    for side in ("left", "right"):
        boxes += [f"--roi-{side}"] + [f"{v:g}" for v in (*truth[side].center_ras,
                                                          *truth[side].size_mm)]
    assert _predict(run, image, tmp_path / "plain", "--threshold", "0.2", "--format", "nrrd",
                    *boxes) == 0
    tilted, positions = tilted_copy(sitk.ReadImage(str(image)), 20.0)
    folder = write_dicom_series(tilted, tmp_path / "scans" / "dicom", positions=positions)
    assert _predict(run, folder, tmp_path / "out", "--dicom-seg", "--threshold", "0.2",
                    "--format", "nrrd", *boxes) == 0
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "gantry tilt" in summary["scan_notes"][0]
    # read as stacked, the peaks moved by 3.6 and 11.5 mm. Regularised, each side's peak is a
    # peak of the untilted analysis too: a tiny model's heatmap has near-ties, so the strongest
    # voxel itself may be another of them (2-3.4 mm away seen on an Intel Xeon)
    plain_heat = sitk.ReadImage(str(tmp_path / "plain" / "heatmap.nrrd"))

    def plain_heat_at(ras):
        return plain_heat[plain_heat.TransformPhysicalPointToIndex(ras_to_lps(ras).tolist())]

    for side in ("left", "right"):
        tilted_side, plain_side = summary["sides"][side], plain["sides"][side]
        assert tilted_side["probability"] == pytest.approx(plain_side["probability"], abs=0.05)
        assert plain_heat_at(tilted_side["peak_ras"]) >= 0.9 * plain_heat_at(
            plain_side["peak_ras"]) > 0
    region = sitk.ReadImage(str(tmp_path / "out" / "region.nrrd"))
    plain_region = sitk.ReadImage(str(tmp_path / "plain" / "region.nrrd"))
    on_plain = sitk.GetArrayFromImage(sitk.Resample(region, plain_region, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0))
    expected = sitk.GetArrayFromImage(plain_region)
    dice = 2 * np.sum((on_plain > 0) & (expected > 0)) / (np.sum(on_plain > 0)
                                                         + np.sum(expected > 0))
    assert dice > 0.8
    # a folder of such series (and a NIfTI scan): predictions.csv carries the note per case;
    # with --dicom-seg the series gets its SEG, the NIfTI scan is predicted without one
    shutil.copy(image, tmp_path / "scans" / "plain.nii.gz")
    assert main(["predict", "--model", str(run.dir), "--cases", str(tmp_path / "scans"),
                 "--out", str(tmp_path / "many"), "--device", "cpu", "--progress", "none",
                 "--sides", "left", "--dicom-seg", "--threshold", "0.2"]) == 0
    table = _rows(tmp_path / "many" / "predictions.csv")
    assert "gantry tilt" in table[("dicom", "left")]["scan_notes"]
    assert not table[("plain", "left")]["error"] and not table[("dicom", "left")]["error"]
    plain_summary = json.loads((tmp_path / "many" / "plain" / "summary.json").read_text())
    assert plain_summary["dicom_seg"] is None and "not a DICOM" in plain_summary[
        "dicom_seg_note"]
    assert (tmp_path / "many" / "dicom" / "region.seg.dcm").is_file()
    seg = hd.seg.segread(tmp_path / "out" / "region.seg.dcm")
    files = sorted(folder.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[h.SOPInstanceUID for h in headers], combine_segments=True)
    planes = [(h.ImagePositionPatient, h.ImageOrientationPatient, h.PixelSpacing)
              for h in headers]
    assert_seg_lies_on_region(seg, frames, planes, region)


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_dicom_seg_of_an_enhanced_multi_frame_ct_refers_to_its_frames(trained_run, sick_case,
                                                                      tmp_path, tilt):
    """One multi-frame file (as modern scanners export), its gantry straight or tilted: read,
    predicted, and its SEG's frames (one per source frame, stored here in descending order)
    lie on the region."""
    import highdicom as hd
    import pydicom

    from helpers.images import write_enhanced_ct

    run, _ = trained_run
    image, truth = sick_case
    frames, positions = tilted_copy(sitk.ReadImage(str(image)), tilt)
    folder = write_enhanced_ct(frames, tmp_path / "enhanced", positions=positions)
    boxes = []
    for side in ("left", "right"):
        boxes += [f"--roi-{side}"] + [f"{v:g}" for v in (*truth[side].center_ras,
                                                          *truth[side].size_mm)]
    assert _predict(run, folder, tmp_path / "out", "--dicom-seg", "--threshold", "0.2",
                    "--format", "nrrd", *boxes) == 0
    region = sitk.ReadImage(str(tmp_path / "out" / "region.nrrd"))
    seg = hd.seg.segread(tmp_path / "out" / "region.seg.dcm")
    source = pydicom.dcmread(folder / "enhanced.dcm", stop_before_pixels=True)
    count = int(source.NumberOfFrames)
    frames = seg.get_pixels_by_source_frame(
        source.SOPInstanceUID, source_frame_numbers=list(range(1, count + 1)),
        combine_segments=True, assert_missing_frames_are_empty=True)  # a SEG omits empty ones
    shared = source.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    planes = [(group.PlanePositionSequence[0].ImagePositionPatient, orientation, spacing)
              for group in source.PerFrameFunctionalGroupsSequence]
    assert_seg_lies_on_region(seg, frames, planes, region)


def assert_seg_lies_on_region(seg, frames, planes, region: sitk.Image):
    """Every pixel of every SEG frame, at its physical point (frame k lies on ``planes[k]``:
    DICOM position, orientation, pixel spacing), holds its side's code in ``region``."""
    codes = {number: {"left": 1, "right": 2}[d.SegmentLabel.split()[0]]
             for number, d in enumerate(seg.SegmentSequence, start=1)}
    hits = total = 0
    for (position, orientation, spacing), frame in zip(planes, frames):
        origin = np.array([float(v) for v in position])
        row, column = np.array([float(v) for v in orientation]).reshape(2, 3)
        between_rows, between_columns = (float(v) for v in spacing)
        for j, i in zip(*np.nonzero(frame)):  # each SEG pixel's point, read back in region
            point = origin + i * between_columns * row + j * between_rows * column
            index = region.TransformPhysicalPointToIndex(tuple(point))
            hits += region[index] == codes[int(frame[j, i])]
            total += 1
    assert total > 0 and hits == total


def test_dicom_seg_of_a_nifti_scan_is_refused_before_any_work(trained_run, sick_case,
                                                              tmp_path, capsys):
    run, _ = trained_run
    image, _ = sick_case
    assert _predict(run, image, tmp_path / "out", "--dicom-seg", "--suggest-rois") == 2
    assert "[--dicom-seg]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_series_without_a_frame_of_reference_gets_no_seg_and_loses_no_prediction(
        trained_run, sick_case, tmp_path, capsys):
    """A SEG must refer to the series' frame of reference: for one scan that is refused before
    any work, naming the file and the tag; in a folder the case is predicted all the same,
    and its summary says why it has no SEG."""
    import pydicom

    run, truth = trained_run[0], sick_case[1]
    image = sick_case[0]
    folder = write_dicom_series(sitk.ReadImage(str(image)), tmp_path / "scans" / "nofor")
    for f in folder.glob("*.dcm"):  # as some exporters write it: no FrameOfReferenceUID
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    box = [f"{v:g}" for v in (*truth["left"].center_ras, *truth["left"].size_mm)]
    assert _predict(run, folder, tmp_path / "one", "--dicom-seg", "--sides", "left",
                    "--roi-left", *box) == 2
    err = capsys.readouterr().err
    assert "[FrameOfReferenceUID]" in err and "--dicom-seg" in err and "nofor" in err
    assert not (tmp_path / "one").exists() or not any((tmp_path / "one").iterdir())
    assert main(["predict", "--model", str(run.dir), "--cases", str(tmp_path / "scans"),
                 "--out", str(tmp_path / "many"), "--device", "cpu", "--progress", "none",
                 "--sides", "left", "--dicom-seg", "--threshold", "0.2"]) == 0
    summary = json.loads((tmp_path / "many" / "nofor" / "summary.json").read_text())
    assert summary["dicom_seg"] is None and "FrameOfReferenceUID" in summary["dicom_seg_note"]
    assert 0 <= summary["sides"]["left"]["probability"] <= 1
    assert not (tmp_path / "many" / "nofor" / "region.seg.dcm").exists()


def test_boxes_placed_by_screen_side_are_refused_as_swapped(trained_run, sick_case, tmp_path,
                                                            capsys):
    """In radiological view the patient's left is on the screen's right: a "left" box put on
    the screen's left sinus is on the patient's right. Its result would be reported under the
    wrong side's name (and its crop read mirrored); refused instead, before any output."""
    run, _ = trained_run
    image, rois = sick_case
    box = {side: [f"{v:.2f}" for v in (*roi.center, *roi.size)] for side, roi in rois.items()}
    assert _predict(run, image, tmp_path / "out", "--roi-left", *box["right"],
                    "--roi-right", *box["left"]) == 2
    err = capsys.readouterr().err
    assert "[roi]" in err and "left and right swapped?" in err and str(image.name) in err
    assert "patient's left is on the screen's right" in err
    assert not (tmp_path / "out" / "summary.json").exists()
    # one box, on the other sinus: analysed (the midline is an estimate) with a warning
    assert _predict(run, image, tmp_path / "one", "--roi-left", *box["right"], "--sides",
                    "left") == 0
    notes = json.loads((tmp_path / "one" / "summary.json").read_text())["box_notes"]
    assert len(notes) == 1 and "into the patient's right half" in notes[0]
    assert _predict(run, image, tmp_path / "out", "--roi-left", *box["left"],
                    "--roi-right", *box["right"]) == 0  # the same boxes the right way round
    assert "box_notes" not in json.loads((tmp_path / "out" / "summary.json").read_text())

