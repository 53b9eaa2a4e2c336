"""Evaluate a fine-tuned model on a split against the zero-label residual score, with
bootstrap confidence intervals (by subject), per-type rows and heatmap localisation."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.config import load_json
from paranasal_ssl.crops import roi_box_mask
from paranasal_ssl.errors import InputError
from paranasal_ssl.evaluation import (
    aggregate_localisation,
    bootstrap_ci,
    classification_metrics,
    few_labels_note,
    format_table,
    per_group_metrics,
)
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.networks import build_classifier
from paranasal_ssl.residual_fusion import ResidualFusion, focal_crop_scores
from paranasal_ssl.residual_maps import global_rescale
from paranasal_ssl.stages.data import flat_tensor
from paranasal_ssl.stages.finetune_stage import (
    KIND,
    classifier_signature,
    initial_classifier,
    predict_crops,
)
from paranasal_ssl.stages.residual_stage import compute_residuals
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training.checkpoint import load_weights
from paranasal_ssl.training.device import prepare_model
from paranasal_ssl.version import code_version, environment_info

PRIOR_ROW = "pretext score before fine-tuning (no labels)"
CLASSIFIER_ROW = "classifier alone (without the residual fusion)"


def load_classifier(run: Run, name: str) -> torch.nn.Module:
    folder = run.dir / "finetune" / name
    prior = bool(load_json(folder / "model.json").get("score_prior", False)) \
        if (folder / "model.json").exists() else False
    model = build_classifier(run.config.encoder, run.config.finetune.head_hidden,
                             run.config.finetune.dropout, prior=prior)
    load_weights(model, folder / "best.pt", KIND, classifier_signature(run, prior))
    return prepare_model(model, run.device).eval()


def prior_scores(run: Run, records: Sequence[SinusRecord], residuals
                 ) -> Optional[Dict[str, float]]:
    """Probability per sinus key of the residual-pretext classifier before any label: the
    pretext network's sinus-level head (the distilled residual score) that fine-tuning starts
    from (stages/finetune_stage.initial_classifier), test-time crop-averaged. None without a
    pretext, without such a head, or with ``finetune.score_prior`` off. It shows how much of
    a fine-tuned model's result needs no label at all."""
    if not (run.dir / "pretext" / "best.pt").exists():
        return None
    model, _ = initial_classifier(run, "pretext")
    if model.prior is None:
        return None
    probs = score_records(run, prepare_model(model, run.device).eval(), records, residuals)
    return {r.key: float(p) for r, p in zip(records, probs["tta"])}


def default_model_name(run: Run) -> str:
    path = run.dir / "model.json"
    if not path.exists():
        raise InputError(run.dir, "the run has no fine-tuned model", expected="run `finetune`")
    return load_json(path)["finetune"]


def model_scores(run: Run, name: str, records: Sequence[SinusRecord], residuals
                 ) -> Dict[str, np.ndarray]:
    """``score_records`` of fine-tuned model ``name``, with its residual fusion when it has
    one (``residual_fusion.py``): then ``tta`` and ``single`` are fused (crop 0 with crop 0's
    focal score) and ``classifier`` holds the crop-averaged classifier alone."""
    probs = score_records(run, load_classifier(run, name), records, residuals)
    info = load_json(run.dir / "finetune" / name / "model.json")
    if not info.get("residual_fusion"):
        return probs
    fusion = ResidualFusion.from_dict(info["residual_fusion"])
    focal = focal_crop_scores(run, residuals, records)
    table = np.stack([focal[r.key] for r in records])  # (N, t)
    return {"tta": fusion.probability(probs["tta"], table.mean(1)),
            "single": fusion.probability(probs["single"], table[:, 0]),
            "classifier": probs["tta"]}


def score_records(run: Run, model: torch.nn.Module, records: Sequence[SinusRecord],
                  residuals) -> Dict[str, np.ndarray]:
    """Probabilities with and without test-time crop averaging for ``records`` (in order)."""
    t = run.config.data.crop.test_crops_per_side
    subset = residuals.crops.subset([r.key for r in records])
    per_crop = predict_crops(model, flat_tensor(subset, t), 1, run.device).reshape(-1, t)
    # one forward per crop: the single-crop score is crop 0 (the unjittered one) of the same
    return {"tta": per_crop.mean(1), "single": per_crop[:, 0].copy()}


