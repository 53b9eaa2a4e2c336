"""Training job command lines and the model folder a demo leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from paranasal_ssl.cli.main import build_parser
from ParanasalSSLLib import training


def test_all_stages_in_order_with_device_and_json_progress(tmp_path):
    commands = training.stageCommands("all", tmp_path / "run", tmp_path / "manifest.csv", "cpu")
    assert [c[0] for c in commands] == ["train-cae", "residuals", "pretrain", "finetune"]
    parser = build_parser()  # every command line is one the real CLI accepts
    for args in commands:
        parsed = parser.parse_args(args)
        assert parsed.device == "cpu" and parsed.progress == "json"
        assert Path(parsed.run) == tmp_path / "run"
    assert training.stageCommands("residuals", "r")[0][:3] == ["residuals", "--run", "r"]
    with pytest.raises(ValueError, match="unknown stage"):
        training.stageCommands("everything", "r")


def test_demo_command_is_accepted_by_the_cli_and_its_model_folder_is_found(tmp_path):
    parsed = build_parser().parse_args(training.demoCommand(tmp_path / "demo", "auto"))
    assert Path(parsed.out) == tmp_path / "demo" and parsed.progress == "json"
    log = ["AUPRC table", f"model: {tmp_path}/demo/run  (results: {tmp_path}/demo/results.md)"]
    assert training.modelFolderFromLog(log) == tmp_path / "demo" / "run"
    assert training.modelFolderFromLog(["no model line"]) is None


def test_a_demo_model_made_earlier_is_found_in_the_per_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARANASAL_CACHE", str(tmp_path))
    assert training.demoFolder().is_relative_to(tmp_path)
    assert training.cachedDemoModel() is None
    run = training.demoFolder() / "run"
    run.mkdir(parents=True)
    assert training.cachedDemoModel() is None  # an interrupted demo is no model
    (run / "model.json").write_text("{}")
    assert training.cachedDemoModel() == run


def test_progress_records_read_as_one_line():
    record = {"stage": "train-cae", "done": 3, "total": 40, "fraction": 0.075,
              "metrics": {"train_loss": 0.123456, "epoch": 3}}
    assert training.progressText(record) == "train-cae: 3/40 train_loss 0.1235, epoch 3"
    assert training.progressText({"stage": "predict", "done": 2, "total": None}) == "predict: 2"
