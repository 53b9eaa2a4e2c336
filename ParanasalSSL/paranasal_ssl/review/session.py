"""A reader's review of a case list: verdicts, status, navigation, saved after every change.

The session file ``<list stem>.review-<reader>.json`` sits next to the case list; two readers
write two files. Every change (verdict, flag, ROI, moving to another case, sort or filter) is
written at once through ``atomic.write_json`` (temporary file, fsync, rename), so a crash or a
killed Slicer keeps the last complete state, and reopening the list resumes at the case the
reader was on. A session file from another case list (other fingerprint), in a newer format, or
changed on disk by another program since it was opened is refused, never overwritten.

Status of a case: ``unavailable`` (scan missing or unreadable), ``flagged`` (by the reader),
``reviewed`` (every side has a verdict) or ``unreviewed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from paranasal_ssl.atomic import check_writable_dir, write_json
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI, check_side
from paranasal_ssl.review import ordering
from paranasal_ssl.review.case_list import CaseList, open_case_list, reader_slug
from paranasal_ssl.review.predictions import CasePrediction, PredictionStore
from paranasal_ssl.review.verdicts import (
    CaseState,
    SideVerdict,
    check_anomaly_type,
    check_verdict,
    now_iso,
)
from paranasal_ssl.version import code_version

FORMAT = "paranasal-ssl-review-session"
FORMAT_VERSION = 1
_KEEP = object()  # "argument not given": leave the field as it is


class ReviewSession:
    """One reader's verdicts on one case list. Use ``open_session`` to make one."""

    def __init__(self, case_list: CaseList, reader: str, path: Path,
                 predictions: Optional[PredictionStore] = None, read_only: bool = False):
        self.case_list = case_list
        self.reader = reader.strip()
        self.path = Path(path)
        self.predictions = predictions
        self.read_only = read_only
        self.cases: Dict[str, CaseState] = {}
        self.current: Optional[str] = None
        self.view = {"sort": "list", "filter": "all", "descending": True}
        self.created = now_iso()
        self._disk_stamp: Optional[Tuple[int, int]] = None

    # -- reading state -----------------------------------------------------------------------

    def state(self, case_id: str) -> CaseState:
        """What was recorded for the case (an empty state if nothing yet)."""
        self.case_list.index(case_id)
        return self.cases.get(case_id) or CaseState()

    def verdict(self, case_id: str, side: str) -> Optional[SideVerdict]:
        return self.state(case_id).sides.get(check_side(side))

    def prediction(self, case_id: str) -> Optional[CasePrediction]:
        pred = self.predictions.get(case_id) if self.predictions else None
        return pred if pred is not None and not pred.error else None

    def status(self, case_id: str) -> str:
        case, state = self.case_list.case(case_id), self.state(case_id)
        if not case.available or state.problem:
            return "unavailable"
        if state.flagged:
            return "flagged"
        done = all(s in state.sides and state.sides[s].decided for s in case.sides)
        return "reviewed" if done else "unreviewed"

    def problem(self, case_id: str) -> Optional[str]:
        return self.case_list.case(case_id).problem or self.state(case_id).problem

    def roi(self, case_id: str, side: str) -> Optional[SinusROI]:
        """The box of a side (RAS mm): the reader's, else the list's, else the prediction's."""
        side = check_side(side)
        verdict = self.verdict(case_id, side)
        if verdict is not None and verdict.roi is not None:
            return verdict.roi
        case = self.case_list.case(case_id)
        if side in case.rois:
            return case.rois[side]
        pred = self.prediction(case_id)
        result = pred.sides.get(side) if pred else None
        if result is not None and result.roi:
            r = result.roi
            return SinusROI.from_values(r["center_ras"], r["size_mm"], r.get("axes_ras"))
        return None

    def counts(self) -> Dict[str, int]:
        """Number of cases per status (every status present, possibly 0)."""
        out = {s: 0 for s in ("unreviewed", "reviewed", "flagged", "unavailable")}
        for case_id in self.case_list.ids:
            out[self.status(case_id)] += 1
        return out

    # -- navigation ----------------------------------------------------------------------------

    def view_ids(self) -> List[str]:
        """Case ids in the current sort and filter order."""
        return ordering.ordered_ids(self, self.view["sort"], self.view["filter"],
                                    self.view["descending"])

    def set_view(self, sort: Optional[str] = None, filter_name: Optional[str] = None,
                 descending: Optional[bool] = None) -> List[str]:
        """Change sort and/or filter (saved); returns the new view order."""
        if sort is not None and sort not in ordering.SORT_KEYS:
            raise InputError(None, f"unknown sort {sort!r}", field="sort",
                             expected=" / ".join(ordering.SORT_KEYS))
        if filter_name is not None and filter_name not in ordering.FILTERS:
            raise InputError(None, f"unknown filter {filter_name!r}", field="filter",
                             expected=" / ".join(ordering.FILTERS))
        for key, value in (("sort", sort), ("filter", filter_name), ("descending", descending)):
            if value is not None:
                self.view[key] = value
        self.save()
        return self.view_ids()

    def position(self) -> Tuple[int, int]:
        """(1-based place of the current case in the view, or 0 if it is filtered out;
        number of cases in the view)."""
        ids = self.view_ids()
        return (ids.index(self.current) + 1 if self.current in ids else 0), len(ids)

    def go_to(self, case_id: str) -> str:
        self.case_list.index(case_id)
        self.current = case_id
        self.save()
        return case_id

    def next(self) -> Optional[str]:
        """Move to the next available case in the view; None (and stay) at the end."""
        return self._step(+1)

    def previous(self) -> Optional[str]:
        return self._step(-1)

    def next_unreviewed(self) -> Optional[str]:
        """Move to the next unreviewed case after the current one (wrapping round the view);
        None when every available case is reviewed or flagged."""
        ids = self.view_ids()
        if not ids:
            return None
        start = ids.index(self.current) + 1 if self.current in ids else 0
        for offset in range(len(ids)):
            candidate = ids[(start + offset) % len(ids)]
            if self.status(candidate) == "unreviewed":
                return self.go_to(candidate)
        return None

    def first(self) -> Optional[str]:
        """The case to show when the session opens: where the reader stopped, else the first
        available case of the view."""
        if self.current is not None:
            return self.current
        for case_id in self.view_ids():
            if self.status(case_id) != "unavailable":
                return self.go_to(case_id)
        return None

    def _step(self, direction: int) -> Optional[str]:
        ids = self.view_ids()
        if self.current in ids:
            i = ids.index(self.current) + direction
        else:  # current case filtered out: continue from its place in the list
            place = self.case_list.index(self.current) if self.current else -1
            order = [self.case_list.index(c) for c in ids]
            after = [k for k, p in enumerate(order) if (p > place if direction > 0 else p < place)]
            if not after:
                return None
            i = after[0] if direction > 0 else after[-1]
        while 0 <= i < len(ids):
            if self.status(ids[i]) != "unavailable":
                return self.go_to(ids[i])
            i += direction
        return None

    # -- recording -----------------------------------------------------------------------------

    def record(self, case_id: str, side: str, verdict=_KEEP, anomaly_type=_KEEP,
               heatmap_on_target=_KEEP, comment=_KEEP, roi=_KEEP) -> SideVerdict:
        """Record what the reader says about one side; fields not given stay as they were.

        ``verdict``: agree / normal / anomalous ('agree' takes the model's decision now and
        needs a prediction); ``anomaly_type``: a type name or None; ``heatmap_on_target``:
        True / False / None; ``roi``: a ``SinusROI`` in RAS mm or None. Saved at once.
        """
        side = check_side(side)
        case = self.case_list.case(case_id)
        if side not in case.sides:
            raise InputError(self.case_list.source, f"case {case_id} has no {side} side in "
                             "this list", field="side", expected=" or ".join(case.sides))
        state = self.cases.get(case_id) or CaseState()
        old = state.sides.get(side) or SideVerdict()
        new = SideVerdict(**{k: getattr(old, k) for k in old.__dataclass_fields__})
        if verdict is not _KEEP:
            self._apply_verdict(new, case_id, side, verdict)
        if anomaly_type is not _KEEP:
            new.anomaly_type = check_anomaly_type(anomaly_type)
            if new.anomaly_type is not None and new.label == 0:
                raise InputError(None, f"{case_id} {side}: an anomaly type needs an anomalous "
                                 "verdict", field="anomaly_type",
                                 expected="verdict anomalous (or agree with an anomalous call)")
        if heatmap_on_target is not _KEEP:
            if heatmap_on_target not in (None, True, False):
                raise InputError(None, f"heatmap_on_target {heatmap_on_target!r}",
                                 field="heatmap_on_target", expected="yes, no or unknown")
            new.heatmap_on_target = heatmap_on_target
        if comment is not _KEEP:
            new.comment = str(comment or "")
        if roi is not _KEEP:
            if roi is not None and not isinstance(roi, SinusROI):
                raise TypeError("roi must be a SinusROI or None")
            new.roi = roi
        new.timestamp = now_iso()
        state.sides[side] = new
        state.updated = new.timestamp
        self.cases[case_id] = state
        self.save()
        return new

    def _apply_verdict(self, new: SideVerdict, case_id: str, side: str, verdict) -> None:
        if verdict is None:
            new.verdict, new.label = None, None
            return
        verdict = check_verdict(verdict)
        pred = self.prediction(case_id)
        result = pred.sides.get(side) if pred else None
        if verdict == "agree":
            if result is None:
                raise InputError(None, f"{case_id} {side}: no model prediction to agree with",
                                 field="verdict", expected="normal or anomalous")
            new.label = pred.model_label(side)
        else:
            new.label = int(verdict == "anomalous")
        new.verdict = verdict
        if new.label == 0:
            new.anomaly_type = None
        new.model_probability = result.probability if result else None
        new.model_call = result.call if result else None
        new.model_version = pred.model_version if pred else ""

    def set_flag(self, case_id: str, flagged: bool = True) -> None:
        state = self.cases.get(case_id) or self.state(case_id)
        state.flagged, state.updated = bool(flagged), now_iso()
        self.cases[case_id] = state
        self.save()

    def mark_unavailable(self, case_id: str, problem: Optional[str]) -> None:
        """Note that the scan could not be loaded (``problem``; None clears it)."""
        state = self.cases.get(case_id) or self.state(case_id)
        state.problem, state.updated = problem, now_iso()
        self.cases[case_id] = state
        self.save()

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        base = self.path.parent.resolve()
        preds = None
        if self.predictions is not None:
            preds = _relative(self.predictions.folder, base)
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "reader": self.reader,
            "case_list": {"path": _relative(self.case_list.source, base),
                          "kind": self.case_list.kind,
                          "fingerprint": self.case_list.fingerprint(),
                          "cases": len(self.case_list)},
            "predictions": preds, "created": self.created, "updated": now_iso(),
            "written_by": code_version(), "current": self.current, "view": dict(self.view),
            "cases": {c: s.to_dict() for c, s in self.cases.items()}}

    def save(self) -> None:
        """Write the whole session atomically (refused if another program changed the file)."""
        if self.read_only:
            return
        stamp = _stamp(self.path)
        if stamp is not None and stamp != self._disk_stamp:
            raise InputError(self.path, "the session file was changed by another program since "
                             "it was opened (another Slicer or command on the same reader's "
                             "session?)", expected="one program per session file; reopen it")
        write_json(self.path, self.to_dict())
        self._disk_stamp = _stamp(self.path)


