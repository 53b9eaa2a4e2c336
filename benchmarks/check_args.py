"""Command-line arguments shared by the checks in this folder (they read a benchmark's --out
folder and, most of them, a development cohort; none reads a test split)."""

from __future__ import annotations

import argparse
from pathlib import Path


def check_parser(doc: str, dev: bool = True, draws: bool = True) -> argparse.ArgumentParser:
    """``BENCH_OUT COHORT [DEV_MANIFEST] OUT`` and, with ``draws``, ``--fraction`` and
    ``--seeds`` (the benchmark's label draws to use)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a benchmark's --out folder")
    parser.add_argument("cohort", help="one of its cohorts, e.g. ct, mri, ct-screening")
    if dev:
        parser.add_argument("dev", type=Path, help="the development cohort's manifest.csv")
    parser.add_argument("out", type=Path)
    if draws:
        parser.add_argument("--fraction", type=float, default=0.1)
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    return parser


def run_phantom_checks(doc: str, settings: dict, check_setting, markdown, cases: int, seed: int,
                       argv=None, extra=None) -> int:
    """``OUT [--cases N] [--seed S] [--settings ...]`` for the checks that make one phantom
    cohort per setting: ``check_setting(name, synth_options, cases, seed, folder)`` for each
    setting (seeds ``S``, ``S + 1``, ...), then ``OUT.json`` (with the code version, machine and
    command, and ``extra()``'s keys) and ``OUT.md`` (``markdown(report)``)."""
    import sys
    import tempfile

    from paranasal_ssl.atomic import write_json, write_text
    from paranasal_ssl.version import code_version, environment_info

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("out", type=Path, help="writes OUT.json and OUT.md")
    parser.add_argument("--cases", type=int, default=cases, help="cases per setting")
    parser.add_argument("--seed", type=int, default=seed, help="first setting's seed (+1 each)")
    parser.add_argument("--settings", nargs="+", choices=list(settings), default=list(settings))
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.settings):
            results.append(check_setting(name, settings[name], args.cases, args.seed + i,
                                         Path(tmp)))
            print(f"{name}: {results[-1]}", flush=True)
    report = {"code_version": code_version(), "environment": environment_info(),
              "command": " ".join(sys.argv), "settings": results, **(extra() if extra else {})}
    write_json(args.out.with_suffix(".json"), report)
    write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def phantom_sides(folder: Path, options, cases: int, seed: int) -> list:
    """Make a phantom cohort in ``folder`` (``synth`` with ``options``); one dict per case,
    side -> its manifest record, in case order."""
    import collections

    from paranasal_ssl.cli.main import main as cli
    from paranasal_ssl.manifest import read_manifest

    assert cli(["synth", str(folder), "--cases", str(cases), "--seed", str(seed),
                "--progress", "none", *options]) == 0
    by_case = collections.defaultdict(dict)
    for record in read_manifest(folder / "manifest.csv"):
        by_case[record.case_id][record.side] = record
    return list(by_case.values())


def turned(image, centers_ras: dict, yaw_deg: float = 0.0, roll_deg: float = 0.0):
    """``image`` with its content turned by ``yaw_deg`` about the superior axis and
    ``roll_deg`` about the antero-posterior one (a head turned, or tilted towards a shoulder)
    through the middle of ``centers_ras`` (side -> RAS mm), on the same grid (what leaves the
    field is lost, as in a scan of a turned head), and those centres turned with it."""
    import numpy as np
    import SimpleITK as sitk

    from paranasal_ssl.geometry import RAS_TO_LPS

    middle_lps = RAS_TO_LPS @ np.mean(list(centers_ras.values()), axis=0)
    turn = sitk.Euler3DTransform()
    turn.SetCenter(middle_lps.tolist())
    turn.SetRotation(0.0, np.deg2rad(roll_deg), np.deg2rad(yaw_deg))
    low = float(np.min(sitk.GetArrayViewFromImage(image)))
    # the output at p holds the input at turn(p): the content moves by turn's inverse
    moved = sitk.Resample(image, image, turn, sitk.sitkLinear, low)
    back = turn.GetInverse()
    return moved, {side: RAS_TO_LPS @ np.array(back.TransformPoint((RAS_TO_LPS @ c).tolist()))
                   for side, c in centers_ras.items()}
