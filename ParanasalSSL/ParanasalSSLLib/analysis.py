"""The module's two scan-level actions on MRML nodes: suggest the sinus ROIs, and analyse the
scan with a trained model (``paranasal_ssl.inference.predict_scan``) into result nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from paranasal_ssl.errors import InputError
from ParanasalSSLLib import mrml_bridge, results

if TYPE_CHECKING:  # scipy (through roi_suggest) may not be installed when the module loads
    from paranasal_ssl.roi_suggest import RoiSuggestion

SIDES = ("left", "right")
REGION_CODES = {"left": 1, "right": 2}  # values of ScanPrediction.region
ROI_COLORS = {"left": (0.98, 0.55, 0.10), "right": (0.10, 0.65, 0.95)}


def roiNodeName(side: str) -> str:
    return f"{side} maxillary sinus"


def suggestRoiNodes(volumeNode, roiNodes: Optional[Mapping[str, object]] = None
                    ) -> Tuple[RoiSuggestion, Dict[str, object]]:
    """Suggest both sinus boxes on ``volumeNode`` and put them into ``roiNodes`` (updated in
    place) or into new markups ROI nodes. Returns the suggestion and the ROI node per side."""
    from paranasal_ssl.roi_suggest import suggest_rois

    suggestion = suggest_rois(mrml_bridge.imageFromVolumeNode(volumeNode))
    nodes: Dict[str, object] = {}
    for side in SIDES:
        node = (roiNodes or {}).get(side)
        if node is None:
            node = mrml_bridge.addRoiNode(suggestion.rois[side], roiNodeName(side),
                                          ROI_COLORS[side])
        else:
            mrml_bridge.updateRoiNodeFromSinusRoi(node, suggestion.rois[side])
        nodes[side] = node
    return suggestion, nodes


def suggestionText(suggestion: RoiSuggestion) -> str:
    """One line for the widget: how sure the suggestion is, and why."""
    if suggestion.confidence == "high":
        return "Both sinuses found (air cavities). Check the boxes."
    return "Low confidence: " + "; ".join(suggestion.notes)


def analyzeScan(volumeNode, roiNodes: Mapping[str, object], modelDir, device: str = "auto",
                threshold: Optional[float] = None, opacity: float = 0.6,
                predict: Optional[Callable] = None) -> results.AnalysisResults:
    """Run the model on the scan for every side that has an ROI node and show the results.

    ``predict`` defaults to ``paranasal_ssl.inference.predict_scan(image, rois, model_dir,
    device=..., source=...) -> ScanPrediction``. ``threshold`` defaults to the prediction's
    region threshold. Earlier results of the same scan are replaced; nothing is left behind if
    anything fails.
    """
    rois = {side: mrml_bridge.sinusRoiFromRoiNode(node)
            for side, node in roiNodes.items() if node is not None}
    if not rois:
        raise InputError(volumeNode.GetName(), "no sinus ROI", field="roi",
                         expected="a left and/or right maxillary sinus box")
    if predict is None:
        from paranasal_ssl.inference import predict_scan as predict
    image = mrml_bridge.imageFromVolumeNode(volumeNode)
    prediction = predict(image, rois, str(modelDir), device=device, source=volumeNode.GetName())
    masks = {side: (np.asarray(prediction.region) == REGION_CODES[side]).astype(np.uint8)
             for side in prediction.sides}
    return results.addAnalysisResults(
        volumeNode, prediction.heatmap, masks,
        {side: p.probability for side, p in prediction.sides.items()},
        threshold=prediction.threshold if threshold is None else threshold, opacity=opacity,
        calls={side: p.call for side, p in prediction.sides.items()},
        peaksRas={side: p.peak_ras for side, p in prediction.sides.items()})
