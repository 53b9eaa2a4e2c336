"""Cache keys of scans: by content, remembered per file identity, carried across processes; a
moved cohort keeps its crops and residual maps."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest
import SimpleITK as sitk

from paranasal_ssl import hashing
from paranasal_ssl.config import DataConfig
from paranasal_ssl.crop_cache import build_crop_set, record_key
from paranasal_ssl.hashing import content_key, load_content_memo, save_content_memo
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.progress import parse_line
from paranasal_ssl.stages.residual_stage import residuals_for_records


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(hashing, "_content_memo", {})


def test_a_copy_keeps_the_key_and_other_bytes_change_it(tmp_path):
    scan = tmp_path / "a" / "scan.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"voxels" * 1000)
    copy = tmp_path / "b" / "renamed.nii.gz"
    copy.parent.mkdir()
    shutil.copyfile(scan, copy)
    os.utime(copy, ns=(1, 1))
    assert content_key(copy) == content_key(scan)
    copy.write_bytes(b"voxelz" * 1000)  # same size, other bytes
    assert content_key(copy) != content_key(scan)
    assert content_key(tmp_path / "gone.nii") != content_key(tmp_path / "other.nii")


def test_a_dicom_folder_is_keyed_by_its_file_names_and_bytes(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"IM{i}.dcm").write_bytes(bytes([i]) * 100)
    moved = tmp_path / "moved"
    shutil.copytree(series, moved)
    assert content_key(moved) == content_key(series)
    (moved / "IM1.dcm").rename(moved / "IM9.dcm")  # same bytes, other slice order by name
    assert content_key(moved) != content_key(series)


def test_the_memo_is_trusted_while_the_file_is_unchanged_and_saved_for_the_next_process(
        tmp_path):
    scan = tmp_path / "scan.nrrd"
    scan.write_bytes(b"header+voxels")
    real = content_key(scan)
    memo = tmp_path / "cache" / "content_keys.json"
    save_content_memo(memo, known_before=0)
    saved = json.loads(memo.read_text())
    assert saved[str(scan.resolve())]["sha256"] == real
    # a later process reads the memo; a file whose size and mtime match is not hashed again
    saved[str(scan.resolve())]["sha256"] = "from-the-memo"
    memo.write_text(json.dumps(saved))
    hashing._content_memo.clear()
    assert load_content_memo(memo) == 1
    assert content_key(scan) == "from-the-memo"
    scan.write_bytes(b"header+voxels, edited")  # new size and mtime: hashed again
    assert content_key(scan) not in (real, "from-the-memo")
    # nothing new since loading: the memo file is left alone; a broken memo is ignored
    stamp = memo.stat().st_mtime_ns
    save_content_memo(memo, known_before=1)
    assert memo.stat().st_mtime_ns == stamp
    memo.write_text("{not json")
    hashing._content_memo.clear()
    assert load_content_memo(memo) == 0
    assert content_key(scan) == content_key(scan)


def test_processes_sharing_a_cache_keep_each_others_keys(tmp_path, monkeypatch):
    """torchrun ranks start together, each hashes its share of the scans, and each saves to
    the same memo file: the last to save must not drop what the first saved."""
    memo = tmp_path / "content_keys.json"
    scans = [tmp_path / f"scan{i}.nii" for i in range(2)]
    ranks = [{}, {}]  # each rank's own memo (its process's)
    known = []
    for rank, scan in zip(ranks, scans):
        scan.write_bytes(scan.name.encode() * 64)
        monkeypatch.setattr(hashing, "_content_memo", rank)
        known.append(load_content_memo(memo))  # both start before either has saved
        content_key(scan)
    for rank, before in zip(ranks, known):
        monkeypatch.setattr(hashing, "_content_memo", rank)
        save_content_memo(memo, before)
    assert set(json.loads(memo.read_text())) == {str(s.resolve()) for s in scans}


def test_a_moved_cohort_keeps_its_crops_and_residual_maps_and_a_changed_scan_does_not(
        trained_run, tmp_path):
    """Caches are keyed by what a scan holds: the same files copied elsewhere (new paths, new
    modification times) are neither cropped nor mapped again; a scan whose voxels changed is."""
    run, _ = trained_run
    some = run.split("test", labelled=True)[:3]
    first = residuals_for_records(run, some, tmp_path / "maps")
    moved = []
    for r in some:
        image = tmp_path / "moved" / "images" / f"{r.case_id}.nii.gz"
        image.parent.mkdir(parents=True, exist_ok=True)
        if not image.exists():
            shutil.copyfile(r.image, image)  # copyfile: new modification time
        mask = None
        if r.mask:
            mask = tmp_path / "moved" / "masks" / f"{r.case_id}-{r.side}.nii.gz"
            mask.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r.mask, mask)
        moved.append(replace(r, image=image, mask=mask))
    assert all(m.image.stat().st_mtime_ns != r.image.stat().st_mtime_ns
               for m, r in zip(moved, some))
    crops_dir = next(run.cache_dir.glob("crops-*"))
    before = sorted(p.name for p in crops_dir.iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "maps").glob("*.npy")}
    again = residuals_for_records(run, moved, tmp_path / "maps")
    assert sorted(p.name for p in crops_dir.iterdir()) == before
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "maps").glob("*.npy")} == stamps
    assert again.scores == pytest.approx(first.scores, rel=1e-5)  # read back from scores.csv
    assert [record_key(m) for m in moved] == [record_key(r) for r in some]
    # the same path, other voxels: a new key, new crops
    image = sitk.ReadImage(str(moved[0].image))
    voxels = sitk.GetArrayFromImage(image)
    voxels[voxels.shape[0] // 2] += 200
    changed = sitk.GetImageFromArray(voxels)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(moved[0].image))
    assert record_key(moved[0]) != record_key(some[0])
    assert sorted(p.name for p in crops_dir.iterdir()) == before  # nothing cropped yet
    residuals_for_records(run, moved[:1], tmp_path / "maps")
    assert f"{record_key(moved[0])}.npy" in {p.name for p in crops_dir.iterdir()}


def test_scans_new_to_a_cache_are_read_with_progress_once(tiny_cohort, tmp_path, capsys,
                                                          monkeypatch):
    """Hashing a cohort's files is a full read of each: it shows as its own progress stage,
    one step per file (scan or mask), and a later process with the cache's memo skips it."""
    monkeypatch.setenv("PARANASAL_PROGRESS", "json")
    records = read_manifest(tiny_cohort)[:4]
    files = {str(p) for r in records for p in (r.image, r.mask) if p}
    data = DataConfig()
    data.crop.shape, data.crop.spacing_mm = 16, 3.0

    def stages():
        lines = [parse_line(x) for x in capsys.readouterr().out.splitlines()]
        return [x for x in lines if x and x["stage"].endswith("reading new scans")]

    first = build_crop_set(records, data, tmp_path / "cache", n_crops=1, stage="crops (test)")
    reads = stages()
    assert reads[0]["stage"] == "crops (test): reading new scans"
    assert reads[-1]["done"] == reads[-1]["total"] == len(files) > len(records) // 2
    hashing._content_memo.clear()  # a new process: the memo file answers
    again = build_crop_set(records, data, tmp_path / "cache", n_crops=1, stage="crops (test)")
    assert stages() == []
    assert [r.key for r in again.records] == [r.key for r in first.records] != []


def test_crops_of_a_dicom_scan_are_cut_again_when_its_reading_changes(tiny_cohort, tmp_path,
                                                                       monkeypatch):
    """DICOM reading changed (tilted series resampled, multi-frame positions): crops keyed by a
    series' bytes alone would keep the old voxels. A NIfTI scan's key does not move with it."""
    from helpers.images import write_dicom_series
    from paranasal_ssl import scan_io

    record = read_manifest(tiny_cohort)[0]
    as_dicom = replace(record, image=write_dicom_series(sitk.ReadImage(str(record.image)),
                                                        tmp_path / "dicom"))
    keys = {}
    for version in (2, 3):
        monkeypatch.setitem(scan_io.READER_VERSIONS, "dicom", version)
        keys[version] = (record_key(record), record_key(as_dicom))
    assert keys[2][0] == keys[3][0]
    assert keys[2][1] != keys[3][1]
