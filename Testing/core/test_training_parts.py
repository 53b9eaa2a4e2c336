"""Training building blocks: residual maps, networks, checkpoints, optimisers, exact resume
(augmentation: test_augment.py)."""

from __future__ import annotations

import pickle
from dataclasses import asdict

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from paranasal_ssl import progress
from paranasal_ssl.config import CropConfig, DataConfig
from paranasal_ssl.crops import extract_crop, roi_box_mask
from paranasal_ssl.errors import CancelledError, CheckpointError, ConfigError
from paranasal_ssl.experiment import (
    ResidualConfig,
    TrainConfig,
    load_experiment,
    override,
    profile_config,
    save_experiment,
)
from paranasal_ssl.geometry import SinusROI
from paranasal_ssl.networks import build_cae, build_classifier, build_pretext
from paranasal_ssl.residual_maps import (
    crop_scores,
    median_filter3d,
    per_crop_rescale,
    residual_of,
)
from paranasal_ssl.scan_io import image_from_array
from paranasal_ssl.stages.pretext_stage import pretext_loss, sinus_scores
from paranasal_ssl.training.augment import (
    augment,
    coarse_noise,
)
from paranasal_ssl.training.checkpoint import load_weights, read_checkpoint, save_checkpoint
from paranasal_ssl.training.distributed import BatchRows
from paranasal_ssl.training.foreign_patch import foreign_patches
from paranasal_ssl.training.loop import fit
from paranasal_ssl.training.optim import LARS, lr_factor


def test_median_filter_matches_scipy():
    x = torch.rand(3, 1, 12, 10, 14)
    ours = median_filter3d(x, 3, chunk_voxels=5000).numpy()  # several chunks
    ref = np.stack([ndi.median_filter(v[0], 3, mode="nearest") for v in x.numpy()])
    np.testing.assert_allclose(ours[:, 0], ref)


