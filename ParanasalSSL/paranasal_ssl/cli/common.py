"""Options shared by the training and prediction subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple

from paranasal_ssl.cli import arg_types
from paranasal_ssl.cli.main import add_progress_option
from paranasal_ssl.experiment import PROFILES
from paranasal_ssl.stages.run import Run, open_run
from paranasal_ssl.training.device import DEVICE_CHOICES


def add_run_options(p: argparse.ArgumentParser, creates: bool = False) -> None:
    # --run-dir: the same option under another name, for torchrun, whose own parser reads an
    # abbreviated --run as its --run-path before the command line reaches this one
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True,
                   help="run folder (created on first use; holds config, splits, stage outputs)")
    p.add_argument("--manifest", type=Path,
                   help="cohort manifest CSV" + (" (required for a new run)" if creates else
                                                 " (default: the run's own)"))
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="configuration profile for a new run (default cpu-small)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="override a setting, e.g. --set cae_train.epochs=5 (repeatable)")
    add_compute_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted stage from its last finished epoch")


def add_compute_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="compute device (auto: CUDA, then Apple MPS, then CPU)")
    p.add_argument("--workers", type=arg_types.non_negative_int, default=0,
                   help="processes for cropping scans (default: up to 2)")
    p.add_argument("--threads", type=arg_types.non_negative_int, default=0,
                   help="torch CPU threads (default: torch's)")
    p.add_argument("--cache", type=Path, help="crop cache folder shared between runs")
    add_progress_option(p)


def run_from_args(args: argparse.Namespace) -> Run:
    """Open the run folder; under ``torchrun`` join the process group first (one device per
    local rank) and let rank 0 create a new run folder before the others open it."""
    from paranasal_ssl.training import distributed as ddp

    device = ddp.setup(args.device)

    def open_it() -> Run:
        return open_run(args.run, manifest=args.manifest, profile=args.profile,
                        overrides=args.overrides, device=device, cache_dir=args.cache,
                        workers=args.workers, threads=args.threads)

    run = open_it() if ddp.is_main() else None
    ddp.barrier()
    return run if run is not None else open_it()


def print_fit(stage: str, result, folder: Path) -> None:
    from paranasal_ssl.training.distributed import is_main

    if not is_main():
        return
    print(f"{stage}: best epoch {result.best_epoch}/{result.epochs_run} "
          f"(metric {result.best_metric:.5g}), {result.samples_per_second:.1f} samples/s, "
          f"{result.seconds:.0f} s -> {folder}")


def add_shard_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--shard", metavar="I/N",
                   help=f"do share I of N (0-based) of the {what}, for N independent worker "
                   "processes (e.g. a job array on CPU machines); the last one to finish merges "
                   "the outputs. Under torchrun the ranks share the work without this option.")


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None for no sharding."""
    from paranasal_ssl.errors import ConfigError
    from paranasal_ssl.training.distributed import launched

    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(None, f"bad shard {text!r}", field="--shard",
                          expected="I/N with 0 <= I < N, e.g. 0/4")
    if launched():
        raise ConfigError(None, "--shard with torchrun: the ranks already share the work",
                          field="--shard", expected="one of the two")
    return i, n
