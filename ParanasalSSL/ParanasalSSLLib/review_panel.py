"""The Review section of the module panel: wires its widgets and keyboard shortcuts to a
``review.CaseReviewer``. Runs only inside Slicer (Qt is imported when the panel is set up, never
at import); everything it calls is tested headless in ``review`` and ``paranasal_ssl.review``.

Shortcuts (active while the module is shown; a text field with focus keeps its keys):
N next, P previous, U next unreviewed, A agree on both sides, 1 / 2 left normal / anomalous,
3 / 4 right normal / anomalous, X flag, J jump to the strongest residual.
"""

from __future__ import annotations

import datetime
import pathlib

import slicer

from paranasal_ssl.geometry import SIDES
from paranasal_ssl.review.ordering import FILTERS, SORT_KEYS  # noqa: F401 (parameter choices)
from paranasal_ssl.review.verdicts import READER_TYPES
from ParanasalSSLLib import results, review

# Per-side widgets are named f"{side}{name}" in the .ui (checked by the UI contract test).
SIDE_WIDGETS = ("ReviewSideLabel", "AgreeButton", "NormalButton", "AnomalousButton",
                "TypeComboBox", "OnTargetComboBox", "CommentLineEdit")
TYPE_ITEMS = ("-",) + READER_TYPES
ON_TARGET_ITEMS = {"-": None, "yes": True, "no": False}
SHORTCUTS = (("N", "next"), ("P", "previous"), ("U", "next_unreviewed"), ("A", "agreeBoth"),
             ("1", "leftNormal"), ("2", "leftAnomalous"), ("3", "rightNormal"),
             ("4", "rightAnomalous"), ("X", "toggleFlag"), ("J", "jumpToPeak"))


def _isSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