def open_session(case_list: Union[CaseList, str, Path], reader: Optional[str] = None,
                 predictions: Union[PredictionStore, str, Path, None] = None,
                 path: Union[str, Path, None] = None, read_only: bool = False) -> ReviewSession:
    """Open the reader's session on ``case_list`` (resume it, or start it and write the file).

    ``path``: an explicit session file (default ``<list stem>.review-<reader>.json`` next to the
    list); ``reader`` may then be omitted. ``predictions``: a ``predict`` output folder (default:
    the one the session used last). ``read_only``: never write (status, report).
    """
    cases = case_list if isinstance(case_list, CaseList) else open_case_list(case_list)
    if path is None:
        if not reader:
            raise InputError(None, "no reader name", field="reader",
                             expected="--reader NAME or a session file")
        path = cases.session_path(reader)
    path = Path(path)
    data = _load(path, cases) if path.exists() else None
    if data is not None and reader and reader_slug(reader) != reader_slug(data["reader"]):
        raise InputError(path, f"this session belongs to reader {data['reader']!r}",
                         field="reader", expected=f"the session file of {reader!r}")
    if not read_only:
        check_writable_dir(path.parent)  # fail before any review work is done
    name = reader or (data or {}).get("reader") or ""
    reader_slug(name)
    if predictions is None and data is not None and data.get("predictions"):
        predictions = path.parent / data["predictions"]
    if predictions is not None and not isinstance(predictions, PredictionStore):
        predictions = PredictionStore(predictions)
    session = ReviewSession(cases, name, path, predictions, read_only)
    if data is None:
        session.save()
        return session
    session.created = data.get("created", session.created)
    session.current = data.get("current") if data.get("current") in cases.ids else None
    view = data.get("view") or {}
    session.view.update({k: view[k] for k in ("sort", "filter", "descending") if k in view})
    for case_id, state in (data.get("cases") or {}).items():
        if case_id not in cases.ids:
            raise InputError(path, f"case {case_id!r} is not in the case list",
                             field="cases", expected="cases of this list only")
        session.cases[case_id] = CaseState.from_dict(state, path)
    session._disk_stamp = _stamp(path)
    if predictions is not None and data.get("predictions") != _relative(
            predictions.folder, path.parent.resolve()) and not read_only:
        session.save()  # remember the predictions folder for the next opening
    return session


