"""Write files so a crash or a full disk never leaves a half-written file in place.

Everything is written to a temporary file in the destination folder, flushed, then renamed over
the destination (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_path(dest: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it over ``dest``.

    ``suffix`` defaults to the destination's full suffix (``.nii.gz``) so writers that pick a
    format from the extension (SimpleITK, numpy) behave as for the real name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a normal write would
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(dest: PathLike, text: str) -> None:
    """Write ``text`` to ``dest`` atomically, fsync'd so a power cut keeps the old or new file."""
    with atomic_path(dest, suffix=".tmp") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(dest: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    write_text(dest, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def check_writable_dir(path: PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable before any long work starts."""
    from paranasal_ssl.errors import InputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(path, f"cannot write here ({exc.strerror or exc})",
                         expected="a writable folder") from None
    return path
