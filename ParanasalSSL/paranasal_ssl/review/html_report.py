"""A QA report for people who review in a browser: one HTML page, per case and side the axial
and coronal slices through the sinus with the heatmap overlay, the model's numbers and the
reader's verdict.

The page is self-contained (PNG images embedded as base64) unless ``images_dir`` is given, in
which case the PNGs are written there and linked. Every piece of text is HTML-escaped; the
markup is well-formed XML (XHTML syntax) so any browser or XML parser reads it.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from paranasal_ssl.atomic import atomic_path, check_writable_dir, write_text
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import REGION_CODES
from paranasal_ssl.progress import Progress
from paranasal_ssl.review.session import ReviewSession
from paranasal_ssl.version import code_version

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.side { display: inline-block; vertical-align: top; margin: 0 1.5em 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
.status { font-size: 0.8em; padding: 1px 6px; border-radius: 3px; background: #eee; }
.unavailable { color: #a00; }
.scan-note { color: #555; font-style: italic; }
.disagree { background: #fde2e2; }
"""


@dataclass
class ReportResult:
    path: Path
    images: int = 0
    cases: int = 0
    skipped: List[str] = field(default_factory=list)


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _yes_no(value: Optional[bool]) -> str:
    return "-" if value is None else ("yes" if value else "no")


def write_report(session: ReviewSession, out_html: Union[str, Path],
                 threshold: Optional[float] = None, opacity: float = 0.6,
                 images_dir: Union[str, Path, None] = None,
                 title: str = "Maxillary sinus review") -> ReportResult:
    """Write the report for every case of ``session``'s list (unavailable cases are listed with
    their problem). ``threshold``: heatmap values shown (default: each prediction's region
    threshold)."""
    out_html = Path(out_html)
    check_writable_dir(out_html.parent)
    if images_dir is not None:
        images_dir = check_writable_dir(images_dir)
    result = ReportResult(out_html)
    body: List[str] = []
    cases = session.case_list.cases
    with Progress("report", total=len(cases), unit="case") as progress:
        for case in cases:
            body.append(_case_section(session, case, threshold, opacity, images_dir, result,
                                      out_html.parent))
            progress.update(1)
    counts = session.counts()
    head = (f"<h1>{_e(title)}</h1>\n<p>Case list: <code>{_e(session.case_list.source)}</code>"
            f" ({len(cases)} cases); predictions: <code>"
            f"{_e(session.predictions.folder if session.predictions else 'none')}</code>; "
            f"reader: {_e(session.reader or 'none')}; "
            + ", ".join(f"{_e(k)} {v}" for k, v in counts.items())
            + f". Written by paranasal-ssl {_e(code_version())}.</p>\n"
            "<p>Slices run through the centre of each sinus box (dashed green); the heatmap "
            "shows residuals above the threshold, the cyan outline the thresholded region. "
            "Radiological convention: the patient's right is on the left.</p>\n")
    page = ("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n"
            f"<head><meta charset=\"utf-8\" /><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{head}{''.join(body)}</body>\n</html>\n")
    write_text(out_html, page)
    result.cases = len(cases)
    return result


