"""The Sample Data phantom: generated locally once into the cache, loaded as scan + ROIs + truth."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import slicer

from ParanasalSSLLib import mrml_bridge as bridge
from ParanasalSSLLib import sample_data


def test_phantom_is_generated_once_and_reused(tmp_path):
    first = sample_data.phantomFiles("ct", tmp_path)
    assert first["image"].is_file() and first["mask"].is_file()
    info = json.loads(first["info"].read_text())
    assert sorted(s["label"] for s in info["sides"].values()) == [0, 1]  # one of each
    stamp = first["image"].stat().st_mtime_ns
    again = sample_data.phantomFiles("ct", tmp_path)
    assert again == first and first["image"].stat().st_mtime_ns == stamp  # not regenerated
    first["info"].unlink()  # an interrupted generation (no case.json) is redone
    redone = sample_data.phantomFiles("ct", tmp_path)
    assert redone["info"].is_file()
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(redone["image"]))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(first["image"]))))


def test_loading_the_phantom_gives_scan_rois_and_ground_truth(slicerApp, tmp_path, monkeypatch):
    monkeypatch.setenv("PARANASAL_CACHE", str(tmp_path))  # the per-user cache, here
    before = slicer.mrmlScene.GetNumberOfNodes()
    [scan] = sample_data.downloader("ct")(None)  # what the Sample Data button calls
    assert scan.GetName() == sample_data.SAMPLES["ct"]
    assert sorted(p.name for p in (tmp_path / "sample-data").iterdir())[0].startswith("v")
    byName = {n: slicer.mrmlScene.GetFirstNode(n, None, None, False)  # exact names
              for n in ("left maxillary sinus", "right maxillary sinus")}
    truthNode = slicer.mrmlScene.GetFirstNode(f"{scan.GetName()} ground truth", None, None,
                                              False)
    loaded = {"scan": scan, "leftRoi": byName["left maxillary sinus"],
              "rightRoi": byName["right maxillary sinus"], "truth": truthNode}
    paths = sample_data.phantomFiles("ct")
    info = json.loads(paths["info"].read_text())
    reference = sitk.ReadImage(str(paths["image"]))
    image = bridge.imageFromVolumeNode(loaded["scan"])
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    for side in ("left", "right"):
        roi = bridge.sinusRoiFromRoiNode(loaded[f"{side}Roi"])
        np.testing.assert_allclose(roi.center, info["sides"][side]["roi"]["center_ras"], atol=1e-6)
    truth = loaded["truth"].GetSegmentation()
    anomalous = [s for s, v in info["sides"].items() if v["label"] == 1][0]
    names = {truth.GetNthSegment(i).GetName() for i in range(truth.GetNumberOfSegments())}
    assert set(info["sides"][anomalous]["anomaly_types"]) <= names
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["mask"])))
    segmentId = truth.GetNthSegmentID(0)
    value = [c for c in np.unique(mask) if c][0]
    np.testing.assert_array_equal(bridge.arrayFromSegment(loaded["truth"], segmentId,
                                                          loaded["scan"]), mask == value)
    # scan, 2 ROIs, segmentation (+ their display/storage nodes); the mask volume is gone
    assert slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLabelMapVolumeNode") is None
    volumes = slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    assert volumes.GetNumberOfItems() == 1
    assert slicer.mrmlScene.GetNumberOfNodes() > before
