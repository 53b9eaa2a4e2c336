"""The code version recorded in every model, residual cache and report."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

from paranasal_ssl import __version__


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """Short commit of the source tree this code runs from (``-dirty`` if modified), or ''."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("-dirty" if dirty else "")


def code_version() -> str:
    """``"0.1.0+g<sha>[-dirty]"`` inside a git checkout, else the package version."""
    rev = git_revision()
    return f"{__version__}+g{rev}" if rev else __version__


def environment_info() -> dict:
    """Library versions and machine facts, recorded beside results so they can be reproduced."""
    import numpy
    import SimpleITK
    import torch

    info = {
        "paranasal_ssl": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a hard dependency
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
