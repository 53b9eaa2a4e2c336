"""Distributed training with real Gloo processes launched by torchrun: the same loss trajectory
as one process with the same global batch, and a killed rank fails the launch loudly."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers.tiny import TINY_OVERRIDES
from paranasal_ssl.cli.main import main
from paranasal_ssl.training.augment import augment
from paranasal_ssl.training.distributed import batch_rows

# short stages; batch 4 splits 2 + 2, batch 5 splits 2 + 3 (the uneven case)
SETTINGS = [*TINY_OVERRIDES, "cae_train.epochs=3", "cae_train.batch_size=4",
            "finetune_train.epochs=2", "finetune_train.batch_size=5", "finetune.dropout=0.0"]


def _sets(settings):
    return [a for s in settings for a in ("--set", s)]


def _torchrun(python_exe, *args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PARANASAL_PROGRESS": "none", "PYTHONWARNINGS": "ignore",
           "PARANASAL_DIST_TIMEOUT_S": "60"}
    return subprocess.Popen([python_exe, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", "--monitor-interval", "0.2", "-m",
                             "paranasal_ssl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def _losses(path: Path):
    with open(path, newline="") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def test_augmentation_of_each_rank_is_its_slice_of_the_single_process_batch():
    x, target = torch.rand(5, 1, 8, 8, 8), torch.rand(5, 1, 8, 8, 8)
    whole = augment(x, target, torch.Generator().manual_seed(3))
    for world in (2, 3):
        parts = []
        for r in range(world):
            rows = batch_rows(5, r, world)
            parts.append(augment(x[rows.slice], target[rows.slice],
                                 torch.Generator().manual_seed(3), rows=rows))
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), whole[0])
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), whole[1])


def test_two_gloo_processes_follow_the_single_process_loss_trajectory(tiny_cohort, tmp_path,
                                                                      python_exe):
    common = ["--manifest", str(tiny_cohort), "--profile", "cpu-small", *_sets(SETTINGS),
              "--device", "cpu", "--workers", "1", "--progress", "none"]
    single, double = tmp_path / "one", tmp_path / "two"
    for command in (["train-cae"], ["finetune", "--init", "random"]):
        assert main([*command, "--run", str(single), *common]) == 0
        proc = _torchrun(python_exe, *command, "--run-dir", str(double), *common)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
    for stage in ("cae", "finetune/f1-s0-random"):
        one, two = _losses(single / stage / "metrics.csv"), _losses(double / stage / "metrics.csv")
        assert len(one) == len(two) >= 2
        assert two == pytest.approx(one, rel=1e-4), stage
    # rank 0 alone wrote the records; both runs made the same model folders
    assert sorted(p.name for p in (double / "finetune" / "f1-s0-random").iterdir()) == \
        sorted(p.name for p in (single / "finetune" / "f1-s0-random").iterdir())


def test_a_killed_rank_fails_the_launch_loudly_instead_of_hanging(tiny_cohort, tmp_path,
                                                                  python_exe):
    run = tmp_path / "run"
    proc = _torchrun(python_exe, "train-cae", "--run-dir", str(run), "--manifest",
                     str(tiny_cohort), "--profile", "cpu-small",
                     *_sets([*TINY_OVERRIDES, "cae_train.epochs=100000"]), "--device", "cpu",
                     "--workers", "1", start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / "cae" / "last.pt").exists():  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        ranks = _children(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        t = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert time.monotonic() - t < 60
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0
    assert "FAILED" in out and "SIGKILL" in out, out[-3000:]
    assert not [p for p in ranks if Path(f"/proc/{p}").exists()
                and "zombie" not in Path(f"/proc/{p}/status").read_text()]


def _children(pid: int):
    """Worker processes of the torchrun launcher ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return sorted(found)