@pytest.mark.parametrize("kind", ["sparse residual", "with negatives"])
def test_median_filter_matches_scipy_on_residual_like_and_signed_input(kind):
    """Residual maps are mostly 0 (the sparse path: only neighbourhoods that are more than half
    positive are computed); signed input takes the dense path. Both equal scipy's filter."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 20, 18, 16, generator=gen)
    if kind == "sparse residual":
        # a positive blob (a finding) plus scattered positive noise, zero elsewhere
        x = x * (torch.rand(x.shape, generator=gen) < 0.05)
        x[:, :, 5:12, 4:11, 6:13] += 0.5
    else:
        x = x - 0.5
    ours = median_filter3d(x, 5, chunk_voxels=3000).numpy()  # several chunks
    ref = np.stack([ndi.median_filter(v[0], 5, mode="nearest") for v in x.numpy()])
    np.testing.assert_array_equal(ours[:, 0], ref)
    assert (ref > 0).mean() > 0.02  # the blob survives the filter: not a trivial all-0 case


def test_coarse_noise_is_blob_sized_reproducible_and_split_by_rows():
    x = torch.zeros(6, 1, 32, 32, 32)
    noise = coarse_noise(x, 4, 0.2, torch.Generator().manual_seed(1))
    assert noise.shape == x.shape
    again = coarse_noise(x, 4, 0.2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noise, again)
    # blobs, not speckle: neighbouring voxels nearly equal, voxels a lattice cell apart not
    near = torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))
    far = torch.corrcoef(torch.stack([noise[..., :-16].flatten(), noise[..., 16:].flatten()]))
    assert near[0, 1] > 0.95 and abs(far[0, 1]) < 0.3
    assert 0.05 < noise.std() < 0.2  # trilinear upsampling shrinks the lattice's 0.2
    # a process holding rows 2..4 of the global batch gets exactly those rows' noise
    part = coarse_noise(x[2:5], 4, 0.2, torch.Generator().manual_seed(1), BatchRows(2, 5, 6))
    torch.testing.assert_close(part, noise[2:5])


def test_per_crop_rescale_maps_percentiles_to_unit_range():
    r = torch.rand(2, 1, 10, 10, 10) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1, 1)
    out = per_crop_rescale(r, (1, 99))
    assert out.min() == 0 and out.max() == 1
    for i in range(2):
        assert (out[i] == 1).float().mean() == pytest.approx(0.01, abs=0.005)


def test_crop_scores_restricted_to_region():
    r = torch.zeros(1, 1, 4, 4, 4)
    r[0, 0, 0] = 1.0
    region = torch.zeros_like(r, dtype=torch.bool)
    region[0, 0, 0:2] = True
    assert crop_scores(r, region, "mean").item() == pytest.approx(0.5)
    assert crop_scores(r, None, "mean").item() == pytest.approx(0.25)


class _ExpectsGrey(torch.nn.Module):
    """A reconstruction of 0.4 everywhere: below the air gate (0.5), above the old 0.35."""

    def forward(self, x):
        return torch.full_like(x, 0.4)


def test_air_gate_keeps_material_where_the_cae_expects_air_and_saved_runs_keep_theirs(tmp_path):
    x = torch.ones(1, 1, 4, 4, 4)  # material everywhere
    kept = residual_of(_ExpectsGrey(), x, ResidualConfig(median_kernel=1), DataConfig())
    assert kept.min() == pytest.approx(0.6)
    old = ResidualConfig(median_kernel=1, air_gate=0.35)
    assert residual_of(_ExpectsGrey(), x, old, DataConfig()).max() == 0  # expects tissue there
    # a run saved with the gate of its time keeps it (its residual maps stay reproducible)
    path = tmp_path / "config.json"
    save_experiment(override(profile_config("cpu-small"), ["residual.air_gate=0.35"]), path)
    assert load_experiment(path).residual.air_gate == 0.35
    assert profile_config("cpu-small").residual.air_gate == 0.5


@pytest.mark.parametrize("side", ["left", "right"])
def test_roi_box_mask_matches_the_resampled_box(side):
    k, j, i = np.meshgrid(*[np.arange(80)] * 3, indexing="ij")
    ras = np.stack([i - 40, j - 40, k - 40], -1) * np.array([-1.0, -1.0, 1.0])
    roi = SinusROI.from_values([6.5, -4.5, 3.5], [16, 24, 20])
    box = (np.abs(ras - roi.center) <= roi.size / 2).all(-1).astype(np.float32)
    image = image_from_array(box, (1, 1, 1), (-40, -40, -40))
    cfg = CropConfig(shape=32)
    for offset in [(0, 0, 0), (3, 0, 0), (0, -3, 2)]:
        crop, _ = extract_crop(image, roi, cfg, side, 0.0, offset)
        np.testing.assert_array_equal(crop > 0.5, roi_box_mask(roi, cfg, side, offset))


@pytest.mark.parametrize("profile", ["cpu-small", "paper"])
def test_networks_shapes(profile):
    cfg = profile_config(profile)
    s = 16 if profile == "cpu-small" else 32  # any multiple of 8 works
    x = torch.rand(2, 1, s, s, s)
    assert build_cae(cfg.cae, s)(x).shape == x.shape
    assert build_pretext(cfg.encoder, s)(x).shape == x.shape
    assert build_classifier(cfg.encoder, cfg.finetune.head_hidden)(x).shape == (2,)


def test_checkpoint_refuses_other_architecture_and_code(tmp_path):
    cfg = profile_config("cpu-small")
    model = build_cae(cfg.cae, 16)
    path = save_checkpoint(tmp_path / "m.pt", model, "cae", "sig-a",
                           {"architecture": {"crop_shape": 16}})
    other = build_cae(cfg.cae, 16)
    load_weights(other, path, "cae", "sig-a")
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(CheckpointError, match="another architecture or crop size"):
        load_weights(other, path, "cae", "sig-b")
    with pytest.raises(CheckpointError, match="holds a cae model"):
        load_weights(other, path, "classifier")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(build_cae(cfg.cae, 32), path, "cae")

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "x", "payload": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_weights(other, evil, "cae")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_weights(other, tmp_path / "junk.pt", "cae")


def test_lars_and_schedule():
    w = torch.nn.Parameter(torch.ones(4, 4))
    opt = LARS([w], lr=0.1)
    w.grad = torch.full((4, 4), 100.0)
    opt.step()
    # the trust ratio keeps the step ~ trust * ||w|| whatever the gradient's size
    assert (1 - w.detach()).abs().max().item() == pytest.approx(0.1 * 0.001, rel=1e-3)
    cfg = TrainConfig(epochs=10, warmup_epochs=2, schedule="cosine")
    assert lr_factor(0, 10, cfg) == pytest.approx(0.05)
    assert lr_factor(19, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(99, 10, cfg) < 0.01


def _tiny_fit(folder, epochs, resume=False, cancel_after=None, two_groups=False,
              crash_after=None, lr=1e-2, on_start=None):
    torch.manual_seed(0)
    x = torch.rand(24, 1, 8, 8, 8)
    y = (x.mean((1, 2, 3, 4)) > 0.5).float()
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.Dropout(0.3),
                                torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 1))
    cfg = TrainConfig(epochs=epochs, batch_size=6, lr=lr, patience=0)
    validations = []

    def step(m, idx, gen):
        xb, _ = augment(x[idx], None, gen)
        return F.binary_cross_entropy_with_logits(m(xb).squeeze(1), y[idx])

    def validate(m):
        validations.append(1)
        if cancel_after and len(validations) == cancel_after:
            progress.request_cancel()  # what SIGTERM from the job runner's Cancel does
        if crash_after and len(validations) == crash_after:
            raise MemoryError("the process dies here")  # no chance to save anything
        return {"val": F.binary_cross_entropy_with_logits(m(x).squeeze(1), y).item()}

    params = ([{"params": model[0].parameters()}, {"params": model[4].parameters()}]
              if two_groups else None)
    return model, fit(model, cfg=cfg, run_dir=folder, kind="toy", signature="toy",
                      meta={"train_cfg": asdict(cfg)}, n_train=24, train_step=step,
                      validate=validate, monitor="val", mode="min", device=torch.device("cpu"),
                      resume=resume, params=params, on_start=on_start)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full_model, full = _tiny_fit(tmp_path / "full", epochs=6)
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
    try:
        with pytest.raises(CancelledError):
            _tiny_fit(tmp_path / "part", epochs=6, cancel_after=3)
    finally:
        progress.reset_cancel()
    assert len(read_checkpoint(tmp_path / "part" / "last.pt")["training_state"]["history"]) == 3
    resumed_model, resumed = _tiny_fit(tmp_path / "part", epochs=6, resume=True)
    assert resumed.epochs_run == 6
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_a_resume_with_other_training_settings_is_refused_before_anything_is_written(tmp_path):
    started = []
    _tiny_fit(tmp_path / "done", epochs=3, on_start=lambda: started.append("done"))
    assert started == ["done"]
    best = (tmp_path / "done" / "best.pt").read_bytes()
    # a finished training is not trained further by a resume that asks for more epochs
    with pytest.raises(ConfigError, match=r"epochs 3 -> 5.*has finished"):
        _tiny_fit(tmp_path / "done", epochs=5, resume=True, on_start=lambda: started.append(5))
    assert started == ["done"] and (tmp_path / "done" / "best.pt").read_bytes() == best
    # ... with its own settings it gives back its weights, as before
    _, again = _tiny_fit(tmp_path / "done", epochs=3, resume=True)
    assert again.epochs_run == 3
    # an interrupted one goes on with the settings it started with, not another learning rate
    try:
        with pytest.raises(CancelledError):
            _tiny_fit(tmp_path / "part", epochs=6, cancel_after=2)
    finally:
        progress.reset_cancel()
    with pytest.raises(ConfigError, match=r"lr 0.01 -> 0.1.*settings it started with"):
        _tiny_fit(tmp_path / "part", epochs=6, lr=0.1, resume=True)
    _, resumed = _tiny_fit(tmp_path / "part", epochs=6, resume=True)
    assert resumed.epochs_run == 6


def test_checkpoints_are_written_sparingly_and_a_crash_between_them_resumes_exactly(
        tmp_path, monkeypatch):
    """After the first epoch last.pt, best.pt and metrics.csv are written together at most every
    CHECKPOINT_EVERY_S (and at the end, and on a cancel): a process that dies between two
    writes resumes from the last one, with its best weights and history, to the same result."""
    from paranasal_ssl.training import loop

    full_model, full = _tiny_fit(tmp_path / "full", epochs=6)
    monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 3600.0)
    with pytest.raises(MemoryError):
        _tiny_fit(tmp_path / "part", epochs=6, crash_after=4)
    last = read_checkpoint(tmp_path / "part" / "last.pt")
    assert len(last["training_state"]["history"]) == 1  # the first epoch's write only
    assert read_checkpoint(tmp_path / "part" / "best.pt")["meta"]["epoch"] == 1
    assert len((tmp_path / "part" / "metrics.csv").read_text().splitlines()) == 2
    resumed_model, resumed = _tiny_fit(tmp_path / "part", epochs=6, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert resumed.best_epoch == full.best_epoch
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b)
    # the end of a fit writes everything, the best epoch's weights in best.pt
    done = read_checkpoint(tmp_path / "part" / "last.pt")["training_state"]
    assert done["finished"] and len(done["history"]) == 6
    best = read_checkpoint(tmp_path / "part" / "best.pt")
    assert best["meta"]["epoch"] == full.best_epoch
    for key, value in read_checkpoint(tmp_path / "full" / "best.pt")["model"].items():
        torch.testing.assert_close(value, best["model"][key])


def test_a_finished_fit_resumes_to_its_best_weights_whatever_its_optimizer_layout(tmp_path):
    """Resuming a finished training (e.g. a benchmark re-reading its cells) trains nothing and
    needs no optimizer state: one saved before the parameter groups changed still loads."""
    model, first = _tiny_fit(tmp_path / "done", epochs=3)
    stamp = (tmp_path / "done" / "best.pt").stat().st_mtime_ns
    again_model, again = _tiny_fit(tmp_path / "done", epochs=3, resume=True, two_groups=True)
    assert again.epochs_run == first.epochs_run == 3 and again.best_epoch == first.best_epoch
    assert (tmp_path / "done" / "best.pt").stat().st_mtime_ns == stamp
    for a, b in zip(model.state_dict().values(), again_model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_sinus_scores_take_the_quantile_inside_the_box_only():
    targets = torch.zeros(2, 1, 4, 4, 4)
    targets[0, 0, 0, 0, :] = torch.tensor([0.2, 0.4, 0.6, 0.8])
    targets[0, 0, 3, 3, 3] = 1.0  # outside the box: must not count
    targets[1, 0, 2, 2, 2] = 0.5  # the second box is empty -> score 0
    boxes = torch.zeros(2, 1, 4, 4, 4, dtype=torch.bool)
    boxes[0, 0, 0, 0, :] = True
    scores = sinus_scores(targets, boxes, q=1.0)
    assert scores.tolist() == pytest.approx([0.8, 0.0])
    median = sinus_scores(targets, boxes, q=0.5)
    assert median[0].item() == pytest.approx(0.5)  # numpy's linear interpolation of 0.4, 0.6


def test_pretext_loss_adds_the_dice_and_score_terms_as_configured():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    bce = F.binary_cross_entropy_with_logits(logits, target)
    paper = ResidualConfig(pretext_score_weight=0.0, pretext_dice_weight=0.0)
    assert pretext_loss(logits, target, paper).item() == pytest.approx(bce.item())
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    score_logit, score_target = torch.tensor([0.5]), torch.tensor([1.0])
    score_bce = np.log1p(np.exp(-0.5))
    both = ResidualConfig(pretext_score_weight=2.0, pretext_dice_weight=0.5)
    got = pretext_loss(logits, target, both, score_logit, score_target).item()
    assert got == pytest.approx(bce.item() + 0.5 * (1 - dice.item()) + 2.0 * score_bce)


def test_foreign_patches_paste_the_crops_own_anatomy_into_an_ellipsoid():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1, 32, 32, 32)
    x[:, :, :, :, 16:] = 1.0  # two materials: a patch moved across the boundary shows up
    x += torch.rand(x.shape, generator=g) * 0.01
    assert torch.equal(foreign_patches(x, 0.0, 0.25, torch.Generator().manual_seed(1)), x)
    out = foreign_patches(x, 1.0, 0.25, torch.Generator().manual_seed(1))
    changed = (out - x).abs() > 1e-6
    per_crop = changed.flatten(1).float().mean(1)
    assert (per_crop > 0).sum() >= 6  # a few shifts may move like material onto like
    assert per_crop.max() < 4 / 3 * 3.1416 * 0.25 ** 3 + 0.01  # within the largest ellipsoid
    # convex blends of the crop's own values: nothing outside its range is invented
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6
    again = foreign_patches(x, 1.0, 0.25, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again)
    # a process holding rows 2..4 of the global batch corrupts exactly those rows
    part = foreign_patches(x[2:5], 1.0, 0.25, torch.Generator().manual_seed(1),
                           BatchRows(2, 5, 8))
    torch.testing.assert_close(part, out[2:5])
    # about half the crops at prob 0.5
    half = foreign_patches(x.repeat(4, 1, 1, 1, 1), 0.5, 0.25, torch.Generator().manual_seed(2))
    touched = ((half - x.repeat(4, 1, 1, 1, 1)).abs() > 1e-6).flatten(1).any(1).float().mean()
    assert 0.2 < touched < 0.8