def localisation(run: Run, residuals, records: Sequence[SinusRecord]) -> Optional[dict]:
    """Heatmap (crop 0, global scale) vs ground-truth masks inside the ROI box."""
    index = {r.key: i for i, r in enumerate(residuals.crops.records)}
    heat, masks, regions = [], [], []
    crop = run.config.data.crop
    for r in records:
        i = index[r.key]
        mask = residuals.crops.masks[i]
        if mask is None:
            continue
        raw = torch.from_numpy(np.asarray(residuals.maps[i][0], np.float32))
        heat.append(global_rescale(raw, residuals.heatmap_scale).numpy())
        masks.append(mask > 0)
        regions.append(roi_box_mask(r.roi, crop, r.side))
    if not heat:
        return None
    spacing = (crop.spacing_mm,) * 3
    loc = aggregate_localisation(heat, masks, regions=regions, threshold=0.5,
                                 spacing_mm=spacing)
    loc.pop("per_case", None)  # one dict per sinus: too long for the summary
    return loc


def evaluate_model(run: Run, name: Optional[str] = None, split: str = "test",
                   n_boot: int = 1000, seed: int = 0, write: bool = True) -> dict:
    """Metrics of model ``name`` (default: the run's) on ``split``; writes
    ``RUN/finetune/<name>/eval-<split>/{results.json,report.md,predictions.csv}``."""
    name = name or default_model_name(run)
    info = load_json(run.dir / "finetune" / name / "model.json")
    residuals = compute_residuals(run)
    available = {r.key for r in residuals.crops.records}
    records = [r for r in run.split(split, labelled=True) if r.key in available]
    if not records:
        raise InputError(run.manifest, f"no labelled sinus in the {split} split")
    y = np.array([r.label for r in records])
    subjects = np.array([r.subject_id for r in records])
    types = [r.anomaly_types if r.label else () for r in records]
    probs = model_scores(run, name, records, residuals)
    residual_score = np.array([residuals.scores[r.key] for r in records])
    thr = info.get("threshold")
    methods = {"model (crop-averaged)": probs["tta"], "model (single crop)": probs["single"],
               "zero-label residual score": residual_score}
    if "classifier" in probs:  # what the residual fusion added
        methods[CLASSIFIER_ROW] = probs["classifier"]
    start = prior_scores(run, records, residuals) if info.get("init") == "pretext" else None
    if start is not None:  # what the labels added
        methods[PRIOR_ROW] = np.array([start[r.key] for r in records])
    results = {"model": name, "split": split, "n_sinuses": len(records),
               "n_subjects": len(set(subjects)), "prevalence": float(y.mean()),
               "label_fraction": info.get("label_fraction"), "init": info.get("init"),
               "code_version": code_version(), "environment": environment_info(),
               "methods": method_metrics(y, subjects, types, methods, thr,
                                         info.get("threshold_source"), n_boot, seed)}
    results["localisation"] = localisation(run, residuals, records)
    if write:
        out = run.dir / "finetune" / name / f"eval-{split}"
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", results)
        write_text(out / "report.md", report_markdown(results))
        _write_predictions(out / "predictions.csv", records, probs, residual_score)
        results["folder"] = str(out)
    return results


