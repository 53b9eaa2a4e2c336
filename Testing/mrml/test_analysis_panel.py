"""The Analyze button and the Outputs section as a radiologist uses them: Apply disabled with the
reason, Analyze turning into Cancel while the background process runs, the same nodes as the
synchronous analysis afterwards (a rotated box too) with the per-side probability, call and volume
in mL, jump to the strongest residual, export. The panel's own code
runs against the real logic, job, model and scene; only the PythonQt widgets are stand-ins
(Testing/mrml/conftest.py)."""

from __future__ import annotations

import logging
import time
import types

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from scene_checks import assertSameGeometry, counts, turned

from ParanasalSSLLib import analysis, analysis_job, dependencies
from ParanasalSSLLib import mrml_bridge as bridge
from ParanasalSSLLib.analysis_panel import CANCEL_TIP, IDLE_TIP, AnalysisPanel
from ParanasalSSLLib.logic import AnalysisLogic


@pytest.fixture
def panel(standIns, tmp_path):
    logic = AnalysisLogic()
    logic.workRoot = tmp_path / "work"
    params = types.SimpleNamespace(inputVolume=None, leftRoi=None, rightRoi=None,
                                   modelFolder=None, device="cpu", heatmapThreshold=0.5,
                                   heatmapOpacity=0.6)
    widget = types.SimpleNamespace(ui=standIns.ui, _parameterNode=params, logic=logic,
                                   parent=None, ensureDependencies=dependencies.ensureInSlicer)
    p = AnalysisPanel(widget)
    p.setup()
    return p


def _runTimer(panel, timeout=180.0):
    """What Qt's event loop would do: fire the panel's timer until the analysis ends."""
    deadline = time.monotonic() + timeout
    while panel.running and time.monotonic() < deadline:
        assert panel.timer.active
        panel.timer.fire()
        time.sleep(0.05)
    assert not panel.running and not panel.timer.active


def test_apply_says_what_is_missing(panel, sickCase, tmp_path):
    ui, p = panel.ui, panel.params
    panel.updateApplyButton()
    assert not ui.applyButton.enabled and ui.applyButton.text == "Analyze"
    for words in ("select a scan", "place a box on at least one maxillary sinus",
                  "select a model folder, or train a demo model"):
        assert words in ui.applyButton.toolTip
    assert ui.analysisStatusLabel.text == ui.applyButton.toolTip
    p.inputVolume, p.rightRoi = sickCase.scan, sickCase.rois["right"]
    (tmp_path / "notamodel").mkdir()
    p.modelFolder = tmp_path / "notamodel"
    panel.updateApplyButton()
    assert not ui.applyButton.enabled and "holds no trained model" in ui.applyButton.toolTip
    assert ui.modelSummaryLabel.text == ""
    assert ui.leftProbabilityLabel.text == "-" and not ui.jumpToPeakButton.enabled
    assert not ui.exportResultsButton.enabled


