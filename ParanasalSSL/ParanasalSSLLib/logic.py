"""What the module's logic does with scans and results, without Qt and without the
ScriptedLoadableModule base (which only the application has): ``ParanasalSSLLogic`` inherits it,
so the widget, the Python console and the headless tests all use this same code."""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import slicer

from ParanasalSSLLib import analysis, heatmap_display
from ParanasalSSLLib.analysis_job import AnalysisJob


class AnalysisLogic:
    """Holds the last analysis (``results``) and acts on it."""

    def __init__(self):
        self.results = None  # the last AnalysisResults
        self.workRoot = None  # where background analyses write (default: the temp folder)

    def createRoiNode(self, side: str):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode",
                                                  analysis.roiNodeName(side))
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetSelectedColor(*analysis.ROI_COLORS[side])
        return node

    def analyze(self, volumeNode, roiNodes: Mapping[str, object], modelDir,
                device: str = "auto", threshold: Optional[float] = None, opacity: float = 0.6):
        """Predict with the model in ``modelDir`` in THIS process (it waits: for scripts and the
        Python console) and show heatmap, regions and summary. Raises on bad input; the scene
        keeps what it had then."""
        self.results = analysis.analyzeScan(volumeNode, roiNodes, modelDir, device, threshold,
                                            opacity)
        return self.results

    def analysisJob(self, volumeNode, roiNodes: Mapping[str, object], modelDir,
                    device: str = "auto", threshold: Optional[float] = None,
                    opacity: float = 0.6, onProgress: Optional[Callable] = None,
                    onFinished: Optional[Callable] = None) -> AnalysisJob:
        """The same analysis as a background process (Slicer stays usable): ``start()`` the
        returned job and ``poll()`` it (or ``wait()``); on success its results become ours."""
        def finished(job):
            if job.results is not None:
                self.results = job.results
            if onFinished:
                onFinished(job)

        return AnalysisJob(volumeNode, roiNodes, modelDir, device, threshold, opacity,
                           onProgress=onProgress, onFinished=finished, workRoot=self.workRoot)

    def updateDisplay(self, threshold: float, opacity: float) -> None:
        """Threshold and opacity sliders: applied to the heatmap on screen, if any."""
        if self.results is not None and self.results.heatmapNode is not None \
                and self.results.heatmapNode.GetScene() is not None:
            heatmap_display.setThreshold(self.results.heatmapNode, threshold)
            heatmap_display.setOpacity(opacity, self.results.heatmapNode.GetScene())

    def jumpToStrongestResidual(self):
        """Move the slice views to the strongest residual; its RAS, or None if none."""
        ras = self.results.strongestPeakRas() if self.results else None
        if ras is not None:
            heatmap_display.jumpSlicesToRas(ras, self.results.heatmapNode.GetScene())
        return ras