def method_metrics(y: np.ndarray, subjects: np.ndarray, types: Sequence, methods: Dict[str,
                   np.ndarray], threshold: Optional[float], threshold_source: Optional[str],
                   n_boot: int = 1000, seed: int = 0) -> Dict[str, dict]:
    """Metrics of each score in ``methods`` (name -> (N,) score per sinus, labels ``y``):
    AUPRC/AUROC with 95% bootstrap intervals by subject, per anomaly type, and for the model's
    probabilities (names starting "model") the threshold metrics at ``threshold``."""
    table = {}
    for method, score in methods.items():
        is_prob = method.startswith("model")
        m = classification_metrics(y, score, threshold=threshold if is_prob else None,
                                   probabilities=is_prob)
        if is_prob and threshold is not None:
            m["threshold_source"] = "the model's: " + (threshold_source
                                                       or "max F1 on validation")
        if not is_prob:  # label-free scores have no chosen threshold: F1 at 0.5 means nothing
            m["f1"] = None
            m["notes"]["f1"] = "label-free score: no threshold was chosen on validation"
        ci = bootstrap_ci(y, score, ("auprc", "auroc"), clusters=subjects, n_boot=n_boot,
                          seed=seed)
        m["auprc_ci"] = [ci["auprc"].low, ci["auprc"].high]
        m["auroc_ci"] = [ci["auroc"].low, ci["auroc"].high]
        m["per_type"] = {k: {"auprc": v["auprc"], "n_pos": v["n_pos"],
                             "prevalence": v["prevalence"]}
                         for k, v in per_group_metrics(y, score, types).items() if k != "all"}
        table[method] = m
    return table


def report_markdown(results: dict) -> str:
    rows = []
    for method, m in results["methods"].items():
        rows.append({"method": method,
                     "AUPRC [95% CI]": _ci(m["auprc"], m["auprc_ci"]),
                     "prevalence": f"{m['prevalence']:.3f}",
                     "AUROC [95% CI]": _ci(m["auroc"], m["auroc_ci"]),
                     "sens@90%spec": _f(m.get("sens_at_spec90")),
                     "sens@95%spec": _f(m.get("sens_at_spec95")),
                     "F1": _f(m.get("f1")), "Brier": _f(m.get("brier"))})
    where = f"the labelled manifest `{results['manifest']}`" if results.get("manifest") \
        else f"the {results['split']} split"
    text = (f"# Evaluation of `{results['model']}` on {where}\n\n"
            f"{results['n_sinuses']} sinuses from {results['n_subjects']} subjects, "
            f"prevalence {results['prevalence']:.3f}; label fraction "
            f"{results.get('label_fraction')}; code {results['code_version']}.\n\n")
    text += format_table(rows, list(rows[0])) + "\n"
    first = next(iter(results["methods"].values()), {})
    if first.get("n_pos") is not None:
        few = few_labels_note(first["n_pos"], results["n_sinuses"] - first["n_pos"])
        text += f"\n**Few labels:** {few}.\n" if few else ""
    if first.get("auprc") is None and first.get("notes", {}).get("auprc"):
        only = "anomalous" if first["n_pos"] else "normal"
        text += (f"\nAUPRC, AUROC and sensitivity are n/a: every sinus here is {only}, and they "
                 "rank anomalous sinuses against normal ones. Evaluate on a split or a labelled "
                 "manifest that holds both.\n")
    model_row = next((m for name, m in results["methods"].items()
                      if name.startswith("model")), {})
    if model_row.get("threshold") is not None:
        text += (f"\nF1 of the model at its decision threshold {model_row['threshold']:.3f} "
                 f"({model_row.get('threshold_source', '')}).\n")
    loc = results.get("localisation")
    if loc:
        pc = loc["per_case_mean"]
        text += ("\nHeatmap localisation (crop 0, inside the sinus ROI, threshold 0.5): "
                 f"voxel AUPRC {_f(pc.get('voxel_auprc'))}, best Dice {_f(pc.get('best_dice'))}, "
                 f"pointing game {_f(pc.get('pointing_hit_rate'))}, false-positive volume in "
                 f"normal sinuses {_f(pc.get('fp_volume_ml_normals'))} mL (per-case means).\n")
    return text


def _write_predictions(path: Path, records: List[SinusRecord], probs, residual) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "subject_id", "label", "anomaly_types", "probability",
                "probability_single_crop", "residual_score"])
    for i, r in enumerate(records):
        w.writerow([r.key, r.subject_id, r.label, ";".join(r.anomaly_types),
                    f"{probs['tta'][i]:.6f}", f"{probs['single'][i]:.6f}", f"{residual[i]:.6g}"])
    write_text(path, buf.getvalue())


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(v, ci) -> str:
    return "n/a" if v is None else f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