def _case_section(session: ReviewSession, case, threshold, opacity, images_dir,
                  result: ReportResult, out_dir: Path) -> str:
    import SimpleITK as sitk

    from paranasal_ssl.review.slices import looks_like_ct, side_figure_png
    from paranasal_ssl.scan_io import read_scan, scan_notes

    status = session.status(case.case_id)
    anchor = "case-" + "".join(c if c.isalnum() else "-" for c in case.case_id)
    out = [f"<h2 id=\"{_e(anchor)}\">{_e(case.case_id)} <span class=\"status\">{_e(status)}"
           "</span></h2>\n"]
    problem = session.problem(case.case_id)
    scan = None
    if problem is None:
        try:
            scan = read_scan(case.image)
        except InputError as exc:
            problem = str(exc)
    if problem is not None:
        result.skipped.append(f"{case.case_id}: {problem}")
        return "".join(out) + f"<p class=\"unavailable\">Not shown: {_e(problem)}</p>\n"
    for note in scan_notes(scan):  # e.g. a tilted DICOM series shown resampled
        out.append(f"<p class=\"scan-note\">Scan: {_e(note)}</p>\n")
    pred = session.prediction(case.case_id)
    for note in pred.box_notes if pred is not None else ():  # a box on the other sinus?
        out.append(f"<p class=\"scan-note\">Check the box: {_e(note)}</p>\n")
    heat = region = None
    if pred is not None:
        try:
            heat = sitk.ReadImage(str(pred.heatmap)) if pred.heatmap else None
            region = sitk.ReadImage(str(pred.region)) if pred.region else None
        except RuntimeError as exc:
            out.append(f"<p class=\"unavailable\">Prediction images unreadable: {_e(exc)}</p>")
    ct = looks_like_ct(scan)
    for side in case.sides:
        roi = session.roi(case.case_id, side)
        out.append("<div class=\"side\">")
        if roi is None:
            out.append(f"<h3>{_e(side)}</h3><p>No sinus box for this side.</p></div>\n")
            result.skipped.append(f"{case.case_id}:{side}: no ROI")
            continue
        t = pred.region_threshold if threshold is None and pred else (threshold or 0.5)
        result_side = pred.sides.get(side) if pred else None
        through, where = None, "box centre"
        if result_side is not None and result_side.peak_value >= t \
                and _inside(roi, result_side.peak_ras):
            through, where = result_side.peak_ras, "strongest residual"
        png = side_figure_png(scan, roi, f"{case.case_id} {side} (through the {where})", heat,
                              region, REGION_CODES[side], t, opacity, ct, through)
        alt = f"{case.case_id} {side}: axial and coronal slices with heatmap"
        if images_dir is not None:
            name = f"{anchor}-{side}.png"
            with atomic_path(Path(images_dir) / name) as tmp:
                tmp.write_bytes(png)
            src = Path(os.path.relpath(Path(images_dir) / name, out_dir)).as_posix()
        else:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        out.append(f"<h3>{_e(side)}</h3><img src=\"{_e(src)}\" alt=\"{_e(alt)}\" />")
        out.append(_side_table(session, case.case_id, side, pred))
        out.append("</div>\n")
        result.images += 1
    return "".join(out)


def _inside(roi, point) -> bool:
    import numpy as np

    local = roi.axes.T @ (np.asarray(point, float) - roi.center)
    return bool((np.abs(local) <= roi.size / 2).all())


def _side_table(session: ReviewSession, case_id: str, side: str, pred) -> str:
    rows = []
    r = pred.sides.get(side) if pred else None
    if r is not None:
        rows += [("Model probability", f"{r.probability:.3f} ({r.call})"),
                 ("Region volume", f"{r.region_volume_ml:.2f} mL"),
                 ("Strongest residual (RAS mm)", " ".join(f"{v:.1f}" for v in r.peak_ras)),
                 ("Model", pred.model_version)]
        if r.roi_source:  # a suggested box, low confidence above all, is worth a look
            rows.append(("Sinus box", r.roi_source))
    else:
        rows.append(("Model", "no prediction"))
    v = session.verdict(case_id, side)
    disagree = False
    if v is not None and v.verdict is not None:
        label = {1: "anomalous", 0: "normal"}.get(v.label, "-")
        model_label = pred.model_label(side) if pred else None
        disagree = model_label is not None and model_label != v.label
        rows += [("Reader verdict", f"{v.verdict} -> {label}"
                  + (" (disagrees with the model)" if disagree else "")),
                 ("Anomaly type", v.anomaly_type or "-"),
                 ("Heatmap on target", _yes_no(v.heatmap_on_target)),
                 ("Comment", v.comment or "-"), ("Reader", session.reader),
                 ("Recorded", v.timestamp)]
    else:
        rows.append(("Reader verdict", "not reviewed"))
    cls = " class=\"disagree\"" if disagree else ""
    return (f"<table{cls}>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(val)}</td></tr>"
                                      for k, val in rows) + "</table>")
