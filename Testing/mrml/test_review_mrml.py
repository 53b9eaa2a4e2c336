"""Case review against a real slicer-core scene: loading a case (scan, ROIs, heatmap, regions),
swapping cases without leaking nodes or subject-hierarchy items, unreadable scans skipped,
corrected boxes saved with the verdict, and export with a .seg.nrrd Slicer reads back."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from helpers.images import oblique_image
from paranasal_ssl.cli.main import build_parser
from paranasal_ssl.geometry import SinusROI, lps_to_ras
from paranasal_ssl.manifest import read_manifest, write_manifest
from paranasal_ssl.review.case_list import open_case_list
from paranasal_ssl.review.session import open_session
from ParanasalSSLLib import mrml_bridge as bridge
from ParanasalSSLLib import review

SHAPE = (20, 30, 40)  # [k, j, i]
SPACING = (0.7, 0.9, 2.5)


def _ras_of(image, i, j, k):
    return lps_to_ras(image.TransformIndexToPhysicalPoint([int(i), int(j), int(k)]))


def _write_case(root, case_id, seed, probs, boxNotes=()):
    """A scan and, beside it, what `paranasal-ssl predict` writes for it: heatmap and region
    images in the scan's geometry and summary.json (last)."""
    image = oblique_image(shape=SHAPE, spacing=SPACING, seed=seed)
    sitk.WriteImage(image, str(root / "scans" / f"{case_id}.nrrd"))
    heat = np.zeros(SHAPE, np.float32)
    heat[4:8, 5:12, 5:15] = 0.8
    heat[6, 8, 9] = 0.95
    heat[10:14, 15:25, 25:35] = 0.6
    region = np.zeros(SHAPE, np.uint8)
    # the image's i axis runs toward the patient's left (LPS-like): left = high columns
    region[(heat >= 0.5) & (np.arange(SHAPE[2]) >= 20)] = 1
    region[(heat >= 0.5) & (np.arange(SHAPE[2]) < 20)] = 2
    out = root / "preds" / case_id
    out.mkdir(parents=True)
    for name, array in (("heatmap", heat), ("region", region)):
        img = sitk.GetImageFromArray(array)
        img.CopyInformation(image)
        sitk.WriteImage(img, str(out / f"{name}.nii.gz"))
    rois = {"left": _ras_of(image, 30, 20, 12), "right": _ras_of(image, 10, 8, 6)}
    sides = {s: {"side": s, "probability": p, "call": "anomalous" if p > 0.65 else "normal",
                 "peak_ras": list(_ras_of(image, 30, 20, 12)) if s == "left" else
                 list(_ras_of(image, 9, 8, 6)), "peak_value": 0.9,
                 "region_volume_ml": float((region == (1 if s == "left" else 2)).sum())
                 * np.prod(SPACING) / 1000,
                 "roi": SinusROI.from_values(rois[s], [12, 14, 16]).to_dict()}
             for s, p in probs.items()}
    (out / "summary.json").write_text(json.dumps({
        "model": {"name": "run/m", "code_version": "0.1.0", "decision_threshold": 0.5,
                  "uncertain_band": [0.35, 0.65]},
        "region_threshold": 0.5, "sides": sides, "case_id": case_id,
        "heatmap": "heatmap.nii.gz", "region": "region.nii.gz",
        **({"box_notes": list(boxNotes)} if boxNotes else {})}))
    return image, rois


@pytest.fixture
def reviewSession(tmp_path):
    """Cases a, b (scan + prediction; list boxes for a only), broken (unreadable), c."""
    (tmp_path / "scans").mkdir()
    images = {}
    lines = ["case_id,image,side,roi_center_r,roi_center_a,roi_center_s,roi_size_r,"
             "roi_size_a,roi_size_s"]
    for seed, case_id in enumerate(("a", "broken", "b", "c")):
        if case_id == "broken":
            (tmp_path / "scans" / "broken.nrrd").write_text("NRRD0004\nnot really\n")
            lines.append("broken,scans/broken.nrrd,,,,,,,")
            continue
        notes = ["the left box lies 20 mm into the patient's right half"] if case_id == "b" \
            else []
        image, rois = _write_case(tmp_path, case_id, seed, {"left": 0.9, "right": 0.2}, notes)
        images[case_id] = image
        for side in ("left", "right"):
            box = ",".join(f"{v:.3f}" for v in rois[side]) + ",12,14,16" if case_id == "a" \
                else ",,,,,"
            lines.append(f"{case_id},scans/{case_id}.nrrd,{side},{box}")
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    return open_session(tmp_path / "cases.csv", "rad", tmp_path / "preds"), images


