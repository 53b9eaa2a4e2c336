"""Manifests validate every field by name; splits are patient-level, stratified and nested."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from paranasal_ssl.config import SplitConfig
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI
from paranasal_ssl.manifest import SinusRecord, read_manifest, write_manifest
from paranasal_ssl.splits import label_fraction_subset, split_records


def make_records(n_subjects=60, seed=0, prevalence=0.5):
    rng = np.random.default_rng(seed)
    records = []
    for s in range(n_subjects):
        for side, r in (("left", -25.0), ("right", 25.0)):
            label = int(rng.random() < prevalence)
            records.append(SinusRecord(
                case_id=f"case{s:03d}", subject_id=f"subj{s:03d}", image=Path(f"/data/c{s}.nii"),
                side=side, roi=SinusROI.from_values([r, 40, -40], [30, 40, 45]), label=label,
                anomaly_types=("polyp",) if label else ()))
    return records


def test_manifest_round_trip(tmp_path):
    records = make_records(5)
    rotated = SinusROI.from_values([1, 2, 3], [10, 20, 30],
                                   [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    records[0] = SinusRecord("x", "sx", tmp_path / "img" / "x.nii.gz", "left", rotated, None,
                             (), tmp_path / "img" / "x_mask.nii.gz", "mri", {"note": "hello"})
    path = write_manifest(records, tmp_path / "manifest.csv")
    text = path.read_text()
    assert "img/x.nii.gz" in text  # paths relative to the manifest's folder
    back = read_manifest(path)
    assert [r.key for r in back] == [r.key for r in records]
    assert back[0].image == (tmp_path / "img" / "x.nii.gz").resolve()
    assert back[0].label is None and back[0].modality == "mri" and back[0].extra == {
        "note": "hello"}
    np.testing.assert_allclose(back[0].roi.axes, rotated.axes)
    assert back[1].label == records[1].label and back[1].anomaly_types == records[1].anomaly_types


def spreadsheet_dialect(path: Path, out: Path, delimiter: str) -> Path:
    """``path`` as a spreadsheet in a decimal-comma locale saves it: ``delimiter``-separated,
    numbers with decimal commas, a byte-order mark and CRLF line ends."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    decimal = {i for i, c in enumerate(rows[0]) if c.startswith("roi_")}
    with open(out, "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\r\n")
        w.writerow(rows[0])
        w.writerows([[v.replace(".", ",") if i in decimal else v for i, v in enumerate(row)]
                     for row in rows[1:]])
    return out


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_manifest_saved_by_a_decimal_comma_spreadsheet_reads_the_same(tmp_path, delimiter):
    records = make_records(3)
    records[0] = SinusRecord(
        "x", "sx", tmp_path / "x.nii.gz", "left",
        SinusROI.from_values([-11.5, 2.25, 3.125], [30.5, 40, 45],
                             [[0.6, -0.8, 0], [0.8, 0.6, 0], [0, 0, 1]]),
        1, ("polyp", "retention_cyst"))  # written "polyp;retention_cyst": quoted with ';'
    plain = write_manifest(records, tmp_path / "plain.csv")
    saved = spreadsheet_dialect(plain, tmp_path / "saved.csv", delimiter)
    text = saved.read_text(encoding="utf-8-sig")
    assert "-11,5" in text and delimiter in text.splitlines()[0]
    back, want = read_manifest(saved), read_manifest(plain)
    assert [(r.key, r.label, r.anomaly_types, r.image) for r in back] == [
        (r.key, r.label, r.anomaly_types, r.image) for r in want]
    for b, w in zip(back, want):
        np.testing.assert_allclose(b.roi.center, w.roi.center)
        np.testing.assert_allclose(b.roi.size, w.roi.size)
        np.testing.assert_allclose(b.roi.axes, w.roi.axes)
    assert back[0].roi.center[0] == -11.5


