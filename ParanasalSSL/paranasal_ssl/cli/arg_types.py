"""Option types that refuse a bad number when the command line is parsed, before any work.

argparse then prints ``argument --tta: '0': must be at least 1`` and exits with status 2:
the option, the value and what was expected. Without them ``--tta -2`` ended in a numpy
traceback, ``--threshold 1.5`` silently gave an empty region, and ``demo --label-fraction 2``
trained three stages before the fine-tuning stage refused it.
"""

from __future__ import annotations

import argparse
from typing import Callable, List


def _checked(convert: Callable, kind: str, ok: Callable, expected: str) -> Callable:
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: {expected}")
        return value

    return parse


positive_int = _checked(int, "an integer", lambda v: v >= 1, "must be at least 1")
non_negative_int = _checked(int, "an integer", lambda v: v >= 0, "must be 0 or more")
non_negative = _checked(float, "a number", lambda v: v >= 0, "must be >= 0")
fraction = _checked(float, "a number", lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1")
label_fraction = _checked(float, "a number", lambda v: 0.0 < v <= 1.0,
                          "a fraction of the labels: more than 0, at most 1 (e.g. 0.1 for 10%)")
heatmap_threshold = _checked(float, "a number", lambda v: 0.0 < v <= 1.0,
                             "a heatmap value: more than 0, at most 1 (heatmaps run 0-1; 0.5 "
                             "is the 99.9th percentile of residuals in normal sinuses)")


def spacing(text: str) -> List[float]:
    """Voxel size in mm: one value for all axes, or three as x,y,z; each 0.1-5 mm."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or x,y,z numbers") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(0.1 <= v <= 5.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one voxel size or three (x,y,z), each 0.1-5 mm, e.g. 1 or 0.5,0.5,3")
    return values
