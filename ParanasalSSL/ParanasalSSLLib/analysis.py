"""The module's two scan-level actions on MRML nodes: suggest the sinus ROIs, and analyse the
scan with a trained model into result nodes; plus what the panel says about both.

The analysis runs in two ways with the same inputs and the same result nodes:
``analyzeScan`` calls ``paranasal_ssl.inference.predict_scan`` in this process (Slicer's Python
console, scripts), ``analysis_job.AnalysisJob`` runs ``paranasal_ssl predict`` as a background
process (the module's Analyze button: Slicer never freezes). Both check the inputs here first and
build the nodes with ``addPredictionResults``: all of them, or none.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

import numpy as np

from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import REGION_CODES, check_sides_in_place
from ParanasalSSLLib import mrml_bridge, results, warped_volume

if TYPE_CHECKING:  # scipy (through roi_suggest) may not be installed when the module loads
    import concurrent.futures

    import SimpleITK as sitk

    from paranasal_ssl.geometry import SinusROI
    from paranasal_ssl.roi_suggest import RoiSuggestion

SIDES = ("left", "right")
ROI_COLORS = {"left": (0.98, 0.55, 0.10), "right": (0.10, 0.65, 0.95)}
BADGE_COLORS = {"normal": "#2e7d32", "uncertain": "#b26a00", "anomalous": "#c62828"}
DEFAULT_THRESHOLD = 0.5  # heatmap value from which voxels form the region (the core's default)


def roiNodeName(side: str) -> str:
    return f"{side} maxillary sinus"


# -- ROI suggestion ---------------------------------------------------------------------------


_suggestionPool = None  # one worker thread, made on first use


def startRoiSuggestion(volumeNode) -> concurrent.futures.Future:
    """Suggest both sinus boxes on ``volumeNode`` in a worker thread, so the UI keeps
    responding (0.2-1.3 s: on a field cut close around the face the head's yaw and roll are
    searched by mirror symmetry). The scan is read from the node here, on the calling (main)
    thread; the worker touches no MRML. The future's result is a ``RoiSuggestion``; place it
    with ``placeSuggestedRois`` on the main thread."""
    import concurrent.futures

    from paranasal_ssl.roi_suggest import suggest_rois

    global _suggestionPool
    image = scanImage(volumeNode)
    if _suggestionPool is None:
        _suggestionPool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ParanasalSSL-suggest")
    return _suggestionPool.submit(suggest_rois, image)


def placeSuggestedRois(suggestion: RoiSuggestion,
                       roiNodes: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
    """Put ``suggestion``'s boxes into ``roiNodes`` (updated in place) or into new markups ROI
    nodes; returns the ROI node per side."""
    nodes: Dict[str, object] = {}
    for side in SIDES:
        node = (roiNodes or {}).get(side)
        if node is None:
            node = mrml_bridge.addRoiNode(suggestion.rois[side], roiNodeName(side),
                                          ROI_COLORS[side])
        else:
            mrml_bridge.updateRoiNodeFromSinusRoi(node, suggestion.rois[side])
        nodes[side] = node
    return nodes


def suggestRoiNodes(volumeNode, roiNodes: Optional[Mapping[str, object]] = None
                    ) -> Tuple[RoiSuggestion, Dict[str, object]]:
    """Suggest both sinus boxes on ``volumeNode`` and place them (``placeSuggestedRois``),
    waiting for the result: for scripts and tests; the widget uses ``startRoiSuggestion``.
    Returns the suggestion and the ROI node per side."""
    suggestion = startRoiSuggestion(volumeNode).result()
    return suggestion, placeSuggestedRois(suggestion, roiNodes)


def suggestionText(suggestion: RoiSuggestion) -> str:
    """One line for the widget: how sure the suggestion is, and why."""
    if suggestion.confidence == "high":
        return "Both sinuses found (air cavities). Check the boxes."
    return "Low confidence: " + "; ".join(suggestion.notes)


# -- inputs -----------------------------------------------------------------------------------


def modelFolderProblem(modelDir) -> Optional[str]:
    """Why ``modelDir`` cannot be a trained model (None if it may be one). A cheap look at the
    folder, without torch: the background process checks the checkpoints themselves."""
    if modelDir is None or str(modelDir) in ("", "."):
        return "no model folder selected"
    folder = Path(modelDir)
    if not folder.is_dir():
        return "the model folder does not exist"
    if not (folder / "model.json").is_file():
        return ("the model folder holds no trained model (no model.json): choose a run folder "
                "or its finetune/<name>, or train a demo model")
    return None


def modelSummary(modelDir) -> str:
    """One line on the chosen model for the panel ('' if it cannot be read): modality, name,
    labels it was fine-tuned on, its decision and, for an export, where it came from. Reads
    two small JSON files (no torch), so the panel can call it on every change."""
    import json

    folder = Path(modelDir) if modelDir is not None else None
    try:
        if folder is None or modelFolderProblem(folder):
            return ""
        name = json.loads((folder / "model.json").read_text(encoding="utf-8")).get("finetune")
        fine = folder / "finetune" / name if name else folder  # a run, or RUN/finetune/<name>
        info = json.loads((fine / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return ""
    fraction = info.get("label_fraction")
    text = (f"{str(info.get('modality', '?')).upper()} model {info.get('name', fine.name)}: "
            f"fine-tuned on {info.get('n_train_sinuses', '?')} labelled sinuses"
            + (f" ({fraction:.0%} of the labels)" if isinstance(fraction, (int, float)) else "")
            + f", anomalous from p = {float(info.get('threshold', 0.5)):.2f}"
            + ("; probability fused with the focal residual score"
               if info.get("residual_fusion") else ""))
    exported = folder / "EXPORT.json"
    if exported.is_file():
        try:
            source = json.loads(exported.read_text(encoding="utf-8")).get("exported_from")
        except ValueError:
            source = None
        text += f"; exported from {source}" if source else "; an export"
    return text


def inputProblems(volumeNode, roiNodes: Mapping[str, object], modelDir) -> List[str]:
    """What is missing before Analyze can run, in words for the Apply button's tooltip."""
    problems = []
    if volumeNode is None:
        problems.append("select a scan")
    if not any(node is not None for node in roiNodes.values()):
        problems.append("place a box on at least one maxillary sinus (Place or Suggest ROIs)")
    modelProblem = modelFolderProblem(modelDir)
    if modelProblem == "no model folder selected":
        problems.append("select a model folder, or train a demo model (Training section)")
    elif modelProblem:
        problems.append(modelProblem)
    return problems