def test_a_case_list_saved_by_a_spreadsheet_reads_the_same(tmp_path):
    from paranasal_ssl.review.case_list import open_case_list

    plain = write_manifest(make_records(2), tmp_path / "cases.csv")
    saved = spreadsheet_dialect(plain, tmp_path / "saved.csv", ";")
    want, back = open_case_list(plain), open_case_list(saved)
    assert [(c.case_id, c.image, c.sides, c.prior_labels) for c in back.cases] == [
        (c.case_id, c.image, c.sides, c.prior_labels) for c in want.cases]
    for b, w in zip(back.cases, want.cases):
        for side in w.rois:
            np.testing.assert_allclose(b.rois[side].center, w.rois[side].center)


def write_csv(path: Path, rows, columns):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


GOOD = {"case_id": "a", "subject_id": "s", "image": "a.nii.gz", "side": "left", "label": "1",
        "anomaly_types": "cyst", "roi_center_r": "1", "roi_center_a": "2", "roi_center_s": "3",
        "roi_size_r": "30", "roi_size_a": "40", "roi_size_s": "45"}


@pytest.mark.parametrize("change, field, message", [
    ({"side": "middle"}, "side", "unknown side"),
    ({"label": "maybe"}, "label", "unknown label"),
    ({"anomaly_types": "tumour"}, "anomaly_types", "unknown anomaly type"),
    ({"roi_center_a": "abc"}, "roi_center_a", "not a number"),
    ({"roi_size_s": "0"}, "roi", "ROI size"),
    ({"case_id": ""}, "case_id", "empty value"),
    ({"roi_axes": "1 0 0 0 1 0 0 0"}, "roi_axes", "must be 9 numbers"),
    ({"roi_axes": "1 0 0 0 1 0 0 0.1 1"}, "roi", "ROI axes are not orthonormal"),
])
def test_bad_manifest_values_name_file_line_and_field(tmp_path, change, field, message):
    path = tmp_path / "m.csv"
    write_csv(path, [GOOD, {**GOOD, "side": "right", **change}], list(GOOD) + ["roi_axes"])
    with pytest.raises(InputError) as err:
        read_manifest(path)
    text = str(err.value)
    assert str(path) in text and message in text and f"[{field}]" in text
    assert "line 3" in text


def test_box_axes_written_to_a_few_decimals_read_back_as_a_rotation(tmp_path):
    # a box turned with a head yawed 24 deg and rolled 6 deg, its axes typed to 3 decimals:
    # a.T @ a is off by up to 2e-3, which a stricter check refused (the manifest that
    # manifest-from-list wrote for such a head could not be read back)
    from paranasal_ssl.midline import roll_rotation, yaw_rotation

    turn = yaw_rotation(24.0) @ roll_rotation(6.0)
    typed = " ".join(f"{v:.3f}" for v in turn.ravel())
    path = tmp_path / "m.csv"
    write_csv(path, [{**GOOD, "roi_axes": typed}], list(GOOD) + ["roi_axes"])
    (record,) = read_manifest(path)
    np.testing.assert_allclose(record.roi.axes.T @ record.roi.axes, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(record.roi.axes, turn, atol=2e-3)
    write_manifest([record], tmp_path / "again.csv")  # written to 6 decimals: the same box
    np.testing.assert_allclose(read_manifest(tmp_path / "again.csv")[0].roi.axes,
                               record.roi.axes, atol=1e-6)


def test_label_spellings_a_spreadsheet_or_pandas_writes_are_read(tmp_path):
    spellings = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, " 1 ": 1, "Abnormal": 1, "normal": 0,
                 "TRUE": 1, "False": 0, "": None}
    path = tmp_path / "m.csv"
    write_csv(path, [{**GOOD, "case_id": f"c{i}", "label": text}
                     for i, text in enumerate(spellings)], list(GOOD))
    assert [r.label for r in read_manifest(path)] == list(spellings.values())
    write_csv(path, [{**GOOD, "label": "2.0"}], list(GOOD))
    with pytest.raises(InputError, match="unknown label '2.0'"):
        read_manifest(path)


