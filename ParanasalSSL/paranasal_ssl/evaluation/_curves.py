"""Ranking metrics from cumulative counts at tie-group ends (shared by bootstrap and heatmaps).

Scores are sorted once, in decreasing order. A threshold ``t`` predicts "positive" for every
score ``>= t``, so the only thresholds that matter are the distinct score values; the counts at
those thresholds are the cumulative sums read at the LAST position of each group of tied
scores. Every metric below is a function of those counts only:

- ``tp_e[..., g]``: (weighted) positives with score >= the g-th distinct score (decreasing),
- ``fp_e[..., g]``: (weighted) negatives with score >= the g-th distinct score.

Leading dimensions are batch dimensions (e.g. bootstrap resamples), so a resample is just a
row of per-sample weights (how often each sample was drawn) and no resample is ever re-sorted.
Tied scores are handled exactly as scikit-learn does (one operating point per distinct score),
and the results equal ``average_precision_score`` / ``roc_auc_score`` with ``sample_weight``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# Specificity targets are compared with a tolerance: 1 - 1/10 is not exactly 0.9 in floating
# point, and a reviewer expects 9 of 10 negatives below threshold to count as 90% specificity.
SPEC_TOL = 1e-9


def sort_desc(scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Order (N,) that sorts ``scores`` decreasingly, and the (G,) last index of each tie group.

    The order within a tie group is arbitrary and harmless: metrics only read the counts at
    group ends, which do not depend on it (so no slower stable sort is needed).
    """
    order = np.argsort(-scores)
    s = scores[order]
    ends = np.flatnonzero(np.diff(s) != 0)
    ends = np.append(ends, s.size - 1)
    return order, ends


def group_counts(pos_w: np.ndarray, neg_w: np.ndarray, ends: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative positive/negative weights at group ends.

    pos_w, neg_w: (..., N) weights already in decreasing-score order; ends: (G,).
    Returns tp_e, fp_e: (..., G) float arrays.
    """
    tp = np.cumsum(pos_w, axis=-1, dtype=np.float64)[..., ends]
    fp = np.cumsum(neg_w, axis=-1, dtype=np.float64)[..., ends]
    return tp, fp


def _steps(c: np.ndarray) -> np.ndarray:
    """Per-group increments of a cumulative count: (..., G) -> (..., G)."""
    return np.diff(c, axis=-1, prepend=0.0)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den == 0 (an undefined metric, never a warning)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def average_precision(tp_e: np.ndarray, fp_e: np.ndarray) -> np.ndarray:
    """Average precision sum_g (R_g - R_{g-1}) P_g, as scikit-learn defines it.

    (..., G) counts -> (...) float; NaN where there are no positives.
    """
    k = tp_e + fp_e
    prec = np.zeros_like(tp_e)
    # Precision is only needed where the group adds positives, and k > 0 there.
    np.divide(tp_e, k, out=prec, where=k > 0)
    return _div(np.sum(_steps(tp_e) * prec, axis=-1), tp_e[..., -1])


def roc_auc(tp_e: np.ndarray, fp_e: np.ndarray) -> np.ndarray:
    """Area under the ROC curve = P(score_pos > score_neg) + 0.5 P(tie).

    Each group's positives beat the negatives of all lower groups (n_neg - fp_e) and tie with
    the group's own negatives. (..., G) -> (...); NaN where a class is absent.
    """
    n_pos, n_neg = tp_e[..., -1], fp_e[..., -1]
    wins = _steps(tp_e) * (n_neg[..., None] - fp_e + 0.5 * _steps(fp_e))
    return _div(np.sum(wins, axis=-1), n_pos * n_neg)


def sens_at_spec(tp_e: np.ndarray, fp_e: np.ndarray, target: float
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Highest sensitivity among empirical operating points with specificity >= target.

    No interpolation between operating points: only thresholds that can actually be applied
    (distinct scores, plus "above the maximum" = sensitivity 0, specificity 1) count, so the
    value is the conservative step-function reading of the ROC curve.
    Returns (sens, group index of the chosen threshold or -1 for "above maximum"), shapes (...).
    """
    n_pos, n_neg = tp_e[..., -1:], fp_e[..., -1:]
    sens = _div(tp_e, n_pos)
    spec = 1.0 - _div(fp_e, n_neg)
    ok = spec >= target - SPEC_TOL
    cand = np.where(ok, sens, -1.0)
    idx = np.argmax(cand, axis=-1)
    best = np.take_along_axis(cand, idx[..., None], axis=-1)[..., 0]
    idx = np.where(best > 0, idx, -1)
    best = np.maximum(best, 0.0)
    undefined = (n_pos[..., 0] <= 0) | (n_neg[..., 0] <= 0)
    return np.where(undefined, np.nan, best), idx


def best_dice(tp_e: np.ndarray, fp_e: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Max Dice 2TP / (2TP + FP + FN) = 2TP / (predicted + positives) over all thresholds.

    (..., G) -> (best Dice, group index of the best threshold); NaN / -1 without positives.
    The first (highest) threshold wins among ties, i.e. the smallest predicted region.
    """
    n_pos = tp_e[..., -1:]
    dice = _div(2.0 * tp_e, tp_e + fp_e + n_pos)
    has_pos = n_pos[..., 0] > 0
    idx = np.argmax(np.where(np.isnan(dice), -1.0, dice), axis=-1)
    best = np.take_along_axis(dice, idx[..., None], axis=-1)[..., 0]
    return np.where(has_pos, best, np.nan), np.where(has_pos, idx, -1)


def nan_to_none(x: float) -> Optional[float]:
    """NaN (undefined) -> None for reports; anything else -> float."""
    x = float(x)
    return None if np.isnan(x) else x