def problemsText(problems: List[str]) -> str:
    return ("To analyse: " + "; ".join(problems) + ".") if problems else ""


def sinusRois(volumeNode, roiNodes: Mapping[str, object]) -> Dict[str, SinusROI]:
    """The placed ROI boxes by side (RAS world mm). Raises ``InputError`` if there is none or a
    box has no size yet."""
    rois = {side: mrml_bridge.sinusRoiFromRoiNode(node)
            for side, node in roiNodes.items() if node is not None}
    if not rois:
        raise InputError(volumeNode.GetName() if volumeNode else None, "no sinus ROI",
                         field="roi", expected="a left and/or right maxillary sinus box")
    check_sides_in_place(rois, volumeNode.GetName() if volumeNode else None)
    return rois


def scanImage(volumeNode) -> sitk.Image:
    """The volume as a SimpleITK image in world geometry, refused (``InputError`` naming the
    node) if the model cannot use it: no voxels, several components, a single slice, NaNs;
    or naming its file if it was loaded from a NIfTI cut short (Slicer reads one as ITK does,
    the missing voxels zero)."""
    from paranasal_ssl.nifti_header import check_complete
    from paranasal_ssl.scan_io import check_scan

    if volumeNode is None:
        raise InputError(None, "no scan selected", expected="a head CT or MRI volume")
    storage = volumeNode.GetStorageNode()
    fileName = storage.GetFileName() if storage is not None else None
    if fileName and Path(fileName).is_file():
        check_complete(fileName)
    image = mrml_bridge.imageFromVolumeNode(volumeNode)
    check_scan(image, volumeNode.GetName())
    return image


# -- analysis ---------------------------------------------------------------------------------


def analyzeScan(volumeNode, roiNodes: Mapping[str, object], model, device: str = "auto",
                threshold: Optional[float] = None, opacity: float = 0.6
                ) -> results.AnalysisResults:
    """Analyse the scan in THIS process (it waits: for scripts and the Python console) for every
    side that has an ROI node, and show the results.

    ``model``: a model folder (or a loaded ``ModelBundle``). ``threshold``: heatmap value from
    which voxels form the region (default 0.5); the heatmap is shown from the same value.
    Earlier results of the scan are replaced; nothing is added if anything fails.
    """
    from paranasal_ssl.inference import predict_scan
    from paranasal_ssl.scan_io import scan_notes

    rois = sinusRois(volumeNode, roiNodes)
    image = scanImage(volumeNode)
    if isinstance(model, (str, Path)):
        problem = modelFolderProblem(model)
        if problem:
            raise InputError(model, problem, field="model")
        model = str(model)
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    prediction = predict_scan(image, rois, model, device=device, threshold=threshold,
                              source=volumeNode.GetName())
    summary = prediction.summary()
    summary["scan_notes"] = scan_notes(image)  # as predict writes it (a file's notes)
    return addPredictionResults(volumeNode, prediction.heatmap, prediction.region, summary,
                                opacity=opacity, grid=image)


