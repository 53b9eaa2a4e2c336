"""Render metric results as Markdown tables: ``0.812 [0.77, 0.85]`` for estimate [CI]."""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence, Tuple, Union

Columns = Union[Sequence[str], Sequence[Tuple[str, str]], Mapping[str, str]]
MISSING = "n/a"


def _num(x: Any, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{float(x):.{digits}f}"


def format_value(value: Any, digits: int = 3, ci_digits: int = 2) -> str:
    """One cell. Intervals (``Interval``, ``RunSummary``, ``PairedDifference``, a dict with
    estimate/low/high, or an (estimate, low, high) tuple) -> ``0.812 [0.77, 0.85]``; floats ->
    ``0.812``; ints as they are; bools yes/no; None/NaN -> ``n/a``; text with ``|`` escaped."""
    for attr in ("difference", "ci"):  # PairedDifference, RunSummary
        if hasattr(value, attr) and hasattr(getattr(value, attr), "estimate"):
            value = getattr(value, attr)
    if hasattr(value, "estimate") and hasattr(value, "low"):
        value = (value.estimate, value.low, value.high)
    elif isinstance(value, Mapping) and {"estimate", "low", "high"} <= set(value):
        value = (value["estimate"], value["low"], value["high"])
    if isinstance(value, tuple) and len(value) == 3:
        est, low, high = value
        if est is None or low is None or high is None:
            return _num(est, digits)
        return f"{_num(est, digits)} [{_num(low, ci_digits)}, {_num(high, ci_digits)}]"
    if value is None:
        return MISSING
    if isinstance(value, (bool,)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return _num(float(value), digits)
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[Mapping[str, Any]], columns: Columns, *, digits: int = 3,
                 ci_digits: int = 2) -> str:
    """Markdown table of ``rows`` (dicts) with one column per key in ``columns``.

    ``columns``: keys (header = key), (key, header) pairs, or {key: header}. A key missing
    from a row gives an empty cell. Returns the table text, one line per row, no trailing
    newline.
    """
    if isinstance(columns, Mapping):
        cols = list(columns.items())
    else:
        cols = [c if isinstance(c, tuple) else (c, c) for c in columns]
    if not cols:
        raise ValueError("format_table needs at least one column")
    lines = ["| " + " | ".join(format_value(h) for _, h in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = [format_value(row[k], digits, ci_digits) if k in row else "" for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
