"""A run folder's settings and splits: fixed once a stage has trained, free before that (a first
command can stop at a check, e.g. a split without normal sinuses, and the user splits again)."""

from __future__ import annotations

import json

import pytest

from helpers.tiny import TINY_OVERRIDES
from paranasal_ssl.config import SplitConfig
from paranasal_ssl.errors import ConfigError, InputError
from paranasal_ssl.manifest import read_manifest, write_manifest
from paranasal_ssl.splits import split_records
from paranasal_ssl.stages.cae_stage import train_cae
from paranasal_ssl.stages.run import open_run

QUICK = TINY_OVERRIDES + ["cae_train.epochs=1"]


def test_no_normal_training_sinus_is_a_clear_error(tmp_path, tiny_cohort):
    records = [r.with_label(1, ("polyp",)) for r in read_manifest(tiny_cohort)]
    manifest = write_manifest(records, tmp_path / "all_anomalous.csv")
    run = open_run(tmp_path / "run", manifest=manifest, overrides=QUICK, device="cpu")
    with pytest.raises(InputError, match=r"training split \(\d+ subjects\) has no normal.*"
                                         r"0 normal sinuses \(0 subjects\): 0 in train, 0 in "
                                         r"val, 0 in test") as refused:
        train_cae(run)
    # no split can help a cohort without normals: the remedy is more scans, not a split seed
    assert str(refused.value).endswith("expected normal sinuses in both the training and the "
                                       "validation split: add normal scans")
    assert not (tmp_path / "run" / "cae" / "best.pt").exists()


def test_a_split_without_normals_can_be_made_again_until_a_stage_has_trained(tmp_path,
                                                                              tiny_cohort):
    # three subjects keep their normal sides, the rest anomalous on both; split seeds are
    # searched for one that leaves validation without a normal sinus and one that does not
    records = read_manifest(tiny_cohort)
    keep = sorted({r.subject_id for r in records if r.label == 0})[:3]
    records = [r if r.subject_id in keep else r.with_label(1, ("polyp",)) for r in records]

    def normals_in(seed):
        parts = split_records(records, SplitConfig(seed=seed))
        return {name: sum(r.label == 0 for r in part) for name, part in parts.items()}

    bad = next(s for s in range(50) if normals_in(s)["val"] == 0 and normals_in(s)["train"])
    good = next(s for s in range(50) if normals_in(s)["val"] and normals_in(s)["train"])
    manifest = write_manifest(records, tmp_path / "few_normals.csv")
    run_dir = tmp_path / "run"
    run = open_run(run_dir, manifest=manifest, overrides=QUICK + [f"data.split.seed={bad}"],
                   device="cpu")
    val = {r.subject_id for r in run.split("val")}
    normals = {name: len(run.split(name, label=0)) for name in ("train", "val", "test")}
    assert normals["val"] == 0 and normals["train"] > 0, normals
    with pytest.raises(InputError, match=rf"validation split \({len(val)} subjects\) has no "
                       rf"normal.*{normals['train']} in train, 0 in val, {normals['test']} in "
                       r"test.*--set data\.split\.seed=1"):
        train_cae(run)
    before = json.loads((run_dir / "splits.json").read_text())["subjects"]

    # what the message suggests: another split, in the same folder (no stage has trained)
    run = open_run(run_dir, overrides=QUICK + [f"data.split.seed={good}"], device="cpu")
    saved = json.loads((run_dir / "splits.json").read_text())
    assert saved["seed"] == good and saved["subjects"] != before
    assert json.loads((run_dir / "config.json").read_text())["data"]["split"]["seed"] == good
    train_cae(run)
    assert (run_dir / "cae" / "best.pt").exists()

    # reopened without --set, it keeps that split; once a stage has trained, data is fixed
    assert open_run(run_dir, device="cpu").split_of_subject == saved["subjects"]
    with pytest.raises(ConfigError, match=r"data settings .* cannot change \(its cae/ depends"):
        open_run(run_dir, overrides=[f"data.split.seed={bad}"], device="cpu")
    with pytest.raises(ConfigError, match="profile 'cpu-small' and has trained cae/"):
        open_run(run_dir, profile="paper", device="cpu")
    assert json.loads((run_dir / "splits.json").read_text()) == saved


def test_a_manifest_that_gives_the_splits_is_pointed_at_its_split_column(tmp_path, tiny_cohort):
    from dataclasses import replace

    records = read_manifest(tiny_cohort)
    subjects = sorted({r.subject_id for r in records})
    val = set(subjects[:3])
    # three subjects in validation, all their sides anomalous; the rest in training
    given = [replace(r.with_label(1, ("polyp",)) if r.subject_id in val else r,
                     extra={**r.extra, "split": "val" if r.subject_id in val else "train"})
             for r in records]
    manifest = write_manifest(given, tmp_path / "with_splits.csv")
    run = open_run(tmp_path / "run", manifest=manifest, overrides=QUICK, device="cpu")
    assert {run.split_of_subject[s] for s in val} == {"val"}
    with pytest.raises(InputError, match="validation split .* in the manifest's split column") \
            as refused:
        train_cae(run)
    assert "data.split.seed" not in str(refused.value)


def test_the_demo_refuses_a_cohort_too_small_for_its_label_draws_before_training(tmp_path,
                                                                                 capsys):
    """``demo --cases 6``: 10% of 4 training subjects holds no anomalous sinus. It failed at
    stage 4, after training stages 1-3; now before the first of them."""
    from paranasal_ssl.cli.main import main

    code = main(["demo", "--cases", "6", "--out", str(tmp_path / "demo"), "--workers", "1",
                 "--progress", "none", *(f"--set={o}" for o in QUICK)])
    assert code == 2
    assert "label fraction 0.1 of 4 subjects gives" in capsys.readouterr().err
    assert (tmp_path / "demo" / "run" / "config.json").exists()  # the split was made
    assert not any((tmp_path / "demo" / "run" / "cae").rglob("*.pt"))  # nothing trained


def test_resume_with_more_epochs_is_refused_and_the_stage_keeps_its_recorded_settings(
        tmp_path, tiny_cohort, capsys):
    """`train-cae --resume --set cae_train.epochs=N` on a finished CAE once silently kept the
    weights and wrote N into RUN/cae/config.json: the record no longer said how they were made."""
    from paranasal_ssl.cli.main import main

    run = tmp_path / "run"
    sets = [a for o in TINY_OVERRIDES + ["cae_train.epochs=2"] for a in ("--set", o)]
    assert main(["train-cae", "--run", str(run), "--manifest", str(tiny_cohort), *sets,
                 "--device", "cpu", "--workers", "1", "--progress", "none"]) == 0
    weights = (run / "cae" / "best.pt").read_bytes()
    assert json.loads((run / "cae" / "config.json").read_text())["cae_train"]["epochs"] == 2
    code = main(["train-cae", "--run", str(run), "--resume", "--set", "cae_train.epochs=5",
                 "--device", "cpu", "--workers", "1", "--progress", "none"])
    err = capsys.readouterr().err
    assert code != 0 and "epochs 2 -> 5" in err and "has finished" in err
    assert json.loads((run / "cae" / "config.json").read_text())["cae_train"]["epochs"] == 2
    assert (run / "cae" / "best.pt").read_bytes() == weights
    # resumed with its own settings, the finished CAE is given back unchanged
    assert main(["train-cae", "--run", str(run), "--resume", "--device", "cpu", "--workers", "1",
                 "--progress", "none"]) == 0
    assert (run / "cae" / "best.pt").read_bytes() == weights
