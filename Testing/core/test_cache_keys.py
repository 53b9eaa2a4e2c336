"""Cache keys of scans: by content, remembered per file identity, carried across processes."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from paranasal_ssl import hashing
from paranasal_ssl.hashing import content_key, load_content_memo, save_content_memo


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
