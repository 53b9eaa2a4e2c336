"""``paranasal-ssl manifest``: a training manifest from a list of scans without sinus boxes."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli.main import DefaultsHelpFormatter, add_progress_option

SHOWN = 10  # low-confidence sides and skipped cases listed by name; the rest counted


def register(sub) -> None:
    p = sub.add_parser(
        "manifest", help="manifest of a cohort of scans, sinus boxes suggested where missing",
        description="Turn a list of scans (a folder, or a CSV with an image column and, "
        "optionally, case_id, subject_id, side, label, anomaly_types, modality and ROI "
        "columns) into the manifest the training stages read: every side keeps the list's box "
        "or gets one suggested on its scan, labels and subject ids are carried over, and a "
        "roi_source column says which boxes were suggested and how sure the suggestion was. "
        "Check the low-confidence ones (e.g. in Slicer's review) before training.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--cases", type=Path, required=True,
                   help="a folder of scans (NIfTI/NRRD/MHA files, DICOM folders or CDs) or a "
                   "CSV")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    p.add_argument("--series-description", metavar="TEXT",
                   help="in each DICOM study (a folder, a CD with several series), take the "
                   "series whose description contains TEXT (case-insensitive, e.g. BONE); the "
                   "manifest names one of its files; a study where not exactly one matches is "
                   "left out with its series listed")
    p.add_argument("--no-suggest", action="store_true",
                   help="leave out cases with a side without a box instead of suggesting "
                   "one")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.manifest_from_list import build_manifest

    report = build_manifest(args.cases, args.out, suggest_missing=not args.no_suggest,
                            series_description=args.series_description)
    print(f"manifest: {report.sides} sides -> {report.path} ({report.from_list} boxes from "
          f"the list, {report.suggested} suggested, {len(report.low_confidence)} of them with "
          "low confidence)")
    for title, items in (("low-confidence boxes to check", report.low_confidence),
                         ("left out", report.skipped)):
        if items:
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            print(f"{title}: " + "; ".join(items[:SHOWN]) + more)
    return 0
