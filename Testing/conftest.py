"""Shared pytest setup: small, deterministic threads so the suite behaves the same in CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PARANASAL_PROGRESS", "none")
# Test networks are tiny: a second thread gains nothing and, when the machine is busy, OpenMP
# threads waiting on each other made one training step 25x slower. Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing"))  # test helpers importable as `helpers`


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def python_exe() -> str:
    """The interpreter running the tests (the project's venv), for real subprocess runs."""
    return sys.executable
