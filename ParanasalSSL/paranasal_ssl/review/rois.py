"""What ``paranasal-ssl predict`` reads for a review session's cases, whose boxes may be
incomplete: each side gets the reader's box, else the list's, else the last prediction's.

- ``predict_manifest``: a strict manifest (``predict --manifest``); sides still without a box
  get one suggested here by ``roi_suggest.suggest_rois`` (optional) or are left out;
- ``predict_case_list``: a case list (``predict --cases``) that leaves the suggesting to the
  background ``predict``, for callers that must not read scans themselves (Slicer's UI).

Unavailable cases are left out and reported."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import List, Tuple, Union

from paranasal_ssl.atomic import check_writable_dir, write_text
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord, manifest_rows, write_manifest
from paranasal_ssl.progress import Progress
from paranasal_ssl.review.case_list import ROI_COLUMNS
from paranasal_ssl.review.session import ReviewSession


def predict_manifest(session: ReviewSession, out_csv: Union[str, Path],
                     suggest_missing: bool = False) -> Tuple[Path, List[str]]:
    """Write the manifest; returns its path and the notes on what was left out."""
    out_csv = Path(out_csv)
    check_writable_dir(out_csv.parent)
    records: List[SinusRecord] = []
    notes: List[str] = []
    with Progress("rois", total=len(session.case_list), unit="case") as progress:
        for case in session.case_list.cases:
            progress.update(1)
            if session.status(case.case_id) == "unavailable":
                notes.append(f"{case.case_id}: {session.problem(case.case_id)}")
                continue
            rois = {side: session.roi(case.case_id, side) for side in case.sides}
            if suggest_missing and any(r is None for r in rois.values()):
                try:
                    suggested = _suggest(case.image)
                except InputError as exc:
                    session.mark_unavailable(case.case_id, str(exc))
                    notes.append(f"{case.case_id}: {exc}")
                    continue
                rois = {s: r or suggested[s] for s, r in rois.items()}
            for side, roi in rois.items():
                if roi is None:
                    notes.append(f"{case.case_id}:{side}: no ROI")
                    continue
                records.append(SinusRecord(case.case_id, case.subject_id, case.image, side, roi,
                                           modality=case.modality))
    if not records:
        raise InputError(session.case_list.source, "no case has a sinus box",
                         expected="ROIs in the list, placed in review, or --suggest-missing")
    write_manifest(records, out_csv)
    return out_csv, notes


def predict_case_list(session: ReviewSession, out_csv: Union[str, Path]
                      ) -> Tuple[Path, List[str]]:
    """A case list for ``paranasal-ssl predict --cases``: every available case and side, with
    the box the reader, the list or an earlier prediction gives it, and empty box columns
    elsewhere - the background ``predict`` suggests those on the scan it reads anyway, so the
    caller (Slicer's UI thread) never reads a scan. Unavailable cases are left out and
    reported; the list is written atomically."""
    out_csv = Path(out_csv)
    check_writable_dir(out_csv.parent)
    rows, notes = [], []
    for case in session.case_list.cases:
        if session.status(case.case_id) == "unavailable":
            notes.append(f"{case.case_id}: {session.problem(case.case_id)}")
            continue
        for side in case.sides:
            roi = session.roi(case.case_id, side)
            if roi is not None:
                record = SinusRecord(case.case_id, case.subject_id, case.image, side, roi,
                                     modality=case.modality)
                rows += manifest_rows([record])
            else:
                rows.append({"case_id": case.case_id, "subject_id": case.subject_id,
                             "image": str(case.image), "side": side,
                             "modality": case.modality or ""})
    if not rows:
        raise InputError(session.case_list.source, "no case can be predicted",
                         expected="at least one scan that exists and can be read")
    columns = ["case_id", "subject_id", "image", "side", *ROI_COLUMNS, "roi_axes", "modality"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_csv, buf.getvalue())
    return out_csv, notes


def _suggest(image: Path):
    from paranasal_ssl.roi_suggest import suggest_rois
    from paranasal_ssl.scan_io import read_scan

    return suggest_rois(read_scan(image), source=str(image)).rois
