"""The review session without Slicer: case lists, navigation, status, sort / filter, verdicts,
resume, refusals, and atomic saves that survive a writer killed mid-write (real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from helpers.images import write_dicom_series
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI
from paranasal_ssl.review.case_list import open_case_list
from paranasal_ssl.review.session import FORMAT_VERSION, open_session

ROI = {"left": "-30 -50 -60 30 40 40", "right": "30 -50 -60 30 40 40"}
HEADER = ("case_id,image,side,roi_center_r,roi_center_a,roi_center_s,roi_size_r,roi_size_a,"
          "roi_size_s,label\n")


def write_scan(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Image(6, 6, 6, sitk.sitkInt16), str(path))
    return path


def write_prediction(folder: Path, case_id: str, probs: dict, threshold: float = 0.5,
                     model: str = "run/m1") -> None:
    """A case folder in the layout `paranasal-ssl predict --manifest` writes (summary last)."""
    out = folder / case_id
    out.mkdir(parents=True, exist_ok=True)
    sides = {s: {"side": s, "probability": p, "crop_probabilities": [p],
                 "call": "normal" if p < 0.35 else ("anomalous" if p > 0.65 else "uncertain"),
                 "residual_score": p, "peak_ras": [0.0, 0.0, 0.0], "peak_value": p,
                 "region_volume_ml": 0.0,
                 "roi": SinusROI.from_values([0, 0, 0], [30, 40, 40]).to_dict()}
             for s, p in probs.items()}
    summary = {"model": {"name": model, "code_version": "0.1.0", "decision_threshold": threshold,
                         "uncertain_band": [0.35, 0.65]},
               "region_threshold": 0.5, "sides": sides, "case_id": case_id,
               "heatmap": "heatmap.nii.gz", "region": "region.nii.gz"}
    (out / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def review_dir(tmp_path):
    """Five cases: c0..c3 with ROIs, c4 scan-only; c2's scan is missing. Predictions for
    c0 (0.9 / 0.1), c1 (0.5 / 0.45), c3 (0.2 / 0.7); none for c4."""
    rows = []
    for i in range(4):
        if i != 2:
            write_scan(tmp_path / "scans" / f"c{i}.nii.gz")
        for side in ("left", "right"):
            rows.append(f"c{i},scans/c{i}.nii.gz,{side},{ROI[side].replace(' ', ',')},")
    write_scan(tmp_path / "scans" / "c4.nrrd")
    rows.append(",scans/c4.nrrd,,,,,,,,")
    (tmp_path / "cases.csv").write_text(HEADER + "\n".join(rows) + "\n")
    preds = tmp_path / "preds"
    write_prediction(preds, "c0", {"left": 0.9, "right": 0.1})
    write_prediction(preds, "c1", {"left": 0.5, "right": 0.45})
    write_prediction(preds, "c3", {"left": 0.2, "right": 0.7})
    return tmp_path


def test_case_lists_from_a_manifest_and_from_a_folder(review_dir):
    cases = open_case_list(review_dir / "cases.csv")
    assert cases.ids == ["c0", "c1", "c2", "c3", "c4"]
    assert cases.case("c0").rois["left"].center[0] == -30 and cases.case("c0").sides == (
        "left", "right")
    assert cases.case("c4").rois == {} and cases.case("c4").sides == ("left", "right")
    assert "not found" in cases.case("c2").problem and cases.case("c0").available
    assert cases.session_path("Dr. Smith").name == "cases.review-Dr_Smith.json"
    write_dicom_series(sitk.Image(6, 6, 3, sitk.sitkInt16), review_dir / "scans" / "d5")
    folder = open_case_list(review_dir / "scans")
    assert folder.ids == ["c0", "c1", "c3", "c4", "d5"] and folder.kind == "folder"
    assert folder.case("d5").image.is_dir() and folder.case("d5").available
    assert folder.session_path("jo") == review_dir / "scans.review-jo.json"
    assert folder.fingerprint() != cases.fingerprint()


@pytest.mark.parametrize("text, field", [
    ("case_id,side\nc0,left\n", "header"),
    (HEADER + "c0,scans/c0.nii.gz,left,1,2,3,,,,\n", "roi_size_r"),
    (HEADER + "c0,scans/c0.nii.gz,left,1,2,x,4,5,6,\n", "roi_center_s"),
    (HEADER + "c0,scans/c0.nii.gz,left,,,,,,,maybe\n", "label"),
    (HEADER + "c0,scans/c0.nii.gz,up,,,,,,,\n", "side"),
    (HEADER + "c0,a.nii.gz,left,,,,,,,\nc0,b.nii.gz,right,,,,,,,\n", "image"),
])
def test_bad_case_lists_name_file_line_and_field(tmp_path, text, field):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        open_case_list(path)
    assert str(path) in str(info.value) and info.value.field == field
    with pytest.raises(InputError, match="no scans"):
        open_case_list(tmp_path)


def test_navigation_status_flag_and_next_unreviewed(review_dir):
    s = open_session(review_dir / "cases.csv", "ann", review_dir / "preds")
    assert s.path.name == "cases.review-ann.json" and s.path.exists()
    assert s.counts() == {"unreviewed": 4, "reviewed": 0, "flagged": 0, "unavailable": 1}
    assert s.first() == "c0" and s.position() == (1, 5)
    assert s.next() == "c1" and s.next() == "c3"  # c2 (scan missing) is skipped
    assert s.previous() == "c1"
    s.record("c1", "left", verdict="normal")
    assert s.status("c1") == "unreviewed"  # one side still open
    s.record("c1", "right", verdict="anomalous", anomaly_type="cyst")
    assert s.status("c1") == "reviewed" and s.verdict("c1", "right").anomaly_type == (
        "retention_cyst")
    assert s.next_unreviewed() == "c3"
    s.set_flag("c3")
    assert s.status("c3") == "flagged"
    assert s.next_unreviewed() == "c4" and s.next() is None and s.current == "c4"
    assert s.next_unreviewed() == "c0"  # wraps round
    s.mark_unavailable("c4", "cannot read image")
    assert s.status("c4") == "unavailable" and s.problem("c4") == "cannot read image"
    for case in ("c0", "c3"):
        for side in ("left", "right"):
            s.record(case, side, verdict="agree")
    assert s.next_unreviewed() is None  # c3 flagged, c4 unavailable, the rest reviewed
    with pytest.raises(InputError, match="no case 'nope'"):
        s.go_to("nope")


def test_agree_takes_the_models_decision_and_what_the_reader_saw(review_dir):
    s = open_session(review_dir / "cases.csv", "ann", review_dir / "preds")
    v = s.record("c0", "left", verdict="agree", heatmap_on_target=True, comment="polyp <3mm>")
    assert (v.label, v.model_probability, v.model_call, v.model_version) == (
        1, 0.9, "anomalous", "run/m1@0.1.0")
    assert s.record("c1", "left", verdict="agree").label == 1  # 0.5 >= decision threshold 0.5
    assert s.record("c1", "right", verdict="agree").label == 0
    with pytest.raises(InputError, match="no model prediction"):
        s.record("c4", "left", verdict="agree")
    with pytest.raises(InputError, match="needs an anomalous verdict"):
        s.record("c1", "right", anomaly_type="polyp")
    s.record("c0", "right", verdict="anomalous", anomaly_type="fluid_level")
    assert s.record("c0", "right", verdict="normal").anomaly_type is None  # cleared
    with pytest.raises(InputError, match="unknown anomaly type"):
        s.record("c0", "left", anomaly_type="tumour")
    roi = SinusROI.from_values([-28, -50, -61], [32, 40, 40])
    s.record("c4", "left", roi=roi)  # a box placed on a scan-only case
    assert s.roi("c4", "left") == roi and s.roi("c4", "right") is None
    assert s.roi("c0", "left").center[0] == -30  # the list's box
    assert s.verdict("c0", "left").comment == "polyp <3mm>"


def test_sort_and_filter_by_probability_uncertainty_and_disagreement(review_dir):
    s = open_session(review_dir / "cases.csv", "ann", review_dir / "preds")
    assert s.set_view(sort="probability") == ["c0", "c3", "c1", "c2", "c4"]  # no prediction last
    assert s.set_view(sort="uncertainty") == ["c1", "c3", "c0", "c2", "c4"]
    assert s.set_view(sort="list", filter_name="uncertain") == ["c1"]  # 0.35-0.65
    s.record("c0", "left", verdict="normal")  # disagrees (model 0.9)
    s.record("c3", "left", verdict="normal")  # agrees (model 0.2)
    assert s.set_view(filter_name="disagreement") == ["c0"]
    assert s.set_view(sort="disagreement", filter_name="all")[:2] == ["c0", "c3"]
    s.set_view(sort="list", filter_name="unreviewed")
    s.go_to("c1")
    assert s.next() == "c3" and s.next() == "c4"  # navigation follows the filtered view
    with pytest.raises(InputError, match="unknown sort"):
        s.set_view(sort="age")


def test_reopening_resumes_and_two_readers_keep_separate_files(review_dir):
    s = open_session(review_dir / "cases.csv", "ann", review_dir / "preds")
    s.go_to("c3")
    s.set_view(sort="probability")
    s.record("c3", "right", verdict="anomalous", anomaly_type="polyp", heatmap_on_target=False)
    s.set_flag("c0")
    again = open_session(review_dir / "cases.csv", "ann")  # predictions folder remembered
    assert again.current == "c3" and again.first() == "c3"
    assert again.view["sort"] == "probability" and again.status("c0") == "flagged"
    v = again.verdict("c3", "right")
    assert (v.label, v.anomaly_type, v.heatmap_on_target, v.model_probability) == (
        1, "polyp", False, 0.7)
    other = open_session(review_dir / "cases.csv", "bob")
    assert other.path != again.path and other.verdict("c3", "right") is None
    assert other.predictions is None
    by_file = open_session(review_dir / "cases.csv", path=again.path, read_only=True)
    assert by_file.reader == "ann" and by_file.status("c3") == "unreviewed"


def test_refuses_another_list_a_newer_format_corrupt_files_and_a_second_writer(review_dir):
    s = open_session(review_dir / "cases.csv", "ann", review_dir / "preds")
    s.record("c0", "left", verdict="normal")
    other_list = review_dir / "other.csv"
    other_list.write_text(HEADER + "x1,scans/c0.nii.gz,left,,,,,,,\n")
    before = s.path.read_bytes()
    with pytest.raises(InputError) as info:
        open_session(other_list, "ann", path=s.path)
    assert "another case list" in str(info.value) and str(s.path) in str(info.value)
    with pytest.raises(InputError, match="belongs to reader 'ann'"):
        open_session(review_dir / "cases.csv", "bob", path=s.path)
    data = json.loads(before)
    data["format_version"] = FORMAT_VERSION + 1
    newer = review_dir / "cases.review-new.json"
    newer.write_text(json.dumps(data))
    with pytest.raises(InputError, match="newer") as info:
        open_session(review_dir / "cases.csv", path=newer)
    assert info.value.field == "format_version"
    corrupt = review_dir / "cases.review-broken.json"
    corrupt.write_text('{"format": "paranasal-ssl-review-session", "cases": {')
    with pytest.raises(InputError, match="unreadable session"):
        open_session(review_dir / "cases.csv", "broken")
    assert corrupt.read_text().endswith("{")  # refused, never overwritten
    assert s.path.read_bytes() == before
    time.sleep(0.01)
    s.path.write_text(s.path.read_text().replace('"normal"', '"anomalous"'))  # another program
    with pytest.raises(InputError, match="changed by another program"):
        s.record("c0", "right", verdict="normal")
    assert '"anomalous"' in s.path.read_text()


def read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root ignores permissions: then a sysfs
    folder, which nobody can create files in)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/sys/kernel")


def test_a_read_only_folder_fails_before_any_review_work(review_dir, tmp_path):
    locked = read_only_dir(tmp_path)
    with pytest.raises(InputError, match="cannot write here"):
        open_session(review_dir / "cases.csv", "ann", path=locked / "cases.review-ann.json")
    s = open_session(review_dir / "cases.csv", "ann", review_dir / "preds")
    s.record("c0", "left", verdict="normal")
    from paranasal_ssl.review.export import export_session

    with pytest.raises(InputError, match="cannot write here"):
        export_session(s, locked / "labels.csv", review_dir / "d.csv")
    assert not (review_dir / "d.csv").exists()


WRITER = r"""
import sys
from paranasal_ssl.review.session import open_session
s = open_session(sys.argv[1], "killed", sys.argv[2])
big = "x" * 400000
for i in range(100000):
    s.record("c0", "left", verdict="normal" if i % 2 else "anomalous", comment=f"{i} {big}")
    s.record("c1", "right", comment=f"{i} {big}")
    print(i, flush=True)
