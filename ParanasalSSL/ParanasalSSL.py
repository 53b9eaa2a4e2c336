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

from ParanasalSSLLib import analysis, dependencies, heatmap_display, results, sample_data
from ParanasalSSLLib.job_runner import RUNNING, SUCCEEDED, JobRunner, JobSequence
from ParanasalSSLLib.review_panel import FILTERS, SORT_KEYS, ReviewPanel
from ParanasalSSLLib.settings import Settings, modelCacheFolder
from ParanasalSSLLib.training import (
    DEVICES,
    STAGE_CHOICES,
    demoCommand,
    modelFolderFromLog,
    stageCommands,
)


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
            "folder and click Analyze. Research software, not for clinical use.")
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
        self.jobSequence = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ParanasalSSL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or ParanasalSSLLogic()
        self.settings = self.settings or Settings()
        self.jobRunner = JobRunner(onProgress=self.onJobProgress, onLog=self.onJobLog)
        self.jobTimer = qt.QTimer()
        self.jobTimer.setInterval(100)
        self.jobTimer.connect("timeout()", self.pollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.placeLeftRoiButton.connect("clicked(bool)", lambda: self.onPlaceRoi("left"))
        self.ui.placeRightRoiButton.connect("clicked(bool)", lambda: self.onPlaceRoi("right"))
        self.ui.suggestRoisButton.connect("clicked(bool)", self.onSuggestRois)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.jumpToPeakButton.connect("clicked(bool)", self.onJumpToPeak)
        self.ui.exportResultsButton.connect("clicked(bool)", self.onExportResults)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.trainDemoButton.connect("clicked(bool)", self.onTrainDemoButton)
        self.ui.dependenciesButton.connect("clicked(bool)", self.onDependenciesButton)
        self.reviewPanel = ReviewPanel(self)  # the Review section: case review, export, loop
        self.reviewPanel.setup()
        self.initializeParameterNode()

    def cleanup(self):
        self.jobTimer.stop()
        if self.jobRunning():
            self.jobSequence.cancel()
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
        if not _isSet(self._parameterNode.modelFolder) and self.settings.modelFolder:
            self._parameterNode.modelFolder = pathlib.Path(self.settings.modelFolder)

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
        missing = [what for what, ok in (("a scan", p.inputVolume),
                                         ("a sinus ROI", p.leftRoi or p.rightRoi),
                                         ("a model folder", _isSet(p.modelFolder)
                                          and pathlib.Path(p.modelFolder).is_dir())) if not ok]
        self.ui.applyButton.enabled = not missing
        self.ui.applyButton.toolTip = ("Analyze the scan with the model" if not missing
                                       else "Select " + ", ".join(missing))
        self.ui.suggestRoisButton.enabled = bool(p.inputVolume)
        canTrain = _isSet(p.trainingManifest) and _isSet(p.trainingRunFolder)
        if not self.jobRunning():
            self.ui.trainButton.enabled = canTrain
        self.ui.trainButton.toolTip = ("Run the chosen stage(s) in the background" if canTrain
                                       else "Select a manifest and a run folder")
        self.reviewPanel.onParameterNodeModified()

    # -- inputs -----------------------------------------------------------------------------

    def onPlaceRoi(self, side):
        roiNode = getattr(self._parameterNode, f"{side}Roi") or self.logic.createRoiNode(side)
        setattr(self._parameterNode, f"{side}Roi", roiNode)
        slicer.modules.markups.logic().SetActiveList(roiNode)
        slicer.modules.markups.logic().StartPlaceMode(False)

    def onSuggestRois(self):
        if not self.logic.ensureDependencies(askUser=True):
            return
        with slicer.util.tryWithErrorDisplay("Could not suggest the sinus ROIs.", waitCursor=True):
            p = self._parameterNode
            suggestion, nodes = analysis.suggestRoiNodes(
                p.inputVolume, {"left": p.leftRoi, "right": p.rightRoi})
            p.leftRoi, p.rightRoi = nodes["left"], nodes["right"]
            self.ui.roiSuggestionLabel.text = analysis.suggestionText(suggestion)

    def onApplyButton(self):
        p = self._parameterNode
        if not self.logic.ensureDependencies(askUser=True):
            return
        with slicer.util.tryWithErrorDisplay("Analysis failed.", waitCursor=True):
            res = self.logic.analyze(p.inputVolume, {"left": p.leftRoi, "right": p.rightRoi},
                                     p.modelFolder, p.device, p.heatmapThreshold,
                                     p.heatmapOpacity)
            self.showSummary(res)

    def showSummary(self, res):
        for side in ("left", "right"):
            summary = res.sides.get(side)
            getattr(self.ui, f"{side}ProbabilityLabel").text = (
                f"{summary.probability:.2f}" if summary else "-")
            getattr(self.ui, f"{side}BadgeLabel").text = summary.badge if summary else "-"
            getattr(self.ui, f"{side}VolumeLabel").text = (
                f"{summary.regionVolumeMl:.2f} mL" if summary else "-")
        self.ui.jumpToPeakButton.enabled = True
        self.ui.exportResultsButton.enabled = True

    # -- outputs ----------------------------------------------------------------------------

    def onJumpToPeak(self):
        self.logic.jumpToStrongestResidual()

    def onExportResults(self):
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Export results to")
        if folder:
            with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
                written = results.exportResults(self.logic.results, folder)
                slicer.util.showStatusMessage(f"Wrote {len(written)} files to {folder}", 5000)

    # -- training ---------------------------------------------------------------------------

    def jobRunning(self):
        return self.jobSequence is not None and self.jobSequence.state == RUNNING

    def onTrainButton(self):
        p = self._parameterNode
        self.toggleJobs(lambda: stageCommands(p.trainingStage, p.trainingRunFolder,
                                              p.trainingManifest, p.device),
                        self.ui.trainButton, "Start training")

    def onTrainDemoButton(self):
        out = modelCacheFolder() / "demo"
        self.toggleJobs(lambda: [demoCommand(out, self._parameterNode.device)],
                        self.ui.trainDemoButton, "Train demo model")

    def toggleJobs(self, makeCommands, button, idleText):
        """Start the commands in the background, or cancel the job that is running."""
        if self.jobRunning():
            self.jobSequence.cancel()
        else:
            self.startJobs(makeCommands(), button, idleText)

    def startJobs(self, commands, button, idleText):
        if not self.logic.ensureDependencies(askUser=True):
            return
        self.ui.trainingLogTextEdit.clear()
        self.ui.trainingProgressBar.value = 0
        self._jobButton, self._jobIdleText = button, idleText
        self.jobSequence = JobSequence(self.jobRunner, commands, onStep=self.onJobStep,
                                       onFinished=self.onJobFinished)
        button.text = "Cancel"
        for other in (self.ui.trainButton, self.ui.trainDemoButton, self.ui.reviewPredictButton,
                      self.ui.reviewFinetuneButton):
            other.enabled = other is button  # one job at a time; its button cancels it
        self.jobTimer.start()
        self.jobSequence.start()  # a command that cannot start ends at once (onJobFinished)

    def pollJob(self):
        if self.jobSequence is not None:
            self.jobSequence.poll()  # callbacks run here, on the main thread

    def onJobStep(self, index, args):
        self.ui.trainingStatusLabel.text = f"Step {index + 1}: {args[0]}"

    def onJobProgress(self, record):
        if record.get("fraction") is not None:
            self.ui.trainingProgressBar.value = int(100 * record["fraction"])
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in (record.get("metrics") or {}).items())
        self.ui.trainingStatusLabel.text = f"{record.get('stage')}: {record.get('done')}/" \
                                           f"{record.get('total')} {metrics}"

    def onJobLog(self, line):
        self.ui.trainingLogTextEdit.appendPlainText(line)

    def onJobFinished(self, state):
        self.jobTimer.stop()
        self._jobButton.text = self._jobIdleText
        self.ui.trainDemoButton.enabled = True
        self.ui.trainingStatusLabel.text = self.jobRunner.message()
        if state == SUCCEEDED:
            folder = modelFolderFromLog(self.jobRunner.logLines) or (
                self._parameterNode.trainingRunFolder if self._jobButton is self.ui.trainButton
                else None)
            if folder:
                self._parameterNode.modelFolder = pathlib.Path(folder)
        self.reviewPanel.onJobFinished(self._jobButton, state == SUCCEEDED)
        self.onParameterNodeModified()

    def onDependenciesButton(self):
        ok = self.logic.ensureDependencies(askUser=True)
        self.ui.dependenciesLabel.text = "All packages present" if ok else "Packages missing"


