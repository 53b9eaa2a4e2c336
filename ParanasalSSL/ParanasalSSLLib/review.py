"""Case review in the MRML scene: load a case of a review session (scan, sinus ROIs, heatmap
and regions of its precomputed prediction), swap cases without leaking nodes, record the
reader's verdicts (with the ROI as it is on screen), and export labels plus ``.seg.nrrd``
segmentations. The review state itself is the core's ``paranasal_ssl.review.session``.

Every node a loaded case owns carries the attribute ``ParanasalSSL.ReviewCase`` = case id;
unloading removes exactly those nodes (with their display and storage nodes) and the results
folder made for them, so moving through hundreds of cases keeps the scene the same size.
No Qt here: the widget forwards to ``CaseReviewer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import slicer

from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import REGION_CODES, SIDES, SinusROI
from ParanasalSSLLib import heatmap_display, mrml_bridge, results

CASE_ATTRIBUTE = "ParanasalSSL.ReviewCase"
ROI_COLORS = {"left": (0.98, 0.55, 0.10), "right": (0.10, 0.65, 0.95)}
ROI_TOLERANCE_MM = 0.05  # a box moved or resized by more than this counts as corrected


def roiNodeName(side: str) -> str:
    return f"{side} maxillary sinus"


@dataclass
class LoadedCase:
    """The nodes of the case on screen; ``shownRois``: the boxes as loaded (RAS mm)."""

    caseId: str
    scanNode: object
    roiNodes: Dict[str, object] = field(default_factory=dict)
    results: Optional[results.AnalysisResults] = None
    shownRois: Dict[str, Optional[SinusROI]] = field(default_factory=dict)
    scanNotes: List[str] = field(default_factory=list)  # what reading changed (a tilt resampled)
    boxNotes: List[str] = field(default_factory=list)  # the prediction's: a box on the other side


class CaseReviewer:
    """Shows the cases of a ``ReviewSession`` one at a time and records verdicts."""

    def __init__(self, session, scene=None, threshold: Optional[float] = None,
                 opacity: float = 0.6):
        self.session = session
        self.scene = scene or slicer.mrmlScene
        self.threshold = threshold
        self.opacity = opacity
        self.loaded: Optional[LoadedCase] = None

    # -- loading ---------------------------------------------------------------------------

    def loadCase(self, caseId: str) -> Optional[LoadedCase]:
        """Replace the case on screen by ``caseId`` (also made the session's current case).

        Returns None, after marking the case unavailable in the session, if its scan is
        missing or unreadable; the previous case is unloaded either way.
        """
        from paranasal_ssl.scan_io import read_scan, scan_notes

        self.unload()
        self.session.go_to(caseId)
        case = self.session.case_list.case(caseId)
        try:
            if case.problem:
                raise InputError(case.image, case.problem)
            image = read_scan(case.image)
        except InputError as exc:
            self.session.mark_unavailable(caseId, str(exc))
            return None
        if self.session.state(caseId).problem:
            self.session.mark_unavailable(caseId, None)  # readable again
        scanNode = mrml_bridge.addVolumeFromImage(image, caseId)
        self._own(scanNode, caseId)
        loaded = LoadedCase(caseId, scanNode, scanNotes=scan_notes(image))
        self.loaded = loaded
        for side in case.sides:
            roi = self.session.roi(caseId, side)
            loaded.shownRois[side] = roi
            if roi is not None:
                loaded.roiNodes[side] = self._own(
                    mrml_bridge.addRoiNode(roi, roiNodeName(side), ROI_COLORS[side]), caseId)
        loaded.results = self._addPrediction(image, scanNode, caseId)
        pred = self.session.prediction(caseId)
        loaded.boxNotes = list(pred.box_notes) if pred is not None else []
        self._showScan(loaded)
        return loaded

    def _addPrediction(self, image, scanNode, caseId: str):
        import SimpleITK as sitk

        pred = self.session.prediction(caseId)
        if pred is None or pred.heatmap is None or not Path(pred.heatmap).is_file():
            return None
        heat = _onGrid(sitk.ReadImage(str(pred.heatmap)), image, nearest=False)
        masks = {}
        if pred.region is not None and Path(pred.region).is_file():
            region = _onGrid(sitk.ReadImage(str(pred.region)), image, nearest=True)
            masks = {s: (region == REGION_CODES[s]).astype(np.uint8) for s in pred.sides}
        threshold = pred.region_threshold if self.threshold is None else self.threshold
        res = results.addAnalysisResults(
            scanNode, heat.astype(np.float32), masks,
            {s: r.probability for s, r in pred.sides.items()}, threshold, self.opacity,
            calls={s: r.call for s, r in pred.sides.items()},
            # a side without residual has no peak (its peak_ras is the box centre), as in
            # analysis.addPredictionResults
            peaksRas={s: r.peak_ras for s, r in pred.sides.items() if r.peak_value > 0})
        for node in res.nodes:
            self._own(node, caseId)
        return res

    def _showScan(self, loaded: LoadedCase) -> None:
        composites = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        composites.UnRegister(None)
        for i in range(composites.GetNumberOfItems()):
            composites.GetItemAsObject(i).SetBackgroundVolumeID(loaded.scanNode.GetID())
        if getattr(slicer, "app", None) is not None:
            slicer.app.applicationLogic().FitSliceToAll()
        target = self.peakRas() if loaded.results is not None else None
        if target is None:
            rois = [r for r in loaded.shownRois.values() if r is not None]
            target = rois[0].center if rois else None
        if target is not None:
            heatmap_display.jumpSlicesToRas(target, self.scene)

    def _own(self, node, caseId: str):
        node.SetAttribute(CASE_ATTRIBUTE, caseId)
        return node

    def ownedNodes(self) -> List:
        """Every node in the scene that belongs to a review case."""
        return [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())
                if self.scene.GetNthNode(i).GetAttribute(CASE_ATTRIBUTE)]

    def unload(self) -> None:
        """Remove the case on screen (and any node a review case left behind)."""
        if self.loaded is not None:
            self.syncRois()
        shNode = self.scene.GetSubjectHierarchyNode()
        owned = self.ownedNodes()
        items = [shNode.GetItemByDataNode(node) for node in owned]
        parents = {shNode.GetItemParent(i) for i in items if i != shNode.GetInvalidItemID()}
        folders = [p for p in parents if shNode.GetItemName(p) == results.FOLDER_NAME]
        mrml_bridge.removeNodes(owned)  # with their subject-hierarchy items
        for folder in folders:  # the results folder made for the case
            mrml_bridge.removeFolderIfEmpty(self.scene, folder)
        self.loaded = None

    # -- ROIs and verdicts --------------------------------------------------------------------

    def adoptRoiNode(self, side: str, node) -> None:
        """Make a box placed or suggested on the loaded case (e.g. in the Inputs section) part
        of the case: removed with it, and saved as the reader's box."""
        if self.loaded is None or node is None:
            return
        self._own(node, self.loaded.caseId)
        self.loaded.roiNodes[side] = node

    def syncRois(self) -> None:
        """Save every box the reader moved, resized or placed on the loaded case."""
        loaded = self.loaded
        if loaded is None:
            return
        for side, node in list(loaded.roiNodes.items()):
            if node.GetScene() is None:
                continue
            try:
                roi = mrml_bridge.sinusRoiFromRoiNode(node)
            except InputError:
                continue  # not placed yet
            if not _sameRoi(roi, loaded.shownRois.get(side)):
                self.session.record(loaded.caseId, side, roi=roi)
                loaded.shownRois[side] = roi

    def record(self, side: str, **fields):
        """Record verdict / anomaly_type / heatmap_on_target / comment for ``side`` of the
        loaded case (saved at once), after saving a corrected box."""
        if self.loaded is None:
            raise InputError(None, "no case loaded", expected="open a case list first")
        self.syncRois()
        return self.session.record(self.loaded.caseId, side, **fields)

    def recordBoth(self, **fields) -> None:
        for side in self.session.case_list.case(self.loaded.caseId).sides:
            self.record(side, **fields)

    def peakRas(self, side: Optional[str] = None):
        """RAS mm of the strongest residual (of ``side``, else of the whole heatmap)."""
        res = self.loaded.results if self.loaded else None
        if res is None:
            return None
        if side is not None and side in res.sides and res.sides[side].peakRas is not None:
            return res.sides[side].peakRas
        return res.strongestPeakRas()

    # -- navigation ---------------------------------------------------------------------------

    def step(self, move: str) -> Optional[LoadedCase]:
        """``move``: next / previous / next_unreviewed / first. Cases whose scan cannot be read
        are marked and skipped. Returns the loaded case, or None at the end of the view."""
        for _ in range(len(self.session.case_list) + 1):
            caseId = getattr(self.session, move)()
            if caseId is None:
                return None
            loaded = self.loadCase(caseId)
            if loaded is not None:
                return loaded
            if move == "first":
                move = "next"
        return None

    # -- export ---------------------------------------------------------------------------

    def export(self, folder, images: bool = True, includeFlagged: bool = False) -> dict:
        """``labels.csv`` (for ``finetune --labels``), ``disagreements.csv`` and, with
        ``images``, per case the heatmap (.nrrd) and the regions as ``.seg.nrrd`` (a DICOM
        case's also as a DICOM SEG; ``notes`` says what could not be written)."""
        from paranasal_ssl.review.export import export_session

        self.syncRois()
        folder = Path(folder)
        result = export_session(self.session, folder / "labels.csv",
                                folder / "disagreements.csv",
                                folder / "images" if images else None, includeFlagged)
        segs = []
        if images:
            for caseId in sorted({r.case_id for r in result.records}):
                path = exportSegmentation(self.session, caseId, folder / "images", self.scene)
                if path is not None:
                    segs.append(path)
        return {"labels": result.labels, "disagreements": result.disagreements,
                "records": len(result.records), "nDisagreements": result.n_disagreements,
                "images": list(result.images) + segs, "skipped": result.skipped,
                "notes": list(result.notes)}


def exportSegmentation(session, caseId: str, folder, scene=None) -> Optional[Path]:
    """The case's predicted regions as ``<case>_regions.seg.nrrd`` (one segment per side),
    written through a segmentation storage node; temporary nodes are removed."""
    import SimpleITK as sitk

    pred = session.prediction(caseId)
    if pred is None or pred.region is None or not Path(pred.region).is_file():
        return None
    scene = scene or slicer.mrmlScene
    region = sitk.ReadImage(str(pred.region))
    reference = mrml_bridge.addVolumeFromImage(region, f"{caseId} region grid")
    segmentation = None
    try:
        segments = [(REGION_CODES[s], f"{s} sinus anomaly region", ROI_COLORS[s])
                    for s in SIDES if s in pred.sides]
        segmentation = mrml_bridge.addSegmentationFromLabelArray(
            sitk.GetArrayFromImage(region), reference, f"{caseId} anomaly regions", segments)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return results.writeNode(segmentation, folder / f"{_safe(caseId)}_regions.seg.nrrd")
    finally:
        mrml_bridge.removeNodes([segmentation, reference])


def predictCommand(modelFolder, caseList, predictionsFolder, device: str = "auto") -> List[str]:
    """``paranasal-ssl predict`` of a whole case list in the background (JSON progress); sides
    without a box get one suggested there (``review.rois.predict_case_list``)."""
    return ["predict", "--model", str(modelFolder), "--cases", str(caseList), "--out",
            str(predictionsFolder), "--device", device, "--progress", "json"]


def finetuneCommand(runFolder, labelsCsv, name: str, device: str = "auto") -> List[str]:
    """``paranasal-ssl finetune`` on exported review labels (all of them), kept beside the
    run's other models (the run's default model is not changed)."""
    return ["finetune", "--run", str(runFolder), "--labels", str(labelsCsv),
            "--label-fraction", "1", "--name", name, "--no-default", "--device", device,
            "--progress", "json"]


def evaluateCommand(modelFolder, labelsCsv, outFolder, device: str = "auto") -> List[str]:
    """``paranasal-ssl evaluate --manifest`` of the model on exported review labels: each scan
    analysed as predict does, the metrics written to ``outFolder``."""
    return ["evaluate", "--run", str(modelFolder), "--manifest", str(labelsCsv), "--out",
            str(outFolder), "--device", device, "--progress", "json"]


def evaluationText(results: dict) -> str:
    """One line on an evaluation against the reader's labels (``external_eval`` results)."""
    from paranasal_ssl.evaluation.classification import MIN_EVALUATION_PER_CLASS
    from paranasal_ssl.external_eval import MODEL_ROW

    m = results["methods"][MODEL_ROW]
    low, high = m["auprc_ci"]
    text = (f"Model vs your labels on {results['n_sinuses']} sides: AUPRC {m['auprc']:.2f} "
            f"[{low:.2f}, {high:.2f}] (prevalence {results['prevalence']:.2f}), AUROC "
            f"{m['auroc']:.2f}")
    if results.get("skipped"):
        text += f"; {len(results['skipped'])} case(s) left out"
    positives, normals = m.get("n_pos"), results["n_sinuses"] - (m.get("n_pos") or 0)
    if positives is not None and min(positives, normals) < MIN_EVALUATION_PER_CLASS:
        text += (f"; only {positives} anomalous and {normals} normal sides: rough until "
                 f"{MIN_EVALUATION_PER_CLASS} of each are labelled")
    return text + f" - report: {results.get('folder', '')}"


def caseHeader(session) -> str:
    """'Case 3 / 12: case0002 (reviewed) - 5 reviewed, 1 flagged, 6 to go'."""
    if session.current is None:
        return "No case"
    place, total = session.position()
    counts = session.counts()
    where = f"{place} / {total}" if place else f"(filtered out) / {total}"
    return (f"Case {where}: {session.current} ({session.status(session.current)}) - "
            f"{counts['reviewed']} reviewed, {counts['flagged']} flagged, "
            f"{counts['unreviewed']} to go")


def sideText(session, caseId: str, side: str) -> str:
    """The model's numbers and the recorded verdict of one side, in one line."""
    pred = session.prediction(caseId)
    r = pred.sides.get(side) if pred else None
    model = (f"p {r.probability:.2f} ({r.call}), {r.region_volume_ml:.2f} mL" if r
             else "no prediction")
    v = session.verdict(caseId, side)
    if v is None or v.verdict is None:
        return f"{model}; not reviewed"
    label = {1: "anomalous", 0: "normal"}.get(v.label, "-")
    kind = f" ({v.anomaly_type})" if v.anomaly_type else ""
    return f"{model}; reader: {v.verdict} -> {label}{kind}"


def _onGrid(image, reference, nearest: bool) -> np.ndarray:
    """``image`` as a ``[k, j, i]`` array on ``reference``'s grid (resampled if it differs)."""
    import SimpleITK as sitk

    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6))
    if not same:
        image = sitk.Resample(image, reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(image)


def _sameRoi(a: Optional[SinusROI], b: Optional[SinusROI]) -> bool:
    if a is None or b is None:
        return a is b
    return (np.allclose(a.center, b.center, atol=ROI_TOLERANCE_MM)
            and np.allclose(a.size, b.size, atol=ROI_TOLERANCE_MM)
            and np.allclose(a.axes, b.axes, atol=1e-4))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "case"
