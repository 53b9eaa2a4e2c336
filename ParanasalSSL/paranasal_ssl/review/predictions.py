"""Read what ``paranasal-ssl predict --manifest M --out DIR`` wrote, case by case.

``DIR/<case_id>/summary.json`` is written last for each case, so its presence means the case is
complete; cases are read from there (a prediction still running in the background already
serves the cases it has finished). ``DIR/predictions.csv`` (written at the end) adds the cases
that failed, with their error.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from paranasal_ssl.errors import InputError

DEFAULT_BAND = (0.35, 0.65)


@dataclass(frozen=True)
class SideResult:
    """One side as predicted: ``probability`` of an anomaly in [0, 1]; ``call`` normal /
    uncertain / anomalous; ``region_volume_ml`` of the thresholded heatmap (mL); ``peak_ras``
    RAS mm of the strongest residual; ``roi`` the box used (``center_ras``, ``size_mm``,
    ``axes_ras`` as in ``SinusROI.to_dict``); ``peak_value`` the heatmap there (0-1);
    ``roi_source`` where the box came from (e.g. "suggested (...; low confidence)"; '' if not
    recorded)."""

    side: str
    probability: float
    call: str
    region_volume_ml: float = 0.0
    peak_ras: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    roi: Optional[dict] = None
    peak_value: float = 0.0
    roi_source: str = ""


@dataclass(frozen=True)
class CasePrediction:
    """A case's prediction: per-side results, the heatmap / region image paths (in the scan's
    geometry; region values 1 left, 2 right) and what the model says about itself."""

    case_id: str
    folder: Path
    sides: Dict[str, SideResult] = field(default_factory=dict)
    heatmap: Optional[Path] = None
    region: Optional[Path] = None
    model: Dict = field(default_factory=dict)
    region_threshold: float = 0.5
    error: str = ""
    box_notes: Tuple[str, ...] = ()  # a box on the other half of the head (``box_sides``)

    @property
    def model_version(self) -> str:
        """What the reader saw: ``<model name>@<code version>`` ('' when unknown)."""
        name = self.model.get("name") or ""
        code = self.model.get("code_version") or ""
        return f"{name}@{code}" if name or code else ""

    @property
    def uncertain_band(self) -> Tuple[float, float]:
        band = self.model.get("uncertain_band") or DEFAULT_BAND
        return float(band[0]), float(band[1])

    @property
    def decision_threshold(self) -> float:
        """Probability from which the model's binary decision is 'anomalous'."""
        t = self.model.get("decision_threshold")
        return 0.5 if t is None else float(t)

    def model_label(self, side: str) -> Optional[int]:
        """The model's binary decision for ``side`` (None without a result)."""
        result = self.sides.get(side)
        if result is None:
            return None
        return int(result.probability >= self.decision_threshold)


def read_case_prediction(folder: Union[str, Path], case_id: str = "") -> Optional[CasePrediction]:
    """The prediction in ``folder`` (None if its summary.json is not there yet)."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        sides = {}
        for side, s in summary.get("sides", {}).items():
            sides[side] = SideResult(side, float(s["probability"]), str(s.get("call", "")),
                                     float(s.get("region_volume_ml", 0.0)),
                                     tuple(float(v) for v in s.get("peak_ras", (0, 0, 0))),
                                     s.get("roi"), float(s.get("peak_value", 0.0)),
                                     str(s.get("roi_source", "")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(summary_path, f"unreadable prediction summary ({exc})",
                         expected="summary.json as written by `paranasal-ssl predict`") from None
    heatmap = folder / summary["heatmap"] if summary.get("heatmap") else None
    region = folder / summary["region"] if summary.get("region") else None
    return CasePrediction(case_id or summary.get("case_id") or folder.name, folder, sides,
                          heatmap, region, dict(summary.get("model") or {}),
                          float(summary.get("region_threshold", 0.5)),
                          box_notes=tuple(str(n) for n in summary.get("box_notes") or ()))


class PredictionStore:
    """Predictions of a case list in one ``predict`` output folder, read when first asked for
    and re-read when the case's summary.json changes (a new model's prediction)."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(self.folder, "not a folder", field="predictions",
                             expected="the --out folder of `paranasal-ssl predict`")
        self._cache: Dict[str, Tuple[int, Optional[CasePrediction]]] = {}
        self._errors: Optional[Dict[str, str]] = None

    def get(self, case_id: str) -> Optional[CasePrediction]:
        """The case's prediction, a failed prediction (``error`` set), or None."""
        summary = self.folder / case_id / "summary.json"
        try:
            stamp = summary.stat().st_mtime_ns
        except OSError:
            stamp = -1
        cached = self._cache.get(case_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        pred = read_case_prediction(self.folder / case_id, case_id) if stamp >= 0 else None
        if pred is None and case_id in self.errors():
            pred = CasePrediction(case_id, self.folder / case_id, error=self.errors()[case_id])
        self._cache[case_id] = (stamp, pred)
        return pred

    def errors(self) -> Dict[str, str]:
        """case_id -> error of the cases ``predict`` could not analyse (from predictions.csv)."""
        if self._errors is None:
            self._errors = {}
            table = self.folder / "predictions.csv"
            if table.is_file():
                with open(table, newline="", encoding="utf-8") as f:
                    for row in csv.DictReader(f):
                        if row.get("error"):
                            self._errors[row.get("case_id", "")] = row["error"]
        return self._errors

    def refresh(self) -> None:
        """Forget what was read (after a new prediction run)."""
        self._cache.clear()
        self._errors = None
