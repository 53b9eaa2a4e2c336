"""Sort and filter keys for the case list: probability, uncertainty, disagreement.

Every function takes the session (for predictions and verdicts) and a case id. Cases without a
prediction sort last; sorts are stable, so equal cases keep list order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:
    from paranasal_ssl.review.session import ReviewSession

SORT_KEYS = ("list", "probability", "uncertainty", "disagreement")
FILTERS = ("all", "unreviewed", "reviewed", "flagged", "unavailable", "uncertain",
           "disagreement")


def uncertainty(p: float) -> float:
    """1 at p = 0.5, 0 at p = 0 or 1: how close the model is to not knowing."""
    return 1.0 - 2.0 * abs(float(p) - 0.5)


def _probabilities(session: ReviewSession, case_id: str) -> List[float]:
    pred = session.prediction(case_id)
    return [r.probability for r in pred.sides.values()] if pred else []


def in_uncertain_band(session: ReviewSession, case_id: str) -> bool:
    """True if any side's probability lies in the model's uncertain band (inclusive)."""
    pred = session.prediction(case_id)
    if not pred:
        return False
    lo, hi = pred.uncertain_band
    return any(lo <= r.probability <= hi or r.call == "uncertain" for r in pred.sides.values())


def disagreement(session: ReviewSession, case_id: str) -> Tuple[int, float]:
    """(sides where the reader's label differs from the model's decision, largest
    |reader label - probability| over decided sides); (-1, -1) when nothing is decided."""
    pred = session.prediction(case_id)
    state = session.state(case_id)
    count, gap, decided = 0, 0.0, False
    for side, verdict in state.sides.items():
        if verdict.label is None:
            continue
        decided = True
        result = pred.sides.get(side) if pred else None
        if result is None:
            continue
        count += int(verdict.label != pred.model_label(side))
        gap = max(gap, abs(verdict.label - result.probability))
    return (count, gap) if decided else (-1, -1.0)


def sort_value(session: ReviewSession, case_id: str, key: str) -> Optional[tuple]:
    """Larger first; None sorts last."""
    if key == "probability":
        ps = _probabilities(session, case_id)
        return (max(ps),) if ps else None
    if key == "uncertainty":
        ps = _probabilities(session, case_id)
        return (max(uncertainty(p) for p in ps),) if ps else None
    if key == "disagreement":
        value = disagreement(session, case_id)
        return value if value[0] >= 0 else None
    raise ValueError(f"unknown sort key {key!r}; expected one of {SORT_KEYS}")


def keep(session: ReviewSession, case_id: str, name: str) -> bool:
    """Whether the filter ``name`` keeps the case."""
    if name == "all":
        return True
    if name in ("unreviewed", "reviewed", "flagged", "unavailable"):
        return session.status(case_id) == name
    if name == "uncertain":
        return in_uncertain_band(session, case_id)
    if name == "disagreement":
        return disagreement(session, case_id)[0] > 0
    raise ValueError(f"unknown filter {name!r}; expected one of {FILTERS}")


def ordered_ids(session: ReviewSession, sort: str = "list", filter_name: str = "all",
                descending: bool = True) -> List[str]:
    """Case ids in view order: filtered, then sorted by ``sort`` (list order breaks ties)."""
    ids = [c for c in session.case_list.ids if keep(session, c, filter_name)]
    if sort == "list":
        return ids
    valued = [(sort_value(session, c, sort), i, c) for i, c in enumerate(ids)]
    present = [v for v in valued if v[0] is not None]
    missing = [v for v in valued if v[0] is None]
    present.sort(key=lambda v: v[1])
    present.sort(key=lambda v: v[0], reverse=descending)
    return [c for _, _, c in present + missing]