def test_analyze_turns_into_cancel_then_shows_the_outputs(panel, sickCase, trained_run, caplog,
                                                          tmp_path):
    run, _ = trained_run
    ui, p = panel.ui, panel.params
    p.inputVolume, p.modelFolder = sickCase.scan, run.dir
    p.leftRoi, p.rightRoi = sickCase.rois["left"], sickCase.rois["right"]
    panel.updateApplyButton()
    assert ui.applyButton.enabled and ui.applyButton.toolTip == IDLE_TIP
    assert ui.modelSummaryLabel.text.startswith("CT model ")  # which model, under its folder
    before = counts(slicer.mrmlScene)

    ui.applyButton.click()
    assert (ui.applyButton.text, ui.applyButton.toolTip) == ("Cancel", CANCEL_TIP)
    assert ui.analysisProgressBar.visible and ui.analysisProgressBar.maximum == 0  # busy
    assert ui.analysisStatusLabel.text.startswith("Analysing sinus CT in the background")
    panel.updateApplyButton()  # e.g. another volume selected meanwhile: still Cancel
    assert ui.applyButton.text == "Cancel" and ui.applyButton.enabled
    ui.applyButton.click()
    _runTimer(panel, 30.0)
    assert ui.applyButton.text == "Analyze" and not ui.analysisProgressBar.visible
    assert "cancelled; nothing was added" in ui.analysisStatusLabel.text
    assert counts(slicer.mrmlScene) == before and panel.widget.logic.results is None

    # the same scan analysed in this process first (a rotated box on the sick side): the
    # background analysis must show the same heatmap and replace those nodes
    side = sickCase.sickSide
    bridge.updateRoiNodeFromSinusRoi(sickCase.rois[side], turned(sickCase.records[side].roi, 12))
    inProcess = panel.widget.logic.analyze(sickCase.scan, sickCase.rois, run.dir, device="cpu")
    heat = np.array(slicer.util.arrayFromVolume(inProcess.heatmapNode))
    after = counts(slicer.mrmlScene)
    ui.applyButton.click()
    job = panel.job
    command = job.runner.command
    assert f"--roi-{side}-axes" in command and command[command.index("--device") + 1] == "cpu"
    assert command[command.index("--threshold") + 1] == "0.5"  # the threshold slider
    written = sitk.ReadImage(str(job.folder / analysis_job.SCAN_FILE))  # the volume, exactly
    reference = bridge.imageFromVolumeNode(sickCase.scan)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written),
                                  slicer.util.arrayFromVolume(sickCase.scan))
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-9)
    _runTimer(panel)
    res = panel.widget.logic.results
    assert ui.analysisStatusLabel.text.startswith("Analysed in") and res is job.results
    assertSameGeometry(res.heatmapNode, sickCase.scan)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(res.heatmapNode), heat, atol=1e-5)
    assert res.sides[side].regionVolumeMl == inProcess.sides[side].regionVolumeMl > 0
    assert counts(slicer.mrmlScene) == after  # replaced: nodes and subject-hierarchy items
    assert inProcess.heatmapNode.GetScene() is None
    assert not job.folder.exists() and list((tmp_path / "work").iterdir()) == []
    for name in ("left", "right"):
        shown = res.sides[name]
        assert 0.0 <= shown.probability <= 1.0
        assert getattr(ui, f"{name}ProbabilityLabel").text == f"{shown.probability:.2f}"
        assert f">{shown.badge}<" in getattr(ui, f"{name}BadgeLabel").text
        assert getattr(ui, f"{name}VolumeLabel").text == f"{shown.regionVolumeMl:.2f} mL"
        assert "0.50" in getattr(ui, f"{name}VolumeLabel").toolTip
    assert ui.jumpToPeakButton.enabled and ui.exportResultsButton.enabled
    ui.jumpToPeakButton.click()
    red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    assert red.GetSliceOffset() == pytest.approx(res.strongestPeakRas()[2], abs=1e-3)
    ui.exportResultsButton.click()  # the folder dialog stand-in answers tmp_path / "x"
    assert ui.analysisStatusLabel.text == f"Wrote 3 files to {tmp_path / 'x'}"
    assert sorted(f.name for f in (tmp_path / "x").iterdir()) == [
        "sinus_CT_heatmap.nii.gz", "sinus_CT_heatmap.nrrd", "sinus_CT_regions.seg.nrrd"]

    flat = slicer.util.addVolumeFromArray(np.zeros((1, 40, 40), np.int16), name="one slice")
    p.inputVolume = flat  # refused at once, with a message box (logged in testing mode)
    with caplog.at_level(logging.ERROR):
        ui.applyButton.click()
    assert ui.applyButton.text == "Analyze" and not panel.timer.active
    assert "one slice: image is 2D in effect" in ui.analysisStatusLabel.text
    assert any("2D in effect" in r.getMessage() for r in caplog.records)
    assert panel.widget.logic.results is res  # the earlier results stay, on screen too
    assert ui.leftProbabilityLabel.text == analysis.sideTexts(res)["left"]["probability"]
