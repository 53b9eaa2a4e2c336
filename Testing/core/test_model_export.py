"""``paranasal-ssl export-model``: a trained model as a small folder that predicts exactly as its
run does, refuses to train, and notices a changed file."""

from __future__ import annotations

import json

import pytest

from paranasal_ssl.cli.main import main
from paranasal_ssl.manifest import read_manifest


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    run, _ = trained_run
    out = tmp_path_factory.mktemp("export") / "model"
    assert main(["export-model", "--model", str(run.dir), "--out", str(out)]) == 0
    return out


def _predict(model, record, out):
    roi = record.roi
    assert main(["predict", "--model", str(model), "--image", str(record.image), "--out",
                 str(out), "--device", "cpu", "--progress", "none", "--sides", record.side,
                 f"--roi-{record.side}",
                 *[f"{v:g}" for v in (*roi.center_ras, *roi.size_mm)]]) == 0
    return json.loads((out / "summary.json").read_text())


def test_an_export_predicts_as_its_run_and_holds_only_the_model(trained_run, exported,
                                                                tiny_cohort, tmp_path):
    run, _ = trained_run
    record = read_manifest(tiny_cohort)[0]
    ours, theirs = (_predict(m, record, tmp_path / n) for m, n in ((run.dir, "run"),
                                                                   (exported, "export")))
    assert ours["sides"][record.side]["probability"] == \
        theirs["sides"][record.side]["probability"]
    names = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    model_name = json.loads((run.dir / "model.json").read_text())["finetune"]
    assert {"config.json", "model.json", "EXPORT.json", "cae/best.pt",
            f"finetune/{model_name}/best.pt", f"finetune/{model_name}/model.json"} <= names
    assert not any(n.startswith(("cache/", "residuals/", "pretext/")) for n in names)
    assert f"finetune/{model_name}/labels_used.csv" not in names  # case ids stay behind
    record_of_export = json.loads((exported / "EXPORT.json").read_text())
    assert set(record_of_export["sha256"]) == names - {"EXPORT.json"}
    assert record_of_export["exported_from"] == str(run.dir.resolve())
    card = (exported / "MODEL_CARD.md").read_text()
    assert "CT" in card and "anomalous from p = 0.500 (0.5: too few validation" in card


def test_a_changed_file_of_an_export_is_named_when_it_loads(exported, tiny_cohort, tmp_path,
                                                           capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    model_json = next(copy.glob("finetune/*/model.json"))
    info = json.loads(model_json.read_text())
    info["threshold"] = 0.01  # e.g. edited by hand: the export no longer is what was made
    model_json.write_text(json.dumps(info))
    record = read_manifest(tiny_cohort)[0]
    code = main(["predict", "--model", str(copy), "--image", str(record.image), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--progress", "none",
                 "--sides", record.side, "--roi-" + record.side,
                 *[f"{v:g}" for v in (*record.roi.center_ras, *record.roi.size_mm)]])
    assert code != 0
    err = capsys.readouterr().err
    assert str(model_json) in err and "differs from the exported file" in err


def test_an_export_refuses_training_and_never_overwrites(trained_run, exported, tmp_path,
                                                        capsys):
    run, _ = trained_run
    assert main(["finetune", "--run-dir", str(exported), "--device", "cpu"]) != 0
    assert "is an exported model" in capsys.readouterr().err
    assert main(["export-model", "--model", str(run.dir), "--out", str(exported)]) != 0
    assert "already exists" in capsys.readouterr().err
    with_cases = tmp_path / "with-cases"
    assert main(["export-model", "--model", str(run.dir), "--out", str(with_cases),
                 "--with-training-cases"]) == 0
    assert list(with_cases.glob("finetune/*/labels_used.csv"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
