"""Sharded ``residuals`` and ``predict --manifest`` (torchrun ranks, or independent ``--shard``
workers) write byte for byte what one process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from paranasal_ssl.cli.main import main
from paranasal_ssl.errors import ConfigError


def _torchrun(python_exe, *args) -> None:
    env = {**os.environ, "PARANASAL_PROGRESS": "none", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([python_exe, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "paranasal_ssl", *args], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def _copy_run(src: Path, dest: Path) -> Path:
    """The run without its residuals (configuration, splits, CAE, model, crop cache)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("residuals"))
    return dest


def _files(folder: Path):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sharded_residuals_equal_the_single_process_files(trained_run, tmp_path, python_exe):
    run, _ = trained_run
    runs = {name: _copy_run(run.dir, tmp_path / name) for name in ("one", "workers", "ranks")}
    opts = ["--device", "cpu", "--workers", "1", "--progress", "none"]
    assert main(["residuals", "--run", str(runs["one"]), *opts]) == 0
    # independent workers, in any order: the last one to finish writes the summaries
    assert main(["residuals", "--run", str(runs["workers"]), "--shard", "1/2", *opts]) == 0
    assert not list((runs["workers"] / "residuals").rglob("scores.csv"))
    assert main(["residuals", "--run", str(runs["workers"]), "--shard", "0/2", *opts]) == 0
    _torchrun(python_exe, "residuals", "--run-dir", str(runs["ranks"]), *opts)
    expected = _files(runs["one"] / "residuals")
    assert any(k.endswith("scores.csv") for k in expected) and len(expected) > 20
    for name in ("workers", "ranks"):
        got = _files(runs[name] / "residuals")
        assert got.keys() == expected.keys(), name
        assert [k for k in got if got[k] != expected[k]] == [], name


def test_sharded_predict_merges_the_single_process_outputs(trained_run, tiny_cohort, tmp_path,
                                                           python_exe):
    run, _ = trained_run
    outs = {name: tmp_path / name for name in ("one", "workers", "ranks")}
    opts = ["--model", str(run.dir), "--manifest", str(tiny_cohort), "--device", "cpu",
            "--progress", "none"]
    assert main(["predict", *opts, "--out", str(outs["one"])]) == 0
    for i in (1, 0):
        assert main(["predict", *opts, "--out", str(outs["workers"]), "--shard", f"{i}/2"]) == 0
    _torchrun(python_exe, "predict", *opts, "--out", str(outs["ranks"]))
    expected = _results(outs["one"])
    assert "predictions.csv" in expected and len(expected) > 14 * 3
    for name in ("workers", "ranks"):
        got = _results(outs[name])  # no part files are left behind
        assert got.keys() == expected.keys(), name
        assert [k for k in got if got[k] != expected[k]] == [], name
        record = json.loads((outs[name] / "predictions.json").read_text())
        assert (record["cases"], record["rows"]) == (14, 28) and "--out" in record["command"]


def _results(folder: Path):
    """Every file's bytes, but for what differs by design between one process and shards:
    the command line each JSON record names (``predicted_with``, predictions.json)."""
    files = _files(folder)
    files.pop("predictions.json", None)
    for name in [n for n in files if n.endswith("summary.json")]:
        summary = json.loads(files[name])
        assert summary.pop("predicted_with")["code_version"]
        files[name] = json.dumps(summary, sort_keys=True).encode()
    return files


def test_a_bad_shard_is_refused(trained_run, tmp_path):
    run, _ = trained_run
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(ConfigError, match="shard"):
            from paranasal_ssl.cli.common import parse_shard

            parse_shard(bad)
    assert main(["residuals", "--run", str(run.dir), "--shard", "3/2", "--progress",
                 "none"]) == 2
