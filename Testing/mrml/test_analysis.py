"""Scan-level actions on a real slicer-core scene with the REAL trained tiny model
(``trained_run``): ROI suggestion into ROI nodes, and the synchronous analysis (``predict_scan``
in this process, as the Python console runs it) into result nodes in the scan's geometry.
Repeated analyses replace their nodes and subject-hierarchy items; refused inputs change nothing.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import slicer
from scene_checks import assertSameGeometry, counts

from paranasal_ssl.errors import InputError
from paranasal_ssl.inference import predict_scan
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.scan_io import read_scan
from ParanasalSSLLib import analysis, heatmap_display, results, sample_data
from ParanasalSSLLib import mrml_bridge as bridge
from ParanasalSSLLib.logic import AnalysisLogic


@pytest.fixture
def phantom(slicerApp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    return sample_data.loadPhantom("ct", folder), sample_data.phantomFiles("ct", folder)


def test_suggested_rois_fill_the_roi_nodes(phantom):
    nodes, _ = phantom
    existing = {"left": nodes["leftRoi"]}  # the user's own left node is reused, right is new
    suggestion, roiNodes = analysis.suggestRoiNodes(nodes["scan"], existing)
    assert roiNodes["left"] is nodes["leftRoi"]
    assert roiNodes["right"].GetName() == "right maxillary sinus"
    for side in ("left", "right"):
        back = bridge.sinusRoiFromRoiNode(roiNodes[side])
        np.testing.assert_allclose(back.center, suggestion.rois[side].center, atol=1e-6)
    assert suggestion.confidence == "high"
    assert analysis.suggestionText(suggestion).startswith("Both sinuses found")


def test_the_suggestion_runs_in_a_worker_thread_on_the_scan_as_it_was_asked(phantom):
    # the widget starts it and keeps the UI responding (up to ~1 s on a face field); the
    # scan is read from its node before the worker starts, so the node may change meanwhile
    import threading

    from paranasal_ssl.roi_suggest import suggest_rois

    nodes, _ = phantom
    scan = nodes["scan"]
    expected = suggest_rois(analysis.scanImage(scan))
    future = analysis.startRoiSuggestion(scan)
    assert any(t.name.startswith("ParanasalSSL-suggest") for t in threading.enumerate())
    array = slicer.util.arrayFromVolume(scan)
    array[:] = -1000  # the user edits the volume while the worker runs: no effect on it
    slicer.util.arrayFromVolumeModified(scan)
    suggestion = future.result(timeout=120)
    assert suggestion.confidence == "high"
    for side in ("left", "right"):
        np.testing.assert_allclose(suggestion.rois[side].center, expected.rois[side].center)
    roiNodes = analysis.placeSuggestedRois(suggestion)
    assert {side: n.GetName() for side, n in roiNodes.items()} == {
        "left": "left maxillary sinus", "right": "right maxillary sinus"}
    assert slicer.mrmlScene.IsNodePresent(roiNodes["left"])


def test_the_models_prediction_lands_in_the_scans_geometry(sickCase, trained_run):
    run, _ = trained_run
    logic = AnalysisLogic()
    res = logic.analyze(sickCase.scan, sickCase.rois, run.dir, device="cpu", opacity=0.7)
    assert logic.results is res and res.regionThreshold == 0.5
    # the core on the same scan read from its file, with the boxes as the ROI nodes hold them
    rois = {side: bridge.sinusRoiFromRoiNode(node) for side, node in sickCase.rois.items()}
    expected = predict_scan(read_scan(sickCase.image), rois, load_model(run.dir, "cpu"),
                            source=sickCase.scan.GetName())
    heat = slicer.util.arrayFromVolume(res.heatmapNode)
    np.testing.assert_allclose(heat, expected.heatmap, atol=1e-6)
    assertSameGeometry(res.heatmapNode, sickCase.scan)
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert heat[expected.region == analysis.REGION_CODES[sickCase.sickSide]].max() >= 0.5
    for side, p in expected.sides.items():
        shown = res.sides[side]
        assert 0.0 <= shown.probability <= 1.0
        assert shown.probability == pytest.approx(p.probability)
        assert shown.badge == p.call
        assert shown.regionVolumeMl == pytest.approx(p.region_volume_ml)
        segmentId = res.regionsNode.GetSegmentation().GetSegmentIdBySegmentName(
            f"{side} sinus anomaly region")
        np.testing.assert_array_equal(
            bridge.arrayFromSegment(res.regionsNode, segmentId, sickCase.scan),
            expected.region == analysis.REGION_CODES[side])
        texts = analysis.sideTexts(res)[side]
        assert texts["volume"] == f"{p.region_volume_ml:.2f} mL" and p.call in texts["badgeHtml"]
        # the tiny run's model fuses the residual (the profile's setting): the tooltip says so
        assert f"classifier alone gave {p.classifier_probability:.2f}" in texts[
            "probabilityToolTip"]
    display = res.heatmapNode.GetDisplayNode()
    assert display.GetLowerThreshold() == pytest.approx(0.5)
    composites = heatmap_display.compositeNodes(slicer.mrmlScene)
    assert {c.GetForegroundVolumeID() for c in composites} == {res.heatmapNode.GetID()}
    assert [c.GetForegroundOpacity() for c in composites] == pytest.approx([0.7] * 3)
    logic.updateDisplay(0.3, 0.4)  # the sliders
    assert display.GetLowerThreshold() == pytest.approx(0.3)
    assert [c.GetForegroundOpacity() for c in composites] == pytest.approx([0.4] * 3)
    ras = logic.jumpToStrongestResidual()
    sick = rois[sickCase.sickSide]
    assert np.all(np.abs(ras - sick.center) <= sick.size / 2 + 6.0)  # inside the sick box
    red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    assert red.GetSliceOffset() == pytest.approx(ras[2], abs=1e-3)


def test_repeated_analyses_keep_node_and_subject_hierarchy_counts(sickCase, trained_run):
    run, _ = trained_run
    logic = AnalysisLogic()
    first = logic.analyze(sickCase.scan, sickCase.rois, run.dir, device="cpu")
    after = counts(slicer.mrmlScene)
    for threshold in (0.4, 0.6):
        again = logic.analyze(sickCase.scan, sickCase.rois, run.dir, "cpu", threshold)
        assert counts(slicer.mrmlScene) == after
        assert first.heatmapNode.GetScene() is None and again.regionThreshold == threshold
        first = again
    assert results.resultNodes(sickCase.scan) == again.nodes


def test_refused_inputs_leave_the_scene_as_it_was(sickCase, trained_run, tmp_path):
    run, _ = trained_run
    logic = AnalysisLogic()
    previous = logic.analyze(sickCase.scan, sickCase.rois, run.dir, device="cpu")
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    shutil.copytree(run.dir, broken, ignore=shutil.ignore_patterns("cache", "residuals"))
    for best in (broken / "finetune").glob("*/best.pt"):
        best.write_bytes(b"not a checkpoint")
    flat = slicer.util.addVolumeFromArray(np.zeros((1, 40, 40), np.int16), name="one slice")
    far = sickCase.records["left"].roi
    outside = bridge.addRoiNode(type(far).from_values(far.center + [0, 0, 400], far.size), "far")
    cut = _loadedAsSlicerDoes(_cutShort(bridge.imageFromVolumeNode(sickCase.scan), tmp_path))
    assert (slicer.util.arrayFromVolume(cut) == 0).mean() > 0.2  # read, the rest zero
    with pytest.raises(InputError, match=r"scan_cut\.nii\.gz: the file is cut short"):
        analysis.suggestRoiNodes(cut)
    before, shown = counts(slicer.mrmlScene), results.resultNodes(sickCase.scan)
    rois = sickCase.rois
    for scan, roiNodes, model, words in (
            (sickCase.scan, rois, tmp_path / "empty", "holds no trained model"),
            (sickCase.scan, rois, tmp_path / "nowhere", "does not exist"),
            (sickCase.scan, rois, broken, "cannot load checkpoint"),
            (flat, rois, run.dir, "one slice: image is 2D in effect"),
            (sickCase.scan, {"left": None, "right": None}, run.dir, "no sinus ROI"),
            (sickCase.scan, {"left": outside}, run.dir, "lies 100% outside the scan"),
            (cut, rois, run.dir, "the file is cut short"),
            (sickCase.scan, {"left": rois["right"], "right": rois["left"]}, run.dir,
             "left and right swapped")):
        with pytest.raises(InputError, match=words):
            logic.analyze(scan, roiNodes, model, device="cpu")
        assert counts(slicer.mrmlScene) == before
        assert results.resultNodes(sickCase.scan) == shown and logic.results is previous


def test_a_box_on_the_other_sinus_is_analysed_with_a_warning(sickCase, trained_run):
    """One "left" box on the patient's right sinus (placed by screen side in radiological
    view): analysed, since the head's midline is an estimate, and the status line says so."""
    run, _ = trained_run
    res = AnalysisLogic().analyze(sickCase.scan, {"left": sickCase.rois["right"]}, run.dir,
                                  device="cpu")
    assert len(res.boxNotes) == 1 and "into the patient's right half" in res.boxNotes[0]
    assert "Check the box: the left box" in analysis.finishedText(res)
    both = AnalysisLogic().analyze(sickCase.scan, sickCase.rois, run.dir, device="cpu")
    assert both.boxNotes == [] and "Check the box" not in analysis.finishedText(both)


