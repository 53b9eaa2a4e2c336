"""The nodes one analysis of one scan creates, replaced as a whole and never left half-made.

Every result node carries two attributes: ``ParanasalSSL.ResultOf`` (the scan node's ID) and
``ParanasalSSL.Role`` (``heatmap`` or ``regions``). A new analysis of the same scan removes the
previous result nodes only once the new ones are complete; if building fails, the nodes made so
far are removed and the previous results stay. Results sit in a subject-hierarchy folder beside
the scan (inside its study when it came from DICOM).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import slicer

from ParanasalSSLLib import heatmap_display, mrml_bridge

RESULT_OF = "ParanasalSSL.ResultOf"
ROLE = "ParanasalSSL.Role"
FOLDER_NAME = "ParanasalSSL results"
SIDE_COLORS = {"left": (0.98, 0.55, 0.10), "right": (0.10, 0.65, 0.95)}
UNCERTAIN_BAND = (0.35, 0.65)  # probabilities inside this band are called "uncertain"


def badge(probability: float, band: Sequence[float] = UNCERTAIN_BAND) -> str:
    """'normal', 'uncertain' or 'anomalous' for a per-side anomaly probability in [0, 1]."""
    low, high = band
    if probability < low:
        return "normal"
    if probability > high:
        return "anomalous"
    return "uncertain"


@dataclass
class SideSummary:
    """What the module shows for one side."""

    side: str
    probability: float
    regionVolumeMl: float
    peakRas: Optional[np.ndarray] = None
    call: Optional[str] = None  # the model's own call (its uncertain band), if it gave one
    # a model with a residual fusion: its classifier alone and the focal residual score added
    classifierProbability: Optional[float] = None
    focalResidualScore: Optional[float] = None

    @property
    def badge(self) -> str:
        return self.call or badge(self.probability)

    def text(self) -> str:
        return f"{self.probability:.2f} ({self.badge})"


@dataclass
class AnalysisResults:
    """Result nodes of one analysis and the per-side summary."""

    scanNode: object
    heatmapNode: object = None
    regionsNode: object = None
    sides: Dict[str, SideSummary] = field(default_factory=dict)
    regionThreshold: Optional[float] = None  # heatmap value the regions were cut at, if known
    model: Dict[str, object] = field(default_factory=dict)  # what made them (predict summary)
    scanNotes: List[str] = field(default_factory=list)  # what reading the scan changed
    boxNotes: List[str] = field(default_factory=list)  # a box on the other half of the head

    @property
    def nodes(self) -> List:
        return [n for n in (self.heatmapNode, self.regionsNode) if n is not None]

    def strongestPeakRas(self) -> Optional[np.ndarray]:
        """RAS of the strongest residual in the whole heatmap (None if there is no heatmap or
        it holds no residual above zero)."""
        if self.heatmapNode is None or self.heatmapNode.GetScene() is None:
            return None
        if not np.any(slicer.util.arrayFromVolume(self.heatmapNode) > 0):
            return None
        return heatmap_display.peakRas(self.heatmapNode)


def resultNodes(scanNode) -> List:
    """Result nodes of earlier analyses of ``scanNode`` found in the scene (by attribute)."""
    scene = scanNode.GetScene()
    found = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(RESULT_OF) == scanNode.GetID():
            found.append(node)
    return found


@contextlib.contextmanager
def replacingResults(scanNode) -> Iterator[List]:
    """Collect new result nodes in the yielded list; on success replace the scan's previous
    results with them, on any error remove them and re-raise (the previous results stay)."""
    created: List = []
    previous = resultNodes(scanNode)
    try:
        yield created
    except BaseException:
        mrml_bridge.removeNodes(created)
        raise
    for node in created:
        node.SetAttribute(RESULT_OF, scanNode.GetID())
    mrml_bridge.removeNodes([n for n in previous if n not in created])
    mrml_bridge.placeInFolder(created, mrml_bridge.resultsFolderItem(scanNode, FOLDER_NAME))


def addAnalysisResults(scanNode, heatmap: np.ndarray, regionMasks: Mapping[str, np.ndarray],
                       probabilities: Mapping[str, float], threshold: float = 0.5,
                       opacity: float = 0.6, calls: Optional[Mapping[str, str]] = None,
                       peaksRas: Optional[Mapping[str, Sequence[float]]] = None,
                       grid=None) -> AnalysisResults:
    """Turn one prediction into nodes and show it.

    ``heatmap``: float32 residuals in [0, 1], ``[k, j, i]`` in the scan's grid.
    ``regionMasks``: side -> uint8/bool ``[k, j, i]`` mask of the thresholded region.
    ``probabilities``: side -> anomaly probability; ``calls``: side -> the model's call
    (normal / uncertain / anomalous); ``peaksRas``: side -> RAS mm of the strongest residual
    (computed from the heatmap inside the side's region when not given).
    ``grid``: a SimpleITK image whose geometry (LPS world) the arrays are in, when that is not
    the scan's own grid: a scan whose slices are not a regular grid (a sheared matrix, a
    regularisation transform) is analysed resampled onto one
    (``mrml_bridge.imageFromVolumeNode``), and its results are shown there.
    Creates a heatmap volume (foreground over the scan in the slice views) and one segmentation
    with a segment per side; replaces earlier results of the same scan.
    """
    name = scanNode.GetName()
    results = AnalysisResults(scanNode)
    with replacingResults(scanNode) as created:
        results.heatmapNode = heatmapNode = _addHeatmapNode(scanNode, heatmap, grid)
        created.append(heatmapNode)
        results.heatmapNode.SetAttribute(ROLE, "heatmap")
        labels = np.zeros(np.asarray(heatmap).shape, np.uint8)
        segments = []
        for value, (side, mask) in enumerate(sorted(regionMasks.items()), start=1):
            labels[np.asarray(mask) > 0] = value
            color = SIDE_COLORS.get(side, (1.0, 0.0, 0.0))
            segments.append((value, f"{side} sinus anomaly region", color))
        # the heatmap's grid (the scan's, or the world grid it was analysed on) for the rest
        results.regionsNode = mrml_bridge.addSegmentationFromLabelArray(
            labels, heatmapNode, f"{name} anomaly regions", segments)
        created.append(results.regionsNode)
        results.regionsNode.SetAttribute(ROLE, "regions")
        for side, probability in probabilities.items():
            mask = regionMasks.get(side)
            volume = mrml_bridge.maskVolumeMl(mask, heatmapNode) if mask is not None else 0.0
            if peaksRas and side in peaksRas:
                peak = np.asarray(peaksRas[side], float)
            elif mask is not None and np.any(mask):
                peak = heatmap_display.peakRas(heatmapNode, np.asarray(mask) > 0)
            else:
                peak = None
            results.sides[side] = SideSummary(side, float(probability), volume, peak,
                                              (calls or {}).get(side))
    heatmap_display.showHeatmap(results.heatmapNode, scanNode, threshold, opacity)
    return results


def _addHeatmapNode(scanNode, heatmap: np.ndarray, grid=None):
    """The heatmap volume: on the scan's grid under the scan's transform, or on ``grid``
    (world geometry, no transform)."""
    name = f"{scanNode.GetName()} residual heatmap"
    heatmap = np.asarray(heatmap, np.float32)
    if grid is None:
        return mrml_bridge.addVolumeLike(scanNode, heatmap, name)
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(heatmap)
    image.CopyInformation(grid)
    return mrml_bridge.addVolumeFromImage(image, name)


def exportResults(results: AnalysisResults, directory,
                  notes: Optional[List[str]] = None) -> List[Path]:
    """Write the heatmap (.nrrd and .nii.gz) and the regions (.seg.nrrd) into ``directory``,
    and for a scan loaded from DICOM the regions as a DICOM SEG on its series
    (``dicom_export``; ``notes`` says why when that cannot be written)."""
    from ParanasalSSLLib import dicom_export

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = safeFileName(results.scanNode.GetName())
    written = []
    if results.heatmapNode is not None:
        for suffix in (".nrrd", ".nii.gz"):
            written.append(writeNode(results.heatmapNode, directory / f"{stem}_heatmap{suffix}"))
    if results.regionsNode is not None:
        written.append(writeNode(results.regionsNode, directory / f"{stem}_regions.seg.nrrd"))
        written += dicom_export.exportIfDicom(results, directory, stem,
                                              notes if notes is not None else [])
    return written


def writeNode(node, path) -> Path:
    """Write one storable node through its storage node (created if missing; no Slicer
    application needed). The node keeps pointing at the file, so a scene saved later refers
    to it."""
    path = Path(path)
    if node.GetStorageNode() is None and not node.AddDefaultStorageNode():
        raise OSError(f"'{node.GetName()}' cannot be written to a file")
    storage = node.GetStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"could not write '{node.GetName()}' to {path}")
    return path


def saveScene(scene, mrmlPath, dataDirectory=None) -> Path:
    """Save the scene to ``mrmlPath``: every storable node that has no file yet (or changed) is
    written beside it first (volumes .nrrd, segmentations .seg.nrrd, colour tables .csv)."""
    mrmlPath = Path(mrmlPath)
    dataDirectory = Path(dataDirectory or mrmlPath.parent / "Data")
    dataDirectory.mkdir(parents=True, exist_ok=True)
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    for node in nodes:
        # built-in colour tables have SaveWithScene off: Slicer recreates them
        if not node.IsA("vtkMRMLStorableNode") or not node.GetSaveWithScene():
            continue
        if node.GetStorageNode() is not None and not node.GetModifiedSinceRead():
            continue
        if node.GetStorageNode() is None and not node.AddDefaultStorageNode():
            continue  # a node type that is stored inside the .mrml itself
        extension = node.GetStorageNode().GetDefaultWriteFileExtension()
        writeNode(node, dataDirectory / f"{safeFileName(node.GetName())}.{extension}")
    scene.SetRootDirectory(str(mrmlPath.parent))
    scene.SetURL(str(mrmlPath))
    if not scene.Commit():
        raise OSError(f"could not write the scene to {mrmlPath}")
    return mrmlPath


def safeFileName(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "node"
