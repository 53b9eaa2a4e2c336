"""Distributed training with real Gloo processes launched by torchrun: the same loss trajectory
as one process with the same global batch (the method's stages and the self-supervised
baselines), only rank 0 writing the outputs, and a killed rank fails the launch loudly."""

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
from paranasal_ssl.training.checkpoint import read_checkpoint
from paranasal_ssl.training.distributed import batch_rows

# short stages; batch 4 splits 2 + 2, batch 5 splits 2 + 3 (the uneven case)
SETTINGS = [*TINY_OVERRIDES, "cae_train.epochs=3", "cae_train.batch_size=4",
            "finetune_train.epochs=2", "finetune_train.batch_size=5", "finetune.dropout=0.0"]


def _sets(settings):
    return [a for s in settings for a in ("--set", s)]


def _torchrun(python_exe, *args, program=("-m", "paranasal_ssl"), **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PARANASAL_PROGRESS": "none", "PYTHONWARNINGS": "ignore",
           "PARANASAL_DIST_TIMEOUT_S": "60"}
    return subprocess.Popen([python_exe, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", "--monitor-interval", "0.2", *program,
                             *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs,
                            # gloo's "connection reset" message ends in an emoji: not the
                            # locale's codec (ASCII under a bare CI shell)
                            encoding="utf-8", errors="replace")


# The CLI with a Python audit hook that lists, per rank, the files it writes: opened for
# writing, or renamed into place (the atomic writes; torch.save's own writer is not audited).
AUDITED_CLI = """
import os, sys
log = open(os.path.join(sys.argv.pop(1), "writes-" + os.environ["RANK"]), "w", buffering=1)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT

def hook(event, args):
    if event == "os.rename":
        log.write(f"{os.path.abspath(os.fspath(args[1]))}\\n")
    elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and (
            any(c in args[1] for c in "wax+") if isinstance(args[1], str)
            else args[2] & WRITE):
        log.write(f"{os.path.abspath(os.fspath(args[0]))}\\n")

sys.addaudithook(hook)
from paranasal_ssl.cli.main import main
raise SystemExit(main(sys.argv[1:]))
"""


def _losses(path: Path, column: str = "train_loss"):
    with open(path, newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


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


# A 2-rank fit of a toy model in which one rank alone is asked to cancel: rank 1 right after
# step 3's optimiser step, where a rank used to check its own flag ("step"), or rank 0 while
# it validates epoch 2 (alone: "validation"); what a SIGTERM there does.
CANCEL_PROGRAM = """
import sys, torch, torch.nn.functional as F
from paranasal_ssl import progress
from paranasal_ssl.errors import CancelledError
from paranasal_ssl.experiment import TrainConfig
from paranasal_ssl.training import distributed as ddp
from paranasal_ssl.training.loop import fit

ddp.setup("cpu")
progress.install_signal_handlers()
torch.manual_seed(0)
x = torch.rand(24, 1, 8, 8, 8)
y = (x.mean((1, 2, 3, 4)) > 0.5).float()
model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.AdaptiveAvgPool3d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 1))
steps = []

def train_step(m, idx, gen):
    rows = ddp.batch_rows(len(idx))
    return F.binary_cross_entropy_with_logits(m(x[idx[rows.slice]]).squeeze(1),
                                              y[idx[rows.slice]])

def after_step(m, done, total):
    steps.append(done)
    if sys.argv[2] == "step" and done == 3 and ddp.rank() == 1:
        progress.request_cancel()

def validate(m):
    if sys.argv[2] == "validation" and steps[-1] == 8:  # 4 steps an epoch
        progress.request_cancel()
    return {"val": 0.0}

try:
    fit(model, cfg=TrainConfig(epochs=1000, batch_size=6, lr=1e-2, patience=0),
        run_dir=sys.argv[1], kind="toy", signature="toy", meta={}, n_train=24,
        train_step=train_step, validate=validate, monitor="val", mode="min",
        device=torch.device("cpu"), after_step=after_step)
except CancelledError:
    print(f"rank {ddp.rank()} cancelled after step {steps[-1]}", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("where, last_step", [("step", 3), ("validation", 8)])
def test_a_cancel_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, python_exe, where,
                                                                 last_step):
    """A cancel (the job runner's SIGTERM) that reaches one rank travels with the next step's
    loss, or with the epoch's end: both ranks stop after the same step, and rank 0 saves that
    epoch first. A rank that stopped on its own flag left the other waiting in the next
    collective (a hang until the collective timeout)."""
    program = tmp_path / "cancel_one_rank.py"
    program.write_text(CANCEL_PROGRAM)
    proc = _torchrun(python_exe, str(tmp_path / "run"), where, program=(str(program),),
                     start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=45)  # the collective timeout is 60 s
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    for r in (0, 1):
        assert f"rank {r} cancelled after step {last_step}" in out, out[-3000:]
    assert proc.returncode != 0
    if where == "validation":  # saved on the way out: a resume continues from epoch 3
        state = read_checkpoint(tmp_path / "run" / "last.pt")["training_state"]
        assert state["epoch"] == 1 and state["step"] == 8


def _children(pid: int):
    """Worker processes of the torchrun launcher ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return sorted(found)


def test_two_gloo_processes_pretrain_baselines_as_one_process(tiny_cohort, tmp_path, python_exe):
    """SimCLR (negatives gathered from the global batch) and BYOL (EMA target, batch norm in
    the heads and the target): the per-epoch training loss of 2 processes is that of 1 with the
    same global batch, split unevenly (5 = 2 + 3); rank 1 writes nothing."""
    # One small SGD step per epoch. Not the profile's AdamW: Adam's first steps are about
    # lr * sign(gradient), so an element whose gradient is ~0 (a conv bias before batch norm)
    # moves by +-lr on float rounding alone. And few, small steps: on this tiny network a
    # rounding-level change of the gradient (1e-5: the memory layout alone makes that much in
    # one process) grows quickly over steps. With these settings one process against itself
    # with another layout differs by ~1e-6; a SimCLR whose gather's backward dropped the other
    # ranks' gradients (27% off in the gradient) by 1.4% in epoch 2.
    # Some draws make the tiny network ill-conditioned: with another noise stream, one process
    # against itself at another thread count moved SimCLR's epoch-2 loss by 7e-4 (other seeds:
    # <= 4e-6). So the test checks that first (below): against a reference that moves with
    # rounding alone, agreement would say nothing.
    settings = [*TINY_OVERRIDES, "pretext_train.epochs=2", "pretext_train.batch_size=5",
                "pretext_train.max_steps_per_epoch=1", "pretext_train.optimizer=sgd",
                "pretext_train.lr=1e-4", "pretext_train.schedule=constant"]
    common = ["--manifest", str(tiny_cohort), "--profile", "cpu-small", *_sets(settings),
              "--device", "cpu", "--workers", "1", "--progress", "none",
              "--cache", str(tmp_path / "cache")]  # cropped once, by the 1-process run
    single, double = tmp_path / "one", tmp_path / "two"
    cli = tmp_path / "audited_cli.py"
    cli.write_text(AUDITED_CLI)
    for method in ("simclr", "byol"):
        command = ["pretrain-baseline", "--method", method]
        assert main([*command, "--run", str(single), *common]) == 0
        threads = torch.get_num_threads()
        torch.set_num_threads(threads % 2 + 1)  # other reduction orders: rounding only
        try:
            assert main([*command, "--run", str(tmp_path / "again"), *common]) == 0
        finally:
            torch.set_num_threads(threads)
        stage = Path("baselines") / method
        for column in ("train_loss", "train_std_encoder", "train_std_projection"):
            assert _losses(tmp_path / "again" / stage / "metrics.csv", column) == \
                pytest.approx(_losses(single / stage / "metrics.csv", column), rel=1e-5), \
                f"{method}: ill-conditioned settings, one process moves with rounding alone"
        audit = tmp_path / f"writes-{method}"
        audit.mkdir()
        proc = _torchrun(python_exe, *command, "--run-dir", str(double), *common,
                         program=(str(cli), str(audit)))
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        for column in ("train_loss", "train_std_encoder", "train_std_projection"):
            one = _losses(single / stage / "metrics.csv", column)
            two = _losses(double / stage / "metrics.csv", column)
            assert len(one) == len(two) == 2
            assert two == pytest.approx(one, rel=1e-4), (method, column)
        assert sorted(p.name for p in (double / stage).iterdir()) == \
            sorted(p.name for p in (single / stage).iterdir())
        written = {r: [Path(line) for line in (audit / f"writes-{r}").read_text().splitlines()]
                   for r in (0, 1)}
        assert not [p for p in written[1] if double in p.parents], written[1]
        assert {double / stage / name for name in ("best.pt", "last.pt", "metrics.csv",
                                                   "baseline.json", "config.json")} \
            <= set(written[0])
