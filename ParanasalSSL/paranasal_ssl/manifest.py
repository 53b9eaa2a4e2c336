"""Cohort manifests: one CSV row per sinus side.

Required columns: ``case_id``, ``subject_id``, ``image``, ``side``, ``roi_center_r``,
``roi_center_a``, ``roi_center_s`` (RAS mm), ``roi_size_r``, ``roi_size_a``, ``roi_size_s`` (mm).
Optional: ``label`` (0/1, normal/anomalous, or empty = unlabelled), ``anomaly_types``
(semicolon-separated names), ``mask`` (label mask path), ``modality`` (ct/mri), ``roi_axes``
(9 numbers, row-major 3x3, columns = ROI axes in RAS). Other columns are kept as they are.
Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from paranasal_ssl.anomalies import canonical_anomaly
from paranasal_ssl.atomic import write_text
from paranasal_ssl.csv_input import read_csv_table
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI, check_side, check_sides_in_place

REQUIRED_COLUMNS = ("case_id", "subject_id", "image", "side", "roi_center_r", "roi_center_a",
                    "roi_center_s", "roi_size_r", "roi_size_a", "roi_size_s")
OPTIONAL_COLUMNS = ("label", "anomaly_types", "mask", "modality", "roi_axes")
# read with a decimal comma when a spreadsheet saved the file with semicolons or tabs
NUMERIC_COLUMNS = REQUIRED_COLUMNS[4:] + ("roi_axes",)
LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "anomalous": 1, "abnormal": 1, "anomaly": 1,
               "false": 0, "true": 1, "": None, "unlabelled": None, "unlabeled": None}


@dataclass(frozen=True)
class SinusRecord:
    """One sinus side of one case.

    ``label``: 1 anomalous, 0 normal, None unlabelled. ``image``/``mask``: absolute paths.
    """

    case_id: str
    subject_id: str
    image: Path
    side: str
    roi: SinusROI
    label: Optional[int] = None
    anomaly_types: Tuple[str, ...] = ()
    mask: Optional[Path] = None
    modality: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Unique id of this sinus in a cohort: ``case_id:side``."""
        return f"{self.case_id}:{self.side}"

    def with_label(self, label: Optional[int], anomaly_types: Sequence[str] = ()) -> SinusRecord:
        return replace(self, label=label, anomaly_types=tuple(anomaly_types))


