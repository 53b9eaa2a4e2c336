"""Per-sinus classification metrics (normal = 0, anomalous = 1) that a reviewer can trust.

Conventions (all functions):
- ``y_true``: (N,) in {0, 1} (bool accepted); ``y_score``: (N,) finite floats, higher = more
  anomalous. Probabilities or any unbounded score (e.g. a reconstruction residual).
- A threshold ``t`` predicts "anomalous" for ``score >= t``.
- A metric that is undefined on the given data is ``None`` and ``notes[metric]`` says why;
  nothing here warns or crashes on a single-class test set. Bad input raises ``ValueError``.
- AUPRC is always reported with the prevalence beside it: chance-level AUPRC equals prevalence.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any, Dict, Hashable, Optional, Sequence, Tuple

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    roc_auc_score,
    roc_curve,
)

from paranasal_ssl.evaluation import _curves

SPECIFICITY_TARGETS = (0.90, 0.95)
DEFAULT_THRESHOLD = 0.5


def check_binary_inputs(y_true: Any, y_score: Any, what: str = "") -> Tuple[np.ndarray, np.ndarray]:
    """Validate and convert: returns y (N,) int64 in {0, 1} and s (N,) float64, all finite.

    Raises ValueError naming the problem (shape, length, label values, NaN/inf position).
    """
    tag = f"{what}: " if what else ""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"{tag}y_true and y_score must be 1-D arrays of shape (N,), got "
                         f"{y.shape} and {s.shape} (for (N, 2) softmax output pass column 1)")
    if y.shape != s.shape:
        raise ValueError(f"{tag}y_true has {y.size} samples but y_score has {s.size}")
    if y.size == 0:
        raise ValueError(f"{tag}no samples")
    bad = ~np.isfinite(s)
    if bad.any():
        n_nan = int(np.isnan(s).sum())
        raise ValueError(f"{tag}y_score has {int(bad.sum())} non-finite value(s) ({n_nan} NaN), "
                         f"first at index {int(np.flatnonzero(bad)[0])}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    labels = np.unique(y)
    if not np.isin(labels, [0, 1]).all():
        raise ValueError(f"{tag}y_true must contain only 0 (normal) and 1 (anomalous), "
                         f"found {labels[:10].tolist()}")
    return y.astype(np.int64), s


def choose_threshold_max_f1(y_true_val: Any, y_score_val: Any) -> float:
    """Threshold that maximises F1 on VALIDATION data, to be applied unchanged to test data.

    Candidates are the distinct validation scores (rule ``score >= t``). Among thresholds with
    equal F1 the highest one is kept (the fewest false alarms). (N,), (N,) -> float.
    Raises ValueError if the validation set has no anomalous sample (F1 is 0 everywhere).
    """
    y, s = check_binary_inputs(y_true_val, y_score_val, "validation")
    if y.sum() == 0:
        raise ValueError("validation: no anomalous samples, so F1 cannot choose a threshold")
    order, ends = _curves.sort_desc(s)
    tp_e, fp_e = _curves.group_counts(y[order], 1 - y[order], ends)
    _, g = _curves.best_dice(tp_e, fp_e)  # F1 and Dice are the same formula
    return float(s[order][ends[int(g)]])


# A max-F1 threshold on a handful of validation sinuses is noise: on the benchmark's 10%-label
# draws (8 validation sinuses) it ranged from 0.01 to 0.94 for the same method, while with 80
# it was 0.40-0.45 on every draw. Below this many of either class the classifier's own 0.5 is
# the better guess.
MIN_VALIDATION_PER_CLASS = 10


# Below this many of either class a bootstrap interval resamples too few sinuses to mean much:
# with one of each, every resample that holds both classes ranks them the same way and the
# interval shrinks to a point, however uncertain the metric is.
MIN_EVALUATION_PER_CLASS = 10


def few_labels_note(positives: int, negatives: int,
                    min_per_class: int = MIN_EVALUATION_PER_CLASS) -> Optional[str]:
    """A warning for a report when either class has fewer than ``min_per_class`` sinuses, else
    None."""
    if min(positives, negatives) >= min_per_class:
        return None
    return (f"only {positives} anomalous and {negatives} normal sinuses: the 95% intervals "
            "resample these few and can be narrow (even a single point) by chance; read every "
            f"figure as rough until at least {min_per_class} of each are labelled")


def choose_decision_threshold(y_true_val: Any, y_score_val: Any,
                              min_per_class: int = MIN_VALIDATION_PER_CLASS
                              ) -> Tuple[float, str]:
    """(threshold, where it came from): the max-F1 threshold of the validation sinuses when they
    hold at least ``min_per_class`` anomalous and normal ones, else 0.5 (said so, with what
    max F1 would have given). Probabilities (N,), labels (N,)."""
    y, s = check_binary_inputs(y_true_val, y_score_val, "validation")
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    best = choose_threshold_max_f1(y, s) if positives else None
    if min(positives, negatives) >= min_per_class:
        return float(best), f"validation (max F1; {positives} anomalous, {negatives} normal)"
    would = f"; max F1 would give {best:.3f}" if best is not None else ""
    return 0.5, (f"0.5: too few validation sinuses to choose one ({positives} anomalous, "
                 f"{negatives} normal; at least {min_per_class} of each needed{would})")


def threshold_metrics(y_true: Any, y_score: Any, threshold: float) -> Dict[str, Any]:
    """Confusion counts and rates at ``score >= threshold``.

    (N,), (N,), float -> dict with tp, fp, tn, fn (int) and sensitivity, specificity, precision,
    f1 (float, or None when the denominator is 0; the reason is in ``notes``).
    """
    y, s = check_binary_inputs(y_true, y_score)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    notes: Dict[str, str] = {}

    def ratio(name: str, num: int, den: int, why: str) -> Optional[float]:
        if den == 0:
            notes[name] = why
            return None
        return num / den

    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": ratio("sensitivity", tp, tp + fn, "no anomalous samples"),
        "specificity": ratio("specificity", tn, tn + fp, "no normal samples"),
        "precision": ratio("precision", tp, tp + fp, "no sample predicted anomalous"),
        "f1": ratio("f1", 2 * tp, 2 * tp + fp + fn,
                    "no anomalous samples and none predicted anomalous"),
        "notes": notes,
    }


def sensitivity_at_specificity(y_true: Any, y_score: Any, target: float
                               ) -> Tuple[Optional[float], Optional[float]]:
    """Highest sensitivity whose specificity is >= ``target``, and the threshold giving it.

    No interpolation: only operating points of the empirical ROC curve that a threshold can
    actually produce are considered (a conservative step-function reading; interpolating
    between points would report a sensitivity no threshold achieves). Among equal
    sensitivities the highest threshold is returned. The threshold is None when only
    "predict nothing" meets the target (sensitivity 0). Returns (None, None) if a class is
    absent. (N,), (N,), float in (0, 1] -> (float | None, float | None).
    """
    y, s = check_binary_inputs(y_true, y_score)
    if y.min() == y.max():
        return None, None
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    cand = np.where(1.0 - fpr >= target - _curves.SPEC_TOL, tpr, -1.0)
    i = int(np.argmax(cand))  # first = highest threshold among equal sensitivities
    if cand[i] <= 0:
        return 0.0, None
    return float(tpr[i]), float(thr[i])


def _resolve_threshold(y_true_val: Any, y_score_val: Any, threshold: Optional[float],
                       probabilities: bool) -> Tuple[float, str]:
    """Which threshold the threshold-dependent metrics use, and a sentence saying why."""
    if threshold is not None:
        return float(threshold), "given by the caller"
    if (y_true_val is None) != (y_score_val is None):
        raise ValueError("give both y_true_val and y_score_val, or neither")
    if y_true_val is not None:
        yv, _ = check_binary_inputs(y_true_val, y_score_val, "validation")
        if yv.sum() > 0:
            return choose_threshold_max_f1(y_true_val, y_score_val), "validation (max F1)"
        src = "default 0.5: validation has no anomalous samples"
    else:
        src = "default 0.5: no validation data given"
    if not probabilities:
        src += "; scores are not probabilities, so 0.5 is arbitrary"
    return DEFAULT_THRESHOLD, src


def classification_metrics(
    y_true: Any,
    y_score: Any,
    *,
    y_true_val: Any = None,
    y_score_val: Any = None,
    threshold: Optional[float] = None,
    probabilities: Optional[bool] = None,
) -> Dict[str, Any]:
    """All per-sinus metrics of one method on one test set.

    Args:
        y_true, y_score: (N,) test labels and scores.
        y_true_val, y_score_val: (M,) validation labels and scores; when given, the F1
            threshold is the one maximising F1 on them (never chosen on the test set).
        threshold: use this threshold instead (e.g. chosen earlier); overrides validation.
        probabilities: whether scores are probabilities. None = auto (all in [0, 1]).
            The Brier score is only reported for probabilities.

    Returns a dict: n, n_pos, n_neg, prevalence, auprc, auroc, sens_at_spec90/95 and
    threshold_at_spec90/95, threshold, threshold_source, tp, fp, tn, fn, sensitivity,
    specificity, precision, f1, brier, probabilities, notes ({metric: why it is None}).
    """
    y, s = check_binary_inputs(y_true, y_score, "test")
    in_unit = bool(s.min() >= 0.0 and s.max() <= 1.0)
    if probabilities is None:
        probabilities = in_unit
    elif probabilities and not in_unit:
        raise ValueError("probabilities=True but y_score has values outside [0, 1]")
    n_pos = int(y.sum())
    n = int(y.size)
    out: Dict[str, Any] = {"n": n, "n_pos": n_pos, "n_neg": n - n_pos, "prevalence": n_pos / n}
    notes: Dict[str, str] = {}
    if 0 < n_pos < n:
        out["auprc"] = float(average_precision_score(y, s))
        out["auroc"] = float(roc_auc_score(y, s))
    else:
        why = "only one class in y_true ({})".format("all anomalous" if n_pos else "all normal")
        out["auprc"] = out["auroc"] = None
        notes["auprc"] = notes["auroc"] = why
    for target in SPECIFICITY_TARGETS:
        key = f"{round(target * 100):d}"
        sens, thr = sensitivity_at_specificity(y, s, target)
        out[f"sens_at_spec{key}"], out[f"threshold_at_spec{key}"] = sens, thr
        if sens is None:
            notes[f"sens_at_spec{key}"] = "only one class in y_true"
        elif thr is None:
            notes[f"threshold_at_spec{key}"] = "no threshold reaches the specificity target"

    thr, source = _resolve_threshold(y_true_val, y_score_val, threshold, probabilities)
    at = threshold_metrics(y, s, thr)
    notes.update(at.pop("notes"))
    out.update({"threshold": thr, "threshold_source": source}, **at)

    out["probabilities"] = probabilities
    if probabilities:
        out["brier"] = float(brier_score_loss(y, s))
    else:
        out["brier"] = None
        notes["brier"] = "scores are not probabilities"
    out["notes"] = notes
    return out


def _group_sets(groups: Sequence[Any], n: int) -> list:
    """Each sample's group labels as a set: a label, a collection of labels, or none."""
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries but there are {n} samples")
    sets = []
    for g in groups:
        if g is None or (isinstance(g, float) and np.isnan(g)):
            sets.append(set())
        elif isinstance(g, (list, tuple, Set, np.ndarray)):
            sets.append(set(g))
        else:
            sets.append({g})
    return sets