def _shItems(scene) -> int:
    """Number of subject-hierarchy items below the scene item."""
    sh = scene.GetSubjectHierarchyNode()
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    return ids.GetNumberOfIds()


def test_loading_a_case_shows_scan_rois_heatmap_and_regions(slicerApp, reviewSession):
    session, images = reviewSession
    reviewer = review.CaseReviewer(session)
    loaded = reviewer.step("first")
    assert loaded.caseId == "a" and session.current == "a"
    np.testing.assert_allclose(bridge.volumeIjkToWorld(loaded.scanNode),
                               bridge.ijkToRasFromImage(images["a"]), atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded.scanNode),
                                  sitk.GetArrayFromImage(images["a"]))
    for side in ("left", "right"):
        roi = bridge.sinusRoiFromRoiNode(loaded.roiNodes[side])
        np.testing.assert_allclose(roi.center, session.roi("a", side).center, atol=1e-3)
        np.testing.assert_allclose(roi.size, [12, 14, 16], atol=1e-6)
    heat = slicer.util.arrayFromVolume(loaded.results.heatmapNode)
    assert heat.max() == pytest.approx(0.95) and heat.shape == SHAPE
    segmentation = loaded.results.regionsNode.GetSegmentation()
    regionRight = sitk.GetArrayFromImage(sitk.ReadImage(
        str(session.prediction("a").region))) == 2
    segId = segmentation.GetSegmentIdBySegmentName("right sinus anomaly region")
    np.testing.assert_array_equal(
        bridge.arrayFromSegment(loaded.results.regionsNode, segId, loaded.scanNode),
        regionRight.astype(np.uint8))
    composite = slicerApp.sliceLogics["Red"].GetSliceCompositeNode()
    assert composite.GetBackgroundVolumeID() == loaded.scanNode.GetID()
    assert composite.GetForegroundVolumeID() == loaded.results.heatmapNode.GetID()
    assert loaded.results.sides["left"].probability == pytest.approx(0.9)
    sliceNode = slicerApp.sliceLogics["Red"].GetSliceNode()
    peak = reviewer.peakRas()
    assert sliceNode.GetSliceToRAS().GetElement(2, 3) == pytest.approx(peak[2], abs=1e-3)
    assert "Case 1 / 4: a (unreviewed)" in review.caseHeader(session)
    assert review.sideText(session, "a", "left") == "p 0.90 (anomalous), " + \
        f"{session.prediction('a').sides['left'].region_volume_ml:.2f} mL; not reviewed"


def test_a_side_without_residual_gets_no_peak_from_its_box_centre(slicerApp, reviewSession,
                                                                   tmp_path):
    """``predict`` writes a side whose heatmap is zero with its box centre as ``peak_ras`` and
    ``peak_value`` 0; that is no peak (as Analyze shows it): the side's peak is then looked up
    in its region (here not empty, so the heatmap's own maximum there)."""
    _, images = reviewSession
    summary = tmp_path / "preds" / "a" / "summary.json"
    data = json.loads(summary.read_text())
    data["sides"]["right"].update(peak_value=0.0,
                                  peak_ras=data["sides"]["right"]["roi"]["center_ras"])
    summary.write_text(json.dumps(data))
    session = open_session(tmp_path / "cases.csv", "rad", tmp_path / "preds")
    loaded = review.CaseReviewer(session).step("first")
    right = loaded.results.sides["right"].peakRas
    np.testing.assert_allclose(right, _ras_of(images["a"], 9, 8, 6), atol=1e-3)
    np.testing.assert_allclose(loaded.results.sides["left"].peakRas,
                               _ras_of(images["a"], 30, 20, 12), atol=1e-3)


def test_swapping_cases_leaks_no_nodes_and_skips_unreadable_scans(slicerApp, reviewSession):
    session, _ = reviewSession
    scene = slicerApp.scene
    reviewer = review.CaseReviewer(session)
    reviewer.step("first")
    reviewer.unload()  # the heat colour table is made once and stays
    baseline = (scene.GetNumberOfNodes(), _shItems(scene))
    reviewer.step("first")
    counts = (scene.GetNumberOfNodes(), _shItems(scene))
    assert counts[0] > baseline[0]
    loaded = reviewer.step("next")  # 'broken' cannot be read: marked and skipped
    assert loaded.caseId == "b" and session.status("broken") == "unavailable"
    assert "cannot read" in session.problem("broken")
    for move in ("previous", "next", "previous", "next"):
        loaded = reviewer.step(move)
        assert loaded.caseId == ("a" if move == "previous" else "b")
        assert (scene.GetNumberOfNodes(), _shItems(scene)) == counts
    assert reviewer.step("next").caseId == "c" and reviewer.step("next") is None
    assert reviewer.loaded.caseId == "c"  # past the end: the last case stays on screen
    reviewer.loadCase("a")
    reviewer.unload()
    assert (scene.GetNumberOfNodes(), _shItems(scene)) == baseline
    assert reviewer.ownedNodes() == []


