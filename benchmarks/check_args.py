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
