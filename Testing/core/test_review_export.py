"""Export of a review session and the fine-tuning loop on tiny phantoms: real predictions,
exported labels read back by ``read_manifest`` and by ``paranasal-ssl finetune --labels``, the
new model recording the labels it used, and prediction with it updating the list."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from paranasal_ssl.cli.main import main
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import read_manifest, write_manifest
from paranasal_ssl.review.export import export_session
from paranasal_ssl.review.session import open_session

N_CASES = 6


@pytest.fixture(scope="module")
def reviewed(trained_run, tiny_cohort, tmp_path_factory):
    """A case list of 6 phantoms, real predictions of the trained tiny model, and a copy of
    the run folder to fine-tune in."""
    run, _ = trained_run
    root = tmp_path_factory.mktemp("review")
    records = [r for r in read_manifest(tiny_cohort)
               if r.case_id in sorted({x.case_id for x in read_manifest(tiny_cohort)})[:N_CASES]]
    cases = write_manifest(records, root / "cases.csv")
    assert main(["predict", "--model", str(run.dir), "--manifest", str(cases), "--out",
                 str(root / "preds"), "--device", "cpu", "--progress", "none"]) == 0
    shutil.copytree(run.dir, root / "run")
    return root, cases, records


def test_exported_labels_round_trip_into_finetune_and_predict_updates_the_list(reviewed):
    root, cases, records = reviewed
    session = open_session(cases, "Dr Ito", root / "preds")
    truth = {r.key: r for r in records}
    expected = {}
    for r in records[:8]:  # four cases, both sides: the reader gives the true label
        pred = session.prediction(r.case_id)
        same = pred.model_label(r.side) == r.label
        session.record(r.case_id, r.side, verdict="agree" if same else
                       ("anomalous" if r.label else "normal"),
                       anomaly_type=r.anomaly_types[0] if r.label else None,
                       heatmap_on_target=bool(r.label) or None,
                       comment='says "hi", then\nleaves' if r.key == records[0].key else "")
        expected[r.key] = r.label
    session.record(records[8].case_id, records[8].side, verdict="normal")
    session.set_flag(records[8].case_id)  # flagged: not exported by default
    assert 0 < sum(expected.values()) < len(expected), "need both classes"

    out = root / "export"
    result = export_session(session, out / "labels.csv", out / "disagreements.csv",
                            out / "images")
    assert any("flagged" in note for note in result.skipped)
    back = read_manifest(out / "labels.csv", require_labels=True)
    assert {r.key: r.label for r in back} == expected
    for r in back:
        t = truth[r.key]
        assert r.image == t.image and r.subject_id == t.subject_id and r.modality == "ct"
        assert np.allclose(r.roi.center, t.roi.center, atol=1e-3)
        assert np.allclose(r.roi.size, t.roi.size, atol=1e-3)
        assert r.anomaly_types == (t.anomaly_types[:1] if t.label else ())
        pred = session.prediction(r.case_id)
        assert r.extra["reader"] == "Dr Ito" and r.extra["timestamp"]
        assert r.extra["model_version"] == pred.model_version != ""
        assert r.extra["agree"] == str(int(pred.model_label(r.side) == r.label))
        assert float(r.extra["model_probability"]) == pytest.approx(
            pred.sides[r.side].probability, abs=1e-6)
    assert back[0].extra["comment"] == 'says "hi", then\nleaves'

    with open(out / "disagreements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    decided = dict(expected, **{records[8].key: 0})  # the flagged case is logged too
    want = {k for k, label in decided.items()
            if session.prediction(k.split(":")[0]).model_label(k.split(":")[1]) != label}
    assert {f"{r['case_id']}:{r['side']}" for r in rows if "label" in r["kind"]} == want
    assert len(rows) == result.n_disagreements

    case0 = records[0].case_id
    heat = sitk.ReadImage(str(out / "images" / f"{case0}_heatmap.nrrd"))
    scan = sitk.ReadImage(str(records[0].image))
    assert heat.GetSize() == scan.GetSize()
    assert np.allclose(heat.GetOrigin(), scan.GetOrigin())
    assert np.allclose(heat.GetDirection(), scan.GetDirection())
    regions = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" /
                                                         f"{case0}_regions.nrrd")))
    assert set(np.unique(regions)) <= {0, 1, 2}

    run_copy = root / "run"
    assert main(["finetune", "--run", str(run_copy), "--labels", str(out / "labels.csv"),
                 "--label-fraction", "1", "--name", "reviewed", "--no-default", "--device",
                 "cpu", "--progress", "none"]) == 0
    model_dir = run_copy / "finetune" / "reviewed"
    with open(model_dir / "labels_used.csv", newline="") as f:
        used = {row["key"]: int(row["label"]) for row in csv.DictReader(f)}
    assert used == expected  # the new model records exactly the exported labels
    assert json.loads((model_dir / "model.json").read_text())["labels_used"] == "labels_used.csv"

    old_version = session.prediction(case0).model_version
    assert main(["predict", "--model", str(model_dir), "--manifest", str(cases), "--out",
                 str(root / "preds"), "--device", "cpu", "--progress", "none"]) == 0
    reopened = open_session(cases, "Dr Ito")
    new_version = reopened.prediction(case0).model_version
    assert new_version != old_version and "reviewed" in new_version
    assert session.prediction(case0).model_version == new_version  # the open list updates
    assert reopened.verdict(case0, "left").model_version == old_version  # what the reader saw


def test_export_says_when_nothing_is_reviewed_and_what_it_left_out(reviewed, tmp_path):
    root, cases, records = reviewed
    session = open_session(cases, "nobody", root / "preds")
    with pytest.raises(InputError, match="no reviewed case side to export"):
        export_session(session, tmp_path / "labels.csv")
    assert not (tmp_path / "labels.csv").exists()
    # a folder of scans: no boxes in the list, but the prediction's box is used
    folder = tmp_path / "scans"
    folder.mkdir()
    for r in records[:4:2]:
        shutil.copy(r.image, folder / r.image.name)
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    listed = open_session(folder, "ann", root / "preds")
    assert listed.case_list.ids == ["broken", records[0].case_id, records[2].case_id]
    listed.record(records[0].case_id, "left", verdict="anomalous", anomaly_type="polyp")
    listed.record("broken", "left", verdict="normal")
    listed.mark_unavailable("broken", "cannot read image")
    listed.record(records[2].case_id, "right", verdict="normal")
    no_pred = tmp_path / "empty-preds"
    no_pred.mkdir()
    bare = open_session(folder, "bea", no_pred)
    bare.record(records[0].case_id, "right", verdict="normal")
    with pytest.raises(InputError, match="no sinus ROI"):
        export_session(bare, tmp_path / "bare.csv")
    result = export_session(listed, tmp_path / "labels.csv")
    assert [r.key for r in result.records] == [f"{records[0].case_id}:left",
                                               f"{records[2].case_id}:right"]
    assert any("broken:left: scan unavailable" in n for n in result.skipped)
    roi = read_manifest(tmp_path / "labels.csv")[0].roi
    assert np.allclose(roi.center, records[0].roi.center, atol=1e-3)  # from the prediction


def test_review_and_report_commands(reviewed, tmp_path, capsys):
    root, cases, records = reviewed
    c = records[0].case_id
    args = ["--cases", str(cases), "--reader", "cli", "--predictions", str(root / "preds"),
            "--progress", "none"]
    assert main(["review", "record", *args, "--case", c, "--side", "left", "--verdict",
                 "anomalous", "--type", "cyst", "--on-target", "no", "--comment", "x"]) == 0
    assert f"{c}: unreviewed (right side to review); saved" in capsys.readouterr().out
    assert main(["review", "record", *args, "--case", c, "--side", "right", "--verdict",
                 "normal", "--flag", "on"]) == 0
    assert main(["review", "status", *args]) == 0
    out = capsys.readouterr().out
    assert "flagged: 1" in out and f"current case: {c}" in out
    assert main(["review", "list", *args, "--filter", "flagged"]) == 0
    assert f"{c}\tflagged" in capsys.readouterr().out
    assert main(["review", "export", *args, "--out", str(tmp_path / "l.csv")]) == 2
    assert "no reviewed case side" in capsys.readouterr().err  # only a flagged case
    assert main(["review", "export", *args, "--out", str(tmp_path / "l.csv"),
                 "--include-flagged"]) == 0
    assert len(read_manifest(tmp_path / "l.csv")) == 2
    assert (tmp_path / "l_disagreements.csv").read_text().count("localisation") == 1
    assert main(["review", "manifest", "--cases", str(cases), "--out",
                 str(tmp_path / "p.csv"), "--progress", "none"]) == 0
    assert len(read_manifest(tmp_path / "p.csv")) == len(records)


def test_a_folder_without_boxes_is_predicted_and_the_suggested_boxes_become_the_reviews(
        trained_run, tiny_cohort, tmp_path):
    from paranasal_ssl.review.rois import predict_case_list

    run, _ = trained_run
    records = read_manifest(tiny_cohort)
    first, second = sorted({r.case_id for r in records})[:2]
    folder = tmp_path / "scans"
    folder.mkdir()
    for r in records:
        if r.case_id in (first, second) and not (folder / f"{r.case_id}.nii.gz").exists():
            shutil.copy(r.image, folder / f"{r.case_id}.nii.gz")
    session = open_session(folder, "rad", tmp_path / "preds")
    assert session.roi(first, "left") is None  # no box anywhere yet
    listed, notes = predict_case_list(session, tmp_path / "preds" / "review-cases.csv")
    assert notes == []
    assert main(["predict", "--model", str(run.dir), "--cases", str(listed), "--out",
                 str(tmp_path / "preds"), "--device", "cpu", "--progress", "none"]) == 0
    suggested = session.roi(first, "left")  # the prediction's box, suggested by predict
    truth = next(r.roi for r in records if r.case_id == first and r.side == "left")
    assert suggested is not None and np.linalg.norm(suggested.center - truth.center) < 15
    # the reader moves a box: the next prediction uses it, the other sides keep theirs
    session.record(first, "left", roi=truth)
    listed, _ = predict_case_list(session, tmp_path / "preds" / "review-cases.csv")
    assert main(["predict", "--model", str(run.dir), "--cases", str(listed), "--out",
                 str(tmp_path / "preds"), "--device", "cpu", "--progress", "none"]) == 0
    with open(tmp_path / "preds" / "predictions.csv", newline="") as f:
        source = {(row["case_id"], row["side"]): row["roi_source"] for row in csv.DictReader(f)}
    assert source[(first, "left")] == "case list" and len(source) == 4
    box = json.loads((tmp_path / "preds" / first / "summary.json").read_text())["sides"]["left"]
    np.testing.assert_allclose(box["roi"]["center_ras"], truth.center, atol=1e-3)


def test_a_dicom_case_is_exported_as_a_dicom_seg_with_the_readers_verdict(
        trained_run, tiny_cohort, tmp_path, monkeypatch):
    """A reviewed case whose scan is a DICOM CD: the export adds its regions as a DICOM SEG on
    the series' own slices, each segment naming the model's call and the reader's verdict."""
    import highdicom as hd
    import pydicom

    from helpers.images import write_dicom_cd, write_dicom_series
    from paranasal_ssl.review.rois import predict_case_list

    run, _ = trained_run
    records = read_manifest(tiny_cohort)
    sick = next(r for r in records if "opacification" in " ".join(r.anomaly_types))
    image = sick.image
    boxes = {r.side: r.roi for r in records if r.case_id == sick.case_id}
    folder = tmp_path / "scans"
    write_dicom_cd([write_dicom_series(sitk.ReadImage(str(image)), tmp_path / "staging")],
                   folder / "patient_cd")
    shutil.copy(image, folder / "plain.nii.gz")  # a NIfTI case beside it: no SEG, no failure
    session = open_session(folder, "rad", tmp_path / "preds")
    for case in ("patient_cd", "plain"):
        for side in ("left", "right"):
            session.record(case, side, roi=boxes[side])
    listed, _ = predict_case_list(session, tmp_path / "preds" / "review-cases.csv")
    assert main(["predict", "--model", str(run.dir), "--cases", str(listed), "--out",
                 str(tmp_path / "preds"), "--device", "cpu", "--progress", "none",
                 "--threshold", "0.2"]) == 0
    for case in ("patient_cd", "plain"):
        session.record(case, "left", verdict="anomalous", anomaly_type="polyp")
        session.record(case, "right", verdict="normal")
    result = export_session(session, tmp_path / "out" / "labels.csv",
                            images_dir=tmp_path / "out" / "images")
    names = {p.name for p in result.images}
    assert "patient_cd_regions.seg.dcm" in names and "plain_regions.nrrd" in names
    assert not any(n.startswith("plain") and n.endswith(".dcm") for n in names)
    seg = hd.seg.segread(tmp_path / "out" / "images" / "patient_cd_regions.seg.dcm")
    labels = {d.SegmentLabel.split()[0]: d.SegmentLabel for d in seg.SegmentSequence}
    assert labels and all(len(label) <= 64 for label in labels.values())
    for side, verdict in (("left", "anomalous"), ("right", "normal")):
        if side in labels:
            p = session.prediction("patient_cd").sides[side].probability
            assert f"p = {p:.2f}" in labels[side] and labels[side].endswith(f"reader: {verdict}")
    # the SEG's frames are the exported regions, slice by slice of the series
    files = sorted((folder / "patient_cd").rglob("IM*"), key=lambda f: int(pydicom.dcmread(
        f, stop_before_pixels=True).InstanceNumber))
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True)
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "images" /
                                                       "patient_cd_regions.nrrd")))
    back = np.zeros_like(region)
    for number, d in enumerate(seg.SegmentSequence, start=1):
        back[frames == number] = {"left": 1, "right": 2}[d.SegmentLabel.split()[0]]
    np.testing.assert_array_equal(back, region)
    assert result.notes == []
    # without highdicom (Slicer does not ship it) the export says so and writes the rest
    monkeypatch.setitem(sys.modules, "highdicom", None)
    again = export_session(session, tmp_path / "again" / "labels.csv",
                           images_dir=tmp_path / "again" / "images")
    assert not list((tmp_path / "again" / "images").glob("*.dcm"))
    assert "patient_cd_regions.nrrd" in {p.name for p in again.images}
    assert again.notes == ["no DICOM SEG: highdicom is not installed (pip install highdicom)"]
