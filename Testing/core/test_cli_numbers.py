"""Numbers on the command line are checked when it is parsed, before any work: the error names
the option, the value and what was expected, and the exit status is argparse's 2."""

from __future__ import annotations

import subprocess

import pytest

from paranasal_ssl.cli.main import build_parser

PREDICT = ["predict", "--model", "m", "--image", "s.nii.gz", "--out", "o"]
BAD = [
    (PREDICT + ["--tta", "-2"], "--tta", "must be at least 1"),
    (PREDICT + ["--tta", "0"], "--tta", "must be at least 1"),
    (PREDICT + ["--threshold", "1.5"], "--threshold", "at most 1"),
    (PREDICT + ["--threshold", "0"], "--threshold", "more than 0"),
    (PREDICT + ["--threshold", "half"], "--threshold", "is not a number"),
    (["report", "cases", "--out", "r.html", "--opacity", "2"], "--opacity", "between 0 and 1"),
    (["finetune", "--run", "r", "--label-fraction", "10"], "--label-fraction", "at most 1"),
    (["finetune", "--run", "r", "--label-seed", "-1"], "--label-seed", "0 or more"),
    (["demo", "--label-fraction", "0"], "--label-fraction", "more than 0"),
    (["demo", "--label-draws", "0"], "--label-draws", "at least 1"),
    (["benchmark", "--fractions", "0.1", "5"], "--fractions", "at most 1"),
    (["benchmark", "--external-cases", "-3"], "--external-cases", "0 or more"),
    (["benchmark", "--bootstrap", "0"], "--bootstrap", "at least 1"),
    (["evaluate", "--run", "r", "--bootstrap", "1.5"], "--bootstrap", "not an integer"),
    (["pretrain", "--run", "r", "--threads", "-1"], "--threads", "0 or more"),
    (["speed", "--steps", "0"], "--steps", "at least 1"),
    (["synth", "out", "--cases", "0"], "--cases", "at least 1"),
    (["synth", "out", "--spacing", "0.5,abc"], "--spacing", "x,y,z"),
]


@pytest.mark.parametrize("argv, option, expected", BAD, ids=[" ".join(a[0][:1] + a[0][-2:])
                                                             for a in BAD])
def test_a_bad_number_is_refused_by_name(capsys, argv, option, expected):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and repr(argv[-1]) in err and expected in err, err


def test_good_numbers_pass_through_as_numbers():
    args = build_parser().parse_args(PREDICT + ["--tta", "4", "--threshold", "1"])
    assert (args.tta, args.threshold) == (4, 1.0)
    args = build_parser().parse_args(["benchmark", "--fractions", "0.05", "1", "--seeds", "0",
                                      "2", "--external-cases", "0"])
    assert (args.fractions, args.seeds, args.external_cases) == ([0.05, 1.0], [0, 2], 0)
    args = build_parser().parse_args(["synth", "out", "--spacing", "0.5, 0.5, 3"])
    assert args.spacing == [0.5, 0.5, 3.0]


def test_the_installed_command_stops_before_reading_anything(python_exe, tmp_path):
    """As a user meets it: no traceback, the model folder is never opened (it does not exist)."""
    done = subprocess.run([python_exe, "-m", "paranasal_ssl", "predict", "--model",
                           str(tmp_path / "missing"), "--image", str(tmp_path / "s.nii.gz"),
                           "--out", str(tmp_path / "o"), "--tta", "-2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --tta: '-2': must be at least 1" in done.stderr
    assert not (tmp_path / "o").exists()