"""


def test_a_writer_killed_in_the_middle_of_a_save_leaves_a_complete_session(review_dir):
    script = review_dir / "writer.py"
    script.write_text(WRITER)
    session_path = review_dir / "cases.review-killed.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    kills = []
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(review_dir / "cases.csv"),
                                 str(review_dir / "preds")], stdout=subprocess.PIPE, text=True,
                                env=env)
        for _ in range(2 + attempt):  # let a few saves complete
            assert proc.stdout.readline(), "writer died"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # kill while a temporary file is being written
            if any(p.name.startswith(".cases.review-killed.json.") for p in review_dir.iterdir()):
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills.append(proc.returncode)
        s = open_session(review_dir / "cases.csv", "killed")  # complete, valid, resumable
        left, right = s.verdict("c0", "left"), s.verdict("c1", "right")
        n = int(left.comment.split()[0])
        assert left.verdict == ("normal" if n % 2 else "anomalous") and len(left.comment) > 4e5
        assert right is None or int(right.comment.split()[0]) in (n - 1, n)
        assert json.loads(session_path.read_text())["format_version"] == FORMAT_VERSION
    assert kills == [-signal.SIGKILL] * 3
    leftovers = [p for p in review_dir.iterdir() if p.name.startswith(".cases.review-killed")]
    assert leftovers, "no kill landed during a write (temporary file left behind)"
    s.record("c0", "right", verdict="normal")  # the resumed session keeps working
    assert s.verdict("c0", "right").label == 0
