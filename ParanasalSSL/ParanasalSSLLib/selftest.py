"""The body of the module's in-Slicer analysis self-test, runnable without the application.

No trained model can be assumed on the machine that runs the self-test, so it trains a tiny one
with the real command line (``paranasal_ssl demo`` on 16 phantom cases, 16^3 crops at 3 mm,
narrow networks, a few epochs: well under a minute on a laptop CPU), then analyses the sample
phantom with it exactly as the Analyze button does (a background ``predict`` process) and checks
what lands in the scene. ``ParanasalSSLTest`` calls ``runAnalysisSelfTest`` inside Slicer; a
pytest calls the same function against a slicer-core scene.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import slicer
import vtk

from ParanasalSSLLib import analysis_job, heatmap_display, sample_data, training
from ParanasalSSLLib.job_runner import SUCCEEDED, JobRunner

CALLS = ("normal", "uncertain", "anomalous")
# The method in miniature (the same stages and networks, tiny sizes); the model is only good
# enough to exercise the plumbing.
TINY_SETTINGS = (
    "data.crop.shape=16", "data.crop.spacing_mm=3.0", "data.crop.jitter_mm=3.0",
    "data.crop.train_crops_per_side=2", "data.crop.test_crops_per_side=2",
    "cae.channels=[8,16,32]", "cae.kernel_size=3", "cae.latent_dim=64",
    "encoder.widths=[8,8,16,16]", "encoder.decoder_widths=[16,8,8]",
    "cae_train.epochs=10", "cae_train.batch_size=4", "cae_train.lr=0.01", "cae_train.patience=0",
    "pretext_train.epochs=2", "pretext_train.batch_size=8", "pretext_train.warmup_epochs=0",
    "finetune_train.epochs=3", "finetune_train.batch_size=8", "finetune.head_hidden=[8]",
    "residual.median_kernel=3",
)


def tinyDemoArgs(outFolder, device: str = "cpu") -> List[str]:
    """``paranasal_ssl demo`` arguments for the tiny model (all labels, one label draw)."""
    args = training.demoCommand(outFolder, device) + [
        "--cases", "16", "--label-draws", "1", "--label-fraction", "1.0", "--workers", "1"]
    for setting in TINY_SETTINGS:
        args += ["--set", setting]
    return args


def _waitFor(runner: JobRunner, timeout: float, idle: Optional[Callable[[], None]]) -> str:
    deadline = time.monotonic() + timeout
    while runner.running and time.monotonic() < deadline:
        if not runner.poll():
            if idle is not None:
                idle()
            time.sleep(0.05)
    if runner.running:
        runner.cancel()
        runner.wait(runner.graceSeconds + 5.0)
    return runner.state


def trainTinyModel(outFolder, device: str = "cpu", timeout: float = 600.0,
                   idle: Optional[Callable[[], None]] = None) -> Path:
    """Train the tiny model in a background process; returns its model (run) folder."""
    runner = JobRunner()
    runner.startCore(tinyDemoArgs(outFolder, device))
    if _waitFor(runner, timeout, idle) != SUCCEEDED:
        raise RuntimeError(f"training the tiny model failed: {runner.message()}")
    folder = training.modelFolderFromLog(runner.logLines)
    if folder is None:
        raise RuntimeError("the demo printed no model folder")
    return folder


def analyzeSamplePhantom(modelDir, device: str = "cpu", sampleFolder=None, workRoot=None,
                         timeout: float = 300.0, idle: Optional[Callable[[], None]] = None
                         ) -> Dict[str, object]:
    """Load the sample CT phantom (scan and sinus boxes) and analyse it in the background with
    ``modelDir``. Returns the nodes, the finished ``job`` and ``problems``: every check that
    failed, in words (empty when all is well)."""
    nodes = sample_data.loadPhantom("ct", sampleFolder)
    scan = nodes["scan"]
    job = analysis_job.AnalysisJob(scan, {"left": nodes["leftRoi"], "right": nodes["rightRoi"]},
                                   modelDir, device, workRoot=workRoot)
    job.start()
    job.wait(timeout, idle=idle)
    if job.running:
        job.cancel()
        job.wait(job.runner.graceSeconds + 5.0)
    return {"nodes": nodes, "job": job, "problems": checkAnalysis(job)}


def checkAnalysis(job) -> List[str]:
    """What is wrong with a finished analysis job and the nodes it made (empty: nothing)."""
    if job.state != SUCCEEDED:
        return [f"the analysis did not succeed ({job.state}): {job.message}"]
    problems = []
    res, scan = job.results, job.volumeNode
    if job.folder is not None and job.folder.exists():
        problems.append(f"the temporary folder {job.folder} was left behind")
    if res.heatmapNode is None or res.heatmapNode.GetScene() is None:
        return problems + ["no heatmap node in the scene"]
    if res.regionsNode is None or res.regionsNode.GetScene() is None:
        problems.append("no regions node in the scene")
    problems += _geometryProblems(res.heatmapNode, scan)
    heat = slicer.util.arrayFromVolume(res.heatmapNode)
    if not (np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0):
        problems.append(f"heatmap values outside [0, 1]: {heat.min()}..{heat.max()}")
    if sorted(res.sides) != ["left", "right"]:
        problems.append(f"sides analysed: {sorted(res.sides)}, expected left and right")
    for side, summary in res.sides.items():
        if not 0.0 <= summary.probability <= 1.0:
            problems.append(f"{side} probability {summary.probability} outside [0, 1]")
        if summary.badge not in CALLS:
            problems.append(f"{side} call {summary.badge!r} is not one of {CALLS}")
        if not summary.regionVolumeMl >= 0.0:
            problems.append(f"{side} region volume {summary.regionVolumeMl} mL")
    shown = [c.GetForegroundVolumeID() for c in heatmap_display.compositeNodes(scan.GetScene())]
    if shown and res.heatmapNode.GetID() not in shown:
        problems.append("the heatmap is not shown over the scan")
    return problems


def _geometryProblems(node, scan) -> List[str]:
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(a)
    scan.GetIJKToRASMatrix(b)
    same = np.allclose(slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b))
    if not same or node.GetImageData().GetDimensions() != scan.GetImageData().GetDimensions() \
            or node.GetTransformNodeID() != scan.GetTransformNodeID():
        return [f"'{node.GetName()}' does not have the scan's geometry"]
    return []


def runAnalysisSelfTest(workFolder, device: str = "cpu",
                        idle: Optional[Callable[[], None]] = None) -> Dict[str, object]:
    """Train the tiny model into ``workFolder`` and analyse the sample phantom with it (see
    ``analyzeSamplePhantom``; its ``problems`` must be empty)."""
    workFolder = Path(workFolder)
    model = trainTinyModel(workFolder / "tiny-model", device, idle=idle)
    report = analyzeSamplePhantom(model, device, sampleFolder=workFolder / "sample",
                                  workRoot=workFolder / "analysis", idle=idle)
    report["model"] = model
    return report
