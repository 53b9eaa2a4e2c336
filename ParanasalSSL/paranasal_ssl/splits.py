"""Patient-level, stratified, seeded splits and nested label-fraction subsets.

Both sides of one subject always land in the same split. Subjects are stratified by how many of
their sides are anomalous (0, 1 or 2), so each split keeps the cohort's prevalence.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np

from paranasal_ssl.config import SplitConfig
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord


def _subjects(records: Sequence[SinusRecord]) -> Dict[str, List[SinusRecord]]:
    by_subject: Dict[str, List[SinusRecord]] = defaultdict(list)
    for r in records:
        by_subject[r.subject_id].append(r)
    return dict(sorted(by_subject.items()))


def _stratum(recs: List[SinusRecord]) -> int:
    labels = [r.label for r in recs]
    if any(v is None for v in labels):
        return -1  # unlabelled subjects form their own stratum
    return int(sum(labels))


def _stratified_order(subjects: Dict[str, List[SinusRecord]], seed: int) -> List[str]:
    """Subject ids in an order whose every prefix is (close to) stratified.

    Within each stratum subjects are shuffled; subject number r of a stratum of size n gets key
    (r + u) / n with u ~ U(0, 1), and all subjects are sorted by key. Any prefix therefore holds
    about the same fraction of each stratum, so prefixes are nested stratified subsets.
    """
    rng = np.random.default_rng(seed)
    strata: Dict[int, List[str]] = defaultdict(list)
    for sid, recs in subjects.items():
        strata[_stratum(recs)].append(sid)
    keyed = []
    for stratum in sorted(strata):
        ids = list(strata[stratum])
        rng.shuffle(ids)
        n = len(ids)
        offsets = rng.uniform(0.0, 1.0, size=n)
        keyed += [((r + offsets[r]) / n, sid) for r, sid in enumerate(ids)]
    keyed.sort()
    return [sid for _, sid in keyed]


def split_records(records: Sequence[SinusRecord], config: SplitConfig
                  ) -> Dict[str, List[SinusRecord]]:
    """Split records into train/val/test by subject; returns lists in manifest order."""
    subjects = _subjects(records)
    if len(subjects) < 3:
        raise InputError(None, f"only {len(subjects)} subject(s)", field="subject_id",
                         expected="at least 3 subjects to make train, val and test splits")
    order = _stratified_order(subjects, config.seed)
    # Interleave so each split takes its share of every stratum: assign by cumulative fraction.
    n = len(order)
    n_val = max(1, round(config.val * n))
    n_test = max(1, round(config.test * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise InputError(None, f"{n} subjects are too few for fractions {config}",
                         field="split", expected="at least one training subject")
    # Deal subjects to splits round-robin by quota so strata spread evenly.
    quotas = {"train": n_train, "val": n_val, "test": n_test}
    assigned: Dict[str, str] = {}
    filled = {k: 0 for k in quotas}
    for i, sid in enumerate(order):
        # choose the split most behind its quota at this point of the stratified order
        progress = (i + 1) / n
        name = max(quotas, key=lambda k: (quotas[k] * progress - filled[k], -list(quotas).index(k)))
        assigned[sid] = name
        filled[name] += 1
    out: Dict[str, List[SinusRecord]] = {k: [] for k in quotas}
    for r in records:
        out[assigned[r.subject_id]].append(r)
    return out


def label_fraction_subset(records: Sequence[SinusRecord], fraction: float, seed: int,
                          min_per_class: int = 1) -> List[SinusRecord]:
    """The first ``fraction`` of subjects in a stratified order fixed by ``seed``.

    Subsets for one seed are nested: 1% is inside 5% is inside 10% ... is inside 100%. Raises if
    the subset leaves a class with fewer than ``min_per_class`` sinuses.
    """
    if not 0 < fraction <= 1:
        raise InputError(None, f"label fraction {fraction}", field="label_fraction",
                         expected="a number in (0, 1]")
    subjects = _subjects([r for r in records if r.label is not None])
    order = _stratified_order(subjects, seed)
    k = max(1, math.ceil(fraction * len(order) - 1e-9))
    chosen = set(order[:k])
    subset = [r for r in records if r.subject_id in chosen and r.label is not None]
    counts = np.bincount([int(r.label) for r in subset], minlength=2)
    if counts.min() < min_per_class:
        everyone = np.bincount([int(r.label) for r in records if r.label is not None],
                               minlength=2)
        remedy = "a larger fraction or a larger cohort" if everyone.min() >= min_per_class \
            else f"a cohort with {'anomalous' if everyone[1] < min_per_class else 'normal'} " \
                 "sinuses among its training subjects (no fraction of these has enough)"
        raise InputError(None, f"label fraction {fraction:g} of {len(order)} subjects gives "
                         f"{counts[0]} normal and {counts[1]} anomalous sinuses",
                         field="label fraction",
                         expected=f"at least {min_per_class} of each class; use {remedy}")
    return subset
