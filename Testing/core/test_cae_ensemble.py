"""Stage 1-2 with several CAEs: each member is trained with its own seed, stage 2 caches the
mean of their residual maps, predict loads them all, and runs saved with one CAE still load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from helpers.tiny import TINY_OVERRIDES
from paranasal_ssl.cli.main import main
from paranasal_ssl.crop_cache import record_key
from paranasal_ssl.errors import InputError
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.networks import CAEEnsemble, build_cae, cae_signature
from paranasal_ssl.residual_fusion import focal_folder, focal_run
from paranasal_ssl.residual_maps import residual_of
from paranasal_ssl.stages.cae_stage import cae_checkpoints
from paranasal_ssl.stages.data import crops_for
from paranasal_ssl.stages.residual_stage import (
    compute_residuals,
    residual_folder,
    residuals_for_records,
)
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.training.checkpoint import load_weights

# Fewer CAE epochs than the tiny default: this test is about the plumbing, not the residual's
# quality. So few epochs leave the air-gated residual empty; the ungated one is not. The
# members train as healing CAEs (foreign patches, the profiles' default) and denoising CAEs
# (coarse noise) at once, so both corruption paths run.
ENSEMBLE = [*TINY_OVERRIDES, "cae.ensemble=2", "cae_train.epochs=8", "cae.noise_std=0.2",
            "cae.foreign_patch_prob=0.5",
            "residual.sign=abs", "residual.air_gate=null"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, tiny_cohort):
    folder = tmp_path_factory.mktemp("ens") / "run"
    return folder, tiny_cohort


def test_members_train_with_their_own_seeds_and_residuals_are_their_mean(
        ensemble_run, capsys, tmp_path):
    folder, manifest = ensemble_run
    code = main(["train-cae", "--run", str(folder), "--manifest", str(manifest),
                 "--profile", "cpu-small", *_sets(ENSEMBLE), "--device", "cpu",
                 "--workers", "1", "--progress", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "train-cae 1/2" in printed and "train-cae 2/2" in printed
    run = open_run(folder, device="cpu", workers=1)
    paths = cae_checkpoints(run.dir, run.config)
    assert paths == [folder / "cae" / "best.pt", folder / "cae" / "member-1" / "best.pt"]
    members = []
    for p in paths:
        members.append(build_cae(run.config.cae, run.config.data.crop.shape))
        load_weights(members[-1], p, "cae", cae_signature(run.config.cae, 16))
        members[-1].eval()
    first = [p.detach() for p in members[0].parameters()]
    second = [p.detach() for p in members[1].parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(first, second)), "same seed twice"

    res = compute_residuals(run)
    crops = crops_for(run, run.records[:3], "test", "crops")
    x = torch.from_numpy(np.stack([np.asarray(c[:1]) for c in crops.crops])).float()
    each = [residual_of(m, x, run.config.residual, run.config.data) for m in members]
    expected = ((each[0] + each[1]) / 2).numpy()
    assert each[0].abs().max() > 0.01 and not np.allclose(each[0].numpy(), each[1].numpy())
    for i, r in enumerate(crops.records):
        cached = np.load(res.folder / f"{record_key(r)}.npy")[0].astype(np.float32)
        np.testing.assert_allclose(cached, expected[i, 0], atol=2e-3)  # float16 cache

    # the profile fine-tunes with the residual fusion: the same CAE pass wrote the focal maps
    # it reads (the members' mean too), for every sinus, before any fine-tuning ran
    assert run.config.finetune.residual_fusion
    focal_dir = focal_folder(run, res.folder)
    assert sorted(p.name for p in focal_dir.glob("*.npy")) == sorted(
        f"{record_key(r)}.npy" for r in run.records)
    focal = focal_run(run).config.residual
    each = [residual_of(m, x, focal, run.config.data) for m in members]
    stage2, expected = expected, ((each[0] + each[1]) / 2).numpy()
    assert expected.max() > 0.01 and not np.allclose(expected, stage2, atol=1e-3)
    for i, r in enumerate(crops.records):
        cached = np.load(focal_dir / f"{record_key(r)}.npy")[0].astype(np.float32)
        np.testing.assert_allclose(cached, expected[i, 0], atol=2e-3)
    # so do the maps of sinuses outside the run (an independent test cohort)
    outside = tmp_path / "outside"
    residuals_for_records(run, run.records[:3], outside)
    assert sorted(p.name for p in focal_folder(run, outside).glob("*.npy")) == sorted(
        f"{record_key(r)}.npy" for r in run.records[:3])
    # a run that does not fuse writes stage 2's maps only
    plain_dir = tmp_path / "plain"
    shutil.copytree(folder, plain_dir, ignore=shutil.ignore_patterns("residuals", "external"))
    plain = open_run(plain_dir, device="cpu", workers=1, cache_dir=run.cache_dir,
                     overrides=["finetune.residual_fusion=false"])
    compute_residuals(plain)
    assert (residual_folder(plain) / "scores.csv").exists()
    assert not (plain_dir / "external").exists()


def test_predict_loads_every_member_and_a_missing_one_is_named(ensemble_run, tmp_path):
    folder, _ = ensemble_run
    code = main(["finetune", "--run", str(folder), "--init", "random",
                 "--set", "finetune_train.epochs=1", "--device", "cpu", "--workers", "1",
                 "--progress", "none"])
    assert code == 0
    bundle = load_model(folder, "cpu")
    assert isinstance(bundle.cae, CAEEnsemble) and len(bundle.cae.members) == 2

    copy = tmp_path / "run"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("cache"))
    (copy / "cae" / "member-1" / "best.pt").unlink()
    with pytest.raises(InputError, match="CAE 2 of the ensemble of 2"):
        compute_residuals(open_run(copy, device="cpu", workers=1))


def test_a_single_cae_run_saved_before_ensembles_still_loads(trained_run, tmp_path):
    """config.json without ``cae.ensemble`` (older runs): one CAE, same residual folder."""
    run, _ = trained_run
    copy = tmp_path / "old"
    shutil.copytree(run.dir, copy, ignore=shutil.ignore_patterns("cache"))
    config = json.loads((copy / "config.json").read_text())
    del config["cae"]["ensemble"]
    (copy / "config.json").write_text(json.dumps(config))
    old = open_run(copy, device="cpu", workers=1, cache_dir=run.cache_dir)
    assert old.config.cae.ensemble == 1
    assert residual_folder(old).name == residual_folder(run).name
    bundle = load_model(copy, "cpu")
    assert not isinstance(bundle.cae, CAEEnsemble)


def test_predict_uses_the_ensemble_a_model_was_fine_tuned_with(tmp_path, tiny_cohort):
    """`--set cae.ensemble=2` on a one-CAE run is not written to the run's config.json; the
    fine-tuned model (whose heatmap scale comes from the 2-CAE residuals) must still get both."""
    common = ["--run", str(tmp_path / "run"), "--device", "cpu", "--workers", "1",
              "--progress", "none"]
    one = [o for o in ENSEMBLE if not o.startswith("cae.ensemble")] + ["cae.ensemble=1"]
    assert main(["train-cae", *common, "--manifest", str(tiny_cohort), "--profile",
                 "cpu-small", *_sets(one)]) == 0
    two = _sets(["cae.ensemble=2"])
    assert main(["train-cae", *common, *two]) == 0
    assert main(["finetune", *common, "--init", "random", *two,
                 *_sets(["finetune_train.epochs=1"])]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cae"]["ensemble"] == 1
    bundle = load_model(tmp_path / "run", "cpu")
    assert isinstance(bundle.cae, CAEEnsemble) and len(bundle.cae.members) == 2
