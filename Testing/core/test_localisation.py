"""Heatmap localisation metrics on small arrays worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from paranasal_ssl.evaluation import (
    aggregate_localisation,
    best_dice,
    dice_at_threshold,
    false_positive_volume_ml,
    localisation_metrics,
    pointing_game,
    voxel_auprc,
)

# Ranking 0.9(in) 0.8(out) 0.3(in) 0.1(out).
H = np.array([[0.9, 0.8], [0.3, 0.1]])
M = np.array([[1, 0], [1, 0]])


def test_voxel_ap_dice_and_best_dice_by_hand():
    assert voxel_auprc(H, M) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # t = 0.5 highlights 0.9 and 0.8: one of them in the 2-voxel mask -> 2*1 / (2 + 2).
    assert dice_at_threshold(H, M, 0.5) == pytest.approx(0.5)
    # Dice per threshold: 0.9 -> 2/3, 0.8 -> 1/2, 0.3 -> 4/5, 0.1 -> 2/3.
    assert best_dice(H, M) == (pytest.approx(0.8), 0.3)


def test_region_restricts_the_voxels_that_count():
    region = np.array([[1, 0], [1, 1]])  # drop the 0.8 false positive
    assert voxel_auprc(H, M, region) == 1.0
    assert best_dice(H, M, region) == (1.0, 0.3)


def test_pointing_game_hits_misses_and_ties():
    assert pointing_game(H, M) is True
    assert pointing_game(H, 1 - M) is False
    flat_top = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert pointing_game(flat_top, np.array([[1, 0], [0, 0]])) is False  # one of two maxima out
    assert pointing_game(flat_top, np.array([[1, 1], [0, 0]])) is True


def test_false_positive_volume_in_ml():
    h = np.zeros((2, 2, 2))
    h[0, 0, 0], h[1, 1, 1], h[0, 1, 0] = 0.9, 0.5, 0.7  # three voxels >= 0.5
    assert false_positive_volume_ml(h, 0.5, (0.5, 1.0, 2.0)) == pytest.approx(0.003)
    assert false_positive_volume_ml(h, 0.5, 2.0) == pytest.approx(3 * 8 / 1000)
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask[0, 0, 0] = True  # a true positive is not a false positive
    assert false_positive_volume_ml(h, 0.5, 1.0, mask=mask) == pytest.approx(0.002)
    with pytest.raises(ValueError, match="spacing_mm"):
        false_positive_volume_ml(h, 0.5, (1.0, 1.0))


def test_empty_mask_is_a_normal_case():
    m = localisation_metrics(H, np.zeros_like(M), threshold=0.5, spacing_mm=1.0)
    assert m["voxel_auprc"] is None and m["best_dice"] is None and m["pointing_hit"] is None
    assert m["dice"] is None and m["fp_volume_ml"] == pytest.approx(0.002)
    assert best_dice(H, np.zeros_like(M)) == (None, None)


def test_integer_label_masks_and_bad_inputs():
    assert voxel_auprc(H, M * 3) == voxel_auprc(H, M)  # nonzero anomaly code = anomaly
    with pytest.raises(ValueError, match="shape"):
        voxel_auprc(H, np.ones((3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        voxel_auprc(np.array([[np.nan, 0.1], [0.2, 0.3]]), M)


def test_sorted_metrics_match_brute_force_on_tied_volumes():
    rng = np.random.default_rng(0)
    h = np.round(rng.random((6, 7, 8)), 1)  # many ties
    m = (h + rng.normal(scale=0.3, size=h.shape)) > 0.8
    assert voxel_auprc(h, m) == pytest.approx(average_precision_score(m.ravel(), h.ravel()))
    dices = {t: dice_at_threshold(h, m, t) for t in np.unique(h)}
    t_best = max(sorted(dices, reverse=True), key=lambda t: dices[t])
    assert best_dice(h, m) == (pytest.approx(dices[t_best]), t_best)


def test_aggregate_pooled_and_per_case():
    heatmaps = [np.array([0.9, 0.1]), np.array([0.5, 0.6]), np.array([0.7, 0.2])]
    masks = [np.array([1, 0]), np.array([1, 0]), np.array([0, 0])]  # last case is normal
    agg = aggregate_localisation(heatmaps, masks, threshold=0.5, spacing_mm=1.0)
    assert (agg["n_cases"], agg["n_anomalous"], agg["n_normal"]) == (3, 2, 1)
    per = agg["per_case_mean"]
    assert per["voxel_auprc"] == pytest.approx((1.0 + 0.5) / 2)
    assert per["pointing_hit_rate"] == 0.5
    assert per["dice"] == pytest.approx((1.0 + 2 / 3) / 2)  # case 2: 2*1 / (2 + 1)
    assert per["fp_volume_ml_normals"] == pytest.approx(0.001)
    pooled = agg["pooled"]
    # Pooled ranking 0.9(+) 0.7 0.6 0.5(+) 0.2 0.1: AP = 0.5 * 1 + 0.5 * 2/4.
    assert pooled["voxel_auprc"] == pytest.approx(0.75)
    assert pooled["voxel_prevalence"] == pytest.approx(2 / 6)
    assert pooled["dice"] == pytest.approx(2 * 2 / (4 + 2))
    assert pooled["best_dice"] == pytest.approx(2 / 3) and pooled["best_dice_threshold"] == 0.9


def test_aggregate_with_per_case_spacing_and_regions():
    heatmaps = [np.ones((2, 2)), np.ones((2, 2))]
    masks = [np.zeros((2, 2)), np.zeros((2, 2))]
    regions = [np.ones((2, 2)), np.eye(2)]
    agg = aggregate_localisation(heatmaps, masks, regions=regions, threshold=0.5,
                                 spacing_mm=[[1.0, 1.0], [2.0, 5.0]])
    assert [c["fp_volume_ml"] for c in agg["per_case"]] == pytest.approx([0.004, 0.02])
    with pytest.raises(ValueError, match="spacings"):
        aggregate_localisation(heatmaps, masks, spacing_mm=[[1.0, 1.0]] * 3)
