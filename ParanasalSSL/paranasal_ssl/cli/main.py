"""``paranasal-ssl``: entry point and subcommand registry.

Each subcommand lives in its own module exposing ``register(subparsers)``; the function it sets
as ``func`` receives the parsed arguments and returns an exit code. Errors the user can act on
(``ParanasalError``) are printed in one line without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from paranasal_ssl import __version__, progress
from paranasal_ssl.errors import CancelledError, ParanasalError

# Order is the order of --help.
COMMAND_MODULES = [
    "synth_cmd",
    "manifest_cmd",
    "train_cae_cmd",
    "residuals_cmd",
    "pretrain_cmd",
    "baseline_cmd",
    "finetune_cmd",
    "predict_cmd",
    "export_cmd",
    "evaluate_cmd",
    "demo_cmd",
    "benchmark_cmd",
    "review_cmd",
    "report_cmd",
    "speed_cmd",
]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help where that says something: not for options
    without a default (None, False, empty) and not where the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default  # by identity: a default of 0 is worth showing, not False's
        if (default is None or default is False or default is argparse.SUPPRESS
                or default == [] or "default" in text or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paranasal-ssl",
        description="Self-supervised anomaly classification of the maxillary sinuses "
                    "(CT and MRI): phantoms, crops, the four-stage residual method, "
                    "prediction, evaluation and benchmarks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"paranasal_ssl.cli.{name}").register(sub)
    return parser


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=("bar", "json", "none"), default=None,
                        help="progress display: tqdm bar (default), JSON lines on stdout "
                             "(for the Slicer job runner), or none")


class _AboveTheBar(logging.StreamHandler):
    """Log lines (e.g. "slices stacked 15 deg ...: resampled") printed above a running tqdm bar
    rather than into it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by what it writes
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_AboveTheBar()])
    if getattr(args, "progress", None):
        progress.set_mode(args.progress)
    progress.reset_cancel()
    progress.install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except CancelledError:
        print("paranasal-ssl: cancelled", file=sys.stderr)
        return 130
    except ParanasalError as exc:
        print(f"paranasal-ssl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paranasal-ssl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
