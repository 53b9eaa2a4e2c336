"""``paranasal-ssl review``: the case-review workflow without Slicer.

Subcommands: ``status`` (counts, where the reader stopped), ``list`` (cases in a sort / filter
order), ``record`` (one side's verdict, as the Slicer module records it), ``export`` (labels
manifest for ``finetune --labels``, disagreement table, images) and ``manifest`` (a ``predict``
manifest with boxes from the list, the reader, or suggestions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paranasal_ssl.cli.main import DefaultsHelpFormatter, add_progress_option
from paranasal_ssl.review.ordering import FILTERS
from paranasal_ssl.review.ordering import SORT_KEYS as SORTS


def _session_options(p: argparse.ArgumentParser, writes: bool = False) -> None:
    p.add_argument("--cases", type=Path, required=True,
                   help="case list: a folder of scans or a manifest CSV")
    p.add_argument("--reader", help="reader name (session <list>.review-<reader>.json)"
                   + (" (required)" if writes else ""), required=writes)
    p.add_argument("--session", type=Path, help="session file (default: from --reader)")
    p.add_argument("--predictions", type=Path,
                   help="output folder of `paranasal-ssl predict --manifest` (default: the "
                        "session's)")
    add_progress_option(p)


def register(sub) -> None:
    p = sub.add_parser("review", help="case review without Slicer: status, list, record, "
                       "export labels", description="Case review without Slicer, on the "
                       "session the Slicer module writes (<list>.review-<reader>.json next to "
                       "the case list): status, list, record a verdict, export labels for "
                       "`finetune --labels`, and write a `predict` manifest for the list.",
                       formatter_class=DefaultsHelpFormatter)
    rsub = p.add_subparsers(dest="review_command", metavar="ACTION")
    rsub.required = True

    s = rsub.add_parser("status", help="cases per status, current and next unreviewed case")
    _session_options(s)
    s.set_defaults(func=run_status)

    s = rsub.add_parser("list", help="cases with probability, status and verdicts")
    _session_options(s)
    s.add_argument("--sort", choices=SORTS, help="order (default: the session's)")
    s.add_argument("--filter", dest="filter_name", choices=FILTERS,
                   help="which cases (default: the session's)")
    s.set_defaults(func=run_list)

    s = rsub.add_parser("record", help="record a verdict for one side (saved at once)")
    _session_options(s, writes=True)
    s.add_argument("--case", required=True, help="case id")
    s.add_argument("--side", required=True, choices=("left", "right"))
    s.add_argument("--verdict", choices=("agree", "normal", "anomalous"))
    s.add_argument("--type", dest="anomaly_type",
                   help="thickening, polyp, cyst, fluid_level, opacification (or none)")
    s.add_argument("--on-target", choices=("yes", "no", "unknown"),
                   help="does the heatmap sit on the finding?")
    s.add_argument("--comment")
    s.add_argument("--flag", choices=("on", "off"), help="flag the case for a second look")
    s.set_defaults(func=run_record)

    s = rsub.add_parser("export", help="labels manifest for `finetune --labels`, "
                        "disagreement table, heatmap and region images")
    _session_options(s)
    s.add_argument("--out", type=Path, required=True, help="labels manifest CSV to write")
    s.add_argument("--disagreements", type=Path,
                   help="disagreement table CSV (default: <out stem>_disagreements.csv)")
    s.add_argument("--images", type=Path,
                   help="folder for <case>_heatmap.nrrd and <case>_regions.nrrd")
    s.add_argument("--include-flagged", action="store_true",
                   help="export the verdicts of flagged cases too")
    s.set_defaults(func=run_export)

    s = rsub.add_parser("manifest", help="manifest for `predict --manifest` with every "
                        "known box (list, reader) or a suggested one")
    _session_options(s)
    s.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    s.add_argument("--suggest-missing", action="store_true",
                   help="suggest boxes for sides without one (check them, e.g. in Slicer: "
                   "on MRI and beside opacified sinuses they are low-confidence guesses)")
    s.set_defaults(func=run_manifest)


def _open(args, read_only: bool = True):
    from paranasal_ssl.review.session import blank_session, open_session

    if read_only and not args.reader and not args.session:
        return blank_session(args.cases, args.predictions)
    return open_session(args.cases, args.reader, args.predictions, args.session,
                        read_only=read_only)


def run_status(args) -> int:
    session = _open(args)
    counts = session.counts()
    print(f"{session.case_list.source} ({len(session.case_list)} cases), reader "
          f"{session.reader or '-'}, session {session.path}"
          + ("" if session.path.exists() else " (not started)"))
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    print(f"current case: {session.current or '-'}")
    ids = session.view_ids()
    start = ids.index(session.current) + 1 if session.current in ids else 0
    pending = [c for c in ids[start:] + ids[:start] if session.status(c) == "unreviewed"]
    print(f"next unreviewed: {pending[0] if pending else '- (all reviewed)'}")
    for case_id in session.case_list.ids:
        if session.status(case_id) == "unavailable":
            print(f"unavailable: {case_id}: {session.problem(case_id)}")
    return 0


def run_list(args) -> int:
    session = _open(args)
    if args.sort:
        session.view["sort"] = args.sort
    if args.filter_name:
        session.view["filter"] = args.filter_name
    print("case_id\tstatus\tleft p\tright p\tleft reader\tright reader")
    for case_id in session.view_ids():
        pred = session.prediction(case_id)
        cells = [case_id, session.status(case_id)]
        for side in ("left", "right"):
            r = pred.sides.get(side) if pred else None
            cells.append(f"{r.probability:.3f} {r.call}" if r else "-")
        for side in ("left", "right"):
            v = session.verdict(case_id, side)
            cells.append(f"{v.verdict}->{v.label}" if v and v.verdict else "-")
        print("\t".join(cells))
    return 0


def run_record(args) -> int:
    session = _open(args, read_only=False)
    fields = {}
    if args.verdict:
        fields["verdict"] = args.verdict
    if args.anomaly_type is not None:
        fields["anomaly_type"] = args.anomaly_type
    if args.on_target:
        fields["heatmap_on_target"] = {"yes": True, "no": False, "unknown": None}[args.on_target]
    if args.comment is not None:
        fields["comment"] = args.comment
    if fields:
        v = session.record(args.case, args.side, **fields)
        print(f"{args.case} {args.side}: {v.verdict or '-'} (label {v.label}), type "
              f"{v.anomaly_type or '-'}, heatmap on target {v.heatmap_on_target}")
    if args.flag:
        session.set_flag(args.case, args.flag == "on")
    session.go_to(args.case)
    status = session.status(args.case)
    state = session.state(args.case)
    pending = [s for s in session.case_list.case(args.case).sides
               if not (s in state.sides and state.sides[s].decided)]
    if status == "unreviewed" and pending:  # e.g. one side recorded: say which one is left
        status += f" ({' and '.join(pending)} side{'s' if len(pending) > 1 else ''} to review)"
    print(f"{args.case}: {status}; saved to {session.path}")
    return 0


def run_export(args) -> int:
    from paranasal_ssl.review.export import export_session

    session = _open(args)
    disagreements = args.disagreements or args.out.with_name(args.out.stem +
                                                             "_disagreements.csv")
    result = export_session(session, args.out, disagreements, args.images,
                            args.include_flagged)
    print(f"{len(result.records)} labelled side(s) -> {result.labels}")
    print(f"{result.n_disagreements} disagreement(s) -> {result.disagreements}")
    if result.images:
        print(f"{len(result.images)} image(s) -> {args.images}")
    for note in result.notes:  # e.g. a DICOM SEG that could not be written
        print(f"note: {note}")
    for note in result.skipped:
        print(f"left out: {note}")
    print(f"score the model against them: paranasal-ssl evaluate --run MODEL --manifest "
          f"{result.labels}")
    print(f"fine-tune with: paranasal-ssl finetune --run RUN --labels {result.labels}")
    return 0


def run_manifest(args) -> int:
    from paranasal_ssl.review.rois import predict_manifest

    session = _open(args, read_only=not args.suggest_missing)
    path, notes = predict_manifest(session, args.out, args.suggest_missing)
    for note in notes:
        print(f"left out: {note}")
    print(f"written {path}; predict with: paranasal-ssl predict --model MODEL --manifest {path} "
          "--out PREDICTIONS")
    return 0