class ReviewPanel:
    """Receives the module widget (its ``ui``, parameter node, logic and job starter)."""

    def __init__(self, widget):
        self.widget = widget
        self.ui = widget.ui
        self.reviewer = None
        self.labelsCsv = None
        self.shortcuts = []
        self._updating = False

    @property
    def params(self):
        return self.widget._parameterNode

    def setup(self) -> None:
        import qt

        self.ui.reviewOpenButton.connect("clicked(bool)", self.onOpen)
        self.ui.reviewPreviousButton.connect("clicked(bool)", lambda _=False: self.previous())
        self.ui.reviewNextButton.connect("clicked(bool)", lambda _=False: self.next())
        self.ui.reviewNextUnreviewedButton.connect("clicked(bool)",
                                                   lambda _=False: self.next_unreviewed())
        self.ui.reviewFlagButton.connect("toggled(bool)", self.onFlag)
        self.ui.reviewExportButton.connect("clicked(bool)", self.onExport)
        self.ui.reviewPredictButton.connect("clicked(bool)", self.onPredict)
        self.ui.reviewFinetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.reviewEvaluateButton.connect("clicked(bool)", self.onEvaluate)
        for side in SIDES:
            w = self.sideWidgets(side)
            for verdict in ("agree", "normal", "anomalous"):
                w[verdict.capitalize() + "Button"].connect(
                    "clicked(bool)", lambda _=False, s=side, v=verdict: self.record(s, verdict=v))
            w["TypeComboBox"].addItems(list(TYPE_ITEMS))
            w["TypeComboBox"].connect("currentIndexChanged(int)",
                                      lambda i, s=side: self.onType(s, i))
            w["OnTargetComboBox"].addItems(list(ON_TARGET_ITEMS))
            w["OnTargetComboBox"].connect("currentIndexChanged(int)",
                                          lambda i, s=side: self.onOnTarget(s, i))
            w["CommentLineEdit"].connect("editingFinished()", lambda s=side: self.onComment(s))
        for key, name in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.setEnabled(False)
            shortcut.connect("activated()", getattr(self, name))
            self.shortcuts.append(shortcut)

    def sideWidgets(self, side: str) -> dict:
        return {name: getattr(self.ui, side + name) for name in SIDE_WIDGETS}

    def setShortcutsEnabled(self, enabled: bool) -> None:
        for shortcut in self.shortcuts:
            shortcut.setEnabled(enabled)

    def cleanup(self) -> None:
        self.setShortcutsEnabled(False)
        for shortcut in self.shortcuts:
            shortcut.setParent(None)
        self.shortcuts = []

    def onSceneClose(self) -> None:
        """The scene is being cleared: keep corrected boxes, forget the nodes."""
        if self.reviewer is not None:
            self.reviewer.syncRois()
            self.reviewer.loaded = None

    # -- opening and moving ------------------------------------------------------------------

    def onOpen(self) -> None:
        from paranasal_ssl.review.case_list import series_case_list
        from paranasal_ssl.review.session import open_session

        p = self.params
        with slicer.util.tryWithErrorDisplay("Could not open the case list.", waitCursor=True):
            predictions = p.reviewPredictions if _isSet(p.reviewPredictions) else None
            cases = pathlib.Path(p.reviewCaseList)
            series = p.reviewSeries.strip()
            if series and cases.is_dir():  # whole studies: one series of each
                cases = series_case_list(cases, series)
            session = open_session(cases, p.reviewReader, predictions)
            if self.reviewer is not None:
                self.reviewer.unload()
            session.set_view(p.reviewSort, p.reviewFilter)
            if session.predictions is not None:
                p.reviewPredictions = pathlib.Path(session.predictions.folder)
            self.reviewer = review.CaseReviewer(session, threshold=p.heatmapThreshold,
                                                opacity=p.heatmapOpacity)
            self.show(self.reviewer.step("first"), "The list has no readable scan.")

    def move(self, how: str, endMessage: str) -> None:
        if self.reviewer is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not load the case.", waitCursor=True):
            self.adoptInputRois()
            self.show(self.reviewer.step(how), endMessage)

    def next(self):
        self.move("next", "End of the list.")

    def previous(self):
        self.move("previous", "Start of the list.")

    def next_unreviewed(self):
        self.move("next_unreviewed", "Every readable case has a verdict (or is flagged).")

    def show(self, loaded, endMessage: str = "") -> None:
        """Point the Inputs / Outputs sections at the loaded case and refresh the panel."""
        if loaded is not None:
            p = self.params
            p.inputVolume = loaded.scanNode
            p.leftRoi, p.rightRoi = loaded.roiNodes.get("left"), loaded.roiNodes.get("right")
            self.widget.logic.results = loaded.results
            # a case without prediction clears the Outputs section ("-")
            self.widget.showSummary(loaded.results or results.AnalysisResults(loaded.scanNode))
        self.ui.reviewStatusLabel.text = (  # e.g. a tilted series shown resampled
            "; ".join([f"Scan: {note}" for note in loaded.scanNotes]
                      + [f"Check the box: {note}" for note in loaded.boxNotes])
            if loaded is not None else endMessage)
        self.refresh()

    def adoptInputRois(self) -> None:
        """Boxes placed or suggested in the Inputs section belong to the case on screen."""
        if self.reviewer is not None and self.reviewer.loaded is not None:
            for side in SIDES:
                node = getattr(self.params, f"{side}Roi")
                if node is not None and node is not self.reviewer.loaded.roiNodes.get(side):
                    self.reviewer.adoptRoiNode(side, node)

    # -- recording --------------------------------------------------------------------------

    def record(self, side: str, **fields) -> None:
        if self._updating or self.reviewer is None or self.reviewer.loaded is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not record the verdict."):
            self.adoptInputRois()
            self.reviewer.record(side, **fields)
        self.refresh()

    def onType(self, side, index):
        self.record(side, anomaly_type=None if index <= 0 else TYPE_ITEMS[index])

    def onOnTarget(self, side, index):
        self.record(side, heatmap_on_target=list(ON_TARGET_ITEMS.values())[max(index, 0)])

    def onComment(self, side):
        text = self.sideWidgets(side)["CommentLineEdit"].text
        loaded = self.reviewer.loaded if self.reviewer else None
        verdict = self.reviewer.session.verdict(loaded.caseId, side) if loaded else None
        if text != (verdict.comment if verdict else ""):  # leaving the field is no change
            self.record(side, comment=text)

    def agreeBoth(self):
        for side in SIDES:
            self.record(side, verdict="agree")

    def leftNormal(self):
        self.record("left", verdict="normal")

    def leftAnomalous(self):
        self.record("left", verdict="anomalous")

    def rightNormal(self):
        self.record("right", verdict="normal")

    def rightAnomalous(self):
        self.record("right", verdict="anomalous")

    def toggleFlag(self):
        if self.ui.reviewFlagButton.enabled:
            self.ui.reviewFlagButton.checked = not self.ui.reviewFlagButton.checked

    def onFlag(self, checked):
        if not self._updating and self.reviewer is not None and self.reviewer.loaded:
            self.reviewer.session.set_flag(self.reviewer.loaded.caseId, checked)
            self.refresh()

    def jumpToPeak(self):
        if self.reviewer is not None and self.reviewer.peakRas() is not None:
            review.heatmap_display.jumpSlicesToRas(self.reviewer.peakRas())

    # -- showing ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Counter, per-side texts and verdict widgets from the session."""
        session = self.reviewer.session if self.reviewer else None
        caseId = self.reviewer.loaded.caseId if self.reviewer and self.reviewer.loaded else None
        self._updating = True
        try:
            self.ui.reviewCaseLabel.text = review.caseHeader(session) if session else \
                "No case list open"
            for side in SIDES:
                v = session.verdict(caseId, side) if caseId else None
                w = self.sideWidgets(side)
                w["ReviewSideLabel"].text = (review.sideText(session, caseId, side) if caseId
                                             else "-")
                w["TypeComboBox"].currentIndex = _typeIndex(v)
                w["OnTargetComboBox"].currentIndex = list(ON_TARGET_ITEMS.values()).index(
                    v.heatmap_on_target if v else None)
                w["CommentLineEdit"].text = v.comment if v else ""
                for name in SIDE_WIDGETS[1:]:
                    w[name].enabled = caseId is not None
            self.ui.reviewFlagButton.checked = bool(caseId and session.state(caseId).flagged)
            self.ui.reviewFlagButton.enabled = caseId is not None
        finally:
            self._updating = False
        self.updateButtons()

    def updateButtons(self) -> None:
        p = self.params
        if p is None:
            return
        isOpen = self.reviewer is not None
        canOpen = _isSet(p.reviewCaseList) and bool(p.reviewReader.strip())
        self.ui.reviewOpenButton.enabled = canOpen
        self.ui.reviewOpenButton.toolTip = ("Open the list and resume where you stopped"
                                            if canOpen else "Select a case list and enter "
                                            "your name")
        for button in (self.ui.reviewPreviousButton, self.ui.reviewNextButton,
                       self.ui.reviewNextUnreviewedButton, self.ui.reviewExportButton):
            button.enabled = isOpen
        if not self.widget.jobsPanel.running():
            self.ui.reviewPredictButton.enabled = isOpen and _isSet(p.modelFolder)
            self.ui.reviewFinetuneButton.enabled = (self.labelsCsv is not None
                                                    and _isSet(p.trainingRunFolder))
            self.ui.reviewEvaluateButton.enabled = (self.labelsCsv is not None
                                                    and _isSet(p.modelFolder))

    def onParameterNodeModified(self) -> None:
        p = self.params
        if self.reviewer is not None and p is not None and not self._updating and (
                self.reviewer.session.view["sort"] != p.reviewSort
                or self.reviewer.session.view["filter"] != p.reviewFilter):
            self.reviewer.session.set_view(p.reviewSort, p.reviewFilter)
            self.refresh()
        else:
            self.updateButtons()

    # -- export and the fine-tuning loop ---------------------------------------------------------

    def onExport(self) -> None:
        import qt

        folder = qt.QFileDialog.getExistingDirectory(self.widget.parent, "Export labels to")
        if not folder or self.reviewer is None:
            return
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            self.adoptInputRois()
            out = self.reviewer.export(folder, images=self.params.reviewExportImages)
            self.labelsCsv = out["labels"]
            self.ui.reviewStatusLabel.text = (
                f"{out['records']} labelled sides, {out['nDisagreements']} disagreements, "
                f"{len(out['images'])} images -> {folder}"
                + (f"; left out: {len(out['skipped'])}" if out["skipped"] else "")
                + "".join(f"; {note}" for note in out["notes"]))
        self.updateButtons()

    def _predictCommand(self, modelFolder):
        from paranasal_ssl.review.predictions import PredictionStore
        from paranasal_ssl.review.rois import predict_case_list

        p, session = self.params, self.reviewer.session
        folder = pathlib.Path(p.reviewPredictions) if _isSet(p.reviewPredictions) else \
            session.path.with_suffix("").with_name(session.path.stem + "-predictions")
        if session.predictions is None or session.predictions.folder != folder:
            session.predictions = PredictionStore(folder)
            session.save()
            p.reviewPredictions = folder
        caseList, _ = predict_case_list(session, folder / "review-cases.csv")
        return review.predictCommand(modelFolder, caseList, folder, p.device)

    def onPredict(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not start the prediction."):
            self.widget.jobsPanel.toggle(lambda: [self._predictCommand(self.params.modelFolder)],
                                   self.ui.reviewPredictButton, "Predict list")

    def onFinetune(self) -> None:
        p = self.params
        if not self.widget.jobsPanel.running():  # else this click cancels the running job
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self._finetuned = pathlib.Path(p.trainingRunFolder) / "finetune" / f"review-{stamp}"
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning."):
            self.widget.jobsPanel.toggle(lambda: [
                review.finetuneCommand(p.trainingRunFolder, self.labelsCsv,
                                       self._finetuned.name, p.device),
                self._predictCommand(self._finetuned)],
                self.ui.reviewFinetuneButton, "Fine-tune on labels")

    def onEvaluate(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not start the evaluation."):
            self.widget.jobsPanel.toggle(lambda: [review.evaluateCommand(
                self.params.modelFolder, self.labelsCsv, self.evaluationFolder(),
                self.params.device)], self.ui.reviewEvaluateButton, "Evaluate on labels")

    def evaluationFolder(self) -> pathlib.Path:
        return pathlib.Path(self.labelsCsv).parent / "evaluation"

    def onJobFinished(self, button, succeeded: bool) -> None:
        """After a review job: the new model becomes the module's model, the list shows the
        new predictions, and an evaluation's result is shown."""
        if button is self.ui.reviewEvaluateButton and succeeded:
            import json

            folder = self.evaluationFolder()
            results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
            results["folder"] = str(folder / "report.md")
            self.ui.reviewStatusLabel.text = review.evaluationText(results)
        elif button is self.ui.reviewEvaluateButton:
            self.ui.reviewStatusLabel.text = ("The evaluation did not finish: "
                                              + self.widget.jobsPanel.jobRunner.message())
        if button is self.ui.reviewFinetuneButton and succeeded:
            self.params.modelFolder = self._finetuned
        if button in (self.ui.reviewPredictButton, self.ui.reviewFinetuneButton) \
                and self.reviewer is not None and self.reviewer.session.predictions:
            self.reviewer.session.predictions.refresh()
            if self.reviewer.loaded is not None:
                self.show(self.reviewer.loadCase(self.reviewer.loaded.caseId))
        self.updateButtons()


def _typeIndex(verdict) -> int:
    if verdict is None or verdict.anomaly_type is None:
        return 0
    from paranasal_ssl.anomalies import canonical_anomaly

    for index, name in enumerate(TYPE_ITEMS[1:], start=1):
        if canonical_anomaly(name) == verdict.anomaly_type:
            return index
    return 0
