"""A synthetic phantom in Slicer's Sample Data module, generated locally (no download).

The first click generates one phantom case with ``paranasal_ssl.phantom`` into the per-user,
versioned cache (``settings.sampleDataCacheFolder()``); later clicks load the cached files. The
case is the first of a fixed seed with one anomalous and one normal side, so the demo shows both.
Loading adds the scan, a markups ROI per sinus and the ground-truth findings as a segmentation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import slicer

from ParanasalSSLLib import mrml_bridge
from ParanasalSSLLib.settings import sampleDataCacheFolder

CATEGORY = "ParanasalSSL"
SAMPLES = {"ct": "ParanasalSSLPhantomCT", "mri": "ParanasalSSLPhantomMRI"}
PHANTOM_SEED = 7
MAX_SEARCH = 40  # cases tried to find one with exactly one anomalous side
ROI_COLORS = {"left": (0.98, 0.55, 0.10), "right": (0.10, 0.65, 0.95)}


def phantomFiles(modality: str = "ct", folder: Optional[Path] = None) -> Dict[str, Path]:
    """Paths of the sample phantom (image, mask, case.json), generated on first use.

    ``case.json`` is written last, so an interrupted generation is redone next time.
    """
    from paranasal_ssl.atomic import write_json
    from paranasal_ssl.phantom import preset
    from paranasal_ssl.phantom.cohort import build_case, side_roi, write_case

    folder = Path(folder or sampleDataCacheFolder()) / modality
    info = folder / "case.json"
    if info.is_file():
        data = json.loads(info.read_text(encoding="utf-8"))
        paths = {"image": folder / data["image"], "mask": folder / data["mask"], "info": info}
        if paths["image"].is_file() and paths["mask"].is_file():
            return paths
    cfg = preset("realistic")
    cfg.modality = modality
    cfg.seed = PHANTOM_SEED
    case = None
    for index in range(MAX_SEARCH):
        case = build_case(cfg, index)
        if sorted(int(s["label"]) for s in case.sides.values()) == [0, 1]:
            break
    records = write_case(case, folder, cfg)
    data = {"modality": modality, "seed": cfg.seed, "case_id": case.case_id,
            "image": str(records[0].image.relative_to(folder.resolve())),
            "mask": str(records[0].mask.relative_to(folder.resolve())),
            "sides": {r.side: {"label": r.label, "anomaly_types": list(r.anomaly_types),
                               "roi": side_roi(case, r.side).to_dict()} for r in records}}
    write_json(info, data)
    return {"image": folder / data["image"], "mask": folder / data["mask"], "info": info}


def loadPhantom(modality: str = "ct", folder: Optional[Path] = None) -> Dict[str, object]:
    """Load the sample phantom into ``slicer.mrmlScene``: scan, left/right ROI nodes and the
    ground truth as a segmentation. Returns the nodes by role."""
    from paranasal_ssl.anomalies import CODE_TO_ANOMALY
    from paranasal_ssl.geometry import SinusROI

    paths = phantomFiles(modality, folder)
    data = json.loads(paths["info"].read_text(encoding="utf-8"))
    name = SAMPLES[modality]
    volumesLogic = slicer.modules.volumes.logic()
    scan = volumesLogic.AddArchetypeVolume(str(paths["image"]), name)
    if scan is None:
        raise OSError(f"could not load {paths['image']}")
    nodes: Dict[str, object] = {"scan": scan}
    try:
        for side, info in data["sides"].items():
            roi = SinusROI.from_values(info["roi"]["center_ras"], info["roi"]["size_mm"],
                                       info["roi"]["axes_ras"])
            nodes[f"{side}Roi"] = mrml_bridge.addRoiNode(roi, f"{side} maxillary sinus",
                                                         ROI_COLORS[side])
        maskNode = volumesLogic.AddArchetypeVolume(str(paths["mask"]), f"{name} mask")
        try:
            labels = np.array(slicer.util.arrayFromVolume(maskNode))
        finally:
            mrml_bridge.removeNodes([maskNode])
        present = [int(v) for v in np.unique(labels) if v]
        segments = [(v, CODE_TO_ANOMALY.get(v, f"label {v}"), _color(v)) for v in present]
        nodes["truth"] = mrml_bridge.addSegmentationFromLabelArray(
            labels, scan, f"{name} ground truth", segments)
        nodes["truth"].GetDisplayNode().SetVisibility2DFill(False)  # outlines over the scan
    except Exception:
        mrml_bridge.removeNodes(list(nodes.values()))
        raise
    return nodes


def _color(code: int):
    palette = [(0.9, 0.3, 0.3), (0.3, 0.8, 0.3), (0.3, 0.5, 0.95), (0.95, 0.8, 0.2),
               (0.8, 0.4, 0.9), (0.2, 0.85, 0.85)]
    return palette[(code - 1) % len(palette)]


def downloader(modality: str):
    """The Sample Data module's ``customDownloader`` for ``modality`` (returns the scan node)."""

    def load(source=None):  # noqa: ARG001 - the Sample Data module passes its data source
        return [loadPhantom(modality)["scan"]]

    return load


def registerSampleData(iconsPath: Optional[str] = None) -> None:
    """Register the CT and MRI phantoms with the Sample Data module (inside Slicer)."""
    import SampleData

    for modality, name in SAMPLES.items():
        thumbnail = str(Path(iconsPath) / "ParanasalSSL.png") if iconsPath else None
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY, sampleName=name,
            # generated locally by the custom downloader; the URI is never fetched
            uris=f"paranasal-ssl://phantom/{modality}", fileNames=f"{name}.nii.gz",
            nodeNames=name, customDownloader=downloader(modality),
            thumbnailFileName=thumbnail, loadFileType="VolumeFile")
