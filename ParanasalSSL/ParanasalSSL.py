"""ParanasalSSL: anomalies of the maxillary sinuses on head CT/MRI (3D Slicer module).

A thin shell: the widget binds the .ui to a parameter node and forwards clicks to the logic and
to ``ParanasalSSLLib`` (MRML bridge, display, results, background jobs); the method itself is the
core package ``paranasal_ssl``, which never imports Slicer.
"""

import os
import pathlib
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ParanasalSSLLib import analysis, dependencies, results, sample_data
from ParanasalSSLLib.analysis_panel import AnalysisPanel
from ParanasalSSLLib.jobs_panel import JobsPanel
from ParanasalSSLLib.logic import AnalysisLogic
from ParanasalSSLLib.review_panel import FILTERS, SORT_KEYS, ReviewPanel
from ParanasalSSLLib.settings import Settings
from ParanasalSSLLib.training import (
    DEVICES,
    STAGE_CHOICES,
    cachedDemoModel,
)

SUGGESTION_POLL_MS = 50  # how often the widget looks for a finished ROI suggestion


class ParanasalSSL(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Paranasal SSL"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["ParanasalSSL contributors"]
        self.parent.helpText = (
            "Finds anomalies (mucosal thickening, cysts, polyps, fluid, opacification) in the "
            "maxillary sinuses of head CT or MRI with a self-supervised residual method: per "
            "side a probability, a residual heatmap over the scan and the volume of the "
            "highlighted region. Place or suggest a box on each sinus, choose a trained model "
            "folder (or train a demo model in the Training section) and click Analyze: it runs "
            "in the background, Slicer stays usable, and the button cancels it meanwhile. "
            "Research software, not for clinical use.")
        self.parent.acknowledgementText = (
            "Built on 3D Slicer, MONAI and PyTorch. The sample phantom is generated locally.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the locally generated phantoms to the Sample Data module."""
    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    sample_data.registerSampleData(iconsPath)


@parameterNodeWrapper
class ParanasalSSLParameterNode:
    """Everything the module's GUI holds, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    leftRoi: vtkMRMLMarkupsROINode
    rightRoi: vtkMRMLMarkupsROINode
    modelFolder: pathlib.Path
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    trainingManifest: pathlib.Path
    trainingRunFolder: pathlib.Path
    trainingStage: Annotated[str, Choice(list(STAGE_CHOICES))] = "all"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    reviewCaseList: pathlib.Path
    reviewPredictions: pathlib.Path
    reviewReader: str = ""
    reviewSeries: str = ""  # a folder of whole studies: the series to review in each
    reviewSort: Annotated[str, Choice(list(SORT_KEYS))] = "list"
    reviewFilter: Annotated[str, Choice(list(FILTERS))] = "all"
    reviewExportImages: bool = True


def _isSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


class ParanasalSSLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None, settings=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.settings = settings
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pendingSuggestion = None  # (future, volume node) while a suggestion runs

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ParanasalSSL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or ParanasalSSLLogic()
        self.settings = self.settings or Settings()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.placeLeftRoiButton.connect("clicked(bool)", lambda: self.onPlaceRoi("left"))
        self.ui.placeRightRoiButton.connect("clicked(bool)", lambda: self.onPlaceRoi("right"))
        self.ui.suggestRoisButton.connect("clicked(bool)", self.onSuggestRois)
        self.ui.dependenciesButton.connect("clicked(bool)", self.onDependenciesButton)
        self.jobsPanel = JobsPanel(self)  # Training, and the one background job at a time
        self.jobsPanel.setup()
        self.analysisPanel = AnalysisPanel(self)  # Analyze (background job) and Outputs
        self.analysisPanel.setup()
        self.reviewPanel = ReviewPanel(self)  # the Review section: case review, export, loop
        self.reviewPanel.setup()
        self.initializeParameterNode()

    def cleanup(self):
        self.jobsPanel.cleanup()
        self.analysisPanel.cleanup()
        self.reviewPanel.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.reviewPanel.setShortcutsEnabled(True)

    def exit(self):
        self.reviewPanel.setShortcutsEnabled(False)
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        self.analysisPanel.onSceneClose()
        self.reviewPanel.onSceneClose()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume
        if not _isSet(self._parameterNode.modelFolder):
            remembered = self.settings.modelFolder or cachedDemoModel()  # a demo made earlier
            if remembered:
                self._parameterNode.modelFolder = pathlib.Path(remembered)

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # widgets carry a "SlicerParameterName" property in the .ui file
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None):
        p = self._parameterNode
        if not p:
            return
        self.logic.updateDisplay(p.heatmapThreshold, p.heatmapOpacity)
        if _isSet(p.modelFolder) and str(p.modelFolder) != self.settings.modelFolder:
            self.settings.modelFolder = p.modelFolder
        self.analysisPanel.updateApplyButton()
        self.ui.suggestRoisButton.enabled = bool(p.inputVolume) and self._pendingSuggestion is None
        self.ui.suggestRoisButton.toolTip = (
            "Find both maxillary sinuses automatically (air cavities beside the nasal cavity); "
            "check the boxes" if p.inputVolume else "Select a scan first")
        self.jobsPanel.updateButtons()
        self.reviewPanel.onParameterNodeModified()

    # -- inputs -----------------------------------------------------------------------------

    def onPlaceRoi(self, side):
        roiNode = getattr(self._parameterNode, f"{side}Roi") or self.logic.createRoiNode(side)
        setattr(self._parameterNode, f"{side}Roi", roiNode)
        slicer.modules.markups.logic().SetActiveList(roiNode)
        slicer.modules.markups.logic().StartPlaceMode(False)

    def onSuggestRois(self):
        """Suggest both boxes in a worker thread (``analysis.startRoiSuggestion``); the
        result is placed when it is ready (``onRoiSuggestionPoll``)."""
        if not self.ensureDependencies() or self._pendingSuggestion is not None:
            return
        volume = self._parameterNode.inputVolume
        with slicer.util.tryWithErrorDisplay("Could not suggest the sinus ROIs."):
            self._pendingSuggestion = (analysis.startRoiSuggestion(volume), volume)
            self.ui.suggestRoisButton.enabled = False
            self.ui.roiSuggestionLabel.text = "Looking for the sinuses..."
            qt.QTimer.singleShot(SUGGESTION_POLL_MS, self.onRoiSuggestionPoll)

    def onRoiSuggestionPoll(self):
        future, volume = self._pendingSuggestion
        if not future.done():
            qt.QTimer.singleShot(SUGGESTION_POLL_MS, self.onRoiSuggestionPoll)
            return
        self._pendingSuggestion = None
        self.ui.roiSuggestionLabel.text = ""
        p = self._parameterNode
        if p is None:
            return
        self.ui.suggestRoisButton.enabled = bool(p.inputVolume)
        if p.inputVolume is None or p.inputVolume.GetID() != volume.GetID():  # another scan
            return
        with slicer.util.tryWithErrorDisplay("Could not suggest the sinus ROIs."):
            suggestion = future.result()
            nodes = analysis.placeSuggestedRois(suggestion,
                                                {"left": p.leftRoi, "right": p.rightRoi})
            p.leftRoi, p.rightRoi = nodes["left"], nodes["right"]
            self.ui.roiSuggestionLabel.text = analysis.suggestionText(suggestion)

    def showSummary(self, res):
        """Outputs rows for ``res`` (used by the Review section too)."""
        self.analysisPanel.showResults(res)

    def ensureDependencies(self):
        """True if every Python package is there; otherwise ask once and install."""
        return dependencies.ensureInSlicer(askUser=True)

    def onDependenciesButton(self):
        ok = self.ensureDependencies()
        self.ui.dependenciesLabel.text = "All packages present" if ok else "Packages missing"


class ParanasalSSLLogic(ScriptedLoadableModuleLogic, AnalysisLogic):
    """What the module does, callable without the GUI (Python console, scripts): ``analyze``
    (in this process), ``analysisJob`` (background process), ``updateDisplay``,
    ``jumpToStrongestResidual``, ``createRoiNode`` - all in ``ParanasalSSLLib.logic``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        AnalysisLogic.__init__(self)

    def getParameterNode(self):
        return ParanasalSSLParameterNode(super().getParameterNode())


class ParanasalSSLTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: sample phantom, ROI suggestion, heatmap display, jump, cleanup,
    the background analysis with a tiny model trained on the spot, case review."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_suggestDisplayAndReplace()
        self.setUp()
        self.test_parameterNodeAndWidgets()
        self.setUp()
        self.test_reviewCaseSwap()
        self.setUp()
        self.test_analyzeSamplePhantom()

    def test_suggestDisplayAndReplace(self):
        import numpy as np

        self.delayDisplay("Generating the sample phantom (first time only)")
        nodes = sample_data.loadPhantom("ct")
        scan = nodes["scan"]
        suggestion, roiNodes = analysis.suggestRoiNodes(scan)
        self.assertEqual(suggestion.confidence, "high")
        truth = analysis.mrml_bridge.sinusRoiFromRoiNode(nodes["leftRoi"])
        found = analysis.mrml_bridge.sinusRoiFromRoiNode(roiNodes["left"])
        self.assertLess(float(np.linalg.norm(truth.center - found.center)), 10.0)

        self.delayDisplay("Showing a heatmap made from the ground truth")
        truthArray = analysis.mrml_bridge.arrayFromSegment(
            nodes["truth"], nodes["truth"].GetSegmentation().GetNthSegmentID(0), scan)
        heat = truthArray.astype(np.float32) * 0.9
        logic = ParanasalSSLLogic()
        logic.results = results.addAnalysisResults(scan, heat, {"left": truthArray},
                                                   {"left": 0.9}, threshold=0.5)
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(composite.GetForegroundVolumeID(), logic.results.heatmapNode.GetID())
        ras = logic.jumpToStrongestResidual()
        self.assertIsNotNone(ras)
        count = slicer.mrmlScene.GetNumberOfNodes()
        logic.results = results.addAnalysisResults(scan, heat * 0.5, {"left": truthArray},
                                                   {"left": 0.2})
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)  # replaced, not added
        self.delayDisplay("Test passed")

    def test_parameterNodeAndWidgets(self):
        widget = slicer.modules.paranasalssl.widgetRepresentation().self()
        widget.initializeParameterNode()
        self.assertFalse(widget.ui.applyButton.enabled)
        self.assertIn("select a scan", widget.ui.applyButton.toolTip)
        self.assertEqual(widget.ui.analysisStatusLabel.text, widget.ui.applyButton.toolTip)
        self.delayDisplay("Test passed")

    def test_reviewCaseSwap(self):
        import tempfile

        from paranasal_ssl.review.session import open_session
        from ParanasalSSLLib import review

        folder = pathlib.Path(tempfile.mkdtemp())
        (folder / "cases.csv").write_text(f"image\n{sample_data.phantomFiles('ct')['image']}\n")
        reviewer = review.CaseReviewer(open_session(folder / "cases.csv", "selftest"))
        count = slicer.mrmlScene.GetNumberOfNodes()
        loaded = reviewer.step("first")
        self.assertIsNotNone(loaded)
        reviewer.record("left", verdict="anomalous", anomaly_type="polyp", comment="self-test")
        reviewer.unload()
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)  # nothing leaked
        again = open_session(folder / "cases.csv", "selftest")
        self.assertEqual(again.verdict(loaded.caseId, "left").label, 1)  # saved at once
        self.delayDisplay("Test passed")

    def test_analyzeSamplePhantom(self):
        import tempfile

        from ParanasalSSLLib import selftest

        self.delayDisplay("Training a tiny model (background process, under a minute)")
        report = selftest.runAnalysisSelfTest(tempfile.mkdtemp(prefix="ParanasalSSLTest-"),
                                              "cpu", idle=slicer.app.processEvents)
        self.assertEqual(report["problems"], [])
        self.delayDisplay("Analyze in the module panel turns into Cancel, and cancels")
        widget = slicer.modules.paranasalssl.widgetRepresentation().self()
        p = widget._parameterNode
        p.inputVolume, p.modelFolder = report["nodes"]["scan"], report["model"]
        p.leftRoi, p.rightRoi = report["nodes"]["leftRoi"], report["nodes"]["rightRoi"]
        count = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        widget.ui.applyButton.click()
        widget.analysisPanel.job.wait(10.0, idle=slicer.app.processEvents)
        self.assertEqual(widget.ui.applyButton.text, "Analyze")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)  # nothing half-made
        self.delayDisplay("Test passed")

