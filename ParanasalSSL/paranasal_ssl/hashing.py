"""Stable content keys for caches: a change in inputs or settings gives a new key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Union


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
    if p.is_dir():  # DICOM folder: the newest file counts
        files = [f.stat() for f in p.iterdir() if f.is_file()]
        return {"path": str(p.resolve()), "files": len(files),
                "mtime": max((f.st_mtime_ns for f in files), default=0)}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}


def file_sha256(path: Union[str, Path], length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
