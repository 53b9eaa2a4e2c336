"""Bootstrap confidence intervals: per metric, for paired differences, and across runs.

How resampling works here (all functions):
- Resampling is by CLUSTER when ``clusters`` (N,) is given, e.g. the subject id: the two
  sinuses of one person are correlated, so both are drawn together or not at all. Without
  clusters every sample is its own cluster.
- Stratified: clusters are grouped by what they contain (only normal, only anomalous, both)
  and each group is resampled to its own size, so every resample keeps both classes and
  AUPRC/AUROC are always defined; the number of clusters per stratum is fixed.
- A resample is a row of per-sample draw counts (``bootstrap_counts``), (B, N). The built-in
  metrics ("auprc", "auroc", "brier", "sens@spec90", any "sens@specNN") read a resample as
  sample weights on one sorted copy of the scores, so 1000 resamples cost a few cumulative
  sums, never 1000 sorts. Any callable ``f(y_true, y_score) -> float | None`` works too
  (evaluated resample by resample, slower).
- The CI is the percentile interval of the resampled metric values (seeded, reproducible).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from paranasal_ssl.evaluation import _curves
from paranasal_ssl.evaluation.classification import check_binary_inputs
from paranasal_ssl.evaluation.report import format_value

MetricSpec = Union[str, Callable[[np.ndarray, np.ndarray], Optional[float]]]
Metrics = Union[MetricSpec, Sequence[MetricSpec], Mapping[str, MetricSpec]]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile confidence interval (None where undefined).

    ``n_valid`` counts the resamples in which the metric was defined (out of ``n_boot``).
    ``str()`` gives ``0.812 [0.77, 0.85]``.
    """

    estimate: Optional[float]
    low: Optional[float]
    high: Optional[float]
    confidence: float = 0.95
    n_boot: int = 0
    n_valid: int = 0

    def __str__(self) -> str:
        return format_value(self)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """metric(a) - metric(b) on the same samples, with a paired bootstrap CI.

    ``p_value``: two-sided bootstrap p-value 2 * min(P*(d <= 0), P*(d >= 0)), capped at 1;
    a rough companion to the CI (which is what to report), not an exact test.
    """

    metric: str
    value_a: Optional[float]
    value_b: Optional[float]
    difference: Interval
    p_value: Optional[float]


@dataclass(frozen=True)
class RunSummary:
    """One metric over several runs (training seeds / label draws) on one test set.

    ``mean`` and ``std`` (sample std, ddof=1; None for one run) are over the per-run values;
    ``ci`` is centred on ``mean`` and comes from the joint bootstrap in ``aggregate_runs``.
    """

    metric: str
    mean: Optional[float]
    std: Optional[float]
    per_run: Tuple[Optional[float], ...]
    ci: Interval