def per_group_metrics(
    y_true: Any,
    y_score: Any,
    groups: Sequence[Any],
    *,
    y_true_val: Any = None,
    y_score_val: Any = None,
    threshold: Optional[float] = None,
    probabilities: Optional[bool] = None,
) -> Dict[Hashable, Dict[str, Any]]:
    """Metrics per anomaly type: "how well is type T told apart from normal sinuses?".

    For type T the positives are the anomalous samples whose group is T, and the negatives
    are ALL normal samples (``y_true == 0``, whatever their group label). Anomalous samples of
    other types are left out of T's row, so each row is a clean normal-vs-T comparison and
    the prevalence (hence chance-level AUPRC) differs per row: read it beside the AUPRC.

    Args:
        groups: (N,) one entry per sample: a label (e.g. "polyp"), a collection of labels (a
            sinus with several findings counts as a positive of each), or None. Labels of
            normal samples are ignored. Anomalous samples without a label count only in "all".
        Other arguments as in ``classification_metrics``; the threshold is resolved ONCE (on
        the whole validation set) and shared by all rows, so rows are comparable.

    Returns {"all": metrics of every sample, T: metrics of normal-vs-T, ...}, types sorted.
    """
    y, s = check_binary_inputs(y_true, y_score, "test")
    sets = _group_sets(groups, y.size)
    if probabilities is None:
        probabilities = bool(s.min() >= 0.0 and s.max() <= 1.0)
    thr, source = _resolve_threshold(y_true_val, y_score_val, threshold, probabilities)
    common = {"threshold": thr, "probabilities": probabilities}
    rows: Dict[Hashable, Dict[str, Any]] = {"all": classification_metrics(y, s, **common)}
    labels = sorted({g for i in np.flatnonzero(y == 1) for g in sets[i]}, key=str)
    for label in labels:
        keep = (y == 0) | np.array([yi == 1 and label in gs for yi, gs in zip(y, sets)])
        rows[label] = classification_metrics(y[keep], s[keep], **common)
    for row in rows.values():
        row["threshold_source"] = source
    return rows
