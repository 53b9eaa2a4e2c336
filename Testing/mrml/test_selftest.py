"""The body of the in-Slicer analysis self-test (``ParanasalSSLTest.test_analyzeSamplePhantom``)
run headless: a tiny model trained with the real command line in a background process, then the
sample phantom analysed with it in another, checked in a real slicer-core scene."""

from __future__ import annotations

import json

from paranasal_ssl.cli.main import build_parser
from ParanasalSSLLib import selftest


def test_the_demo_command_of_the_self_test_is_the_real_demo_with_tiny_settings(tmp_path):
    args = build_parser().parse_args(selftest.tinyDemoArgs(tmp_path / "m", "cpu"))
    assert (args.command, args.cases, args.label_draws, args.label_fraction) == (
        "demo", 16, 1, 1.0)
    assert args.overrides == list(selftest.TINY_SETTINGS) and args.device == "cpu"


def test_the_self_test_trains_a_tiny_model_and_analyses_the_sample_phantom(slicerApp, tmp_path):
    report = selftest.runAnalysisSelfTest(tmp_path, "cpu")
    assert report["problems"] == []
    model = json.loads((report["model"] / "model.json").read_text())
    assert model["finetune"]  # a run folder with a default fine-tuned model
    job = report["job"]
    assert sorted(job.results.sides) == ["left", "right"] and not job.folder.exists()
    assert job.results.heatmapNode.GetScene() is slicerApp.scene
    # the checks catch what they are for: a job that did not succeed is reported
    job.state, job.message = "failed", "Analysis failed: boom"
    assert selftest.checkAnalysis(job) == ["the analysis did not succeed (failed): "
                                           "Analysis failed: boom"]