def _cutShort(image, folder):
    """``image`` written as a NIfTI, then cut to two thirds of its bytes (an interrupted copy)."""
    from paranasal_ssl.scan_io import write_image

    path = write_image(image, folder / "scan_cut.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _loadedAsSlicerDoes(path):
    """A volume node read from ``path`` by the archetype storage node (Slicer's Add Data)."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name)
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node) == 1
    return node


def test_a_fused_models_probability_names_its_two_parts(sickCase, trained_run):
    """``predict`` of a model with a residual fusion also gives the classifier's probability and
    the focal residual score per side; the Outputs row's tooltip names both (and a side
    without them, as a model without fusion gives it, only the classifier)."""
    run, _ = trained_run
    rois = {side: bridge.sinusRoiFromRoiNode(node) for side, node in sickCase.rois.items()}
    pred = predict_scan(read_scan(sickCase.image), rois, load_model(run.dir, "cpu"))
    summary = pred.summary()
    side = sickCase.sickSide
    other = "left" if side == "right" else "right"
    for key in ("classifier_probability", "focal_residual_score"):
        del summary["sides"][other][key]
    res = analysis.addPredictionResults(sickCase.scan, pred.heatmap, pred.region, summary)
    fused = pred.sides[side]
    assert res.sides[side].classifierProbability == pytest.approx(fused.classifier_probability)
    tip = analysis.sideTexts(res)[side]["probabilityToolTip"]
    assert f"classifier alone gave {fused.classifier_probability:.2f}" in tip
    assert f"({fused.focal_residual_score:.3g})" in tip
    assert res.sides[other].classifierProbability is None
    assert analysis.sideTexts(res)[other]["probabilityToolTip"].startswith(
        "Anomaly probability of the classifier")


def test_the_panel_names_the_chosen_model_and_its_decision(trained_run, tmp_path):
    """One line under the model folder: modality, labels, decision threshold; for an export
    also where it came from; nothing for a folder that holds no model."""
    from paranasal_ssl.model_export import export_model

    run, results = trained_run
    info = json.loads((results["finetune_dir"] / "model.json").read_text())
    text = analysis.modelSummary(run.dir)
    assert text.startswith(f"CT model {info['name']}: fine-tuned on "
                           f"{info['n_train_sinuses']} labelled sinuses (100% of the labels)")
    assert f"anomalous from p = {info['threshold']:.2f}" in text
    assert analysis.modelSummary(results["finetune_dir"]) == text  # a fine-tune folder: same
    exported = export_model(run.dir, tmp_path / "export").path
    assert analysis.modelSummary(exported).endswith(f"; exported from {run.dir.resolve()}")
    assert analysis.modelSummary(tmp_path) == "" and analysis.modelSummary(None) == ""