class ParanasalSSLLogic(ScriptedLoadableModuleLogic):
    """What the module does, callable without the GUI (Python console, tests)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.results = None  # the last AnalysisResults

    def getParameterNode(self):
        return ParanasalSSLParameterNode(super().getParameterNode())

    def createRoiNode(self, side):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode",
                                                  analysis.roiNodeName(side))
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetSelectedColor(*analysis.ROI_COLORS[side])
        return node

    def ensureDependencies(self, askUser=True):
        """True if every Python package is there; otherwise ask once and install."""
        statuses = dependencies.checkDependencies()
        if not dependencies.missing(statuses):
            return True
        if askUser and not slicer.util.confirmOkCancelDisplay(
                dependencies.summary(statuses) + "\n\nInstall them now?", "ParanasalSSL"):
            return False
        try:
            with slicer.util.WaitCursor():
                dependencies.installMissing(statuses, dependencies.slicerPipInstaller,
                                            dependencies.pyTorchUtilsInstaller())
        except dependencies.DependencyError as error:
            slicer.util.errorDisplay(str(error))
            return False
        return not dependencies.missing(dependencies.checkDependencies())

    def analyze(self, volumeNode, roiNodes, modelDir, device="auto", threshold=None,
                opacity=0.6):
        """Predict with the model in ``modelDir`` and show heatmap, regions and summary."""
        self.results = analysis.analyzeScan(volumeNode, roiNodes, modelDir, device, threshold,
                                            opacity)
        return self.results

    def updateDisplay(self, threshold, opacity):
        if self.results is not None and self.results.heatmapNode is not None \
                and self.results.heatmapNode.GetScene() is not None:
            heatmap_display.setThreshold(self.results.heatmapNode, threshold)
            heatmap_display.setOpacity(opacity)

    def jumpToStrongestResidual(self):
        ras = self.results.strongestPeakRas() if self.results else None
        if ras is not None:
            heatmap_display.jumpSlicesToRas(ras)
        return ras


class ParanasalSSLTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: sample phantom, ROI suggestion, heatmap display, jump, cleanup."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_suggestDisplayAndReplace()
        self.setUp()
        self.test_parameterNodeAndWidgets()
        self.setUp()
        self.test_reviewCaseSwap()

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
        self.assertIn("Select", widget.ui.applyButton.toolTip)
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
