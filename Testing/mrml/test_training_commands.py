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
