"""The Analyze button (Inputs) and the Outputs section of the module panel.

Analyze starts an ``analysis_job.AnalysisJob`` (a background process) and turns into Cancel
while it runs; a busy bar and a status line show that it works and for how long. When it ends
the Outputs rows show per side the probability, the call (normal / uncertain / anomalous) and
the region volume in mL, or the status line says why nothing was added. Runs only inside Slicer
(Qt is imported when the panel is set up, never at import); the job, the texts and the result
nodes are tested headless in ``analysis_job`` and ``analysis``.
"""

from __future__ import annotations

import slicer

from paranasal_ssl.geometry import SIDES
from ParanasalSSLLib import analysis, results
from ParanasalSSLLib.job_runner import FAILED, SUCCEEDED

IDLE_TEXT = "Analyze"
IDLE_TIP = "Analyse the scan with the model in the background (the application stays usable)"
CANCEL_TIP = "Stop the analysis; nothing is added to the scene"


class AnalysisPanel:
    """Receives the module widget (its ``ui``, parameter node and logic)."""

    def __init__(self, widget):
        self.widget = widget
        self.ui = widget.ui
        self.job = None
        self.lastMessage = ""
        self.timer = None

    @property
    def params(self):
        return self.widget._parameterNode

    def setup(self) -> None:
        import qt

        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.jumpToPeakButton.connect("clicked(bool)", self.onJumpToPeak)
        self.ui.exportResultsButton.connect("clicked(bool)", self.onExport)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.poll)
        self.ui.analysisProgressBar.visible = False
        self.showResults(None)

    def cleanup(self) -> None:
        """The module is closing: stop a running analysis and wait for its process to go."""
        if self.timer is not None:
            self.timer.stop()
        if self.running:
            self.job.cancel()
            self.job.wait(timeout=self.job.runner.graceSeconds + 2.0)

    def onSceneClose(self) -> None:
        """The scene is being cleared: its scan goes, so does any analysis of it."""
        if self.running:
            self.job.cancel()
        self.showResults(None)

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    # -- Analyze / Cancel --------------------------------------------------------------------

    def updateApplyButton(self) -> None:
        button = self.ui.applyButton
        if self.running:
            button.text, button.toolTip, button.enabled = "Cancel", CANCEL_TIP, True
            return
        p = self.params
        problems = analysis.inputProblems(
            p.inputVolume, {"left": p.leftRoi, "right": p.rightRoi}, p.modelFolder)
        button.text = IDLE_TEXT
        button.enabled = not problems
        button.toolTip = analysis.problemsText(problems) or IDLE_TIP
        self.ui.analysisStatusLabel.text = analysis.problemsText(problems) or self.lastMessage
        self.ui.modelSummaryLabel.text = analysis.modelSummary(p.modelFolder)

    def onApply(self) -> None:
        if self.running:
            self.job.cancel()
            self.ui.analysisStatusLabel.text = self.job.statusText()
            return
        if not self.widget.ensureDependencies():
            return
        p = self.params
        self.job = self.widget.logic.analysisJob(
            p.inputVolume, {"left": p.leftRoi, "right": p.rightRoi}, p.modelFolder, p.device,
            p.heatmapThreshold, p.heatmapOpacity, onProgress=self.onProgress,
            onFinished=self.onFinished)
        self.job.start()  # inputs it refuses end the job at once (onFinished)
        if self.running:
            self.ui.analysisProgressBar.maximum = 0  # busy until the process reports progress
            self.ui.analysisProgressBar.visible = True
            self.ui.analysisStatusLabel.text = self.job.statusText()
            self.timer.start()
        self.updateApplyButton()

    def poll(self) -> None:
        if self.job is not None:
            self.job.poll()  # callbacks run here, on the main thread
        if self.running:
            self.ui.analysisStatusLabel.text = self.job.statusText()

    def onProgress(self, record: dict) -> None:
        if record.get("fraction") is not None:
            self.ui.analysisProgressBar.maximum = 100
            self.ui.analysisProgressBar.value = int(100 * record["fraction"])

    def onFinished(self, job) -> None:
        if self.timer is not None:
            self.timer.stop()
        self.ui.analysisProgressBar.visible = False
        self.lastMessage = job.message
        if job.state == SUCCEEDED:
            self.showResults(job.results)
        elif job.state == FAILED:
            slicer.util.errorDisplay(job.message, windowTitle="ParanasalSSL")
        if self.params is not None:
            self.updateApplyButton()
        self.ui.analysisStatusLabel.text = job.message

    # -- Outputs -----------------------------------------------------------------------------

    def showResults(self, res) -> None:
        """Outputs rows for ``res`` (an ``AnalysisResults``; None or no sides: "-")."""
        texts = analysis.sideTexts(res)
        for side in SIDES:
            t = texts[side]
            getattr(self.ui, f"{side}ProbabilityLabel").text = t["probability"]
            getattr(self.ui, f"{side}ProbabilityLabel").toolTip = t["probabilityToolTip"]
            getattr(self.ui, f"{side}BadgeLabel").text = t["badgeHtml"]
            getattr(self.ui, f"{side}VolumeLabel").text = t["volume"]
            getattr(self.ui, f"{side}VolumeLabel").toolTip = t["volumeToolTip"]
        hasHeat = analysis.hasPeak(res)
        self.ui.jumpToPeakButton.enabled = hasHeat
        self.ui.jumpToPeakButton.toolTip = (
            "Move all slice views to the strongest residual" if hasHeat
            else "No residual to jump to: analyse a scan first (or the heatmap is empty)")
        self.ui.exportResultsButton.enabled = res is not None and bool(res.nodes)

    def onJumpToPeak(self) -> None:
        if self.widget.logic.jumpToStrongestResidual() is None:
            self.ui.analysisStatusLabel.text = "The heatmap holds no residual to jump to."

    def onExport(self) -> None:
        import qt

        folder = qt.QFileDialog.getExistingDirectory(self.widget.parent, "Export results to")
        if folder and self.widget.logic.results is not None:
            with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
                notes: list = []
                written = results.exportResults(self.widget.logic.results, folder, notes)
                self.ui.analysisStatusLabel.text = (f"Wrote {len(written)} files to {folder}"
                                                    + "".join(f"; {n}" for n in notes))