def read_manifest(path: Union[str, Path], require_labels: bool = False) -> List[SinusRecord]:
    """Read and validate a manifest; every problem names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found", expected="a CSV file")
    table = read_csv_table(path, "manifest", decimal_columns=NUMERIC_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}", field="header",
                         expected=f"columns {list(REQUIRED_COLUMNS)}, separated by commas, "
                         "semicolons or tabs")
    records = []
    seen = set()
    for line_no, row in table.rows:
        rec = _parse_row(row, path, line_no)
        if require_labels and rec.label is None:
            raise InputError(path, f"line {line_no}: no label for {rec.key}", field="label",
                             expected="0/1 or normal/anomalous on every row")
        if rec.key in seen:
            raise InputError(path, f"line {line_no}: duplicate sinus {rec.key}",
                             field="case_id,side", expected="one row per case and side")
        seen.add(rec.key)
        records.append(rec)
    if not records:
        raise InputError(path, "manifest has no rows", expected="one row per sinus side")
    boxes: Dict[str, Dict[str, SinusROI]] = {}
    for rec in records:
        boxes.setdefault(rec.case_id, {})[rec.side] = rec.roi
    for case_id, sides in boxes.items():
        check_sides_in_place(sides, path, f"case {case_id}")
    return records


def _parse_row(row: Dict[str, str], path: Path, line_no: int) -> SinusRecord:
    where = f"line {line_no}"

    def need(col: str) -> str:
        value = row.get(col, "")
        if value == "":
            raise InputError(path, f"{where}: empty value", field=col, expected="a value")
        return value

    def number(col: str) -> float:
        value = need(col)
        try:
            return float(value)
        except ValueError:
            raise InputError(path, f"{where}: {value!r} is not a number", field=col,
                             expected="a number in millimetres") from None

    side = check_side(need("side"), f"{path} {where}")
    label = parse_label(row, path, where)
    types = parse_anomaly_types(row, path, where)
    axes = parse_roi_axes(row, path, where)
    roi = SinusROI.from_values(
        [number("roi_center_r"), number("roi_center_a"), number("roi_center_s")],
        [number("roi_size_r"), number("roi_size_a"), number("roi_size_s")],
        axes, source=f"{path} {where}", field_name="roi")
    modality = row.get("modality", "").lower() or None
    if modality not in (None, "ct", "mri"):
        raise InputError(path, f"{where}: unknown modality {modality!r}", field="modality",
                         expected="ct or mri")
    extra = {k: v for k, v in row.items()
             if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and k}
    return SinusRecord(
        case_id=need("case_id"), subject_id=need("subject_id"),
        image=_resolve(path, need("image")), side=side, roi=roi,
        label=label, anomaly_types=types,
        mask=_resolve(path, row["mask"]) if row.get("mask") else None,
        modality=modality, extra=extra)


def parse_label(row: Dict[str, str], path: Path, where: str) -> Optional[int]:
    """The ``label`` column: 0, 1 or None (unlabelled); an unknown word is an InputError.
    ``1.0`` and ``0.0`` count as 1 and 0: pandas writes a label column with a gap as floats."""
    text = (row.get("label") or "").strip().lower()
    if text in ("0.0", "1.0"):
        text = text[0]
    if text not in LABEL_WORDS:
        raise InputError(path, f"{where}: unknown label {row.get('label')!r}", field="label",
                         expected="0, 1, normal, anomalous or empty (unlabelled)")
    return LABEL_WORDS[text]


def parse_anomaly_types(row: Dict[str, str], path: Path, where: str) -> Tuple[str, ...]:
    """The ``anomaly_types`` column (``;``-separated, ``normal`` ignored) as canonical names."""
    types = []
    for name in filter(None, (t.strip() for t in row.get("anomaly_types", "").split(";"))):
        if name.lower() == "normal":
            continue
        canon = canonical_anomaly(name)
        if canon is None:
            raise InputError(path, f"{where}: unknown anomaly type {name!r}",
                             field="anomaly_types", expected="names from paranasal_ssl.anomalies")
        types.append(canon)
    return tuple(types)


def parse_roi_axes(row: Dict[str, str], path: Path, where: str) -> Optional[np.ndarray]:
    """The optional ``roi_axes`` column: 9 numbers, row-major 3x3, columns = box axes in RAS."""
    if not row.get("roi_axes"):
        return None
    try:
        return np.array([float(v) for v in row["roi_axes"].split()]).reshape(3, 3)
    except ValueError:
        raise InputError(path, f"{where}: roi_axes must be 9 numbers", field="roi_axes",
                         expected="row-major 3x3 rotation, columns = ROI axes in RAS") from None


def _resolve(manifest: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (manifest.parent / p).resolve()


def manifest_rows(records: Iterable[SinusRecord], relative_to: Optional[Path] = None) -> List[dict]:
    """Records as CSV row dicts (paths relative to ``relative_to`` where possible)."""
    rows = []
    for r in records:
        axes = r.roi.axes
        row = {
            "case_id": r.case_id, "subject_id": r.subject_id,
            "image": _relative(r.image, relative_to), "side": r.side,
            "label": "" if r.label is None else str(int(r.label)),
            "anomaly_types": ";".join(r.anomaly_types) if r.anomaly_types else
            ("normal" if r.label == 0 else ""),
            "roi_center_r": _fmt(r.roi.center[0]), "roi_center_a": _fmt(r.roi.center[1]),
            "roi_center_s": _fmt(r.roi.center[2]),
            "roi_size_r": _fmt(r.roi.size[0]), "roi_size_a": _fmt(r.roi.size[1]),
            "roi_size_s": _fmt(r.roi.size[2]),
            "mask": _relative(r.mask, relative_to) if r.mask else "",
            "modality": r.modality or "",
            "roi_axes": "" if np.allclose(axes, np.eye(3)) else " ".join(_fmt(v, 6) for v in
                                                                         axes.ravel()),
        }
        row.update(r.extra)
        rows.append(row)
    return rows


def write_manifest(records: Sequence[SinusRecord], path: Union[str, Path],
                   extra_columns: Sequence[str] = ()) -> Path:
    """Write records as a manifest CSV atomically; paths are stored relative to its folder."""
    path = Path(path)
    rows = manifest_rows(records, path.parent.resolve())
    columns = list(REQUIRED_COLUMNS[:4]) + ["label", "anomaly_types"] + list(
        REQUIRED_COLUMNS[4:]) + ["mask", "modality", "roi_axes"]
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    for c in extra_columns:
        if c not in columns:
            columns.append(c)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    return path


def _relative(p: Optional[Path], base: Optional[Path]) -> str:
    if p is None:
        return ""
    if base is not None:
        try:
            return str(Path(p).resolve().relative_to(base))
        except ValueError:
            pass
    return str(p)


def _fmt(v: float, decimals: int = 3) -> str:
    """mm to 3 decimals (a micrometre); box axes (unit vectors) to 6, so they read back
    orthonormal to well within ``SinusROI``'s tolerance."""
    return f"{float(v):.{decimals}f}".rstrip("0").rstrip(".") if float(v) != 0 else "0"
