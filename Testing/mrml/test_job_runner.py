"""The job runner against REAL subprocesses: progress, log, failure, cancel, tree kill."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ParanasalSSLLib import job_runner
from ParanasalSSLLib.job_runner import JobRunner

# A job like the core's commands: progress through paranasal_ssl.progress, SIGTERM = clean cancel
# (exit 130), and a grandchild process so the tree kill can be checked.
JOB = textwrap.dedent("""
    import subprocess, sys, time
    from paranasal_ssl import progress
    from paranasal_ssl.errors import CancelledError
    progress.install_signal_handlers()
    mode = sys.argv[1]
    if mode == "tree":
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        print(f"child {child.pid}", flush=True)
    if mode == "stuck":
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("starting", flush=True)
    try:
        with progress.Progress("train-cae", total=int(sys.argv[2]), min_interval_s=0) as p:
            for step in range(int(sys.argv[2])):
                time.sleep(float(sys.argv[3]))
                p.update(1, loss=1.0 / (step + 1))
    except CancelledError:
        print("paranasal-ssl: cancelled", file=sys.stderr, flush=True)
        raise SystemExit(130)
    if mode == "fail":
        print("paranasal-ssl train-cae: error: manifest.csv [label]: bad value", file=sys.stderr)
        raise SystemExit(2)
""")


@pytest.fixture
def jobScript(tmp_path) -> Path:
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def _waitUntil(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_successful_job_reports_parsed_progress_and_its_log(jobScript):
    records, lines, finished = [], [], []
    runner = JobRunner(onProgress=records.append, onLog=lines.append, onFinished=finished.append)
    runner.start([sys.executable, str(jobScript), "ok", "4", "0.01"])
    assert runner.running and runner.pid is not None
    assert runner.wait(timeout=30) == job_runner.SUCCEEDED
    assert runner.returnCode == 0 and finished == [job_runner.SUCCEEDED]
    assert records[0]["stage"] == "train-cae" and records[0]["done"] == 0
    assert records[-1]["done"] == 4 and records[-1]["fraction"] == 1.0
    losses = [r["metrics"]["loss"] for r in records if "loss" in r["metrics"]]
    assert losses == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert "starting" in lines and not any(line.startswith("@@progress") for line in lines)
    assert runner.message() == "finished"


def test_a_failing_job_keeps_the_exit_code_and_the_last_error_line(jobScript):
    runner = JobRunner()
    runner.start([sys.executable, str(jobScript), "fail", "2", "0.0"])
    assert runner.wait(timeout=30) == job_runner.FAILED
    assert runner.returnCode == 2
    assert runner.lastErrorLine.endswith("manifest.csv [label]: bad value")
    assert runner.message().startswith("failed (exit code 2): paranasal-ssl train-cae: error")


def test_the_core_command_line_runs_with_the_core_on_its_path(tmp_path):
    runner = JobRunner()
    runner.startCore(["--help"], cwd=str(tmp_path))  # a folder where the core is not importable
    assert runner.wait(timeout=60) == job_runner.SUCCEEDED
    assert runner.command[1:3] == ["-m", "paranasal_ssl"]
    assert any("usage: paranasal-ssl" in line for line in runner.logLines)


def test_cancel_stops_the_job_cleanly_and_kills_what_it_left_behind(jobScript):
    records = []
    runner = JobRunner(onProgress=records.append, graceSeconds=1.0)
    runner.start([sys.executable, str(jobScript), "tree", "1000", "0.05"])
    assert _waitUntil(lambda: (runner.poll(), len(records) >= 2)[1])
    childLine = next(line for line in runner.logLines if line.startswith("child "))
    childPid = int(childLine.split()[1])
    jobPid = runner.pid
    assert _alive(jobPid) and _alive(childPid)
    runner.cancel()
    assert runner.wait(timeout=20) == job_runner.CANCELLED
    assert runner.returnCode == job_runner.CANCEL_EXIT_CODE  # the core's clean cancel
    assert "paranasal-ssl: cancelled" in runner.logLines
    assert _waitUntil(lambda: not _alive(jobPid) and not _alive(childPid), timeout=10)
    assert runner.message() == "cancelled"


def test_a_job_that_ignores_cancel_is_killed_after_the_grace_period(jobScript):
    runner = JobRunner(graceSeconds=0.5)
    runner.start([sys.executable, str(jobScript), "stuck", "1000", "0.05"])
    assert _waitUntil(lambda: (runner.poll(), runner.progress is not None)[1])
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(timeout=20) == job_runner.CANCELLED
    assert time.monotonic() - started >= 0.4  # not before the grace period
    assert runner.returnCode < 0  # killed by a signal
    assert not _alive(runner.pid)


def test_one_job_at_a_time_and_a_missing_program_fails_clearly(jobScript, tmp_path):
    runner = JobRunner()
    runner.start([sys.executable, str(jobScript), "ok", "50", "0.05"])
    with pytest.raises(RuntimeError, match="already running"):
        runner.start([sys.executable, "-c", "pass"])
    runner.cancel()
    runner.wait(timeout=20)
    finished = []
    other = JobRunner(onFinished=finished.append)
    other.start([str(tmp_path / "no-such-program")])
    assert other.state == job_runner.FAILED and finished == [job_runner.FAILED]
    assert "could not start" in other.message()


def test_a_sequence_runs_core_commands_in_order_and_stops_at_a_failure():
    steps = []
    runner = JobRunner()
    sequence = job_runner.JobSequence(runner, [["no-such-command"], ["--help"]],
                                      onStep=lambda i, args: steps.append(args[0]))
    sequence.start()
    assert sequence.wait(timeout=60) == job_runner.FAILED
    assert steps == ["no-such-command"]  # the second never started
    assert runner.returnCode == 2 and "invalid choice" in runner.message()


def test_cancelling_a_sequence_stops_the_running_core_command_and_the_rest(tmp_path):
    finished = []
    runner = JobRunner(graceSeconds=10.0)
    sequence = job_runner.JobSequence(
        runner, [["--version"], ["synth", str(tmp_path / "cohort"), "--cases", "200",
                                 "--workers", "1", "--progress", "json"], ["--help"]],
        onFinished=finished.append)
    sequence.start()
    assert _waitUntil(lambda: (sequence.poll(), sequence.index == 1
                               and runner.progress is not None)[1], 60)
    assert runner.progress["stage"] and runner.progress["total"] == 200
    sequence.cancel()
    assert sequence.wait(timeout=60) == job_runner.CANCELLED and finished == ["cancelled"]
    assert runner.returnCode == job_runner.CANCEL_EXIT_CODE  # the core stopped cleanly
    assert sequence.index == 1
    assert not (tmp_path / "cohort" / "manifest.csv").exists()  # no half-made cohort claimed
