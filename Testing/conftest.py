"""Shared pytest setup: small, deterministic threads so the suite behaves the same in CI, and
the tiny phantom cohort and trained run that several suites (core, MRML) use, made once."""

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


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """14 CT phantom cases at 2 mm (both classes in every split)."""
    from helpers.tiny import synth

    return synth(tmp_path_factory.mktemp("cohort"), 14)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_cohort):
    """A run folder with all four stages trained in the tiny configuration."""
    from helpers.tiny import TINY_OVERRIDES
    from paranasal_ssl.stages.cae_stage import train_cae
    from paranasal_ssl.stages.finetune_stage import finetune
    from paranasal_ssl.stages.pretext_stage import pretrain
    from paranasal_ssl.stages.run import open_run

    run = open_run(tmp_path_factory.mktemp("run") / "run", manifest=tiny_cohort,
                   profile="cpu-small", overrides=TINY_OVERRIDES, device="cpu", workers=1)
    (cae,) = train_cae(run)  # one member in the tiny configuration
    results = {"cae": cae, "pretext": pretrain(run)}
    results["finetune"], results["finetune_dir"] = finetune(run, 1.0, 0, "pretext")
    return run, results