def test_verdicts_save_the_box_as_corrected_on_screen(slicerApp, reviewSession):
    session, _ = reviewSession
    reviewer = review.CaseReviewer(session)
    loaded = reviewer.loadCase("a")
    moved = SinusROI.from_values(session.roi("a", "left").center + [2.0, -1.5, 0.5],
                                 [13, 14, 18])
    bridge.updateRoiNodeFromSinusRoi(loaded.roiNodes["left"], moved)
    reviewer.record("left", verdict="agree", heatmap_on_target=True)
    reviewer.record("right", verdict="anomalous", anomaly_type="polyp", comment="small")
    v = session.verdict("a", "left")
    assert v.label == 1 and v.heatmap_on_target is True
    np.testing.assert_allclose(v.roi.center, moved.center, atol=1e-3)
    np.testing.assert_allclose(v.roi.size, moved.size, atol=1e-3)
    assert session.verdict("a", "right").roi is None  # untouched box: not a correction
    assert session.status("a") == "reviewed"
    # case b has no list boxes: the prediction's are shown; a box placed elsewhere is adopted
    loaded = reviewer.loadCase("b")
    assert set(loaded.roiNodes) == {"left", "right"}
    placed = bridge.addRoiNode(SinusROI.from_values([1, 2, 3], [10, 10, 10]), "placed")
    reviewer.adoptRoiNode("left", placed)
    reviewer.recordBoth(verdict="normal")
    np.testing.assert_allclose(session.verdict("b", "left").roi.center, [1, 2, 3], atol=1e-3)
    reviewer.unload()
    assert placed.GetScene() is None  # removed with its case
    reopened = open_session(session.case_list.source, "rad")
    again = review.CaseReviewer(reopened).loadCase("a")
    np.testing.assert_allclose(bridge.sinusRoiFromRoiNode(again.roiNodes["left"]).center,
                               moved.center, atol=1e-3)


def test_export_writes_labels_and_segmentations_slicer_reads_back(slicerApp, reviewSession,
                                                                  secondScene, tmp_path):
    session, _ = reviewSession
    reviewer = review.CaseReviewer(session)
    reviewer.loadCase("a")
    reviewer.recordBoth(verdict="agree")
    count = slicerApp.scene.GetNumberOfNodes()
    written = reviewer.export(tmp_path / "export")
    assert slicerApp.scene.GetNumberOfNodes() == count  # temporary nodes removed
    labels = read_manifest(written["labels"], require_labels=True)
    assert [(r.key, r.label) for r in labels] == [("a:left", 1), ("a:right", 0)]
    seg = tmp_path / "export" / "images" / "a_regions.seg.nrrd"
    assert seg in written["images"] and (tmp_path / "export" / "images" /
                                         "a_heatmap.nrrd").is_file()
    node = secondScene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = secondScene.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(seg))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(session.prediction("a").region)))
    reference = bridge.addVolumeFromImage(sitk.ReadImage(str(session.prediction("a").region)),
                                          "ref")
    for code, side in ((1, "left"), (2, "right")):
        segId = segmentation.GetSegmentIdBySegmentName(f"{side} sinus anomaly region")
        np.testing.assert_array_equal(bridge.arrayFromSegment(node, segId, reference),
                                      (region == code).astype(np.uint8))


def test_job_commands_are_accepted_by_the_real_command_line():
    parser = build_parser()
    args = parser.parse_args(review.predictCommand("m", "cases.csv", "preds", "cpu"))
    assert (args.command, str(args.cases), str(args.out)) == ("predict", "cases.csv", "preds")
    args = parser.parse_args(review.finetuneCommand("run", "labels.csv", "reviewed"))
    assert (args.command, str(args.labels), args.label_fraction, args.name, args.no_default) == (
        "finetune", "labels.csv", 1.0, "reviewed", True)


# -- the Review section's wiring --------------------------------------------------------------
# The panel's PythonQt widgets are stand-ins (Testing/mrml/conftest.py) named as in the .ui.

