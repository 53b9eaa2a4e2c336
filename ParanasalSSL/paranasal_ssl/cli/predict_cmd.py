"""``paranasal-ssl predict``: analyse one scan (or every scan of a manifest)."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from paranasal_ssl.atomic import write_json
from paranasal_ssl.cli.common import add_shard_option, parse_shard
from paranasal_ssl.cli.main import DefaultsHelpFormatter, add_progress_option
from paranasal_ssl.training.device import DEVICE_CHOICES

log = logging.getLogger(__name__)
DEFAULT_ROI_SIZE = (30.0, 44.0, 48.0)  # mm (R, A, S): an adult maxillary sinus plus margin


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="anomaly probability, heatmap and region for a scan",
        description="Per sinus side: the anomaly probability (averaged over jittered crops), "
        "the CAE residual heatmap and its thresholded region with its volume in mL, written as "
        "images in the SCAN's geometry (heatmap.nii.gz, region.nii.gz: 1 left, 2 right) plus "
        "summary.json. ROIs are boxes in RAS millimetres: centre R A S, optionally followed by "
        f"the size in mm (default {' x '.join(f'{v:g}' for v in DEFAULT_ROI_SIZE)}).",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", type=Path, required=True,
                   help="run folder (its default model) or RUN/finetune/<name>")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="scan: NIfTI/NRRD/MHA file or DICOM folder")
    src.add_argument("--manifest", type=Path,
                     help="manifest CSV: predict every scan, using its ROIs")
    p.add_argument("--roi-left", type=float, nargs="+", metavar="MM",
                   help="left sinus box: R A S [size_R size_A size_S]")
    p.add_argument("--roi-right", type=float, nargs="+", metavar="MM",
                   help="right sinus box: R A S [size_R size_A size_S]")
    for side in ("left", "right"):
        p.add_argument(f"--roi-{side}-axes", type=float, nargs=9, metavar="V",
                       help=f"rotated {side} box: its three axes as RAS unit vectors, one after "
                       "the other (x: R A S, y: R A S, z: R A S); sizes are along these axes")
    p.add_argument("--suggest-rois", action="store_true",
                   help="with --image: find the box of each side given no --roi-* (both "
                   "maxillary air cavities; low confidence on MRI or when a side is opacified: "
                   "check them); they are printed as options to reuse or adjust")
    p.add_argument("--sides", choices=("both", "left", "right"), default="both",
                   help="which sides to analyse")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tta", type=int, default=None,
                   help="jittered crops averaged per side (default: the model's setting)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="heatmap value above which voxels form the region")
    p.add_argument("--format", choices=("nii.gz", "nrrd", "mha"), default="nii.gz",
                   help="image format of heatmap and region")
    p.add_argument("--series-uid", help="DICOM series to read when the folder holds several")
    p.add_argument("--allow-modality-mismatch", action="store_true",
                   help="analyse a scan whose modality differs from the model's")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="compute device (default auto: CUDA, then Apple MPS, then CPU)")
    add_shard_option(p, "manifest's cases")
    add_progress_option(p)
    p.set_defaults(func=run)


def parse_roi(values: Optional[List[float]], side: str, axes: Optional[List[float]] = None):
    from paranasal_ssl.errors import InputError
    from paranasal_ssl.geometry import SinusROI

    if values is None:
        if axes is not None:
            raise InputError(None, "axes without a box", field=f"--roi-{side}-axes",
                             expected=f"--roi-{side} R A S [sizes] as well")
        return None
    if len(values) not in (3, 6):
        raise InputError(None, f"{len(values)} numbers given", field=f"--roi-{side}",
                         expected="3 (centre R A S) or 6 (centre and size) in millimetres")
    size = values[3:] if len(values) == 6 else DEFAULT_ROI_SIZE
    columns = None if axes is None else [list(v) for v in zip(*[axes[0:3], axes[3:6], axes[6:9]])]
    return SinusROI.from_values(values[:3], size, columns, source="command line",
                                field_name=f"roi-{side}")


def run(args) -> int:
    from paranasal_ssl.atomic import check_writable_dir
    from paranasal_ssl.errors import InputError
    from paranasal_ssl.model_bundle import load_model
    from paranasal_ssl.training import distributed as ddp

    shard = parse_shard(args.shard)
    if shard is not None and not args.manifest:
        raise InputError(None, "--shard splits a manifest's cases", field="--shard",
                         expected="--manifest with --shard")
    device = ddp.setup(args.device)  # under torchrun: one device per rank
    check_writable_dir(args.out)
    if args.image and not ddp.is_main():
        return 0  # one scan: rank 0's job
    if args.suggest_rois and not args.image:
        raise InputError(args.manifest, "--suggest-rois places boxes on one scan",
                         field="--suggest-rois", expected="--image; for a manifest without "
                         "boxes: paranasal-ssl review manifest --suggest-missing")
    wanted = [side for side in ("left", "right") if args.sides in ("both", side)]
    given = {side: parse_roi(getattr(args, f"roi_{side}"), side, getattr(args, f"roi_{side}_axes"))
             for side in wanted}
    missing = [side for side, roi in given.items() if roi is None]
    if args.image and missing and not args.suggest_rois:
        side = missing[0]
        other = "right" if side == "left" else "left"
        raise InputError(args.image, f"no ROI for the {side} side", field=f"--roi-{side}",
                         expected=f"--roi-{side} R A S [sizes], --suggest-rois, or --sides {other}")
    bundle = load_model(args.model, device)
    if args.image:
        sources = {side: "command line" for side in given if side not in missing}
        if missing:
            given, sources = _suggest_missing(args.image, args.series_uid, given, sources)
        summary = predict_one(args, bundle, args.image, given, args.out, roi_sources=sources)
        for side, s in summary["sides"].items():
            print(f"{side}: p(anomalous) = {s['probability']:.3f} ({s['call']}), region "
                  f"{s['region_volume_ml']:.2f} mL, peak at RAS {s['peak_ras']}")
        print(f"written to {args.out}")
        return 0
    return predict_manifest(args, bundle, shard)


def _suggest_missing(image_path: Path, series_uid: Optional[str], rois: dict, sources: dict):
    """Fill the sides of ``rois`` that are None with ``roi_suggest`` boxes (RAS mm), print
    each as the options that reproduce it, and name where every box came from."""
    from paranasal_ssl.roi_suggest import suggest_rois
    from paranasal_ssl.scan_io import read_scan

    suggestion = suggest_rois(read_scan(image_path, series_uid=series_uid))
    rois, sources = dict(rois), dict(sources)
    for side in [s for s, roi in rois.items() if roi is None]:
        rois[side] = suggestion.rois[side]
        sources[side] = f"suggested ({suggestion.method}, {suggestion.confidence} confidence)"
        print(f"{side} box suggested ({suggestion.confidence} confidence): "
              f"{roi_options(side, rois[side])}")
    for note in suggestion.notes:
        print(f"note: {note}")
    if suggestion.low_confidence:
        log.warning("low-confidence boxes: check them (e.g. in Slicer) before trusting the calls")
    return rois, sources


def roi_options(side: str, roi) -> str:
    """The ``--roi-<side>`` (and ``--roi-<side>-axes``) options that give ``roi`` again."""
    values = " ".join(f"{v:.1f}" for v in (*roi.center_ras, *roi.size_mm))
    text = f"--roi-{side} {values}"
    if not np.allclose(roi.axes, np.eye(3), atol=1e-4):
        text += f" --roi-{side}-axes " + " ".join(f"{v:.4f}" for v in roi.axes.T.ravel())
    return text


def predict_one(args, bundle, image_path: Path, rois, out: Path, case_id: str = "",
                roi_sources: Optional[Dict[str, str]] = None) -> dict:
    from paranasal_ssl.atomic import write_json
    from paranasal_ssl.inference import predict_scan
    from paranasal_ssl.scan_io import read_scan, write_image

    image = read_scan(image_path, series_uid=getattr(args, "series_uid", None))
    pred = predict_scan(image, rois, bundle, tta_crops=args.tta, threshold=args.threshold,
                        check_modality=not args.allow_modality_mismatch,
                        source=str(image_path))
    out.mkdir(parents=True, exist_ok=True)
    summary = pred.summary()
    for side, source in (roi_sources or {}).items():
        summary["sides"][side]["roi_source"] = source
    summary.update({"image": str(image_path), "case_id": case_id,
                    "heatmap": f"heatmap.{args.format}", "region": f"region.{args.format}"})
    write_image(pred.heatmap_image(), out / f"heatmap.{args.format}")
    write_image(pred.region_image(), out / f"region.{args.format}")
    write_json(out / "summary.json", summary)  # last: its presence means the case is complete
    return summary


def predict_manifest(args, bundle, shard: Optional[Tuple[int, int]] = None) -> int:
    """Predict every case of the manifest; with several shards (torchrun ranks, or ``--shard``
    workers) case ``j`` goes to shard ``j % n``, each shard writes its case folders and its
    rows to a part file, and the rows are merged in manifest order into the predictions.csv
    one process would write (rank 0 after all, or the last worker to finish)."""
    from paranasal_ssl.manifest import read_manifest
    from paranasal_ssl.training import distributed as ddp

    records = read_manifest(args.manifest)
    cases: Dict[str, list] = {}
    for r in records:
        if args.sides in ("both", r.side):
            cases.setdefault(r.case_id, []).append(r)
    index, count = shard if shard is not None else (ddp.rank(), ddp.world_size())
    if count == 1:
        rows, failed = _predict_cases(args, bundle, cases)
        _write_predictions(args.out, rows)
        print(f"predicted {len(cases) - failed}/{len(cases)} cases -> {args.out}/predictions.csv")
        return 0 if failed == 0 else 1
    mine = {c: cases[c] for c in list(cases)[index::count]}
    rows, failed = _predict_cases(args, bundle, mine)
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
    rows = [row for c in cases for row in merged.get(c, [])]
    _write_predictions(args.out, rows)
    for i in range(count):
        _part(args.out, i, count).unlink(missing_ok=True)
    bad = sum(1 for c in cases if any(row.get("error") for row in merged.get(c, [])))
    print(f"predicted {len(cases) - bad}/{len(cases)} cases -> {args.out}/predictions.csv")
    return 0 if bad == 0 else 1


def _part(out: Path, index: int, count: int) -> Path:
    return out / f".predictions-part-{index}-of-{count}.json"


def _predict_cases(args, bundle, cases: Dict[str, list]):
    """(rows of predictions.csv, number of failed cases) for ``cases`` in their order."""
    from paranasal_ssl.errors import ParanasalError
    from paranasal_ssl.progress import Progress

    rows, failed = [], 0
    with Progress("predict", total=len(cases), unit="case") as progress:
        for case_id, recs in cases.items():
            try:
                summary = predict_one(args, bundle, recs[0].image, {r.side: r.roi for r in recs},
                                      args.out / case_id, case_id)
                for side, s in summary["sides"].items():
                    rows.append({"case_id": case_id, "side": side, "image": str(recs[0].image),
                                 "probability": f"{s['probability']:.6f}", "call": s["call"],
                                 "region_volume_ml": f"{s['region_volume_ml']:.4f}",
                                 "residual_score": f"{s['residual_score']:.6g}",
                                 # with a residual fusion: the classifier alone, the focal score
                                 "classifier_probability": _fmt(s, "classifier_probability",
                                                                ".6f"),
                                 "focal_residual_score": _fmt(s, "focal_residual_score", ".6g"),
                                 "peak_ras": " ".join(f"{v:.1f}" for v in s["peak_ras"]),
                                 "folder": case_id, "error": ""})
            except ParanasalError as exc:
                failed += 1
                log.warning("case %s skipped: %s", case_id, exc)
                for r in recs:
                    rows.append({"case_id": case_id, "side": r.side, "image": str(r.image),
                                 "error": str(exc)})
            progress.update(1)
    return rows, failed


def _fmt(side: dict, key: str, spec: str) -> str:
    return "" if side.get(key) is None else format(side[key], spec)


def _write_predictions(out: Path, rows: List[dict]) -> None:
    from paranasal_ssl.atomic import write_text

    columns = ["case_id", "side", "image", "probability", "call", "region_volume_ml",
               "residual_score", "classifier_probability", "focal_residual_score", "peak_ras",
               "folder", "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "predictions.csv", buf.getvalue())
