"""``paranasal-ssl predict`` on many scans: a manifest (boxes given) or a case list (a folder of
scans, or a CSV with an ``image`` column; sides without a box get a suggested one), optionally
split across shards (``--shard`` workers or torchrun ranks), into one ``predictions.csv``."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from paranasal_ssl.atomic import write_json

log = logging.getLogger(__name__)
COLUMNS = ["case_id", "side", "image", "probability", "call", "region_volume_ml",
           "residual_score", "classifier_probability", "focal_residual_score", "peak_ras",
           "roi_source", "scan_notes", "box_notes", "folder", "error"]


@dataclass
class ScanJob:
    """One scan to analyse: ``rois`` side -> box (RAS mm), None where one is to be suggested;
    ``problem``: why the scan cannot be analysed (listed as an error row, never fatal)."""

    case_id: str
    image: Path
    rois: Dict[str, object] = field(default_factory=dict)
    source: str = "manifest"
    problem: Optional[str] = None


def jobs_from_manifest(path: Path, sides: str) -> List[ScanJob]:
    """A cohort manifest (every side with its box)."""
    from paranasal_ssl.manifest import read_manifest

    jobs: Dict[str, ScanJob] = {}
    for r in read_manifest(path):
        if sides in ("both", r.side):
            jobs.setdefault(r.case_id, ScanJob(r.case_id, r.image)).rois[r.side] = r.roi
    return list(jobs.values())


def jobs_from_case_list(path: Path, sides: str,
                        series_description: Optional[str] = None) -> List[ScanJob]:
    """A folder of scans or a relaxed case-list CSV (``review.case_list``): the list's boxes
    where it has them, None (to be suggested) elsewhere; ``series_description`` chooses each
    DICOM study's series."""
    from paranasal_ssl.review.case_list import open_case_list

    jobs = []
    for case in open_case_list(path, series_description).cases:
        wanted = [s for s in case.sides if sides in ("both", s)]
        if wanted:
            jobs.append(ScanJob(case.case_id, case.image, {s: case.rois.get(s) for s in wanted},
                                "case list", case.problem))
    return jobs


def predict_many(args, bundle, jobs: List[ScanJob], predict_one,
                 shard: Optional[Tuple[int, int]] = None) -> int:
    """Predict every job; with several shards (torchrun ranks, or ``--shard`` workers) job
    ``j`` goes to shard ``j % n``, each shard writes its case folders and its rows to a part
    file, and the rows are merged in list order into the predictions.csv one process would
    write (rank 0 after all, or the last worker to finish)."""
    from paranasal_ssl.training import distributed as ddp

    index, count = shard if shard is not None else (ddp.rank(), ddp.world_size())
    if count == 1:
        rows, failed = _predict_jobs(args, bundle, jobs, predict_one)
        _write_predictions(args, bundle, rows)
        print(f"predicted {len(jobs) - failed}/{len(jobs)} cases -> {args.out}/predictions.csv")
        return 0 if failed == 0 else 1
    mine = jobs[index::count]
    rows, failed = _predict_jobs(args, bundle, mine, predict_one)
    by_case: Dict[str, list] = {}
    for row in rows:
        by_case.setdefault(row["case_id"], []).append(row)
    write_json(_part(args.out, index, count), by_case)
    if shard is None:  # torchrun: rank 0 merges once every rank has written its part
        ddp.barrier()
        if not ddp.is_main():
            return 0 if failed == 0 else 1
    elif not all(_part(args.out, i, count).exists() for i in range(count)):
        print(f"predict: shard {index}/{count} done ({len(mine) - failed}/{len(mine)} cases); "
              "the last shard to finish writes predictions.csv")
        return 0 if failed == 0 else 1
    try:
        merged: Dict[str, list] = {}
        for i in range(count):
            merged.update(json.loads(_part(args.out, i, count).read_text()))
    except FileNotFoundError:  # another worker finishing at the same time merged them
        return 0 if failed == 0 else 1
    rows = [row for job in jobs for row in merged.get(job.case_id, [])]
    _write_predictions(args, bundle, rows)
    for i in range(count):
        _part(args.out, i, count).unlink(missing_ok=True)
    bad = sum(1 for job in jobs if any(row.get("error") for row in merged.get(job.case_id, [])))
    print(f"predicted {len(jobs) - bad}/{len(jobs)} cases -> {args.out}/predictions.csv")
    return 0 if bad == 0 else 1


def _part(out: Path, index: int, count: int) -> Path:
    return out / f".predictions-part-{index}-of-{count}.json"


def _predict_jobs(args, bundle, jobs: List[ScanJob], predict_one):
    """(rows of predictions.csv, number of failed cases) for ``jobs`` in their order."""
    from paranasal_ssl.errors import InputError, ParanasalError
    from paranasal_ssl.progress import Progress

    rows, failed = [], 0
    with Progress("predict", total=len(jobs), unit="case") as progress:
        for job in jobs:
            try:
                if job.problem:
                    raise InputError(job.image, job.problem)
                sources = {s: job.source for s, roi in job.rois.items() if roi is not None}
                summary = predict_one(args, bundle, job.image, job.rois, args.out / job.case_id,
                                      job.case_id, roi_sources=sources)
                for side, s in summary["sides"].items():
                    rows.append({"case_id": job.case_id, "side": side, "image": str(job.image),
                                 "probability": f"{s['probability']:.6f}", "call": s["call"],
                                 "region_volume_ml": f"{s['region_volume_ml']:.4f}",
                                 "residual_score": f"{s['residual_score']:.6g}",
                                 # with a residual fusion: the classifier alone, the focal score
                                 "classifier_probability": _fmt(s, "classifier_probability",
                                                                ".6f"),
                                 "focal_residual_score": _fmt(s, "focal_residual_score", ".6g"),
                                 "peak_ras": " ".join(f"{v:.1f}" for v in s["peak_ras"]),
                                 "roi_source": s.get("roi_source", ""),
                                 # e.g. a tilted DICOM series resampled onto a regular grid
                                 "scan_notes": "; ".join(summary.get("scan_notes", [])),
                                 "box_notes": "; ".join(summary.get("box_notes", [])),
                                 "folder": job.case_id, "error": ""})
            except ParanasalError as exc:
                failed += 1
                log.warning("case %s skipped: %s", job.case_id, exc)
                for side in job.rois:
                    rows.append({"case_id": job.case_id, "side": side, "image": str(job.image),
                                 "error": str(exc)})
            progress.update(1)
    return rows, failed


def _fmt(side: dict, key: str, spec: str) -> str:
    return "" if side.get(key) is None else format(side[key], spec)


def _write_predictions(args, bundle, rows: List[dict]) -> None:
    """predictions.csv, and predictions.json beside it: what made it (code version, command,
    model, device, machine) and how many cases it holds."""
    from paranasal_ssl.atomic import write_text
    from paranasal_ssl.cli.predict_cmd import predicted_with
    from paranasal_ssl.review.verdicts import now_iso
    from paranasal_ssl.version import environment_info

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(args.out / "predictions.csv", buf.getvalue())
    cases = {row["case_id"] for row in rows}
    failed = {row["case_id"] for row in rows if row.get("error")}
    write_json(args.out / "predictions.json", {
        **predicted_with(args, bundle), "model": bundle.name,
        "model_code_version": bundle.info.get("code_version"), "created": now_iso(),
        "cases": len(cases), "cases_failed": len(failed), "rows": len(rows),
        "environment": environment_info()})
