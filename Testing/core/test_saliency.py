"""Grad-CAM explains the logit the classifier outputs, at a resolution that can point."""

from __future__ import annotations

import torch

from paranasal_ssl.benchmarks.saliency import MIN_CAM_EDGE, cam_stage, grad_cam
from paranasal_ssl.experiment import profile_config
from paranasal_ssl.networks import build_classifier


def test_the_map_is_taken_where_the_encoder_is_still_fine_enough_to_point():
    enc = profile_config("cpu-small").encoder
    model = build_classifier(enc, [8])
    shapes = [f.shape[-1] for f in model.encoder(torch.zeros(1, 1, 32, 32, 32))]
    assert shapes[-1] == 2  # the last stage alone could not localise anything
    k = cam_stage(shapes)
    assert shapes[k] >= MIN_CAM_EDGE and all(e < MIN_CAM_EDGE for e in shapes[k + 1:])
    assert cam_stage([4, 2]) == 0


def test_grad_cam_follows_the_logit_including_the_score_prior():
    torch.manual_seed(0)
    enc = profile_config("cpu-small").encoder
    model = build_classifier(enc, [8], prior=True)
    x = torch.rand(3, 1, 32, 32, 32)
    with torch.no_grad():  # the head outputs 0: only the prior moves the logit
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    cams = grad_cam(model, x, torch.device("cpu"))
    assert cams.shape == (3, 32, 32, 32)
    assert cams.min() >= 0 and abs(cams.max(axis=(1, 2, 3)) - 1).max() < 1e-5
    # an 8^3 map upsampled to 32^3 has far more than the 8 levels of a 2^3 map
    assert len({round(float(v), 4) for v in cams[0].ravel()}) > 64
