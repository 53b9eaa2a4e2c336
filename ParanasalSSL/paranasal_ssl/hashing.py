"""Stable content keys for caches: a change in inputs or settings gives a new key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of ``obj`` serialised as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_identity(path: Union[str, Path]) -> dict:
    """Path, size and modification time: cheap and enough to notice a replaced file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "missing": True}
    if p.is_dir():  # DICOM folder: the newest file counts, and the folder's own time (renames)
        files = [f.stat() for f in _folder_files(p)]
        return {"path": str(p.resolve()), "files": len(files), "folder_mtime": st.st_mtime_ns,
                "size": sum(f.st_size for f in files),
                "mtime": max((f.st_mtime_ns for f in files), default=0)}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}


# content key per resolved path, valid while the file's identity (size, mtime) is unchanged
_content_memo: Dict[str, dict] = {}


def _remembered(ident: dict) -> Optional[str]:
    """The memo's key for a file of this identity, or None if it changed or is new."""
    known = _content_memo.get(ident["path"])
    return known["sha256"] if known is not None and known["identity"] == ident else None


def content_key_known(path: Union[str, Path]) -> bool:
    """Whether ``content_key(path)`` is answered from the memo, without reading the file (a
    missing path counts as known: its key is its name)."""
    ident = file_identity(path)
    return bool(ident.get("missing")) or _remembered(ident) is not None


def content_key(path: Union[str, Path]) -> str:
    """SHA-256 (16 hex digits) of what a scan file holds, or of a DICOM folder's files, its
    sub-folders' included (their relative paths and bytes, in path order): the same data keeps
    its key when it is copied or moved, so caches keyed by it survive that. A missing path gets
    a key of its name (its crop then fails with its own error). Each file is read once per
    process while its size and modification time stay the same (``load_content_memo`` carries
    that across processes)."""
    ident = file_identity(path)
    if ident.get("missing"):
        return stable_hash({"missing": ident["path"]})
    remembered = _remembered(ident)
    if remembered is not None:
        return remembered
    p = Path(ident["path"])
    h = hashlib.sha256()
    for f in _folder_files(p) if p.is_dir() else [p]:
        if p.is_dir():  # a flat folder's files hash by name, as before sub-folders counted
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
    _content_memo[ident["path"]] = {"identity": ident, "sha256": h.hexdigest()[:16]}
    return h.hexdigest()[:16]


def _folder_files(folder: Path) -> list:
    """Files of a DICOM folder and its sub-folders (a CD, a PATIENT/STUDY/SERIES tree: what
    ``read_scan`` may read from it), in relative-path order."""
    return sorted((f for f in folder.rglob("*") if f.is_file()),
                  key=lambda f: f.relative_to(folder).as_posix())


def load_content_memo(path: Path) -> int:
    """Add the content keys remembered in ``path`` (JSON, written by ``save_content_memo``) to
    this process's memo; an unreadable file is ignored (keys are then recomputed). Returns the
    memo's size, for ``save_content_memo`` to tell whether anything was added."""
    try:
        saved = json.loads(Path(path).read_text())
        for name, entry in saved.items():
            if isinstance(entry, dict) and {"identity", "sha256"} <= entry.keys():
                _content_memo.setdefault(name, entry)
    except (OSError, ValueError, AttributeError):
        pass
    return len(_content_memo)


def save_content_memo(path: Path, known_before: int) -> None:
    """Write this process's memo to ``path`` (atomically) if it grew since ``known_before``,
    with what other processes (torchrun ranks hashing their share) have written there since."""
    from paranasal_ssl.atomic import write_json

    if len(_content_memo) > known_before:
        load_content_memo(path)
        write_json(path, _content_memo)


def file_sha256(path: Union[str, Path], length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
