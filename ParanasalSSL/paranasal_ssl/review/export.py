"""Export a review session: a labels manifest that ``paranasal-ssl finetune --labels`` reads
as it is, a disagreement table (model vs reader), and optionally each case's heatmap and
thresholded region as NRRD images (and as a DICOM SEG for a DICOM case).

The labels manifest is written by ``manifest.write_manifest`` (scan path, side, ROI in RAS mm,
label, anomaly type) with these extra columns: ``reader``, ``timestamp``, ``model_version``
(the model whose prediction the reader saw), ``model_probability``, ``agree`` (1 if the reader
agreed with the model's decision), ``heatmap_on_target`` (1 / 0 / empty), ``comment``.
The folders are checked for writing before anything is read or written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from paranasal_ssl.atomic import check_writable_dir, write_text
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord, write_manifest
from paranasal_ssl.progress import Progress
from paranasal_ssl.review.session import ReviewSession

EXTRA_COLUMNS = ("reader", "timestamp", "model_version", "model_probability", "agree",
                 "heatmap_on_target", "comment")
DISAGREEMENT_COLUMNS = ("case_id", "side", "kind", "model_probability", "model_call",
                        "model_label", "reader_label", "anomaly_type", "heatmap_on_target",
                        "reader", "comment", "model_version", "timestamp")


@dataclass
class ExportResult:
    """What was written: paths, the number of labelled sides, and the sides left out (why)."""

    labels: Path
    records: List[SinusRecord]
    disagreements: Optional[Path] = None
    n_disagreements: int = 0
    images: List[Path] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # what the images left out, and why


def _yes_no(value: Optional[bool]) -> str:
    return "" if value is None else str(int(bool(value)))


def labelled_records(session: ReviewSession, include_flagged: bool = False
                     ) -> tuple[List[SinusRecord], List[str]]:
    """One record per side with a verdict (flagged cases only with ``include_flagged``), and
    a note for each decided side that cannot be exported (no ROI, scan unavailable)."""
    records, skipped = [], []
    for case in session.case_list.cases:
        state = session.state(case.case_id)
        status = session.status(case.case_id)
        for side in case.sides:
            verdict = state.sides.get(side)
            if verdict is None or verdict.label is None:
                continue
            key = f"{case.case_id}:{side}"
            if status == "unavailable":
                skipped.append(f"{key}: scan unavailable ({session.problem(case.case_id)})")
                continue
            if status == "flagged" and not include_flagged:
                skipped.append(f"{key}: case flagged (use include_flagged to export it)")
                continue
            roi = session.roi(case.case_id, side)
            if roi is None:
                skipped.append(f"{key}: no sinus ROI (place or suggest one)")
                continue
            pred = session.prediction(case.case_id)
            model_label = pred.model_label(side) if pred else None
            extra = {
                "reader": session.reader, "timestamp": verdict.timestamp,
                "model_version": verdict.model_version,
                "model_probability": "" if verdict.model_probability is None
                else f"{verdict.model_probability:.6f}",
                "agree": "" if model_label is None else str(int(model_label == verdict.label)),
                "heatmap_on_target": _yes_no(verdict.heatmap_on_target),
                "comment": verdict.comment}
            types = (verdict.anomaly_type,) if verdict.anomaly_type and verdict.label else ()
            records.append(SinusRecord(case.case_id, case.subject_id, case.image, side, roi,
                                       verdict.label, types, None, case.modality, extra))
    return records, skipped


def disagreement_rows(session: ReviewSession) -> List[dict]:
    """Decided sides where the reader's label differs from the model's decision (``kind``
    label) or the heatmap missed the finding (``kind`` localisation); label rows first."""
    rows = []
    for case in session.case_list.cases:
        pred = session.prediction(case.case_id)
        for side, v in sorted(session.state(case.case_id).sides.items()):
            if v.label is None:
                continue
            model_label = pred.model_label(side) if pred else None
            kinds = []
            if model_label is not None and model_label != v.label:
                kinds.append("label")
            if v.heatmap_on_target is False:
                kinds.append("localisation")
            if not kinds:
                continue
            rows.append({
                "case_id": case.case_id, "side": side, "kind": ";".join(kinds),
                "model_probability": "" if v.model_probability is None
                else f"{v.model_probability:.6f}",
                "model_call": v.model_call or "",
                "model_label": "" if model_label is None else str(model_label),
                "reader_label": str(v.label), "anomaly_type": v.anomaly_type or "",
                "heatmap_on_target": _yes_no(v.heatmap_on_target), "reader": session.reader,
                "comment": v.comment, "model_version": v.model_version,
                "timestamp": v.timestamp})
    rows.sort(key=lambda r: not r["kind"].startswith("label"))
    return rows


def export_session(session: ReviewSession, labels_csv: Union[str, Path],
                   disagreements_csv: Union[str, Path, None] = None,
                   images_dir: Union[str, Path, None] = None,
                   include_flagged: bool = False) -> ExportResult:
    """Write the labels manifest (and the disagreement table, and the images if asked).

    Raises ``InputError`` before writing anything if a destination folder is not writable or
    no side has a verdict yet.
    """
    labels_csv = Path(labels_csv)
    for folder in {labels_csv.parent, *(Path(p).parent for p in [disagreements_csv] if p),
                   *([Path(images_dir)] if images_dir else [])}:
        check_writable_dir(folder)
    records, skipped = labelled_records(session, include_flagged)
    if not records:
        why = f" ({len(skipped)} decided side(s) could not be exported: {skipped[0]})" \
            if skipped else ""
        raise InputError(session.path, f"no reviewed case side to export{why}",
                         expected="at least one side with a verdict (agree / normal / "
                         "anomalous)")
    write_manifest(records, labels_csv, extra_columns=EXTRA_COLUMNS)
    result = ExportResult(labels_csv, records, skipped=skipped)
    if disagreements_csv:
        rows = disagreement_rows(session)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=DISAGREEMENT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(disagreements_csv, buf.getvalue())
        result.disagreements, result.n_disagreements = Path(disagreements_csv), len(rows)
    if images_dir:
        result.images = export_images(session, sorted({r.case_id for r in records}),
                                      Path(images_dir), result.notes)
    return result


def export_images(session: ReviewSession, case_ids: List[str], folder: Path,
                  notes: Optional[List[str]] = None) -> List[Path]:
    """Per case with a prediction: ``<case>_heatmap.nrrd`` (float residuals in [0, 1]) and
    ``<case>_regions.nrrd`` (labelmap: 1 left, 2 right region), both in the scan's geometry;
    for a case whose scan is a DICOM series (and highdicom installed) also
    ``<case>_regions.seg.dcm``, the regions as a DICOM SEG on the series' own slices for PACS,
    each segment labelled with the model's probability and call and the reader's verdict.
    (The Slicer module writes the regions as a segmentation ``.seg.nrrd`` too.) What could not
    be written is said in ``notes``."""
    import SimpleITK as sitk

    from paranasal_ssl.dicom_seg import highdicom_installed
    from paranasal_ssl.scan_io import is_dicom_input, write_image

    written = []
    notes = notes if notes is not None else []
    segs = highdicom_installed()
    with Progress("export images", total=len(case_ids), unit="case") as progress:
        for case_id in case_ids:
            pred = session.prediction(case_id)
            for source, suffix in ((pred and pred.heatmap, "heatmap"),
                                   (pred and pred.region, "regions")):
                if source is None or not Path(source).is_file():
                    continue
                try:
                    image = sitk.ReadImage(str(source))
                except RuntimeError as exc:
                    raise InputError(source, f"cannot read prediction image ({exc})") from None
                written.append(write_image(image, folder / f"{_safe(case_id)}_{suffix}.nrrd"))
                scan = session.case_list.case(case_id).image
                if suffix == "regions" and is_dicom_input(scan):
                    if not segs:
                        note = "no DICOM SEG: highdicom is not installed (pip install highdicom)"
                        notes += [note] if note not in notes else []
                        continue
                    seg = _region_seg(session, case_id, image, scan, folder, notes)
                    written += [seg] if seg is not None else []
            progress.update(1)
    return written


def _region_seg(session: ReviewSession, case_id: str, region, scan: Path, folder: Path,
                notes: List[str]) -> Optional[Path]:
    """``<case>_regions.seg.dcm`` (None when no side has a region, or when the series cannot
    carry a SEG: then ``notes`` says why, and the rest of the export goes on)."""
    from paranasal_ssl.dicom_seg import write_region_seg
    from paranasal_ssl.errors import ParanasalError

    pred = session.prediction(case_id)
    labels = {}
    for side, result in pred.sides.items():
        verdict = session.verdict(case_id, side)
        reader = {1: "anomalous", 0: "normal"}.get(verdict.label if verdict else None,
                                                   "not reviewed")
        labels[side] = (f"{side} maxillary sinus, p = {result.probability:.2f} "
                        f"({result.call}), reader: {reader}")
    try:
        return write_region_seg(region, scan, folder / f"{_safe(case_id)}_regions.seg.dcm",
                                descriptions=labels)
    except ParanasalError as exc:
        notes.append(f"case {case_id}: no DICOM SEG ({exc})")
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "case"