def addPredictionResults(volumeNode, heatmap: np.ndarray, region: np.ndarray, summary: dict,
                         threshold: Optional[float] = None, opacity: float = 0.6, grid=None
                         ) -> results.AnalysisResults:
    """Result nodes from one prediction: ``heatmap`` (float, [0, 1]) and ``region`` (1 left,
    2 right) as ``[k, j, i]`` arrays on the grid of the image that was analysed (``grid``, a
    SimpleITK image: ``scanImage(volumeNode)``), ``summary`` as ``predict`` writes it
    (``ScanPrediction.summary()``: per side probability, call, peak, scan notes). Shown from
    ``threshold`` (default: the summary's region threshold). The nodes share the scan's grid
    and transform, unless its slices are not a regular grid in the world (a tilted series as
    Slicer loads it): then they are on ``grid`` in world coordinates, where the analysed image
    was resampled."""
    if warped_volume.needsRegularGrid(volumeNode):
        if grid is None:
            raise InputError(volumeNode.GetName(), "was analysed resampled onto a regular grid, "
                             "and that grid was not given", field="grid")
        expected = tuple(reversed(grid.GetSize()))
    else:
        grid = None  # the scan's own grid, with its (linear) transform
        expected = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
    for name, array in (("heatmap", heatmap), ("region", region)):
        if tuple(np.shape(array)) != expected:
            raise InputError(volumeNode.GetName(), f"the {name} ({np.shape(array)}) does not "
                             f"fit the scan's grid {expected}", expected="the same scan")
    sides = summary["sides"]
    regionThreshold = float(summary.get("region_threshold", DEFAULT_THRESHOLD))
    masks = {side: (np.asarray(region) == REGION_CODES[side]).astype(np.uint8) for side in sides}
    res = results.addAnalysisResults(
        volumeNode, np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0), masks,
        {side: s["probability"] for side, s in sides.items()},
        threshold=regionThreshold if threshold is None else threshold, opacity=opacity,
        calls={side: s.get("call") for side, s in sides.items()},
        peaksRas={side: s["peak_ras"] for side, s in sides.items() if s.get("peak_value", 1)},
        grid=grid)
    res.regionThreshold = regionThreshold
    res.scanNotes = list(summary.get("scan_notes") or [])
    res.boxNotes = list(summary.get("box_notes") or [])
    res.model = dict(summary.get("model") or {})
    for side, s in sides.items():
        res.sides[side].classifierProbability = s.get("classifier_probability")
        res.sides[side].focalResidualScore = s.get("focal_residual_score")
    return res


# -- what the Outputs section shows -----------------------------------------------------------


def sideTexts(res: Optional[results.AnalysisResults]) -> Dict[str, Dict[str, str]]:
    """Per side the texts of the Outputs rows: probability, badge (plain and coloured HTML),
    region volume in mL and its tooltip; "-" where a side was not analysed."""
    texts = {}
    for side in SIDES:
        summary = res.sides.get(side) if res is not None else None
        if summary is None:
            texts[side] = {"probability": "-", "badge": "-", "badgeHtml": "-", "volume": "-",
                           "volumeToolTip": "Volume of the highlighted region (mL)",
                           "probabilityToolTip": "Anomaly probability of the side"}
            continue
        badge = summary.badge
        threshold = res.regionThreshold
        at = f" (heat \u2265 {threshold:.2f})" if threshold is not None else ""
        texts[side] = {
            "probability": f"{summary.probability:.2f}",
            "badge": badge,
            "badgeHtml": f'<b><span style="color:{BADGE_COLORS.get(badge, "#000000")}">'
                         f"{badge}</span></b>",
            "volume": f"{summary.regionVolumeMl:.2f} mL",
            "volumeToolTip": f"Volume of the {side} region{at} when the scan was analysed; "
                             "moving the threshold slider changes only the display",
            "probabilityToolTip": probabilityToolTip(summary),
        }
    return texts


def probabilityToolTip(summary: results.SideSummary) -> str:
    """Where a side's probability comes from (a fused model also names its two parts)."""
    if summary.classifierProbability is None:
        return "Anomaly probability of the classifier, averaged over jittered crops of the side"
    focal = summary.focalResidualScore
    return (f"Anomaly probability: the classifier alone gave {summary.classifierProbability:.2f}"
            f"; the autoencoder's focal residual score ({focal:.3g}) was added to it, each "
            "weighted by its spread over the training sinuses")


def finishedText(res: results.AnalysisResults, seconds: Optional[float] = None) -> str:
    """One line after a successful analysis."""
    parts = [f"{side} {s.text()}" for side, s in sorted(res.sides.items())]
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    empty = "" if hasPeak(res) else " The heatmap is empty (no residual above zero)."
    # e.g. a tilted series under Slicer's regularisation transform, analysed resampled
    notes = "".join(f" Reading the scan: {note}." for note in res.scanNotes)
    boxes = "".join(f" Check the box: {note}" for note in res.boxNotes)
    return f"Analysed{took}: " + ", ".join(parts) + "." + empty + notes + boxes


def hasPeak(res: Optional[results.AnalysisResults]) -> bool:
    """True if the results hold a heatmap with some residual to jump to."""
    return res is not None and res.strongestPeakRas() is not None
