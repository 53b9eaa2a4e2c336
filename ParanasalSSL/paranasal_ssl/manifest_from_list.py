"""A training manifest from a list of scans whose sinus boxes are missing (a real cohort).

Input: what ``review.case_list`` reads - a folder of scans, or a CSV with an ``image`` column
and, optionally, ``case_id``, ``subject_id``, ``side``, ``label``, ``anomaly_types``,
``modality`` and the six ROI columns. Each side keeps the list's box; a side without one gets
the box ``roi_suggest.suggest_rois`` finds on the scan (read once per case). Labels, anomaly
types, subject ids and modality are carried over, so stage 1 still knows its normal sinuses.
The manifest gains a ``roi_source`` column ("list", or "suggested (<method>; <confidence>
confidence)") so the low-confidence boxes can be checked - e.g. in Slicer's review - before
training. Scans that cannot be read are left out and reported, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from paranasal_ssl.atomic import check_writable_dir
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord, write_manifest
from paranasal_ssl.progress import Progress


@dataclass
class ManifestReport:
    """What ``build_manifest`` wrote: sides per box source, the low-confidence sides (to check)
    and the cases left out with why."""

    path: Path
    sides: int = 0
    from_list: int = 0
    suggested: int = 0
    low_confidence: List[str] = field(default_factory=list)  # "case:side"
    skipped: List[str] = field(default_factory=list)  # "case: why"


def build_manifest(cases: Union[str, Path], out_csv: Union[str, Path],
                   suggest_missing: bool = True,
                   series_description: Optional[str] = None) -> ManifestReport:
    """Write the manifest (atomically) and say what went into it. ``series_description``
    chooses each DICOM study's series (``review.case_list.open_case_list``)."""
    from paranasal_ssl.review.case_list import open_case_list
    from paranasal_ssl.roi_suggest import suggest_rois
    from paranasal_ssl.scan_io import read_scan

    case_list = open_case_list(cases, series_description)
    out_csv = Path(out_csv)
    check_writable_dir(out_csv.parent)
    report = ManifestReport(out_csv)
    records: List[SinusRecord] = []
    with Progress("manifest", total=len(case_list), unit="case") as progress:
        for case in case_list.cases:
            progress.update(1)
            rois = {side: case.rois.get(side) for side in case.sides}
            sources = {side: "list" for side, roi in rois.items() if roi is not None}
            missing = [side for side, roi in rois.items() if roi is None]
            try:
                if case.problem:
                    raise InputError(case.image, case.problem)
                if missing and not suggest_missing:
                    raise InputError(case_list.source, f"no box for {', '.join(missing)}",
                                     field="roi_center_r", expected="the six ROI columns, or "
                                     "box suggestion (leave out --no-suggest)")
                if missing:
                    suggestion = suggest_rois(read_scan(case.image), source=str(case.image))
                    for side in missing:
                        rois[side] = suggestion.rois[side]
                        sources[side] = (f"suggested ({suggestion.method}; "
                                         f"{suggestion.confidence} confidence)")
                        if suggestion.low_confidence:
                            report.low_confidence.append(f"{case.case_id}:{side}")
            except InputError as exc:
                report.skipped.append(f"{case.case_id}: {exc}")
                continue
            for side in case.sides:
                records.append(SinusRecord(
                    case.case_id, case.subject_id, case.image, side, rois[side],
                    label=case.prior_labels.get(side), anomaly_types=case.prior_types.get(
                        side, ()), modality=case.modality,
                    extra={"roi_source": sources[side]}))
            report.from_list += len(case.sides) - len(missing)
            report.suggested += len(missing)
    if not records:
        why = "; ".join(report.skipped[:3]) + (" ..." if len(report.skipped) > 3 else "")
        raise InputError(case_list.source, f"no case could be put in the manifest ({why})",
                         expected="readable scans")
    report.sides = len(records)
    write_manifest(records, out_csv, extra_columns=["roi_source"])
    return report
