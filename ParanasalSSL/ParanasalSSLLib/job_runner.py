"""Run a long core command (training, residuals, batch prediction) as a separate process.

The child runs ``PythonSlicer -m paranasal_ssl ...`` inside Slicer (``sys.executable -m
paranasal_ssl ...`` elsewhere) with ``PARANASAL_PROGRESS=json``, so it prints one
``@@progress {...}`` line per update (see ``paranasal_ssl.progress``). A reader thread only
queues the output lines; ``poll()`` - called by the widget's QTimer on the main thread - parses
them and calls the callbacks, so no Qt object is ever touched from the reader thread.

Cancel sends SIGTERM to the child's whole process group (the core treats it as a clean cancel
and exits with 130 between steps); after a grace period whatever is left of the process tree is
killed. The child starts in its own session (POSIX) or process group (Windows) for that purpose.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence

from paranasal_ssl.progress import parse_line

IDLE, RUNNING, SUCCEEDED, FAILED, CANCELLED = "idle", "running", "succeeded", "failed", "cancelled"
CANCEL_EXIT_CODE = 130
_EOF = object()
_IS_WINDOWS = os.name == "nt"


def pythonExecutable() -> str:
    """``PythonSlicer`` inside the Slicer application, else the running interpreter."""
    try:
        import slicer

        insideSlicer = getattr(slicer, "app", None) is not None
    except ImportError:
        insideSlicer = False
    if insideSlicer:
        name = "PythonSlicer.exe" if _IS_WINDOWS else "PythonSlicer"
        found = shutil.which("PythonSlicer") or str(Path(sys.executable).parent / name)
        return found
    return sys.executable


def coreCommand(args: Sequence[str]) -> List[str]:
    """The command line running ``paranasal_ssl`` with ``args`` (e.g. ``["train-cae", ...]``)."""
    return [pythonExecutable(), "-m", "paranasal_ssl", *[str(a) for a in args]]


def corePackageParent() -> str:
    """Folder holding the ``paranasal_ssl`` package (Slicer's qt-scripted-modules folder inside
    an installed extension), put on the child's PYTHONPATH."""
    import paranasal_ssl

    return str(Path(paranasal_ssl.__file__).resolve().parent.parent)


