"""The Training section of the module panel and the one background job the module runs at a
time: the training stages, the demo model, and the Review section's *Predict list* and
*Fine-tune on labels* (which start theirs through ``toggle``). Runs inside Slicer (Qt is
imported when the panel is set up, never at import); the commands and the runner it drives are
tested headless in ``training`` and ``job_runner``, the panel itself with stand-in widgets.
"""

from __future__ import annotations

import pathlib
from typing import Callable, List, Sequence

from ParanasalSSLLib.job_runner import RUNNING, SUCCEEDED, JobRunner, JobSequence
from ParanasalSSLLib.training import (
    demoCommand,
    demoFolder,
    modelFolderFromLog,
    progressText,
    stageCommands,
)


def _isSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


class JobsPanel:
    """Receives the module widget (its ``ui``, parameter node, ``ensureDependencies``, the
    review panel told when a job ends, and ``onParameterNodeModified``)."""

    def __init__(self, widget):
        self.widget = widget
        self.ui = widget.ui
        self.jobSequence = None
        self._button, self._idleText = None, ""

    @property
    def params(self):
        return self.widget._parameterNode

    def setup(self) -> None:
        import qt

        self.jobRunner = JobRunner(onProgress=self.onJobProgress, onLog=self.onJobLog)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.poll)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.trainDemoButton.connect("clicked(bool)", self.onTrainDemoButton)

    def cleanup(self) -> None:
        self.timer.stop()
        if self.running():
            self.jobSequence.cancel()

    def running(self) -> bool:
        return self.jobSequence is not None and self.jobSequence.state == RUNNING

    def updateButtons(self) -> None:
        p = self.params
        canTrain = _isSet(p.trainingManifest) and _isSet(p.trainingRunFolder)
        if not self.running():
            self.ui.trainButton.enabled = canTrain
        self.ui.trainButton.toolTip = ("Run the chosen stage(s) in the background" if canTrain
                                       else "Select a manifest and a run folder")

    def onTrainButton(self) -> None:
        p = self.params
        self.toggle(lambda: stageCommands(p.trainingStage, p.trainingRunFolder,
                                          p.trainingManifest, p.device),
                    self.ui.trainButton, "Start training")

    def onTrainDemoButton(self) -> None:
        self.toggle(lambda: [demoCommand(demoFolder(), self.params.device)],
                    self.ui.trainDemoButton, "Train demo model")

    def toggle(self, makeCommands: Callable[[], List[Sequence[str]]], button,
               idleText: str) -> None:
        """Start the commands in the background, or cancel the job that is running."""
        if self.running():
            self.jobSequence.cancel()
        else:
            self.start(makeCommands(), button, idleText)

    def start(self, commands: List[Sequence[str]], button, idleText: str) -> None:
        if not self.widget.ensureDependencies():
            return
        self.ui.trainingLogTextEdit.clear()
        self.ui.trainingProgressBar.value = 0
        self._button, self._idleText = button, idleText
        self.jobSequence = JobSequence(self.jobRunner, commands, onStep=self.onJobStep,
                                       onFinished=self.onJobFinished)
        button.text = "Cancel"
        for other in (self.ui.trainButton, self.ui.trainDemoButton, self.ui.reviewPredictButton,
                      self.ui.reviewFinetuneButton, self.ui.reviewEvaluateButton):
            other.enabled = other is button  # one job at a time; its button cancels it
        self.timer.start()
        self.jobSequence.start()  # a command that cannot start ends at once (onJobFinished)

    def poll(self) -> None:
        if self.jobSequence is not None:
            self.jobSequence.poll()  # callbacks run here, on the main thread

    def onJobStep(self, index: int, args: Sequence[str]) -> None:
        self.ui.trainingStatusLabel.text = f"Step {index + 1}: {args[0]}"

    def onJobProgress(self, record: dict) -> None:
        if record.get("fraction") is not None:
            self.ui.trainingProgressBar.value = int(100 * record["fraction"])
        self.ui.trainingStatusLabel.text = progressText(record)

    def onJobLog(self, line: str) -> None:
        self.ui.trainingLogTextEdit.appendPlainText(line)

    def onJobFinished(self, state: str) -> None:
        """The button back to its idle text; a demo or training run that succeeded becomes the
        model folder; the review panel refreshes after its own jobs."""
        self.timer.stop()
        self._button.text = self._idleText
        self.ui.trainDemoButton.enabled = True
        self.ui.trainingStatusLabel.text = self.jobRunner.message()
        if state == SUCCEEDED:
            folder = modelFolderFromLog(self.jobRunner.logLines) or (
                self.params.trainingRunFolder if self._button is self.ui.trainButton else None)
            if folder:
                self.params.modelFolder = pathlib.Path(folder)
                self.ui.trainingStatusLabel.text = f"Finished; the model folder is now {folder}"
        self.widget.reviewPanel.onJobFinished(self._button, state == SUCCEEDED)
        self.widget.onParameterNodeModified()
