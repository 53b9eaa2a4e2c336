"""The list of cases a reader reviews: a folder of scans, or a manifest CSV.

A case-list CSV is a relaxed manifest (a full cohort manifest from ``synth`` is one too):

- ``image`` (required; ``scan`` also accepted): scan file or DICOM folder, relative to the CSV;
- ``case_id`` (default: the scan's file name without suffix), ``subject_id`` (default: case_id);
- ``side`` (left / right); a row without side only names the scan (both sides are reviewed);
- ``roi_center_r/a/s`` and ``roi_size_r/a/s`` (RAS mm, plus optional ``roi_axes``): all six or
  none; a side without a box can be reviewed once a box is placed or suggested;
- ``label`` and ``anomaly_types``: optional prior labels; ``modality``: ct / mri.

A scan that does not exist is kept in the list, marked with its problem, and skipped by
navigation; it never stops the list from opening.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from paranasal_ssl.csv_input import read_csv_table
from paranasal_ssl.dicom_files import holds_dicom
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SIDES, SinusROI, check_side
from paranasal_ssl.hashing import stable_hash
from paranasal_ssl.manifest import (
    NUMERIC_COLUMNS,
    parse_anomaly_types,
    parse_label,
    parse_roi_axes,
)
from paranasal_ssl.scan_io import IMAGE_SUFFIXES

ROI_COLUMNS = ("roi_center_r", "roi_center_a", "roi_center_s",
               "roi_size_r", "roi_size_a", "roi_size_s")
SESSION_INFIX = ".review-"


@dataclass(frozen=True)
class ReviewCase:
    """One scan to review. ``rois``: side -> box (RAS mm) given by the list; ``sides``: the
    sides to review; ``prior_labels``: side -> 0 / 1 / None; ``problem``: why the scan cannot
    be shown (None when it can)."""

    case_id: str
    subject_id: str
    image: Path
    sides: Tuple[str, ...] = SIDES
    rois: Dict[str, SinusROI] = field(default_factory=dict)
    prior_labels: Dict[str, Optional[int]] = field(default_factory=dict)
    prior_types: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    modality: Optional[str] = None
    problem: Optional[str] = None

    @property
    def available(self) -> bool:
        return self.problem is None


@dataclass
class CaseList:
    """Cases in list order. ``source``: the CSV file or the scan folder."""

    source: Path
    kind: str  # "manifest" or "folder"
    cases: List[ReviewCase]
    _index: Dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {c.case_id: i for i, c in enumerate(self.cases)}

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def ids(self) -> List[str]:
        return [c.case_id for c in self.cases]

    def index(self, case_id: str) -> int:
        if case_id not in self._index:
            raise InputError(self.source, f"no case {case_id!r} in this list", field="case_id",
                             expected=f"one of {self.ids[:5]}{' ...' if len(self) > 5 else ''}")
        return self._index[case_id]

    def case(self, case_id: str) -> ReviewCase:
        return self.cases[self.index(case_id)]

    @property
    def base_dir(self) -> Path:
        """Folder that relative scan paths refer to."""
        return self.source if self.kind == "folder" else self.source.parent

    def relative(self, path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(self.base_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    def fingerprint(self) -> str:
        """Identity of the list: its case ids and scan paths (relative, so a list moved with
        its scans keeps its sessions). A session from another list has another fingerprint."""
        return stable_hash(sorted([c.case_id, self.relative(c.image)] for c in self.cases))

    def session_path(self, reader: str) -> Path:
        """``<list stem>.review-<reader>.json`` next to the list (file or folder)."""
        stem = self.source.name[:-4] if self.source.name.lower().endswith(".csv") \
            else self.source.name
        return self.source.parent / f"{stem}{SESSION_INFIX}{reader_slug(reader)}.json"


def reader_slug(reader: str) -> str:
    """The reader's name as it appears in a file name (letters, digits, '-', '_')."""
    name = (reader or "").strip()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if not slug:
        raise InputError(None, f"reader name {reader!r} is empty", field="reader",
                         expected="the reader's name or initials, e.g. 'jdoe'")
    return slug


def open_case_list(path: Union[str, Path],
                   series_description: Optional[str] = None) -> CaseList:
    """A folder of scans (NIfTI / NRRD / MHA files, DICOM sub-folders) or a case-list CSV.

    ``series_description``: for each DICOM case (a study folder, a CD), the series whose
    SeriesDescription contains this text (``scan_io.series_matching``) becomes the case's
    scan (one of its files); a case where not exactly one series matches is kept with that
    as its problem."""
    path = Path(path).expanduser()
    if path.is_dir():
        cases = _from_folder(path.resolve())
    elif not path.is_file():
        raise InputError(path, "case list not found",
                         expected="a folder of scans or a manifest CSV")
    else:
        cases = _from_csv(path.resolve())
    if series_description:
        cases = CaseList(cases.source, cases.kind,
                         [_with_series(c, series_description) for c in cases.cases])
    return cases


