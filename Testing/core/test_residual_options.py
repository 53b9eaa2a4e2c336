"""The focal residual (CT bone gate, Gaussian, box maximum), the encoder's pooling option and
the residual fusion's arithmetic: options of stages 2-4 beside the defaults they leave alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from paranasal_ssl.config import CropConfig, DataConfig, IntensityConfig
from paranasal_ssl.errors import ConfigError
from paranasal_ssl.experiment import (
    ResidualConfig,
    load_experiment,
    override,
    profile_config,
    save_experiment,
)
from paranasal_ssl.networks import build_classifier, build_pretext
from paranasal_ssl.networks.cae import CAEEnsemble, build_cae
from paranasal_ssl.residual_maps import (
    crop_scores,
    raw_residuals,
    residual_filter,
    residual_of,
    residuals_of,
)


class _ExpectsAir(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def _data(modality: str) -> DataConfig:
    return DataConfig(crop=CropConfig(shape=16, spacing_mm=2.0),
                      intensity=IntensityConfig(modality=modality))


def test_bone_gate_drops_bone_bright_residuals_on_ct_only():
    ct = _data("ct")  # window -1000..600 HU: 150 HU is 0.71875
    x = torch.zeros(1, 1, 8, 8, 8)
    x[..., :4] = (40 + 1000) / 1600  # a 40 HU soft-tissue half (a finding's material)
    x[..., 4:] = (700 + 1000) / 1600  # a 700 HU bony half (a septum the CAE did not expect)
    cfg = ResidualConfig(median_kernel=1, bone_gate_hu=150.0)
    r = residual_of(_ExpectsAir(), x, cfg, ct)
    assert r[..., :4].min() == pytest.approx(0.65) and r[..., 4:].max() == 0
    # MRI bone is dark: no gate, the bright half stays
    assert residual_of(_ExpectsAir(), x, cfg, _data("mri"))[..., 4:].min() > 0.9
    # runs saved before the gate had none
    assert residual_of(_ExpectsAir(), x, ResidualConfig(median_kernel=1), ct)[..., 4:].min() > 0.9


def test_gaussian_smoothing_keeps_a_small_focus_that_the_median_erases():
    x = torch.zeros(1, 1, 16, 16, 16)
    x[0, 0, 6:9, 6:9, 6:9] = 0.6  # a 6 mm cube at 2 mm: a small cyst
    data = _data("ct")
    median = residual_of(_ExpectsAir(), x, ResidualConfig(median_kernel=5), data)
    assert median.max() == 0  # 27 of 125 neighbours: the 10 mm median removes it
    focal = ResidualConfig(smoothing="gaussian", gaussian_sigma_mm=2.0)
    r = residual_of(_ExpectsAir(), x, focal, data)
    smoothed = ndi.gaussian_filter(x[0, 0].numpy(), 1.0, mode="nearest", truncate=2.0)
    np.testing.assert_allclose(r[0, 0].numpy(), smoothed, atol=1e-6)  # sigma 2 mm = 1 voxel
    assert r.max() > 0.25 and int(r.argmax()) == np.ravel_multi_index((7, 7, 7), (16,) * 3)
    everywhere = torch.ones_like(x, dtype=torch.bool)
    assert crop_scores(r, everywhere, "max").item() == pytest.approx(float(r.max()))
    assert crop_scores(r, everywhere, "mean").item() < 0.01  # a box mean dilutes the focus
    nowhere = torch.zeros_like(everywhere)
    assert crop_scores(r, nowhere, "max").item() == 0


def test_one_cae_pass_gives_each_residual_setting_as_if_computed_alone():
    """Stage 2's map and the focal map share one reconstruction per ensemble member: each is
    what its own pass gives, also for a subset of the crops (predict's heatmap of crop 0)."""
    torch.manual_seed(0)
    cfg = profile_config("cpu-small")
    members = [build_cae(cfg.cae, 16).eval() for _ in range(2)]
    cae, data = CAEEnsemble(members).eval(), _data("ct")
    x = torch.rand(6, 1, 16, 16, 16) * 0.8
    stage2 = ResidualConfig(median_kernel=3)
    focal = ResidualConfig(smoothing="gaussian", bone_gate_hu=150.0, score="max")
    alone = [residual_of(cae, x, c, data) for c in (stage2, focal)]
    assert not torch.equal(alone[0], alone[1])
    for got, want in zip(residuals_of(cae, x, [stage2, focal], data), alone):
        assert torch.equal(got, want)
    every_third = slice(None, None, 3)
    sub, full = raw_residuals(cae, x, [residual_filter(stage2, data, rows=every_third),
                                       residual_filter(focal, data)])
    assert sub.shape[0] == 2
    # a CAE's output for one crop moves by float rounding with the batch around it (oneDNN)
    torch.testing.assert_close(sub, residual_of(cae, x[::3], stage2, data), atol=1e-6, rtol=0)
    assert torch.equal(full, alone[1])
    # one CAE, no ensemble: the member's own map, not divided
    assert torch.equal(residuals_of(members[0], x, [focal], data)[0],
                       residual_of(members[0], x, focal, data))


def test_focal_residual_settings_are_options_and_saved_runs_load_without_them(tmp_path):
    focal = ["residual.smoothing=gaussian", "residual.bone_gate_hu=150", "residual.score=max",
             "residual.pretext_score_quantile=1"]
    r = override(profile_config("cpu-small"), focal).residual
    assert (r.smoothing, r.gaussian_sigma_mm, r.bone_gate_hu, r.score,
            r.pretext_score_quantile) == ("gaussian", 2.0, 150.0, "max", 1.0)
    for name in ("cpu-small", "paper"):  # not the default (see ResidualConfig)
        r = profile_config(name).residual
        assert (r.smoothing, r.bone_gate_hu, r.score) == ("median", None, "mean")
    # a run saved before these settings existed: its file has none of them
    path = tmp_path / "config.json"
    save_experiment(override(profile_config("cpu-small"), focal), path)
    saved = json.loads(path.read_text())
    assert saved["residual"]["bone_gate_hu"] == 150  # a run made with them keeps them
    for key in ("smoothing", "gaussian_sigma_mm", "bone_gate_hu", "pretext_score_quantile"):
        del saved["residual"][key]
    path.write_text(json.dumps(saved))
    r = load_experiment(path).residual
    assert (r.smoothing, r.bone_gate_hu, r.pretext_score_quantile) == ("median", None, 0.99)
    with pytest.raises(ConfigError, match="residual.smoothing"):
        override(profile_config("cpu-small"), ["residual.smoothing=box"])
    with pytest.raises(ConfigError, match=r"residual.heatmap_quantile.*1.5.*below 1"):
        override(profile_config("cpu-small"), ["residual.heatmap_quantile=1.5"])


def test_max_pooling_reaches_the_classifier_score_head_and_baselines_and_keeps_old_keys(tmp_path):
    from types import SimpleNamespace

    from paranasal_ssl.stages.pretext_stage import encoder_signature

    cfg = override(profile_config("cpu-small"), ["encoder.pooling=max"])
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32, 32)  # the profile's crop: a 2^3 last stage
    clf = build_classifier(cfg.encoder, cfg.finetune.head_hidden).eval()
    last = clf.encoder(x)[-1]
    assert last.shape[-1] == 2 and not torch.allclose(last.amax((2, 3, 4)), last.mean((2, 3, 4)))
    assert torch.allclose(clf.encoder.pooled(x), last.amax(dim=(2, 3, 4)))
    pretext = build_pretext(cfg.encoder, 32, score_head=True).eval()
    _, score = pretext(x, with_score=True)
    feats = pretext.encoder(x)[-1].amax(dim=(2, 3, 4))
    assert torch.allclose(score, pretext.score_head(feats).squeeze(1))
    # a config file saved before the setting existed: mean pooling, and the same encoder key,
    # so its checkpoints still load; max pooling is another architecture
    path = tmp_path / "config.json"
    save_experiment(profile_config("cpu-small"), path)
    saved = json.loads(path.read_text())
    del saved["encoder"]["pooling"]
    path.write_text(json.dumps(saved))
    old = load_experiment(path)
    assert old.encoder.pooling == "mean"
    key = encoder_signature(SimpleNamespace(config=old))
    assert key == encoder_signature(SimpleNamespace(config=profile_config("cpu-small")))
    assert key != encoder_signature(SimpleNamespace(config=cfg))
    with pytest.raises(ConfigError, match="encoder.pooling"):
        override(profile_config("cpu-small"), ["encoder.pooling=median"])