def blank_session(case_list: Union[CaseList, str, Path],
                  predictions: Union[PredictionStore, str, Path, None] = None) -> ReviewSession:
    """A read-only session without verdicts (e.g. a report of predictions alone)."""
    cases = case_list if isinstance(case_list, CaseList) else open_case_list(case_list)
    if predictions is not None and not isinstance(predictions, PredictionStore):
        predictions = PredictionStore(predictions)
    return ReviewSession(cases, "", cases.session_path("none"), predictions, read_only=True)


def _load(path: Path, cases: CaseList) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"unreadable session file ({exc})",
                         expected="a review session written by paranasal-ssl") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(path, "not a review session file", field="format",
                         expected=f"{FORMAT!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(path, f"session format {version!r} is newer than this version of "
                         f"paranasal-ssl reads", field="format_version",
                         expected=f"format {FORMAT_VERSION} or older (update paranasal-ssl to "
                         "open this session)")
    listed = data.get("case_list") or {}
    if listed.get("fingerprint") != cases.fingerprint():
        raise InputError(path, f"this session belongs to another case list "
                         f"({listed.get('path')!r}, {listed.get('cases')} cases), not "
                         f"{cases.source} ({len(cases)} cases)", field="case_list.fingerprint",
                         expected="the session file of this case list (or another reader name "
                         "to start a new one)")
    if not data.get("reader"):
        raise InputError(path, "no reader recorded", field="reader", expected="a reader name")
    return data


def _stamp(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except ValueError:
        return str(Path(path).resolve())
