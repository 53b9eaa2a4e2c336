"""The Analyze button's job: ``paranasal_ssl predict`` in a real background process with the
real trained tiny model, against a real slicer-core scene. Every box reaches the command line
exactly (rotation included), refused inputs start nothing, a failing process and a cancel add
nothing to the scene, and no temporary file is left behind. (A successful background analysis,
compared with the synchronous one, is in test_analysis_panel.py.)"""

from __future__ import annotations

import os
import time

import numpy as np
import slicer
from scene_checks import counts, turned

from paranasal_ssl.cli.main import build_parser
from paranasal_ssl.cli.predict_cmd import parse_roi
from paranasal_ssl.geometry import SinusROI
from ParanasalSSLLib import analysis_job, results
from ParanasalSSLLib import mrml_bridge as bridge
from ParanasalSSLLib.job_runner import CANCELLED, FAILED


def test_the_command_line_gets_each_box_exactly_rotation_included():
    roi = turned(SinusROI.from_values([-31.25, 14.1, -70.3], [33.3, 46.0, 57.9]), 17.0)
    args = analysis_job.predictArgs("model", "scan.nrrd", {"left": roi}, "out", "cuda", 0.35)
    parsed = build_parser().parse_args(args)
    back = parse_roi(parsed.roi_left, "left", parsed.roi_left_axes)
    np.testing.assert_array_equal(back.center, roi.center)
    np.testing.assert_array_equal(back.size, roi.size)
    np.testing.assert_allclose(back.axes, roi.axes, atol=1e-15)
    assert (parsed.sides, parsed.roi_right, parsed.device, parsed.threshold) == (
        "left", None, "cuda", 0.35)
    assert (parsed.format, parsed.progress) == ("nrrd", "json")
    straight = analysis_job.predictArgs("m", "s", {"left": roi, "right": SinusROI.from_values(
        [30, 14, -70], [30, 40, 50])}, "o")
    assert "--roi-right-axes" not in straight and "--sides" not in straight


def test_refused_inputs_start_nothing_and_say_why(sickCase, tmp_path, trained_run):
    run, _ = trained_run
    (tmp_path / "empty").mkdir()
    flat = slicer.util.addVolumeFromArray(np.zeros((1, 40, 40), np.int16), name="one slice")
    unplaced = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    before = counts(slicer.mrmlScene)
    for scan, rois, model, words in (
            (sickCase.scan, sickCase.rois, tmp_path / "empty", "holds no trained model"),
            (flat, sickCase.rois, run.dir, "one slice: image is 2D in effect"),
            (sickCase.scan, {"left": None}, run.dir, "no sinus ROI"),
            (sickCase.scan, {"left": unplaced}, run.dir, "the ROI has no size yet"),
            (None, sickCase.rois, run.dir, "no scan selected")):
        finished = []
        job = analysis_job.AnalysisJob(scan, rois, model, "cpu", onFinished=finished.append,
                                       workRoot=tmp_path / "work")
        job.start()
        assert job.state == FAILED and finished == [job] and job.runner.pid is None
        assert job.message.startswith("Cannot analyse: ") and words in job.message
        assert counts(slicer.mrmlScene) == before and job.results is None
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


def test_a_failing_process_adds_nothing_and_says_why_in_words(sickCase, trained_run, tmp_path):
    run, _ = trained_run
    far = sickCase.records["left"].roi
    outside = bridge.addRoiNode(SinusROI.from_values(far.center + [0, 0, 400], far.size), "far")
    before = counts(slicer.mrmlScene)
    job = analysis_job.AnalysisJob(sickCase.scan, {"left": outside}, run.dir, "cpu",
                                   workRoot=tmp_path)
    job.start()
    assert job.wait(120) == FAILED
    assert job.message.startswith("Analysis failed: sinus CT [roi_left]: the left ROI")
    assert "outside the scan" in job.message and str(tmp_path) not in job.message
    assert counts(slicer.mrmlScene) == before and results.resultNodes(sickCase.scan) == []
    assert list(tmp_path.iterdir()) == []


def test_cancel_stops_the_process_and_leaves_nothing_behind(sickCase, trained_run, tmp_path):
    run, _ = trained_run
    before = counts(slicer.mrmlScene)
    job = analysis_job.AnalysisJob(sickCase.scan, sickCase.rois, run.dir, "cpu",
                                   workRoot=tmp_path)
    job.start()
    pid = job.runner.pid
    time.sleep(1.0)
    job.cancel()
    assert job.statusText() == "Cancelling the analysis..."
    assert job.wait(30) == CANCELLED and job.message == analysis_job.CANCELLED_TEXT
    try:
        os.killpg(pid, 0)  # the process group is gone
        raise AssertionError("the analysis process is still running")
    except ProcessLookupError:
        pass
    assert counts(slicer.mrmlScene) == before and job.results is None
    assert list(tmp_path.iterdir()) == []
