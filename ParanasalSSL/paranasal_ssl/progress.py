"""Progress that people and programs can both read, and cooperative cancellation.

On a terminal a tqdm bar is drawn on stderr. With ``PARANASAL_PROGRESS=json`` (set by the Slicer
job runner, or ``--progress json``) each update is also printed to stdout as one line::

    @@progress {"stage": "train-cae", "done": 3, "total": 40, "fraction": 0.075, "metrics": {...}}

SIGTERM (sent by the job runner's Cancel) and Ctrl-C set a flag; the next ``update`` raises
``CancelledError`` so the command stops between steps and atomic writes leave no half files.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Optional

from paranasal_ssl.errors import CancelledError

PREFIX = "@@progress "
_cancel = threading.Event()


def mode() -> str:
    """'json', 'bar' or 'none', from PARANASAL_PROGRESS (default: bar)."""
    value = os.environ.get("PARANASAL_PROGRESS", "bar").lower()
    return value if value in ("json", "bar", "none") else "bar"


def set_mode(value: str) -> None:
    os.environ["PARANASAL_PROGRESS"] = value


def request_cancel() -> None:
    _cancel.set()


def reset_cancel() -> None:
    _cancel.clear()


def cancel_requested() -> bool:
    return _cancel.is_set()


def check_cancelled() -> None:
    if _cancel.is_set():
        raise CancelledError("cancelled")


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT request a cancel instead of killing mid-write (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):  # noqa: ARG001
        if _cancel.is_set():  # second signal: stop now
            raise KeyboardInterrupt
        _cancel.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def emit(stage: str, done: int, total: Optional[int], **metrics: Any) -> None:
    """Print one machine-readable progress line (json mode only)."""
    if mode() != "json":
        return
    record = {"stage": stage, "done": done, "total": total,
              "fraction": (done / total) if total else None,
              "metrics": {k: _plain(v) for k, v in metrics.items()}}
    sys.stdout.write(PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


def parse_line(line: str) -> Optional[dict]:
    """The record of a progress line, or None for any other line (used by job runners)."""
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None


class Progress:
    """A progress counter for one stage: tqdm bar and/or JSON lines, plus a cancel check.

    >>> with Progress("residuals", total=10) as p:
    ...     for _ in range(10):
    ...         p.update(1, loss=0.1)
    """

    def __init__(self, stage: str, total: Optional[int], unit: str = "it",
                 min_interval_s: float = 0.2):
        self.stage = stage
        self.total = total
        self.done = 0
        self._bar = None
        self._last_emit = 0.0
        self._min_interval = min_interval_s
        if mode() == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=stage, unit=unit, leave=False,
                             dynamic_ncols=True, file=sys.stderr)

    def __enter__(self) -> Progress:
        emit(self.stage, 0, self.total)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            emit(self.stage, self.done, self.total)
        self.close()

    def update(self, n: int = 1, check_cancel: bool = True, **metrics: Any) -> None:
        """Count ``n`` more done; raises ``CancelledError`` if a cancel was requested, unless
        ``check_cancel`` is False (a distributed rank: the ranks decide together)."""
        if check_cancel:
            check_cancelled()
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        now = time.monotonic()
        if now - self._last_emit >= self._min_interval or self.done == self.total:
            emit(self.stage, self.done, self.total, **metrics)
            self._last_emit = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _plain(v: Any) -> Any:
    try:
        return float(v) if not isinstance(v, (str, bool, int)) else v
    except (TypeError, ValueError):
        return str(v)


def _short(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v