def bootstrap_counts(y_true: Any, *, clusters: Any = None, n_boot: int = 1000, seed: int = 0,
                     stratify: bool = True) -> np.ndarray:
    """Draw counts of each sample in each resample: (N,) labels -> (B, N) int64.

    All samples of a cluster share one count (the cluster was drawn that many times). To get
    the indices of resample b: ``np.repeat(np.arange(N), counts[b])``.
    """
    y = np.asarray(y_true).astype(np.int64)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if clusters is None:
        cid = np.arange(y.size)
    else:
        cl = np.asarray(clusters)
        if cl.shape != y.shape:
            raise ValueError(f"clusters has shape {cl.shape}, expected {y.shape}")
        _, cid = np.unique(cl, return_inverse=True)
        cid = cid.reshape(-1)
    n_cl = int(cid.max()) + 1
    has_pos = np.bincount(cid, weights=y, minlength=n_cl) > 0
    has_neg = np.bincount(cid, weights=1 - y, minlength=n_cl) > 0
    stratum = has_pos * 1 + has_neg * 2 if stratify else np.zeros(n_cl, dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = np.zeros(n_boot * n_cl, dtype=np.int64)
    rows = np.arange(n_boot)[:, None] * n_cl
    for st in np.unique(stratum):
        members = np.flatnonzero(stratum == st)
        draws = members[rng.integers(0, members.size, size=(n_boot, members.size))]
        counts += np.bincount((rows + draws).ravel(), minlength=n_boot * n_cl)
    return counts.reshape(n_boot, n_cl)[:, cid]


def _curve_metric(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap a ranking metric of (tp_e, fp_e) into f(y (N,), s (N,), w (B, N)) -> (B,)."""
    def metric(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
        order, ends = _curves.sort_desc(s)
        ws, ys = w[:, order], y[order]
        tp_e, fp_e = _curves.group_counts(ws * ys, ws * (1 - ys), ends)
        return fn(tp_e, fp_e)
    return metric


def _brier(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    if s.min() < 0 or s.max() > 1:
        raise ValueError("brier needs probabilities in [0, 1]")
    return (w @ (s - y) ** 2) / w.sum(axis=1)


def _builtin(name: str) -> Optional[Callable[..., np.ndarray]]:
    """The vectorised f(y, s, w) -> (B,) for a built-in metric name, or None."""
    if name == "auprc":
        return _curve_metric(_curves.average_precision)
    if name == "auroc":
        return _curve_metric(_curves.roc_auc)
    if name == "brier":
        return _brier
    match = re.fullmatch(r"sens@spec(\d+(?:\.\d+)?)", name)
    if match:
        target = float(match.group(1)) / 100.0
        return _curve_metric(lambda tp, fp: _curves.sens_at_spec(tp, fp, target)[0])
    return None


def _normalise(metrics: Metrics) -> Dict[str, MetricSpec]:
    """str | callable | sequence | {name: spec} -> {name: spec}; unknown names raise."""
    if isinstance(metrics, Mapping):
        items = dict(metrics)
    elif isinstance(metrics, str) or callable(metrics):
        items = {_name(metrics): metrics}
    else:
        items = {_name(m): m for m in metrics}
    for name, spec in items.items():
        if isinstance(spec, str) and _builtin(spec) is None:
            raise ValueError(f"unknown metric {spec!r} for {name!r}; built-ins: auprc, auroc, "
                             "brier, sens@specNN, or pass a callable f(y_true, y_score)")
    return items


def _name(spec: MetricSpec) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "__name__", repr(spec))


def _evaluate(spec: MetricSpec, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Metric under each weight row: (N,), (N,), (B, N) -> (B,) with NaN where undefined."""
    if isinstance(spec, str):
        return np.asarray(_builtin(spec)(y, s, w.astype(np.float64)), dtype=np.float64)
    out = np.full(w.shape[0], np.nan)
    idx_all = np.arange(y.size)
    for b, row in enumerate(w):
        idx = np.repeat(idx_all, row)
        value = spec(y[idx], s[idx])
        out[b] = np.nan if value is None else value
    return out


def _interval(estimate: float, values: np.ndarray, confidence: float) -> Interval:
    valid = values[~np.isnan(values)]
    low = high = None
    if valid.size:
        alpha = 100.0 * (1.0 - confidence) / 2.0
        low, high = (float(v) for v in np.percentile(valid, [alpha, 100.0 - alpha]))
    return Interval(_curves.nan_to_none(estimate), low, high, confidence,
                    int(values.size), int(valid.size))


def bootstrap_ci(y_true: Any, y_score: Any, metrics: Metrics = ("auprc", "auroc"), *,
                 clusters: Any = None, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0, stratify: bool = True) -> Dict[str, Interval]:
    """Percentile CI of each metric; all metrics share the same resamples.

    (N,) labels, (N,) scores -> {metric name: Interval}. The estimate is the metric on the
    full data. See the module docstring for clusters and stratification.
    """
    y, s = check_binary_inputs(y_true, y_score)
    specs = _normalise(metrics)
    w = bootstrap_counts(y, clusters=clusters, n_boot=n_boot, seed=seed, stratify=stratify)
    ones = np.ones((1, y.size), dtype=np.int64)
    return {name: _interval(_evaluate(spec, y, s, ones)[0], _evaluate(spec, y, s, w), confidence)
            for name, spec in specs.items()}


def paired_bootstrap_diff(y_true: Any, score_a: Any, score_b: Any, metrics: Metrics = "auprc",
                          *, clusters: Any = None, n_boot: int = 1000, confidence: float = 0.95,
                          seed: int = 0, stratify: bool = True) -> Dict[str, PairedDifference]:
    """CI of metric(a) - metric(b) for two methods scored on the SAME samples (N,).

    Both methods are evaluated on each identical resample, so the shared difficulty of the
    test set cancels; this is narrower and more honest than comparing two separate CIs.
    """
    y, a = check_binary_inputs(y_true, score_a, "method a")
    _, b = check_binary_inputs(y_true, score_b, "method b")
    w = bootstrap_counts(y, clusters=clusters, n_boot=n_boot, seed=seed, stratify=stratify)
    ones = np.ones((1, y.size), dtype=np.int64)
    out = {}
    for name, spec in _normalise(metrics).items():
        va, vb = _evaluate(spec, y, a, ones)[0], _evaluate(spec, y, b, ones)[0]
        d = _evaluate(spec, y, a, w) - _evaluate(spec, y, b, w)
        dv = d[~np.isnan(d)]
        p = None
        if dv.size:
            p = float(min(1.0, 2.0 * min(np.mean(dv <= 0), np.mean(dv >= 0))))
        out[name] = PairedDifference(name, _curves.nan_to_none(va), _curves.nan_to_none(vb),
                                     _interval(va - vb, d, confidence), p)
    return out


def aggregate_runs(y_true: Any, run_scores: Any, metrics: Metrics = "auprc", *,
                   clusters: Any = None, n_boot: int = 1000, confidence: float = 0.95,
                   seed: int = 0, stratify: bool = True) -> Dict[str, RunSummary]:
    """Summarise several runs (training seeds, label-fraction draws) on ONE test set.

    Args:
        y_true: (N,) test labels, shared by all runs.
        run_scores: (R, N) scores, one row per run, samples in the same order.

    The reported value is the MEAN of the per-run metrics, with their std. Its CI comes from
    a joint two-level bootstrap that covers both sources of variation a reviewer cares
    about: in each replicate the test samples (clusters) are resampled once and shared by
    all runs, R runs are drawn with replacement, and the replicate value is the mean metric
    of the drawn runs on the resampled test set. The percentile interval of those replicate
    means is the pooled CI. With one run this is the ordinary bootstrap CI.
    """
    scores = np.asarray(run_scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None, :]
    runs = [check_binary_inputs(y_true, row, f"run {r}") for r, row in enumerate(scores)]
    y = runs[0][0]
    w = bootstrap_counts(y, clusters=clusters, n_boot=n_boot, seed=seed, stratify=stratify)
    # The run draws use their own stream, so the test resamples equal bootstrap_ci's.
    picks = np.random.default_rng([seed, 1]).integers(0, len(runs), size=(n_boot, len(runs)))
    ones = np.ones((1, y.size), dtype=np.int64)
    out = {}
    for name, spec in _normalise(metrics).items():
        per_run = np.array([_evaluate(spec, y, s, ones)[0] for _, s in runs])
        boot = np.stack([_evaluate(spec, y, s, w) for _, s in runs], axis=1)  # (B, R)
        reps = _nanmean_rows(boot, picks)
        valid = per_run[~np.isnan(per_run)]
        mean = float(valid.mean()) if valid.size else np.nan
        std = float(valid.std(ddof=1)) if valid.size > 1 else None
        out[name] = RunSummary(name, _curves.nan_to_none(mean), std,
                               tuple(_curves.nan_to_none(v) for v in per_run),
                               _interval(mean, reps, confidence))
    return out


def _nanmean_rows(boot: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Row means of the picked runs, NaN (not a warning) where every pick is undefined."""
    vals = np.take_along_axis(boot, picks, axis=1)
    ok = ~np.isnan(vals)
    n = ok.sum(axis=1)
    total = np.where(ok, vals, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def metric_on_resamples(y_true: Any, y_score: Any, counts: np.ndarray,
                        metric: str = "auprc") -> np.ndarray:
    """``metric`` of one score vector (N,) on every resample of ``counts`` (B, N) -> (B,).

    Lets callers combine several methods and runs on the SAME resamples (e.g. the paired
    difference of two methods averaged over label draws).
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=float)
    (name, spec), = _normalise(metric).items()
    return _evaluate(spec, y, s, np.asarray(counts, dtype=float))
