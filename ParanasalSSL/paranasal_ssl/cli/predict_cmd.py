"""``paranasal-ssl predict``: analyse one scan (or every scan of a manifest)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from paranasal_ssl.cli import arg_types
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
    src.add_argument("--image", type=Path,
                     help="scan: NIfTI/NRRD/MHA file, or DICOM: a series folder, a CD (folder "
                     "or DICOMDIR), any file of the series")
    src.add_argument("--manifest", type=Path,
                     help="manifest CSV: predict every scan, using its ROIs")
    src.add_argument("--cases", type=Path,
                     help="a folder of scans (NIfTI/NRRD/MHA files, DICOM folders) or a CSV "
                     "with an image column: predict every scan; sides without a box in the "
                     "CSV get a suggested one (see --suggest-rois)")
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
                   "check them); they are printed as options to reuse or adjust, and "
                   "summary.json names each box's source")
    p.add_argument("--sides", choices=("both", "left", "right"), default="both",
                   help="which sides to analyse")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tta", type=arg_types.positive_int, default=None,
                   help="jittered crops averaged per side (default: the model's setting)")
    p.add_argument("--threshold", type=arg_types.heatmap_threshold, default=0.5,
                   help="heatmap value above which voxels form the region")
    p.add_argument("--format", choices=("nii.gz", "nrrd", "mha"), default="nii.gz",
                   help="image format of heatmap and region")
    p.add_argument("--series-uid", help="DICOM series to read when the folder holds several")
    p.add_argument("--series-description", metavar="TEXT",
                   help="with --cases: in each DICOM study (a folder, a CD with several "
                   "series), predict the series whose description contains TEXT "
                   "(case-insensitive, e.g. BONE); a study where not exactly one matches is "
                   "skipped with its series listed")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write the highlighted region as region.seg.dcm, a DICOM SEG "
                   "that refers to the scan's own DICOM series, one segment per side, for PACS "
                   "and DICOM viewers (DICOM input only; needs highdicom)")
    p.add_argument("--allow-modality-mismatch", action="store_true",
                   help="analyse a scan whose modality differs from the model's")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="compute device (default auto: CUDA, then Apple MPS, then CPU)")
    add_shard_option(p, "manifest's (or case list's) cases")
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
    from paranasal_ssl.cli import predict_many
    from paranasal_ssl.errors import InputError
    from paranasal_ssl.model_bundle import load_model
    from paranasal_ssl.training import distributed as ddp

    shard = parse_shard(args.shard)
    if shard is not None and args.image:
        raise InputError(None, "--shard splits a list of scans", field="--shard",
                         expected="--manifest or --cases with --shard")
    if args.series_description and not args.cases:
        raise InputError(None, "--series-description chooses the series of each study of a "
                         "case list", field="--series-description",
                         expected="--cases with it (for one scan: --series-uid, or a file of "
                         "the series as --image)")
    if args.suggest_rois and args.manifest:
        raise InputError(args.manifest, "a manifest gives every box", field="--suggest-rois",
                         expected="--cases for scans without boxes (a folder, or a CSV with an "
                         "image column)")
    if args.dicom_seg:  # before the model loads: no work for a run that cannot end well
        from paranasal_ssl.dicom_seg import check_dicom_input, require_highdicom

        require_highdicom()
        if args.image:
            check_dicom_input(args.image, args.series_uid)
    device = ddp.setup(args.device)  # under torchrun: one device per rank
    check_writable_dir(args.out)
    if args.image and not ddp.is_main():
        return 0  # one scan: rank 0's job
    if not args.image:
        jobs = (predict_many.jobs_from_manifest(args.manifest, args.sides) if args.manifest
                else predict_many.jobs_from_case_list(args.cases, args.sides,
                                                      args.series_description))
        return predict_many.predict_many(args, load_model(args.model, device), jobs,
                                         predict_one, shard)
    rois = {side: parse_roi(getattr(args, f"roi_{side}"), side, getattr(args, f"roi_{side}_axes"))
            for side in ("left", "right") if args.sides in ("both", side)}
    missing = [side for side, roi in rois.items() if roi is None]
    if missing and not args.suggest_rois:
        side = missing[0]
        other = "right" if side == "left" else "left"
        raise InputError(args.image, f"no ROI for the {side} side", field=f"--roi-{side}",
                         expected=f"--roi-{side} R A S [sizes], --suggest-rois, or --sides {other}")
    summary = predict_one(args, load_model(args.model, device), args.image, rois, args.out,
                          roi_sources={side: "command line" for side in rois
                                       if side not in missing})
    _print_suggestion(summary)
    for side, s in summary["sides"].items():
        peak = f"peak at RAS {s['peak_ras']}" if s["peak_value"] > 0 else "no residual in the box"
        print(f"{side}: p(anomalous) = {s['probability']:.3f} ({s['call']}), region "
              f"{s['region_volume_ml']:.2f} mL, {peak}")
    print(f"written to {args.out}")
    return 0


def predicted_with(args, bundle) -> dict:
    """What made a prediction, to reproduce it: this code's version, the command line (as
    ``paranasal-ssl ...``), the model folder and the device."""
    import shlex

    from paranasal_ssl.version import code_version

    return {"code_version": code_version(),
            "command": shlex.join(["paranasal-ssl", *getattr(args, "argv", [])]),
            "model_folder": str(args.model), "device": str(bundle.device)}


def _print_suggestion(summary: dict) -> None:
    """The suggested boxes as the options that give them again, and what to check."""
    from paranasal_ssl.geometry import SinusROI

    suggestion = summary.get("roi_suggestion")
    if not suggestion:
        return
    for side, s in summary["sides"].items():
        if s["roi_source"].startswith("suggested"):
            roi = SinusROI.from_values(s["roi"]["center_ras"], s["roi"]["size_mm"],
                                       s["roi"]["axes_ras"])
            print(f"{side} box suggested ({suggestion['confidence']} confidence): "
                  f"{roi_options(side, roi)}")
    for note in suggestion["notes"]:
        print(f"note: {note}")
    if suggestion["confidence"] != "high":
        log.warning("low-confidence boxes: check them (e.g. in Slicer) before trusting the calls")


def roi_options(side: str, roi) -> str:
    """The ``--roi-<side>`` (and ``--roi-<side>-axes``) options that give ``roi`` again."""
    values = " ".join(f"{v:.1f}" for v in (*roi.center_ras, *roi.size_mm))
    text = f"--roi-{side} {values}"
    if not np.allclose(roi.axes, np.eye(3), atol=1e-4):
        text += f" --roi-{side}-axes " + " ".join(f"{v:.4f}" for v in roi.axes.T.ravel())
    return text


def predict_one(args, bundle, image_path: Path, rois, out: Path, case_id: str = "",
                roi_sources: Optional[Dict[str, str]] = None) -> dict:
    """Analyse one scan into ``out`` (heatmap, region, summary.json); ``rois``: side -> box (RAS
    mm), None for a box to suggest on the scan (``roi_suggest``); summary.json names each box's
    source and, when one was suggested, the suggestion's method, confidence and notes."""
    from paranasal_ssl.atomic import write_json
    from paranasal_ssl.dicom_seg import write_region_seg
    from paranasal_ssl.errors import ParanasalError
    from paranasal_ssl.inference import predict_scan
    from paranasal_ssl.scan_io import is_dicom_input, read_scan, scan_notes, write_image

    # a single scan that is no DICOM series was refused before the model loaded; in a list
    # such a case is predicted all the same, without its SEG
    make_seg = args.dicom_seg and is_dicom_input(image_path)
    image = read_scan(image_path, series_uid=args.series_uid)
    sources = dict(roi_sources or {})
    suggestion = None
    if any(roi is None for roi in rois.values()):
        from paranasal_ssl.roi_suggest import suggest_rois

        suggestion = suggest_rois(image, source=str(image_path))
        for side in [s for s, roi in rois.items() if roi is None]:
            sources[side] = f"suggested ({suggestion.method}; {suggestion.confidence} confidence)"
        rois = {s: roi if roi is not None else suggestion.rois[s] for s, roi in rois.items()}
    pred = predict_scan(image, rois, bundle, tta_crops=args.tta, threshold=args.threshold,
                        check_modality=not args.allow_modality_mismatch,
                        source=str(image_path),
                        midplane=suggestion.midplane if suggestion is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    summary = pred.summary()
    for side, source in sources.items():
        summary["sides"][side]["roi_source"] = source
    if suggestion is not None:
        summary["roi_suggestion"] = {"method": suggestion.method,
                                     "confidence": suggestion.confidence,
                                     "notes": list(suggestion.notes)}
    if scan_notes(image):  # e.g. a tilted series resampled: what the heatmap's grid is
        summary["scan_notes"] = scan_notes(image)
    summary.update({"image": str(image_path), "case_id": case_id,
                    "heatmap": f"heatmap.{args.format}", "region": f"region.{args.format}",
                    "predicted_with": predicted_with(args, bundle)})
    write_image(pred.heatmap_image(), out / f"heatmap.{args.format}")
    region = pred.region_image()
    write_image(region, out / f"region.{args.format}")
    if make_seg:
        labels = {side: f"{side} maxillary sinus, p = {s['probability']:.2f} ({s['call']})"
                  for side, s in summary["sides"].items()}
        try:
            seg = write_region_seg(region, image_path, out / "region.seg.dcm", args.series_uid,
                                   labels)
            summary["dicom_seg"] = seg.name if seg else None  # None: no highlighted voxel
        except ParanasalError as exc:  # a case of a list: its prediction stands without a SEG
            summary["dicom_seg"] = None
            summary["dicom_seg_note"] = f"no DICOM SEG: {exc}"
            log.warning("case %s: %s", case_id or image_path, summary["dicom_seg_note"])
    elif args.dicom_seg:
        summary["dicom_seg"] = None
        summary["dicom_seg_note"] = "not a DICOM series: no DICOM SEG refers to it"
    write_json(out / "summary.json", summary)  # last: its presence means the case is complete
    return summary
