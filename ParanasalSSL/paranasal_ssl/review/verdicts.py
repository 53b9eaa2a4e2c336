"""What a reader records per sinus side, and the vocabulary of verdicts and statuses."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Dict, Optional

from paranasal_ssl.anomalies import canonical_anomaly
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI

VERDICTS = ("agree", "normal", "anomalous")
STATUSES = ("unreviewed", "reviewed", "flagged", "unavailable")
# Types a reader picks from (short names; canonical names are accepted too).
READER_TYPES = ("thickening", "polyp", "cyst", "fluid_level", "opacification")


def now_iso() -> str:
    """Local time with its UTC offset, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(
        timespec="seconds")


def check_verdict(verdict: str, source=None) -> str:
    v = str(verdict).strip().lower()
    if v not in VERDICTS:
        raise InputError(source, f"unknown verdict {verdict!r}", field="verdict",
                         expected=" / ".join(VERDICTS))
    return v


def check_anomaly_type(name: Optional[str], source=None) -> Optional[str]:
    """'' or None -> None; a known name or alias -> its canonical name."""
    if name is None or str(name).strip() in ("", "-", "none"):
        return None
    canon = canonical_anomaly(str(name))
    if canon is None:
        raise InputError(source, f"unknown anomaly type {name!r}", field="anomaly_type",
                         expected=" / ".join(READER_TYPES))
    return canon


@dataclass
class SideVerdict:
    """One reader's verdict on one side.

    ``verdict``: agree / normal / anomalous (None while only other fields are set);
    ``label``: 1 anomalous, 0 normal, resolved when the verdict is recorded ('agree' takes the
    model's decision at that moment); ``roi``: the reader's box (RAS mm) when placed, suggested
    or corrected, else None; ``model_*``: what the reader saw when deciding.
    """

    verdict: Optional[str] = None
    label: Optional[int] = None
    anomaly_type: Optional[str] = None
    heatmap_on_target: Optional[bool] = None
    comment: str = ""
    roi: Optional[SinusROI] = None
    model_probability: Optional[float] = None
    model_call: Optional[str] = None
    model_version: str = ""
    timestamp: str = ""

    @property
    def decided(self) -> bool:
        return self.verdict is not None

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "label": self.label, "anomaly_type": self.anomaly_type,
                "heatmap_on_target": self.heatmap_on_target, "comment": self.comment,
                "roi": self.roi.to_dict() if self.roi else None,
                "model": {"probability": self.model_probability, "call": self.model_call,
                          "version": self.model_version},
                "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, data: dict, source=None) -> SideVerdict:
        model = data.get("model") or {}
        roi = data.get("roi")
        verdict = data.get("verdict")
        label = data.get("label")
        if label not in (None, 0, 1):
            raise InputError(source, f"label {label!r}", field="label", expected="0, 1 or null")
        return cls(
            verdict=check_verdict(verdict, source) if verdict is not None else None,
            label=label, anomaly_type=check_anomaly_type(data.get("anomaly_type"), source),
            heatmap_on_target=data.get("heatmap_on_target"),
            comment=str(data.get("comment") or ""),
            roi=SinusROI.from_values(roi["center_ras"], roi["size_mm"], roi.get("axes_ras"),
                                     source=str(source), field_name="roi") if roi else None,
            model_probability=model.get("probability"), model_call=model.get("call"),
            model_version=str(model.get("version") or ""),
            timestamp=str(data.get("timestamp") or ""))


@dataclass
class CaseState:
    """Everything recorded for one case: per-side verdicts, the reader's flag, and the problem
    found when the scan could not be loaded (None if it loaded)."""

    sides: Dict[str, SideVerdict] = field(default_factory=dict)
    flagged: bool = False
    problem: Optional[str] = None
    updated: str = ""

    def to_dict(self) -> dict:
        return {"flagged": self.flagged, "problem": self.problem, "updated": self.updated,
                "sides": {s: v.to_dict() for s, v in sorted(self.sides.items())}}

    @classmethod
    def from_dict(cls, data: dict, source=None) -> CaseState:
        return cls({s: SideVerdict.from_dict(v, source) for s, v in
                    (data.get("sides") or {}).items()},
                   bool(data.get("flagged", False)), data.get("problem"),
                   str(data.get("updated") or ""))