def test_residual_fusion_weights_each_score_by_its_spread_over_the_training_sinuses():
    from scipy.special import expit

    from paranasal_ssl.residual_fusion import FOCAL_RESIDUAL, ResidualFusion

    focal = override(profile_config("cpu-small"), FOCAL_RESIDUAL).residual
    # training logits -2 and 2 (sd 2), focal scores 1 and 5 (mean 3, sd 2)
    fusion = ResidualFusion.fit(focal, expit(np.array([-2.0, 2.0])), [1.0, 5.0])
    assert (fusion.residual_mean, fusion.residual_sd) == pytest.approx((3.0, 2.0))
    assert fusion.logit_sd == pytest.approx(2.0)
    # logit 0.5 plus 2 * (7 - 3) / 2 = 4.5; a focal score at the training mean changes nothing
    assert fusion.probability([expit(0.5)], [7.0])[0] == pytest.approx(expit(4.5))
    assert fusion.probability([0.3], [3.0])[0] == pytest.approx(0.3)
    again = ResidualFusion.from_dict(json.loads(json.dumps(fusion.to_dict())))
    assert again == fusion and again.residual_config() == focal
    assert again.residual_config().smoothing == "gaussian"
    # no spread (e.g. one training sinus): unit scale instead of a division by zero
    flat = ResidualFusion.fit(focal, [0.5, 0.5], [2.0, 2.0])
    assert np.isfinite(flat.probability([0.5], [4.0])).all()
