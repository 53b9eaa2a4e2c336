"""How well a heatmap (e.g. the CAE residual) localises the annotated anomaly.

Conventions (all functions):
- ``heatmap``: float array of any shape, e.g. (D, H, W) crop; higher = more anomalous; finite.
- ``mask``: ground truth of the same shape; nonzero = anomaly (bool masks and integer label
  masks such as the project's anomaly codes both work).
- ``region``: optional array of the same shape; only voxels where it is nonzero count (e.g. the
  sinus ROI, so air outside the sinus cannot inflate the scores). Mask voxels outside the
  region are ignored.
- A voxel is "highlighted" at threshold ``t`` when ``heatmap >= t``.
- Metrics that need an anomaly (AUPRC, Dice, pointing game) are None for an empty mask (a
  normal case); the false-positive volume is the metric for normal cases.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from paranasal_ssl.evaluation import _curves


def _flatten(heatmap: Any, mask: Any, region: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """Heatmap values (K,) float64 and mask (K,) bool of the K voxels inside ``region``."""
    h = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask)
    if h.shape != m.shape:
        raise ValueError(f"heatmap shape {h.shape} differs from mask shape {m.shape}")
    bad = ~np.isfinite(h)
    if bad.any():
        raise ValueError(f"heatmap has {int(bad.sum())} non-finite voxel(s), first at "
                         f"{tuple(int(i) for i in np.argwhere(bad)[0])}")
    m = m != 0
    if region is not None:
        r = np.asarray(region)
        if r.shape != h.shape:
            raise ValueError(f"region shape {r.shape} differs from heatmap shape {h.shape}")
        r = r != 0
        h, m = h[r], m[r]
    if h.size == 0:
        raise ValueError("no voxels to evaluate (empty heatmap or empty region)")
    return h.ravel(), m.ravel()


def _voxel_volume_ml(spacing_mm: Any, ndim: int) -> float:
    """Volume of one voxel in mL (mm^3 / 1000) from a scalar or per-axis spacing in mm."""
    sp = np.asarray(spacing_mm, dtype=np.float64).ravel()
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim or (sp <= 0).any():
        raise ValueError(f"spacing_mm must be one positive value or {ndim}, got {spacing_mm}")
    return float(np.prod(sp)) / 1000.0


def _ranked(h: np.ndarray, m: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sort: (G,) cumulative TP and FP voxels and the (G,) thresholds, decreasing."""
    order, ends = _curves.sort_desc(h)
    tp_e, fp_e = _curves.group_counts(m[order], ~m[order], ends)
    return tp_e, fp_e, h[order][ends]


def voxel_auprc(heatmap: Any, mask: Any, region: Any = None) -> Optional[float]:
    """Average precision of voxel values against mask voxels (scikit-learn's definition).

    Chance level is the fraction of (region) voxels in the mask. None for an empty mask.
    """
    h, m = _flatten(heatmap, mask, region)
    if not m.any():
        return None
    tp_e, fp_e, _ = _ranked(h, m)
    return float(_curves.average_precision(tp_e, fp_e))


def best_dice(heatmap: Any, mask: Any, region: Any = None
              ) -> Tuple[Optional[float], Optional[float]]:
    """The highest Dice over all thresholds, and that threshold: (dice, t) or (None, None).

    Sorting once and reading Dice = 2 TP / (highlighted + mask) at every distinct heatmap value
    from cumulative sums costs O(K log K), not O(K) per threshold. This is an oracle (the
    threshold is fitted to the case); report it as an upper bound beside Dice at a threshold
    chosen on validation data.
    """
    h, m = _flatten(heatmap, mask, region)
    if not m.any():
        return None, None
    tp_e, fp_e, thr = _ranked(h, m)
    dice, g = _curves.best_dice(tp_e, fp_e)
    return float(dice), float(thr[int(g)])


def dice_at_threshold(heatmap: Any, mask: Any, threshold: float, region: Any = None
                      ) -> Optional[float]:
    """Dice of ``heatmap >= threshold`` against the mask; None for an empty mask."""
    h, m = _flatten(heatmap, mask, region)
    if not m.any():
        return None
    pred = h >= threshold
    return 2.0 * float(np.sum(pred & m)) / float(pred.sum() + m.sum())


def false_positive_volume_ml(heatmap: Any, threshold: float, spacing_mm: Any, mask: Any = None,
                             region: Any = None) -> float:
    """Volume in mL highlighted (``heatmap >= threshold``) outside the mask.

    For a normal case (no mask, or an empty one) this is everything highlighted.
    ``spacing_mm``: one value or one per axis; mL = voxels * prod(spacing) / 1000.
    """
    h = np.asarray(heatmap)
    m = np.zeros(h.shape, dtype=bool) if mask is None else mask
    hv, mv = _flatten(h, m, region)
    return int(np.sum((hv >= threshold) & ~mv)) * _voxel_volume_ml(spacing_mm, h.ndim)


def pointing_game(heatmap: Any, mask: Any, region: Any = None) -> Optional[bool]:
    """Does the heatmap's maximum fall inside the mask? None for an empty mask.

    If several voxels share the maximum, ALL of them must lie in the mask: a flat or
    plateaued heatmap must not score a hit by the accident of array order.
    """
    h, m = _flatten(heatmap, mask, region)
    if not m.any():
        return None
    return bool(np.all(m[h == h.max()]))


