"""The Training section's background job as a user drives it: Start is enabled only with a
manifest and a run folder, a running job turns its button into Cancel and disables the other
job buttons, a finished training job's run becomes the model folder, a failed one says why,
and Cancel stops the process.
Real subprocesses through the real job runner; only the PythonQt widgets are stand-ins
(Testing/mrml/conftest.py)."""

from __future__ import annotations

import time
import types

import pytest

from ParanasalSSLLib.jobs_panel import JobsPanel


@pytest.fixture
def panel(standIns, tmp_path):
    params = types.SimpleNamespace(trainingManifest=None, trainingRunFolder=None,
                                   trainingStage="all", device="cpu", modelFolder=None)
    finished = []
    widget = types.SimpleNamespace(
        ui=standIns.ui, _parameterNode=params, ensureDependencies=lambda: True,
        reviewPanel=types.SimpleNamespace(onJobFinished=lambda b, ok: finished.append((b, ok))),
        onParameterNodeModified=lambda: None)
    p = JobsPanel(widget)
    p.setup()
    p.finished = finished
    return p


def _pump(panel, timeout=60.0, until=None):
    """What Qt's event loop would do: fire the panel's timer until ``until()`` holds (default:
    the job has ended)."""
    until = until or (lambda: not panel.running())
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        panel.timer.fire()
        time.sleep(0.05)
    panel.timer.fire()
    assert until()


def test_start_needs_a_manifest_and_a_run_folder(panel, tmp_path):
    ui, p = panel.ui, panel.params
    panel.updateButtons()
    assert not ui.trainButton.enabled and "Select a manifest" in ui.trainButton.toolTip
    p.trainingManifest, p.trainingRunFolder = tmp_path / "m.csv", tmp_path / "run"
    panel.updateButtons()
    assert ui.trainButton.enabled and ui.trainButton.toolTip.startswith("Run the chosen")


def test_a_finished_training_job_makes_its_run_the_model_folder(panel, tmp_path):
    """A real core command (a one-case phantom cohort, a few seconds) through the runner."""
    ui, p = panel.ui, panel.params
    p.trainingRunFolder = tmp_path / "run"
    quick = ["synth", str(tmp_path / "cohort"), "--cases", "1", "--spacing", "3",
             "--workers", "1"]
    panel.toggle(lambda: [quick], ui.trainButton, "Start training")
    assert ui.trainButton.text == "Cancel" and ui.trainButton.enabled
    assert not ui.trainDemoButton.enabled and not ui.reviewPredictButton.enabled  # one job
    assert ui.trainingStatusLabel.text.startswith("Step 1: synth")
    _pump(panel, timeout=120)
    assert ui.trainButton.text == "Start training" and ui.trainDemoButton.enabled
    assert (tmp_path / "cohort" / "manifest.csv").is_file()
    assert p.modelFolder == tmp_path / "run"
    assert ui.trainingStatusLabel.text == f"Finished; the model folder is now {tmp_path / 'run'}"
    assert "synth" in ui.trainingLogTextEdit.text  # the live log
    assert panel.finished == [(ui.trainButton, True)]


def test_a_failed_job_says_why_and_keeps_the_model_folder(panel, tmp_path):
    ui, p = panel.ui, panel.params
    p.modelFolder = tmp_path / "kept"
    bad = ["train-cae", "--run-dir", str(tmp_path / "no-run"), "--device", "cpu"]
    panel.toggle(lambda: [bad], ui.trainButton, "Start training")
    _pump(panel)
    assert ui.trainingStatusLabel.text.startswith("failed (exit code")
    assert "no-run" in ui.trainingStatusLabel.text and p.modelFolder == tmp_path / "kept"
    assert panel.finished == [(ui.trainButton, False)]


def test_cancel_stops_the_process_and_keeps_the_model_folder(panel, tmp_path):
    ui, p = panel.ui, panel.params
    p.modelFolder = tmp_path / "kept"
    slow = ["synth", str(tmp_path / "big"), "--cases", "2000", "--spacing", "2",
            "--workers", "1"]
    panel.toggle(lambda: [slow], ui.trainDemoButton, "Train demo model")
    _pump(panel, until=lambda: panel.jobRunner.progress is not None)  # under way
    process = panel.jobRunner._process
    t = time.monotonic()
    panel.toggle(lambda: [slow], ui.trainDemoButton, "Train demo model")  # its button cancels
    _pump(panel, timeout=30)
    assert time.monotonic() - t < 20 and process.poll() is not None
    assert ui.trainDemoButton.text == "Train demo model" and p.modelFolder == tmp_path / "kept"
    assert ui.trainingStatusLabel.text == "cancelled"
    assert panel.finished == [(ui.trainDemoButton, False)]
