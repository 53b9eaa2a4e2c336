"""Shared pytest setup: small, deterministic threads so the suite behaves the same in CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PARANASAL_PROGRESS", "none")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing"))  # test helpers importable as `helpers`


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def python_exe() -> str:
    """The interpreter running the tests (the project's venv), for real subprocess runs."""
    return sys.executable
