"""Analyse a scan in a background process, so that Slicer never freezes.

``start()`` checks the inputs (``analysis``), writes the volume to a temporary NRRD in its world
geometry (``mrml_bridge.imageFromVolumeNode``: parent transforms included) and starts
``PythonSlicer -m paranasal_ssl predict`` through a ``JobRunner`` with the ROI nodes as boxes in
RAS mm (centre and size, plus ``--roi-<side>-axes`` for a rotated box). ``poll()``, called by the
widget's timer on the main thread, follows the process; when it succeeds the heatmap, region and
``summary.json`` it wrote are read back into result nodes (``analysis.addPredictionResults``:
all or none). A failure or a cancel adds nothing to the scene and leaves a message in words. The
temporary folder is removed in every case. No Qt here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from paranasal_ssl.errors import InputError, ParanasalError
from ParanasalSSLLib import analysis, results
from ParanasalSSLLib.job_runner import CANCELLED, FAILED, IDLE, RUNNING, SUCCEEDED, JobRunner

_BUSY = set()  # work folders of the analyses running in this process
SCAN_FILE = "scan.nrrd"
OUT_FOLDER = "prediction"
ERROR_PREFIX = "paranasal-ssl predict: error: "
CANCELLED_TEXT = "Analysis cancelled; nothing was added to the scene."


def _number(value) -> str:
    return repr(float(value))  # exact: a float's repr reads back to the same float


def predictArgs(modelDir, scanPath, rois: Mapping[str, object], outDir, device: str = "auto",
                threshold: Optional[float] = None) -> List[str]:
    """Arguments of ``paranasal_ssl predict`` for ``rois`` (side -> ``SinusROI``, RAS mm)."""
    args = ["predict", "--model", str(modelDir), "--image", str(scanPath), "--out", str(outDir),
            "--device", device, "--format", "nrrd", "--progress", "json"]
    if len(rois) == 1:
        args += ["--sides", next(iter(rois))]
    for side, roi in sorted(rois.items()):
        args += [f"--roi-{side}", *map(_number, roi.center), *map(_number, roi.size)]
        if not np.allclose(roi.axes, np.eye(3), atol=1e-9):  # axis x, then y, then z
            args += [f"--roi-{side}-axes", *map(_number, roi.axes.T.ravel())]
    if threshold is not None:
        args += ["--threshold", _number(threshold)]
    return args


def workFolder(scanName: str, root=None) -> Path:
    """A new empty folder for one analysis of ``scanName`` (unique, so two analyses, or two
    Slicer sessions, never share one; ``predict``'s test-time jitter does not depend on the
    file name, so the numbers are the same whatever folder the scan is written to)."""
    root = Path(root) if root else Path(tempfile.gettempdir()) / "ParanasalSSL-analysis"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=results.safeFileName(scanName) + "-", dir=root))
    _BUSY.add(str(folder))
    return folder


class AnalysisJob:
    """One background analysis of one scan. States: idle, running, succeeded, failed, cancelled.

    ``onProgress(record)`` gets the process's progress records, ``onFinished(job)`` is called
    once at the end (from ``start()`` when the inputs are refused, else from ``poll()``); then
    ``results`` (``AnalysisResults``, on success) and ``message`` tell what happened.
    """

    def __init__(self, volumeNode, roiNodes: Mapping[str, object], modelDir,
                 device: str = "auto", threshold: Optional[float] = None, opacity: float = 0.6,
                 onProgress: Optional[Callable[[dict], None]] = None,
                 onFinished: Optional[Callable[[AnalysisJob], None]] = None,
                 workRoot=None, graceSeconds: float = 1.0):
        self.volumeNode, self.roiNodes = volumeNode, dict(roiNodes)
        self.modelDir, self.device = modelDir, device
        self.threshold, self.opacity = threshold, opacity
        self.onProgress, self.onFinished = onProgress, onFinished
        self.workRoot = workRoot
        # the child writes only into the temporary folder: a short grace is enough
        self.runner = JobRunner(onProgress=self._progress, graceSeconds=graceSeconds)
        self.state = IDLE
        self.message = ""
        self.results = None
        self.folder: Optional[Path] = None
        self.scanName = volumeNode.GetName() if volumeNode is not None else "scan"
        self._started = None
        self._cancelRequested = False

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    def statusText(self) -> str:
        """One line while it runs."""
        if self._cancelRequested:
            return "Cancelling the analysis..."
        return f"Analysing {self.scanName} in the background ({self.elapsed:.0f} s)..."

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check the inputs, write the scan and start the process. Refused inputs end the job
        at once (state failed, a message saying why; nothing written, nothing started)."""
        if self.state != IDLE:
            raise RuntimeError("an analysis job runs once; make a new one")
        self._started = time.monotonic()
        try:
            import SimpleITK as sitk

            rois = analysis.sinusRois(self.volumeNode, self.roiNodes)
            problem = analysis.modelFolderProblem(self.modelDir)
            if problem:
                raise InputError(self.modelDir, problem, field="model")
            image = analysis.scanImage(self.volumeNode)
            self.folder = workFolder(self.scanName, self.workRoot)
            sitk.WriteImage(image, str(self.folder / SCAN_FILE))  # raw NRRD: fast, exact
            self.state = RUNNING
            self.runner.startCore(predictArgs(self.modelDir, self.folder / SCAN_FILE, rois,
                                              self.folder / OUT_FOLDER, self.device,
                                              self.threshold))
        except (ParanasalError, OSError, RuntimeError) as exc:
            self._end(FAILED, f"Cannot analyse: {self._words(str(exc))}")
            return
        if not self.runner.running:  # the interpreter could not be started
            self._end(FAILED, f"Cannot analyse: {self.runner.message()}")

    def _progress(self, record: dict) -> None:
        if self.onProgress:
            self.onProgress(record)

    # -- following --------------------------------------------------------------------------

    def poll(self) -> bool:
        """Follow the process (main thread); True if anything happened."""
        if self.state != RUNNING:
            return False
        changed = self.runner.poll()
        if not self.runner.running:
            self._complete()
            changed = True
        return changed

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05,
             idle: Optional[Callable[[], None]] = None) -> str:
        """Poll until the job ends (or ``timeout`` seconds pass); ``idle`` runs between polls
        (e.g. ``slicer.app.processEvents`` in a self-test). Returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running and (deadline is None or time.monotonic() < deadline):
            if not self.poll():
                if idle is not None:
                    idle()
                time.sleep(interval)
        return self.state

    def cancel(self) -> None:
        """Stop the process (its whole tree); nothing is added to the scene."""
        if self.running and not self._cancelRequested:
            self._cancelRequested = True
            self.runner.cancel()

    def _complete(self) -> None:
        if self._cancelRequested or self.runner.state == CANCELLED:
            self._end(CANCELLED, CANCELLED_TEXT)
        elif self.runner.state != SUCCEEDED:
            self._end(FAILED, "Analysis failed: " + self._failureText())
        else:
            try:
                self.results = self._loadResults()
            except (ParanasalError, OSError, RuntimeError, ValueError, KeyError) as exc:
                self._end(FAILED, f"Analysis failed: {self._words(str(exc))}")
                return
            self._end(SUCCEEDED, analysis.finishedText(self.results, self.elapsed))

    def _loadResults(self):
        import SimpleITK as sitk

        if self.volumeNode.GetScene() is None:
            raise InputError(self.scanName, "the scan was removed from the scene during the "
                             "analysis")
        out = self.folder / OUT_FOLDER
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        images: Dict[str, sitk.Image] = {key: sitk.ReadImage(str(out / summary[key]))
                                         for key in ("heatmap", "region")}
        arrays: Dict[str, np.ndarray] = {key: sitk.GetArrayFromImage(image)
                                         for key, image in images.items()}
        return analysis.addPredictionResults(self.volumeNode, arrays["heatmap"],
                                             arrays["region"], summary, opacity=self.opacity,
                                             grid=images["heatmap"])

    def _failureText(self) -> str:
        line = self.runner.lastErrorLine or (self.runner.logLines[-1]
                                             if self.runner.logLines else "")
        if line.startswith(ERROR_PREFIX):
            return self._words(line[len(ERROR_PREFIX):])
        return self._words(self.runner.message())

    def _words(self, text: str) -> str:
        """The temporary files named as the user knows them."""
        if self.folder is not None:
            text = text.replace(str(self.folder / SCAN_FILE), self.scanName)
            text = text.replace(str(self.folder), "the temporary folder")
        return text

    def _end(self, state: str, message: str) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            _BUSY.discard(str(self.folder))
        self.state, self.message = state, message
        if self.onFinished:
            self.onFinished(self)