def localisation_metrics(heatmap: Any, mask: Any, *, threshold: Optional[float] = None,
                         spacing_mm: Any = None, region: Any = None) -> Dict[str, Any]:
    """All metrics of one case.

    Returns a dict: n_voxels, n_mask, voxel_prevalence, voxel_auprc, best_dice,
    best_dice_threshold, pointing_hit, and when ``threshold`` is given dice (None for an empty
    mask) and, with ``spacing_mm`` too, fp_volume_ml and highlighted_volume_ml.
    """
    h, m = _flatten(heatmap, mask, region)
    vox = None if spacing_mm is None else _voxel_volume_ml(spacing_mm, np.ndim(heatmap))
    return _flat_metrics(h, m, threshold, vox)


def _flat_metrics(h: np.ndarray, m: np.ndarray, threshold: Optional[float],
                  voxel_ml: Optional[float]) -> Dict[str, Any]:
    """``localisation_metrics`` of flattened (K,) values and (K,) bool mask."""
    out: Dict[str, Any] = {"n_voxels": int(h.size), "n_mask": int(m.sum()),
                           "voxel_prevalence": float(m.mean())}
    if m.any():
        tp_e, fp_e, thr = _ranked(h, m)
        dice, g = _curves.best_dice(tp_e, fp_e)
        out.update(voxel_auprc=float(_curves.average_precision(tp_e, fp_e)),
                   best_dice=float(dice), best_dice_threshold=float(thr[int(g)]),
                   pointing_hit=bool(np.all(m[h == h.max()])))
    else:
        out.update(voxel_auprc=None, best_dice=None, best_dice_threshold=None,
                   pointing_hit=None)
    if threshold is not None:
        pred = h >= threshold
        out["dice"] = (2.0 * float(np.sum(pred & m)) / float(pred.sum() + m.sum())
                       if m.any() else None)
        if voxel_ml is not None:
            out["fp_volume_ml"] = int(np.sum(pred & ~m)) * voxel_ml
            out["highlighted_volume_ml"] = int(pred.sum()) * voxel_ml
    return out


def _per_case_spacing(spacing_mm: Any, n_cases: int) -> list:
    """None, one spacing for all cases, or (C, ndim) per-case spacings -> list of C."""
    if spacing_mm is None or np.ndim(spacing_mm) < 2:
        return [spacing_mm] * n_cases
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.shape[0] != n_cases:
        raise ValueError(f"{sp.shape[0]} spacings for {n_cases} cases")
    return list(sp)


def _mean(values: Sequence[Any]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def aggregate_localisation(heatmaps: Sequence[Any], masks: Sequence[Any], *,
                           regions: Optional[Sequence[Any]] = None,
                           threshold: Optional[float] = None,
                           spacing_mm: Any = None) -> Dict[str, Any]:
    """Localisation over many cases, both pooled and as a per-case mean.

    Args:
        heatmaps, masks: C arrays each (a stacked (C, D, H, W) array works too); case c's
            heatmap and mask share a shape, cases may differ.
        regions: None or C region masks.
        threshold: a threshold chosen beforehand (on validation), for Dice and FP volume.
        spacing_mm: one spacing (scalar or per axis) for all cases, or (C, ndim) per case.

    Returns {"n_cases", "n_anomalous", "n_normal", "pooled", "per_case_mean", "per_case"}:
    - pooled: every voxel of every case in one ranking (voxel_auprc, voxel_prevalence,
      best_dice with ONE global threshold, dice at ``threshold``). Meaningful only if heatmap
      values share a scale across cases (not after a per-crop rescale to [0, 1]).
    - per_case_mean: mean over anomalous cases of voxel_auprc, best_dice (a per-case oracle,
      an upper bound), dice, pointing_hit_rate; and over normal cases of fp_volume_ml.
    - per_case: the ``localisation_metrics`` dict of each case.
    """
    if len(heatmaps) != len(masks):
        raise ValueError(f"{len(heatmaps)} heatmaps but {len(masks)} masks")
    if regions is not None and len(regions) != len(heatmaps):
        raise ValueError(f"{len(regions)} regions for {len(heatmaps)} cases")
    if len(heatmaps) == 0:
        raise ValueError("no cases")
    spacings = _per_case_spacing(spacing_mm, len(heatmaps))
    per_case, all_h, all_m = [], [], []
    for c, (hm, mk) in enumerate(zip(heatmaps, masks)):
        h, m = _flatten(hm, mk, None if regions is None else regions[c])
        vox = None if spacings[c] is None else _voxel_volume_ml(spacings[c], np.ndim(hm))
        per_case.append(_flat_metrics(h, m, threshold, vox))
        all_h.append(h)
        all_m.append(m)
    h, m = np.concatenate(all_h), np.concatenate(all_m)
    pooled = _flat_metrics(h, m, threshold, None)
    pooled.pop("pointing_hit")  # one maximum over all cases means nothing
    anomalous = [r for r in per_case if r["n_mask"] > 0]
    normal = [r for r in per_case if r["n_mask"] == 0]
    hits = [r["pointing_hit"] for r in anomalous]
    means = {
        "voxel_auprc": _mean([r["voxel_auprc"] for r in anomalous]),
        "best_dice": _mean([r["best_dice"] for r in anomalous]),
        "dice": _mean([r.get("dice") for r in anomalous]),
        "pointing_hit_rate": _mean(hits),
        "fp_volume_ml_normals": _mean([r.get("fp_volume_ml") for r in normal]),
    }
    return {"n_cases": len(per_case), "n_anomalous": len(anomalous), "n_normal": len(normal),
            "pooled": pooled, "per_case_mean": means, "per_case": per_case}
