"""Batch augmentation: input and target move together, intensity changes touch the input only,
and the blur and the affine reach only the crops drawn for them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from paranasal_ssl.training.augment import (
    AugmentConfig,
    _blur,
    _random_affine,
    augment,
    seeded_noise,
)


def test_augmentation_moves_input_and_target_together_and_only_flips_left_right():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 16, 16, 16)
    spatial = AugmentConfig(p_flip=1.0, p_affine=0.0, p_noise=0, p_blur=0, p_contrast=0)
    xa, ya = augment(x, x.clone(), gen, spatial)
    torch.testing.assert_close(xa, x.flip(-1))  # axis i (left-right) only
    torch.testing.assert_close(ya, xa)
    affine = AugmentConfig(p_flip=0.5, p_affine=1.0, p_noise=0, p_blur=0, p_contrast=0)
    xa, ya = augment(x, x.clone(), gen, affine)
    torch.testing.assert_close(xa, ya)
    assert not torch.allclose(xa, x)


def test_intensity_augmentation_never_touches_the_target():
    gen = torch.Generator().manual_seed(1)
    x, target = torch.rand(4, 1, 16, 16, 16), torch.rand(4, 1, 16, 16, 16)
    cfg = AugmentConfig(p_flip=0, p_affine=0, p_noise=1.0, p_blur=1.0, p_contrast=1.0)
    xa, ya = augment(x, target.clone(), gen, cfg)
    torch.testing.assert_close(ya, target)
    assert (xa - x).abs().mean() > 0.01
    assert xa.min() >= 0 and xa.max() <= 1


def test_blur_reaches_the_drawn_crops_only_with_the_whole_batch_values():
    """Only the crops drawn for the blur are blurred (the others stay as they were), each with
    exactly the values a blur of the whole batch gives it (a crop's blur does not depend on
    the crops beside it, so neither on the batch nor on how ranks share it)."""
    x = torch.rand(16, 1, 12, 12, 12).contiguous(memory_format=torch.channels_last_3d)
    cfg = AugmentConfig(p_flip=0, p_affine=0, p_noise=0, p_blur=0.4, p_contrast=0)
    out, _ = augment(x, None, torch.Generator().manual_seed(3), cfg)
    blurred = (out - x).flatten(1).abs().amax(1) > 0
    assert 0 < int(blurred.sum()) < 16
    whole = _blur(x)
    assert torch.equal(out[blurred], whole[blurred].clamp(0, 1))
    assert torch.equal(out[~blurred], x[~blurred])
    # the blur: a 5-tap Gaussian of sigma 0.8 voxel with edge-replicate padding
    ref = ndi.gaussian_filter(x[3, 0].numpy(), 0.8, mode="nearest", truncate=2.5)
    np.testing.assert_allclose(whole[3, 0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("size", [32, 12])
def test_affine_resamples_the_drawn_crops_only_as_a_whole_batch_resampling_would(size):
    """Only the crops drawn for the affine are resampled, crop and target on the same grid,
    with the values a resampling of the whole batch (identity for the others) gives them. The
    others stay exactly as they were: at 32^3 (the cpu-small crops) an identity resampling
    returns a crop exactly, so nothing changes; at other sizes it moved them by ~1e-6."""
    x = torch.rand(16, 1, size, size, size).contiguous(memory_format=torch.channels_last_3d)
    target = torch.rand(16, 1, size, size, size)
    cfg = AugmentConfig(p_flip=0, p_affine=0.5, p_noise=0, p_blur=0, p_contrast=0)
    out, out_target = augment(x, target, torch.Generator().manual_seed(4), cfg)
    gen = torch.Generator().manual_seed(4)  # the same draws, in augment's order
    torch.rand(16, generator=gen)  # flips
    drawn = torch.rand(16, generator=gen) < cfg.p_affine
    theta = torch.where(drawn.view(16, 1, 1), _random_affine(16, gen, cfg),
                        torch.eye(3, 4).expand(16, 3, 4))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    whole = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    whole_target = F.grid_sample(target, grid, mode="bilinear", padding_mode="border",
                                 align_corners=False)
    assert 0 < int(drawn.sum()) < 16
    assert torch.equal(out[~drawn], x[~drawn]) and torch.equal(out_target[~drawn],
                                                               target[~drawn])
    assert torch.equal(out[drawn], whole[drawn].clamp(0, 1))
    assert torch.equal(out_target[drawn], whole_target[drawn])
    assert not torch.equal(out[drawn], x[drawn])
    if size == 32:
        assert torch.equal(whole, x.where(~drawn.view(16, 1, 1, 1, 1), whole))


def test_augmentation_is_reproducible_from_the_generator():
    x = torch.rand(4, 1, 16, 16, 16)
    a, _ = augment(x, None, torch.Generator().manual_seed(5))
    b, _ = augment(x, None, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_seeded_noise_reaches_the_drawn_rows_with_the_noise_of_their_seeds():
    """The GPU path's noise (``augment`` draws one seed per sample there): the rows drawn
    for it get Gaussian noise of the asked std that depends on their seed alone, so a rank's
    rows get exactly what one process gives them; the other rows stay as they were."""
    x = torch.rand(6, 1, 16, 16, 16)
    rows = torch.tensor([True, False, True, True, False, True])
    seeds = torch.randint(2 ** 62, (6,), generator=torch.Generator().manual_seed(6))
    out = seeded_noise(x, rows, seeds, 0.5)
    assert torch.equal(out[~rows], x[~rows])
    noise = (out - x)[rows]
    assert abs(float(noise.std()) - 0.5) < 0.02 and abs(float(noise.mean())) < 0.02
    assert not torch.allclose(noise[0], noise[1])  # each row its own draw
    for part in (slice(0, 2), slice(2, 6)):  # two ranks' shares of the batch
        torch.testing.assert_close(seeded_noise(x[part], rows[part], seeds[part], 0.5),
                                   out[part], rtol=0, atol=1e-6)
    assert torch.equal(seeded_noise(x, rows, seeds, 0.5), out)