def series_case_list(folder: Union[str, Path], description: str) -> Path:
    """Write ``<folder>-series-<description>.csv`` beside ``folder``: a case list naming, for
    each case of the folder, its study's series whose description contains ``description`` (a
    file of it; a study without exactly one match keeps its folder and says why when opened).
    The list to review a folder of whole studies by (Slicer's Review section)."""
    import csv
    import io

    from paranasal_ssl.atomic import write_text

    folder = Path(folder).expanduser().resolve()
    cases = open_case_list(folder, description)
    path = folder.parent / f"{folder.name}-series-{reader_slug(description)}.csv"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case_id", "subject_id", "image"])
    for case in cases.cases:  # paths relative to the list, so the two move together
        writer.writerow([case.case_id, case.subject_id,
                         Path(case.image).resolve().relative_to(folder.parent).as_posix()])
    write_text(path, buf.getvalue())
    return path


def _with_series(case: ReviewCase, description: str) -> ReviewCase:
    from paranasal_ssl.scan_io import is_dicom_input, series_matching

    if case.problem or not is_dicom_input(case.image):
        return case
    try:
        return replace(case, image=series_matching(case.image, description))
    except InputError as exc:
        return replace(case, problem=str(exc))


def _scan_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_dicom_folder(path: Path) -> bool:
    # slices named anything, possibly in sub-folders (a CD, PATIENT/STUDY/SERIES)
    return holds_dicom(path)


def _from_folder(folder: Path) -> CaseList:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    scans = [p for p in entries if (p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
             or _is_dicom_folder(p)]
    if not scans:
        raise InputError(folder, "no scans in this folder",
                         expected=f"files ending {', '.join(IMAGE_SUFFIXES)} or DICOM folders")
    cases, seen = [], {}
    for p in scans:
        case_id = _scan_stem(p)
        if case_id in seen:
            raise InputError(folder, f"two scans give case id {case_id!r}: {seen[case_id]} and "
                             f"{p.name}", expected="one scan per case name")
        seen[case_id] = p.name
        cases.append(ReviewCase(case_id, case_id, p))
    return CaseList(folder, "folder", cases)


def _from_csv(path: Path) -> CaseList:
    table = read_csv_table(path, "case list", decimal_columns=NUMERIC_COLUMNS)
    columns = table.columns
    image_col = "image" if "image" in columns else ("scan" if "scan" in columns else None)
    if image_col is None:
        raise InputError(path, "no 'image' column", field="header",
                         expected="a column 'image' (scan path); optional case_id, side, ROI "
                         "and label columns, separated by commas, semicolons or tabs")
    builders: Dict[str, dict] = {}
    for line_no, row in table.rows:
        if not any(row.values()):
            continue
        _add_row(builders, row, image_col, path, line_no)
    if not builders:
        raise InputError(path, "the case list has no rows", expected="one row per scan or side")
    cases = []
    for case_id, b in builders.items():
        sides = tuple(s for s in SIDES if s in b["sides"]) or SIDES
        problem = None if b["image"].exists() else f"scan not found: {b['image']}"
        cases.append(ReviewCase(case_id, b["subject"], b["image"], sides, b["rois"],
                                b["labels"], b["types"], b["modality"], problem))
    return CaseList(path, "manifest", cases)


def _add_row(builders: Dict[str, dict], row: Dict[str, str], image_col: str, path: Path,
             line_no: int) -> None:
    where = f"line {line_no}"
    if not row.get(image_col):
        raise InputError(path, f"{where}: empty scan path", field=image_col,
                         expected="a scan file or DICOM folder")
    image = Path(row[image_col]).expanduser()
    image = image if image.is_absolute() else (path.parent / image).resolve()
    case_id = row.get("case_id") or _scan_stem(image)
    b = builders.setdefault(case_id, {
        "image": image, "subject": row.get("subject_id") or case_id, "sides": [], "rois": {},
        "labels": {}, "types": {}, "modality": None})
    if b["image"] != image:
        raise InputError(path, f"{where}: case {case_id} names two scans ({b['image']} and "
                         f"{image})", field=image_col, expected="one scan per case")
    modality = row.get("modality", "").lower() or None
    if modality not in (None, "ct", "mri"):
        raise InputError(path, f"{where}: unknown modality {modality!r}", field="modality",
                         expected="ct or mri")
    b["modality"] = b["modality"] or modality
    if not row.get("side"):
        return
    side = check_side(row["side"], f"{path} {where}")
    if side in b["sides"]:
        raise InputError(path, f"{where}: duplicate sinus {case_id}:{side}",
                         field="case_id,side", expected="one row per case and side")
    b["sides"].append(side)
    roi = _parse_roi(row, path, where)
    if roi is not None:
        b["rois"][side] = roi
    b["labels"][side] = parse_label(row, path, where)
    b["types"][side] = parse_anomaly_types(row, path, where)


def _parse_roi(row: Dict[str, str], path: Path, where: str) -> Optional[SinusROI]:
    given = [c for c in ROI_COLUMNS if row.get(c)]
    if not given:
        return None
    missing = [c for c in ROI_COLUMNS if not row.get(c)]
    if missing:
        raise InputError(path, f"{where}: ROI incomplete", field=missing[0],
                         expected="all six ROI columns (centre R A S, size R A S in mm) or none")
    try:
        values = [float(row[c]) for c in ROI_COLUMNS]
    except ValueError:
        bad = next(c for c in ROI_COLUMNS if not _is_number(row[c]))
        raise InputError(path, f"{where}: {row[bad]!r} is not a number", field=bad,
                         expected="a number in millimetres") from None
    axes = parse_roi_axes(row, path, where)
    return SinusROI.from_values(values[:3], values[3:], axes, source=f"{path} {where}")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