def test_a_case_whose_left_box_lies_right_of_its_right_box_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    left, right = {**GOOD, "roi_center_r": "-30"}, {**GOOD, "side": "right", "roi_center_r": "30"}
    write_csv(path, [left, right], list(GOOD))
    assert [r.roi.center[0] for r in read_manifest(path)] == [-30.0, 30.0]  # RAS: +x is right
    write_csv(path, [{**left, "side": "right"}, {**right, "side": "left"}], list(GOOD))
    with pytest.raises(InputError, match=r"\[roi\]: case a: the left box .*x 30.0 mm\) lies to "
                       r"the patient's right of the right box \(x -30.0 mm\)"):
        read_manifest(path)


def test_missing_columns_listed(tmp_path):
    path = tmp_path / "m.csv"
    cols = [c for c in GOOD if c not in ("roi_size_r", "subject_id")]
    write_csv(path, [{c: GOOD[c] for c in cols}], cols)
    with pytest.raises(InputError, match=r"missing column\(s\) \['subject_id', 'roi_size_r'\]"):
        read_manifest(path)


def test_labels_required_when_asked(tmp_path):
    path = tmp_path / "m.csv"
    write_csv(path, [{**GOOD, "label": ""}], list(GOOD))
    assert read_manifest(path)[0].label is None
    with pytest.raises(InputError, match="no label"):
        read_manifest(path, require_labels=True)


def test_duplicate_side_refused(tmp_path):
    path = tmp_path / "m.csv"
    write_csv(path, [GOOD, GOOD], list(GOOD))
    with pytest.raises(InputError, match="duplicate sinus a:left"):
        read_manifest(path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_are_patient_level_stratified_and_complete(seed):
    records = make_records(80, seed=seed)
    splits = split_records(records, SplitConfig(seed=seed))
    subjects = {k: {r.subject_id for r in v} for k, v in splits.items()}
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert sum(len(v) for v in splits.values()) == len(records)
    n = {k: len(v) for k, v in subjects.items()}
    assert n == {"train": 48, "val": 16, "test": 16}
    overall = np.mean([r.label for r in records])
    for part in splits.values():
        assert abs(np.mean([r.label for r in part]) - overall) < 0.12
    assert split_records(records, SplitConfig(seed=seed)) == splits  # deterministic


def test_label_fractions_are_nested_and_keep_both_classes():
    train = make_records(100, seed=3)
    previous = set()
    for fraction in (0.05, 0.1, 0.2, 0.4, 1.0):
        subset = label_fraction_subset(train, fraction, seed=7)
        keys = {r.key for r in subset}
        assert previous <= keys
        previous = keys
        labels = [r.label for r in subset]
        assert 0 in labels and 1 in labels
        subjects = {r.subject_id for r in subset}
        assert len(subjects) == int(np.ceil(fraction * 100))
        # both sides of a chosen subject come together
        assert len(subset) == 2 * len(subjects)
    assert label_fraction_subset(train, 0.1, seed=8) != label_fraction_subset(train, 0.1, seed=7)


def test_label_fraction_leaving_a_class_empty_is_refused():
    train = make_records(20, seed=0, prevalence=0.05)
    with pytest.raises(InputError, match="at least 3 of each class"):
        label_fraction_subset(train, 0.05, seed=0, min_per_class=3)


def test_a_training_split_without_anomalous_sinuses_is_not_told_to_take_more_of_them():
    """Every fraction of a class-free split fails alike: the remedy is another cohort."""
    train = [r.with_label(0, ()) for r in make_records(10, seed=0)]
    with pytest.raises(InputError, match=r"gives 20 normal and 0 anomalous sinuses; expected at "
                       r"least 1 of each class; use a cohort with anomalous sinuses among its "
                       r"training subjects"):
        label_fraction_subset(train, 1.0, seed=0)
    mixed = make_records(20, seed=0, prevalence=0.3)
    with pytest.raises(InputError, match="use a larger fraction or a larger cohort"):
        label_fraction_subset(mixed, 0.05, seed=0, min_per_class=3)
