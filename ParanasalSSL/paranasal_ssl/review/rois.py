"""A manifest for ``paranasal-ssl predict --manifest`` from a case list whose boxes are
incomplete: each side gets the reader's box, else the list's, else (optionally, CT) a box
suggested by ``roi_suggest.suggest_rois``. Cases that still lack a box, or whose scan is
unavailable, are left out and reported."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Union

from paranasal_ssl.atomic import check_writable_dir
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord, write_manifest
from paranasal_ssl.progress import Progress
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


def _suggest(image: Path):
    from paranasal_ssl.roi_suggest import suggest_rois
    from paranasal_ssl.scan_io import read_scan

    return suggest_rois(read_scan(image), source=str(image)).rois