@pytest.fixture
def panel(standIns, reviewSession, tmp_path):
    from ParanasalSSLLib import review_panel

    session, _ = reviewSession
    params = types.SimpleNamespace(
        reviewCaseList=session.case_list.source, reviewReader="rad", reviewSeries="",
        reviewSort="list",
        reviewPredictions=session.predictions.folder, reviewFilter="all",
        reviewExportImages=True, heatmapThreshold=0.5, heatmapOpacity=0.6, inputVolume=None,
        leftRoi=None, rightRoi=None, modelFolder=tmp_path / "model", device="cpu",
        trainingRunFolder=tmp_path / "run")
    jobs = []
    module = types.SimpleNamespace(
        ui=standIns.ui, _parameterNode=params,
        logic=types.SimpleNamespace(results=None), showSummary=lambda res: None, parent=None,
        jobsPanel=types.SimpleNamespace(  # the one-job-at-a-time panel: records what starts
            running=lambda: False,
            toggle=lambda make, button, text: jobs.append((make(), button))))
    p = review_panel.ReviewPanel(module)
    p.setup()
    p.jobs, p.keys = jobs, standIns.shortcuts  # shortcut stand-ins by key
    return p


def test_the_review_section_records_navigates_exports_and_starts_the_loop(panel, tmp_path):
    ui, params = panel.ui, panel.params
    panel.updateButtons()
    assert ui.reviewOpenButton.enabled and not ui.reviewNextButton.enabled
    ui.reviewOpenButton.emit("clicked(bool)", False)
    session = panel.reviewer.session
    assert ui.reviewCaseLabel.text.startswith("Case 1 / 4: a") and params.inputVolume
    ui.leftAgreeButton.emit("clicked(bool)", False)
    ui.leftTypeComboBox.currentIndex = 2  # polyp
    ui.leftOnTargetComboBox.currentIndex = 2  # no
    ui.leftCommentLineEdit.text = "rim"
    ui.leftCommentLineEdit.emit("editingFinished()")
    v = session.verdict("a", "left")
    assert (v.verdict, v.label, v.anomaly_type, v.heatmap_on_target, v.comment) == (
        "agree", 1, "polyp", False, "rim")
    panel.keys["4"].emit("activated()")  # right anomalous
    assert session.status("a") == "reviewed" and "reader: anomalous" in \
        ui.rightReviewSideLabel.text
    panel.keys["N"].emit("activated()")  # 'broken' is skipped
    assert panel.reviewer.loaded.caseId == "b" and session.verdict("b", "left") is None
    assert ui.reviewStatusLabel.text == ("Check the box: the left box lies 20 mm into the "
                                         "patient's right half")  # predict's box_notes
    assert ui.leftTypeComboBox.currentIndex == 0 and ui.leftCommentLineEdit.text == ""
    panel.keys["X"].emit("activated()")
    assert session.status("b") == "flagged"
    params.reviewSort = "probability"
    panel.onParameterNodeModified()
    assert session.view["sort"] == "probability"
    panel.keys["A"].emit("activated()")
    panel.onExport()
    assert (tmp_path / "x" / "labels.csv").is_file() and ui.reviewFinetuneButton.enabled
    assert (tmp_path / "x" / "images" / "a_regions.seg.nrrd").is_file()
    panel.onPredict()
    panel.onFinetune()
    parser = build_parser()
    (predict,), button = panel.jobs[0]
    assert button is ui.reviewPredictButton
    args = parser.parse_args(predict)
    listed = open_case_list(args.cases)  # boxes left empty are suggested by predict itself
    assert sum(len(c.sides) for c in listed.cases) == 6  # three readable cases, two sides each
    (tune, again), _ = panel.jobs[1]
    tuned = parser.parse_args(tune)
    assert str(tuned.labels) == str(tmp_path / "x" / "labels.csv")
    assert parser.parse_args(again).model.name == tuned.name
    panel.onJobFinished(ui.reviewFinetuneButton, True)
    assert params.modelFolder.name == tuned.name and panel.reviewer.loaded.caseId == "b"


