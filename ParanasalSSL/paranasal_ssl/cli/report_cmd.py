"""``paranasal-ssl report``: an HTML QA page of a case list's predictions and verdicts."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli import arg_types
from paranasal_ssl.cli.main import DefaultsHelpFormatter, add_progress_option


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML page: per case and side, slices with the heatmap and the verdicts",
        description="Write one HTML page for people who review in a browser: per case and "
        "side, axial and coronal slices through the sinus (through the strongest residual "
        "when it lies in the box) with the heatmap overlay, region outline and colour bar, "
        "the model's probability and region volume, and the reader's verdict when a session "
        "is given. Images are embedded unless --images-dir is set.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--cases", type=Path, required=True,
                   help="case list: a folder of scans or a manifest CSV")
    p.add_argument("--predictions", type=Path,
                   help="output folder of `paranasal-ssl predict --manifest` (default: the "
                        "session's)")
    p.add_argument("--session", type=Path, help="review session file with the verdicts")
    p.add_argument("--reader", help="reader whose session to show (instead of --session)")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.add_argument("--threshold", type=arg_types.heatmap_threshold,
                   help="heatmap values shown (default: each prediction's region threshold)")
    p.add_argument("--opacity", type=arg_types.fraction, default=0.6, help="heatmap opacity (0-1)")
    p.add_argument("--images-dir", type=Path,
                   help="write the PNGs into this folder instead of embedding them")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.atomic import check_writable_dir
    from paranasal_ssl.review.html_report import write_report
    from paranasal_ssl.review.session import blank_session, open_session

    check_writable_dir(args.out.parent)  # before any case is read
    if args.session or args.reader:
        session = open_session(args.cases, args.reader, args.predictions, args.session,
                               read_only=True)
    else:
        session = blank_session(args.cases, args.predictions)
    result = write_report(session, args.out, args.threshold, args.opacity, args.images_dir)
    print(f"{result.images} image(s) of {result.cases} case(s) -> {result.path}")
    for note in result.skipped:
        print(f"not shown: {note}")
    return 0
