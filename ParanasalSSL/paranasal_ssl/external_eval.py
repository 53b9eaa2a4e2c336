"""Evaluate a trained model on a labelled manifest of your own (external validation).

A site that receives a model (a run, one of its fine-tunes, or an ``export-model`` folder)
checks it on its own labelled scans before relying on it. Each scan is analysed exactly as
``predict`` does (test-time crops, the residual fusion, the model's decision threshold), so
the numbers are those of the deployed model, not of a training-time shortcut; then the
metrics of ``evaluate``: AUPRC with prevalence, AUROC, sensitivity at 90/95% specificity, F1
at the model's threshold, Brier score, 95% bootstrap intervals by subject, per anomaly type,
beside the label-free scores the model also gives (the zero-label residual score and, with
the fusion, the focal residual score and the classifier alone). No run data is needed.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.errors import InputError
from paranasal_ssl.hashing import file_sha256
from paranasal_ssl.manifest import SinusRecord, read_manifest
from paranasal_ssl.progress import Progress
from paranasal_ssl.version import code_version, environment_info

PathLike = Union[str, Path]
MODEL_ROW = "model (as predict gives it)"
CLASSIFIER_ROW = "classifier alone (without the residual fusion)"
RESIDUAL_ROW = "zero-label residual score (no labels)"
FOCAL_ROW = "focal residual score (no labels)"


def evaluate_on_manifest(model_dir: PathLike, manifest: PathLike, out: PathLike,
                         device: str = "auto", tta_crops: Optional[int] = None,
                         n_boot: int = 1000, seed: int = 0) -> dict:
    """Analyse every labelled side of ``manifest`` with the model in ``model_dir`` and write
    ``out/results.json`` (every number, the model, the manifest's SHA-256, code version,
    machine), ``out/report.md`` and ``out/predictions.csv``. A scan that cannot be read or
    analysed is listed under ``skipped`` and the rest goes on. Returns the results."""
    from paranasal_ssl.inference import predict_scan
    from paranasal_ssl.model_bundle import load_model
    from paranasal_ssl.scan_io import read_scan
    from paranasal_ssl.stages.evaluate_stage import method_metrics, report_markdown

    manifest, out = Path(manifest), Path(out)
    records = read_manifest(manifest, require_labels=True)
    labels = {r.label for r in records}
    if labels != {0, 1}:
        only = "anomalous" if 1 in labels else "normal"
        raise InputError(manifest, f"every labelled side is {only}", field="label",
                         expected="normal and anomalous sides (AUPRC needs both)")
    bundle = load_model(model_dir, device)
    cases: Dict[str, List[SinusRecord]] = defaultdict(list)
    for r in records:
        cases[r.case_id].append(r)
    rows, skipped = [], []
    with Progress("evaluate", total=len(cases), unit="case") as progress:
        for case_id, sides in cases.items():
            try:
                image = read_scan(sides[0].image)
                pred = predict_scan(image, {r.side: r.roi for r in sides}, bundle,
                                    tta_crops=tta_crops, source=str(sides[0].image))
                rows += [(r, pred.sides[r.side]) for r in sides]
            except InputError as exc:
                skipped.append(f"{case_id}: {exc}")
            progress.update(1)
    kept = [r for r, _ in rows]
    if {r.label for r in kept} != {0, 1}:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise InputError(manifest, f"the {len(kept)} sides that could be analysed hold one "
                         f"class only ({len(skipped)} of {len(cases)} cases left out{first})",
                         expected="readable scans with normal and anomalous sides")
    y = np.array([r.label for r in kept])
    subjects = np.array([r.subject_id for r in kept])
    types = [r.anomaly_types if r.label else () for r in kept]
    methods = {MODEL_ROW: np.array([s.probability for _, s in rows]),
               RESIDUAL_ROW: np.array([s.residual_score for _, s in rows])}
    if bundle.fusion is not None:  # what the fusion combines, each on its own
        methods[CLASSIFIER_ROW] = np.array([s.classifier_probability for _, s in rows])
        methods[FOCAL_ROW] = np.array([s.focal_residual_score for _, s in rows])
    info = bundle.info
    results = {"model": bundle.name, "model_dir": str(Path(model_dir).resolve()),
               "manifest": manifest.name, "manifest_path": str(manifest.resolve()),
               "manifest_sha256": file_sha256(manifest, length=64),
               "n_sinuses": len(kept), "n_subjects": len(set(subjects)),
               "prevalence": float(y.mean()), "label_fraction": info.get("label_fraction"),
               "init": info.get("init"), "tta_crops": tta_crops,
               "code_version": code_version(), "environment": environment_info(),
               "skipped": skipped,
               "methods": method_metrics(y, subjects, types, methods, info.get("threshold"),
                                         info.get("threshold_source"), n_boot, seed)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    report = report_markdown(results)
    if skipped:
        report += (f"\n{len(skipped)} case(s) left out (unreadable or refused): "
                   + "; ".join(skipped) + "\n")
    write_text(out / "report.md", report)
    _write_predictions(out / "predictions.csv", rows)
    results["folder"] = str(out)
    return results


def _write_predictions(path: Path, rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id", "side", "subject_id", "label", "anomaly_types", "probability",
                "call", "residual_score", "classifier_probability", "focal_residual_score"])
    for r, s in rows:
        w.writerow([r.case_id, r.side, r.subject_id, r.label, ";".join(r.anomaly_types),
                    f"{s.probability:.6f}", s.call, f"{s.residual_score:.6g}",
                    _fmt(s.classifier_probability, ".6f"), _fmt(s.focal_residual_score, ".6g")])
    write_text(path, buf.getvalue())


def _fmt(value: Optional[float], spec: str) -> str:
    return "" if value is None else format(value, spec)