def test_the_model_is_evaluated_on_the_readers_labels(panel, trained_run, tiny_cohort):
    """Export, then *Evaluate on labels*: evaluate --manifest of the model folder on the
    exported labels, and its result (a real results.json) in one line."""
    from paranasal_ssl.cli.main import build_parser
    from paranasal_ssl.external_eval import evaluate_on_manifest

    ui, params = panel.ui, panel.params
    panel.updateButtons()
    assert not ui.reviewEvaluateButton.enabled  # nothing exported yet
    ui.reviewOpenButton.emit("clicked(bool)", False)
    panel.keys["A"].emit("activated()")
    panel.onExport()
    assert ui.reviewEvaluateButton.enabled
    panel.onEvaluate()
    (command,), button = panel.jobs[-1]
    assert button is ui.reviewEvaluateButton
    args = build_parser().parse_args(command)
    assert args.manifest == panel.labelsCsv and args.run == params.modelFolder
    params.modelFolder = trained_run[0].dir  # the job's result: a real evaluation there
    evaluate_on_manifest(params.modelFolder, tiny_cohort, args.out, device="cpu", n_boot=20)
    panel.onJobFinished(ui.reviewEvaluateButton, True)
    assert ui.reviewStatusLabel.text.startswith("Model vs your labels on 28 sides: AUPRC ")
    records = read_manifest(tiny_cohort)
    positives = sum(r.label for r in records)  # under 10 of a class: the line says "rough"
    assert ("rough until 10 of each" in ui.reviewStatusLabel.text) == (
        min(positives, 28 - positives) < 10)
    cases = {next(r.case_id for r in records if r.label == label) for label in (0, 1)}
    few = [r for r in records if r.case_id in cases]
    write_manifest(few, args.out.parent / "few_labels.csv")
    results = evaluate_on_manifest(params.modelFolder, args.out.parent / "few_labels.csv",
                                   args.out.parent / "few_eval", device="cpu", n_boot=20)
    assert results["n_sinuses"] == len(few) <= 4  # a reader who labelled 1-2 cases: rough
    assert "sides: rough until 10 of each are labelled" in review.evaluationText(results)
    assert str(args.out / "report.md") in ui.reviewStatusLabel.text


def test_a_tilted_dicom_case_is_shown_resampled_and_says_so(slicerApp, tmp_path):
    """A gantry-tilted series in a review list: the volume on screen is the regular grid
    ``read_scan`` makes (where the slices lie) and the case carries the note the panel shows."""
    from helpers.images import tilted_copy, write_dicom_series
    from paranasal_ssl.scan_io import read_scan

    scan = oblique_image(shape=SHAPE, spacing=SPACING, degrees=0.0)
    tilted, positions = tilted_copy(scan, 15.0)
    write_dicom_series(tilted, tmp_path / "scans" / "t", positions=positions)
    (tmp_path / "cases.csv").write_text("case_id,image,side\nt,scans/t,left\n")
    reviewer = review.CaseReviewer(open_session(tmp_path / "cases.csv", "rad"))
    loaded = reviewer.step("first")
    expected = read_scan(tmp_path / "scans" / "t")
    assert "15.0 deg" in loaded.scanNotes[0] and "gantry tilt" in loaded.scanNotes[0]
    np.testing.assert_allclose(bridge.volumeIjkToWorld(loaded.scanNode),
                               bridge.ijkToRasFromImage(expected), atol=1e-5)
    assert slicer.util.arrayFromVolume(loaded.scanNode).shape[1] > SHAPE[1]  # widened


def test_a_folder_of_whole_studies_is_reviewed_by_one_series_of_each(panel, tmp_path):
    """Studies as exported (a scout and a CT series per CD): with *Series* set, the section
    opens a case list of each study's matching series beside the folder, and shows that."""
    from helpers.images import write_dicom_cd, write_dicom_series

    ui, params = panel.ui, panel.params
    bones = {}
    for number, name in enumerate(("p1", "p2")):
        scout = write_dicom_series(oblique_image(shape=(3, 24, 20), seed=number),
                                   tmp_path / "staging" / name / "scout",
                                   description="Topogram", series_uid=f"1.2.9.{number}.1")
        bones[name] = oblique_image(shape=SHAPE, spacing=SPACING, seed=10 + number)
        ct = write_dicom_series(bones[name], tmp_path / "staging" / name / "ct",
                                description="Sinus BONE", series_uid=f"1.2.9.{number}.2")
        write_dicom_cd([scout, ct], tmp_path / "studies" / name)
    params.reviewCaseList, params.reviewPredictions = tmp_path / "studies", None
    params.reviewSeries = "bone"
    ui.reviewOpenButton.emit("clicked(bool)", False)
    session = panel.reviewer.session
    assert session.case_list.source == tmp_path / "studies-series-bone.csv"
    assert session.case_list.ids == ["p1", "p2"] and panel.reviewer.loaded.caseId == "p1"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(panel.reviewer.loaded.scanNode),
                                  sitk.GetArrayFromImage(bones["p1"]))
