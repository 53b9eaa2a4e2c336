"""CSV tables that people write or save from a spreadsheet.

Comma-, semicolon- or tab-separated, UTF-8 with or without a byte-order mark, any line ending.
A spreadsheet in a locale whose decimal mark is the comma (German, French, ...) saves
semicolons and numbers like ``12,5``: with a separator other than the comma, commas in the
numeric columns a caller names are read as decimal points. This project's own writers always
write commas and points.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from paranasal_ssl.errors import InputError

DELIMITERS = (",", ";", "\t")


@dataclass
class CsvTable:
    """``rows``: (line number in the file, row with stripped column names and values)."""

    columns: List[str]
    rows: List[Tuple[int, Dict[str, str]]]
    delimiter: str


def read_csv_table(path: Path, what: str, decimal_columns: Sequence[str] = ()) -> CsvTable:
    """Read ``path`` (``what`` names it in errors, e.g. "manifest"); the separator is the one
    of ``DELIMITERS`` the header line holds most of (a one-column header: comma)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the {what} ({exc})",
                         expected="a UTF-8 text file (CSV)") from None
    header = text.splitlines()[0] if text else ""
    delimiter = max(DELIMITERS, key=header.count) if header else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [(c or "").strip() for c in (reader.fieldnames or [])]
    decimal_comma = set(decimal_columns) if delimiter != "," else set()
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v if isinstance(v, str) else "").strip()
               for k, v in raw.items()}
        for column in decimal_comma & row.keys():
            row[column] = row[column].replace(",", ".")
        rows.append((line_no, row))
    return CsvTable(columns, rows, delimiter)
