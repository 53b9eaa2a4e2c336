"""Scan-level actions on nodes: ROI suggestion into ROI nodes, and analysis into result nodes.

The analysis is driven by a stand-in predictor that returns the core's real ``ScanPrediction``
built from the phantom's ground truth (an "oracle"): it checks the Slicer wiring (what goes in,
what comes out, where it lands) without a trained model. The model itself is the core's concern.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from paranasal_ssl.errors import InputError
from paranasal_ssl.inference import ScanPrediction, SidePrediction
from ParanasalSSLLib import analysis, results, sample_data
from ParanasalSSLLib import mrml_bridge as bridge


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


def _oracle(calls):
    """A predictor returning a genuine ScanPrediction made from the phantom's truth mask."""

    def predict(image, rois, modelDir, device="auto", source=None):
        calls.append({"image": image, "rois": rois, "model": modelDir, "device": device,
                      "source": source})
        truth = sitk.GetArrayFromImage(sitk.ReadImage(calls[0]["truthPath"]))
        heat = np.where(truth > 0, 0.9, 0.0).astype(np.float32)
        region = np.zeros(truth.shape, np.uint8)
        i = np.arange(truth.shape[2])
        lps = np.array([image.TransformIndexToPhysicalPoint((int(x), 0, 0)) for x in i])
        isLeft = (lps[:, 0] > np.mean([-r.center[0] for r in rois.values()]))[None, None, :]
        region[(truth > 0) & isLeft] = 1
        region[(truth > 0) & ~isLeft] = 2
        sides = {s: SidePrediction(s, roi, 0.8 if (region == (1 if s == "left" else 2)).any()
                                   else 0.1, [0.8], "anomalous" if s == "left" else "normal",
                                   0.0, tuple(roi.center), 0.9, 0.0)
                 for s, roi in rois.items()}
        return ScanPrediction(sides, heat, region, image, {"modality": "ct"}, 0.4)

    return predict


def test_analysis_sends_the_scan_and_rois_and_shows_the_prediction(phantom):
    nodes, paths = phantom
    calls = [{"truthPath": str(paths["mask"])}]
    roiNodes = {"left": nodes["leftRoi"], "right": nodes["rightRoi"]}
    res = analysis.analyzeScan(nodes["scan"], roiNodes, "/models/demo", device="cpu",
                               opacity=0.7, predict=_oracle(calls))
    sent = calls[1]
    reference = sitk.ReadImage(str(paths["image"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sent["image"]),
                                  sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(sent["image"].GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert sent["model"] == "/models/demo" and sent["device"] == "cpu"
    assert sent["source"] == nodes["scan"].GetName()
    np.testing.assert_allclose(sent["rois"]["left"].center,
                               bridge.sinusRoiFromRoiNode(nodes["leftRoi"]).center)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["mask"])))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(res.heatmapNode),
                                  np.where(truth > 0, 0.9, 0.0).astype(np.float32))
    assert res.heatmapNode.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.4)
    assert res.sides["left"].badge == "anomalous" and res.sides["right"].badge == "normal"
    total = sum(res.sides[s].regionVolumeMl for s in ("left", "right"))
    assert total == pytest.approx(bridge.maskVolumeMl(truth > 0, nodes["scan"]))
    np.testing.assert_allclose(res.sides["left"].peakRas, sent["rois"]["left"].center)


def test_a_failing_prediction_leaves_the_scene_as_it_was(phantom):
    nodes, _ = phantom
    before = slicer.mrmlScene.GetNumberOfNodes()

    def broken(image, rois, modelDir, device="auto", source=None):
        raise InputError(modelDir, "not a trained model folder")

    with pytest.raises(InputError, match="not a trained model"):
        analysis.analyzeScan(nodes["scan"], {"left": nodes["leftRoi"]}, "/nowhere",
                             predict=broken)
    with pytest.raises(InputError, match="no sinus ROI"):
        analysis.analyzeScan(nodes["scan"], {"left": None}, "/nowhere", predict=broken)
    assert slicer.mrmlScene.GetNumberOfNodes() == before
    assert results.resultNodes(nodes["scan"]) == []