class JobRunner:
    """One background job at a time, with progress, log, cancel and a final state.

    Callbacks (all optional, called from ``poll()`` on the caller's thread):
    ``onProgress(record)`` with the parsed progress dict (stage, done, total, fraction, metrics),
    ``onLog(line)`` for every other output line, ``onFinished(state)`` once at the end.
    """

    def __init__(self, onProgress: Optional[Callable[[dict], None]] = None,
                 onLog: Optional[Callable[[str], None]] = None,
                 onFinished: Optional[Callable[[str], None]] = None,
                 graceSeconds: float = 5.0, maxLogLines: int = 10000):
        self.onProgress, self.onLog, self.onFinished = onProgress, onLog, onFinished
        self.graceSeconds = graceSeconds
        self.state = IDLE
        self.returnCode: Optional[int] = None
        self.progress: Optional[dict] = None
        self.lastErrorLine = ""
        self.logLines: Deque[str] = collections.deque(maxlen=maxLogLines)
        self.command: List[str] = []
        self._process: Optional[subprocess.Popen] = None
        self._queue: queue.Queue = queue.Queue()
        self._readerDone = False
        self._cancelRequested = False
        self._leftoversKilled = False
        self._killTimer: Optional[threading.Timer] = None

    # -- starting ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def startCore(self, args: Sequence[str], **kwargs) -> None:
        """Start ``paranasal_ssl`` with ``args`` (see ``coreCommand``)."""
        self.start(coreCommand(args), **kwargs)

    def start(self, command: Sequence[str], env: Optional[Mapping[str, str]] = None,
              cwd: Optional[str] = None) -> None:
        """Start ``command``; raises ``RuntimeError`` if a job is already running."""
        if self.running:
            raise RuntimeError("a job is already running; cancel it or wait for it to finish")
        environment = dict(os.environ)
        pythonPath = [corePackageParent()] + [p for p in environment.get(
            "PYTHONPATH", "").split(os.pathsep) if p]
        environment.update({"PARANASAL_PROGRESS": "json", "PYTHONUNBUFFERED": "1",
                            "PYTHONIOENCODING": "utf-8",
                            "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonPath))})
        environment.update(env or {})
        kwargs: Dict = {}
        if _IS_WINDOWS:
            kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                       | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            kwargs["start_new_session"] = True
        self.command = [str(c) for c in command]
        self.state, self.returnCode, self.progress, self.lastErrorLine = RUNNING, None, None, ""
        self.logLines.clear()
        self._queue = queue.Queue()
        self._readerDone, self._cancelRequested, self._leftoversKilled = False, False, False
        try:
            self._process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd, env=environment, text=True,
                encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            self.state, self.lastErrorLine = FAILED, f"could not start {self.command[0]}: {exc}"
            if self.onFinished:
                self.onFinished(self.state)
            return
        threading.Thread(target=self._read, args=(self._process, self._queue),
                         name="ParanasalSSL job reader", daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen, lines: queue.Queue) -> None:
        try:
            for line in process.stdout:
                lines.put(line.rstrip("\r\n"))
        finally:
            lines.put(_EOF)

    # -- following ---------------------------------------------------------------------------

    def poll(self) -> bool:
        """Handle queued output and a finished process; True if anything happened."""
        changed = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            changed = True
            if item is _EOF:
                self._readerDone = True
                continue
            record = parse_line(item)
            if record is not None:
                self.progress = record
                if self.onProgress:
                    self.onProgress(record)
                continue
            self.logLines.append(item)
            if _looksLikeError(item):
                self.lastErrorLine = item.strip()
            if self.onLog:
                self.onLog(item)
        if self.running and self._process.poll() is not None:
            if not self._leftoversKilled:
                # children the job left behind (e.g. data-loader workers) go with it; they
                # would also hold the output pipe open
                _signalGroup(self._process, kill=True)
                self._leftoversKilled = True
            if self._readerDone:
                self._finish()
                changed = True
        return changed

    def wait(self, timeout: Optional[float] = None, interval: float = 0.02) -> str:
        """Poll until the job ends (or ``timeout`` seconds pass); returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running and (deadline is None or time.monotonic() < deadline):
            if not self.poll():
                time.sleep(interval)
        return self.state

    def _finish(self) -> None:
        if self._killTimer is not None:
            self._killTimer.cancel()
        self.returnCode = self._process.returncode
        if self.returnCode == 0:
            self.state = SUCCEEDED
        elif self._cancelRequested:
            self.state = CANCELLED
        else:
            self.state = FAILED
        if self.onFinished:
            self.onFinished(self.state)

    # -- cancelling ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the job to stop (SIGTERM / CTRL_BREAK to its group); kill the whole process
        tree if it is still there after ``graceSeconds``."""
        if not self.running or self._process is None or self._cancelRequested:
            return
        self._cancelRequested = True
        _signalGroup(self._process, kill=False)
        self._killTimer = threading.Timer(self.graceSeconds, self._killIfAlive, (self._process,))
        self._killTimer.daemon = True
        self._killTimer.start()

    @staticmethod
    def _killIfAlive(process: subprocess.Popen) -> None:
        if process.poll() is None:
            _signalGroup(process, kill=True)

    def message(self) -> str:
        """One sentence for the user about the job's state."""
        if self.state == RUNNING:
            stage = (self.progress or {}).get("stage")
            return f"running ({stage})" if stage else "running"
        if self.state == SUCCEEDED:
            return "finished"
        if self.state == CANCELLED:
            return "cancelled"
        if self.state == FAILED:
            detail = self.lastErrorLine or (self.logLines[-1] if self.logLines else "")
            code = f" (exit code {self.returnCode})" if self.returnCode is not None else ""
            return f"failed{code}" + (f": {detail}" if detail else "")
        return ""


def _looksLikeError(line: str) -> bool:
    lowered = line.lower()
    return "error" in lowered or lowered.startswith(("traceback", "exception", "fatal"))


def _signalGroup(process: subprocess.Popen, kill: bool) -> None:
    """SIGTERM (or SIGKILL) to the process group the job leads; on Windows CTRL_BREAK
    (or ``taskkill /T /F`` for the whole tree)."""
    if _IS_WINDOWS:
        if kill:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)],
                           capture_output=True, check=False)
        elif process.poll() is None:
            process.send_signal(signal.CTRL_BREAK_EVENT)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


class JobSequence:
    """Several core commands run one after another with one ``JobRunner`` (e.g. the training
    stages). Stops at the first failure or on cancel; ``onFinished`` gets the final state.

    ``onStep(index, args)`` is called as each command starts.
    """

    def __init__(self, runner: JobRunner, steps: Sequence[Sequence[str]],
                 onStep: Optional[Callable[[int, Sequence[str]], None]] = None,
                 onFinished: Optional[Callable[[str], None]] = None):
        if not steps:
            raise ValueError("a job sequence needs at least one command")
        self.runner, self.steps = runner, [list(s) for s in steps]
        self.onStep, self.onFinished = onStep, onFinished
        self.index = -1
        self.state = IDLE
        self._cancelled = False

    def start(self, **startKwargs) -> None:
        self._startKwargs = startKwargs
        self.state = RUNNING
        self._next()

    def _next(self) -> None:
        self.index += 1
        if self.onStep:
            self.onStep(self.index, self.steps[self.index])
        self.runner.startCore(self.steps[self.index], **self._startKwargs)
        if not self.runner.running:  # could not start at all
            self._end(self.runner.state)

    def poll(self) -> bool:
        changed = self.runner.poll()
        if self.state == RUNNING and not self.runner.running:
            if self.runner.state == SUCCEEDED and not self._cancelled \
                    and self.index + 1 < len(self.steps):
                self._next()
            else:
                self._end(CANCELLED if self._cancelled else self.runner.state)
            changed = True
        return changed

    def wait(self, timeout: Optional[float] = None, interval: float = 0.02) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state == RUNNING and (deadline is None or time.monotonic() < deadline):
            if not self.poll():
                time.sleep(interval)
        return self.state

    def cancel(self) -> None:
        self._cancelled = True
        self.runner.cancel()

    def _end(self, state: str) -> None:
        self.state = state
        if self.onFinished:
            self.onFinished(state)
