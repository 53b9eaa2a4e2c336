"""Stage 4: fine-tune encoder + head on a label-fraction subset: normal vs anomalous.

The subset is patient-level and nested across fractions for one ``label_seed``; the validation
set is cut with the same fraction (a 10% run does not get a full-size validation set for early
stopping and thresholds). Only the encoder and the head run: no decoder.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.errors import InputError
from paranasal_ssl.evaluation import choose_decision_threshold
from paranasal_ssl.evaluation.classification import classification_metrics
from paranasal_ssl.experiment import save_experiment
from paranasal_ssl.hashing import file_sha256, stable_hash
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.networks import SinusClassifier, build_classifier
from paranasal_ssl.residual_fusion import ResidualFusion, focal_crop_scores, focal_run
from paranasal_ssl.splits import label_fraction_subset
from paranasal_ssl.stages.cae_stage import cae_checkpoints
from paranasal_ssl.stages.data import (
    crops_for,
    flat_tensor,
    labels_tensor,
    pick_crops,
    sinus_tensor,
)
from paranasal_ssl.stages.pretext_stage import encoder_architecture, encoder_signature
from paranasal_ssl.stages.residual_stage import compute_residuals, load_residual_scale
from paranasal_ssl.stages.run import Run
from paranasal_ssl.training.augment import augment
from paranasal_ssl.training.checkpoint import read_checkpoint
from paranasal_ssl.training.device import prepare_model, resident, to_input
from paranasal_ssl.training.distributed import batch_rows, is_main
from paranasal_ssl.training.loop import FitResult, fit, seeded
from paranasal_ssl.version import code_version

log = logging.getLogger(__name__)
KIND = "classifier"
ENCODER_KINDS = ("pretext", "encoder", "classifier")


def finetune_name(fraction: float, seed: int, init: str) -> str:
    tag = init if init in ("pretext", "random") else Path(init).parent.name or Path(init).stem
    return f"f{fraction:g}-s{seed}-{tag}"


def classifier_signature(run: Run, prior: bool = False) -> str:
    key = {"encoder": encoder_signature(run), "head": run.config.finetune.head_hidden}
    if prior:
        key["prior"] = True
    return stable_hash(key)


def pretext_score_head(path: Path) -> Optional[dict]:
    """The sinus-level head of a pretext checkpoint (``score_head.*``), if it has one."""
    payload = read_checkpoint(path, "pretext")
    head = {k[len("score_head."):]: v for k, v in payload["model"].items()
            if k.startswith("score_head.")}
    return head or None


def load_encoder_weights(model: SinusClassifier, path: Path, run: Run) -> str:
    """Copy encoder weights from a pretext, baseline-encoder or classifier checkpoint."""
    payload = read_checkpoint(path, signature=None)
    if payload["kind"] not in ENCODER_KINDS:
        raise InputError(path, f"a {payload['kind']} checkpoint has no encoder",
                         expected=f"one of {ENCODER_KINDS}")
    if payload["kind"] != "classifier" and payload["signature"] != encoder_signature(run):
        raise InputError(path, "encoder was built for another architecture or crop size",
                         field="signature", expected="an encoder made with this run's config")
    prefix = "" if payload["kind"] == "encoder" else "encoder."
    state = {k[len(prefix):]: v for k, v in payload["model"].items() if k.startswith(prefix)}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing:
        raise InputError(path, f"{len(missing)} encoder weights missing (e.g. {missing[0]})")
    return file_sha256(path)


def initial_classifier(run: Run, init: str) -> Tuple[SinusClassifier, Optional[str]]:
    """The classifier before fine-tuning and the SHA-256 of the checkpoint it starts from.

    From a pretext with a sinus-level head (``residual.pretext_score_weight > 0``) and
    ``finetune.score_prior``, that head becomes the classifier's ``prior`` and the head's last
    layer starts at zero: before any label, the classifier's logit is the pretext's score.
    """
    cfg = run.config
    prior = None
    if init == "pretext" and cfg.finetune.score_prior:
        prior = pretext_score_head(run.dir / "pretext" / "best.pt")
    with seeded(cfg.finetune_train.seed):
        model = build_classifier(cfg.encoder, cfg.finetune.head_hidden, cfg.finetune.dropout,
                                 prior=prior is not None)
    if prior is not None:
        model.prior.load_state_dict(prior)
        with torch.no_grad():  # the head adds nothing until the labels say so
            model.head[-1].weight.zero_()
            model.head[-1].bias.zero_()
    init_sha = None
    if init == "pretext":
        init_sha = load_encoder_weights(model, run.dir / "pretext" / "best.pt", run)
    elif init != "random":
        init_sha = load_encoder_weights(model, Path(init), run)
    return model, init_sha


def finetune_param_groups(model: torch.nn.Module, cfg, pretrained: bool) -> list:
    """What fine-tuning trains: the head only (``freeze_encoder``; the prior, if any, stays
    as the pretext made it), else everything, a pretrained encoder at ``encoder_lr_scale``
    times the learning rate (``training.optim.set_lr`` reads the groups' ``lr_scale``)."""
    if cfg.freeze_encoder:
        return [{"params": list(model.head.parameters())}]
    encoder = list(model.encoder.parameters())
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in ids]
    scale = cfg.encoder_lr_scale if pretrained else 1.0
    return [{"params": encoder, "lr_scale": scale}, {"params": rest}]


def validation_subset(val: Sequence[SinusRecord], fraction: float, seed: int
                      ) -> Tuple[List[SinusRecord], float]:
    """The validation subset at ``fraction``, grown until it holds both classes."""
    f = fraction
    while True:
        try:
            return label_fraction_subset(val, f, seed, min_per_class=1), f
        except InputError:
            if f >= 1.0:
                raise
            f = min(1.0, f * 1.5)


def finetune(run: Run, fraction: Optional[float] = None, seed: Optional[int] = None,
             init: str = "pretext", name: Optional[str] = None, resume: bool = False,
             set_default: bool = True, records: Optional[Sequence[SinusRecord]] = None,
             train_seed: Optional[int] = None, labels_source: Optional[Path] = None
             ) -> Tuple[FitResult, Path]:
    """Fine-tune a classifier; returns the fit result and its folder ``RUN/finetune/<name>``.

    ``init``: 'pretext' (this run's stage 3), 'random', or a checkpoint path (e.g. a baseline's
    encoder). ``records``: labelled training sinuses to use instead of the run's train split
    (e.g. labels exported from a review session). ``train_seed`` replaces the configured
    training seed (order, augmentation, dropout), e.g. to vary it with the label draw.
    ``labels_source``: the file ``records`` came from, recorded (path and SHA-256) in model.json.
    """
    cfg = run.config
    fraction = cfg.finetune.label_fraction if fraction is None else fraction
    seed = cfg.finetune.label_seed if seed is None else seed
    name = name or finetune_name(fraction, seed, init)
    pool = list(records) if records is not None else run.split("train", labelled=True)
    train_recs = label_fraction_subset(pool, fraction, seed, min_per_class=1)
    val_recs, val_fraction = validation_subset(run.split("val", labelled=True), fraction, seed)
    n, t = cfg.data.crop.train_crops_per_side, cfg.data.crop.test_crops_per_side
    train_crops = crops_for(run, train_recs, "fine-tuning", "crops (train)")
    val_crops = crops_for(run, val_recs, "fine-tuning validation", "crops (val)")
    train_x = sinus_tensor(train_crops, n)
    train_y = labels_tensor(train_crops.records)
    val_x = flat_tensor(val_crops, t)
    val_y = labels_tensor(val_crops.records)
    pos = float(train_y.sum())
    neg = float(len(train_y) - pos)
    pos_weight = torch.tensor(neg / max(pos, 1.0))
    log.info("finetune %s: %d training sinuses (%d anomalous), %d validation sinuses", name,
             len(train_crops.records), int(pos), len(val_crops.records))

    device = run.device
    train_x = resident(train_x, device)
    model, init_sha = initial_classifier(run, init)
    model_has_prior = model.prior is not None
    model = prepare_model(model, device)
    tcfg = cfg.finetune_train if train_seed is None else replace(cfg.finetune_train,
                                                                  seed=train_seed)
    params = finetune_param_groups(model, cfg.finetune, pretrained=init != "random")

    pos_weight_dev = pos_weight.to(device)

    def train_step(m, idx, gen):
        if cfg.finetune.freeze_encoder:
            m.encoder.eval()
        rows = batch_rows(len(idx))  # this process's share of the global batch (all of it)
        x = to_input(pick_crops(train_x, idx, gen, rows), device)
        if tcfg.augment:
            x, _ = augment(x, None, gen, rows=rows)
        y = train_y[idx[rows.slice]].to(device)  # before the forward: see pretext_stage
        return F.binary_cross_entropy_with_logits(m(x).float(), y, pos_weight=pos_weight_dev)

    def validate(m):
        prob = predict_crops(m, val_x, t, device)
        p = torch.from_numpy(prob).clamp(1e-6, 1 - 1e-6)
        w = torch.where(val_y > 0, pos_weight, torch.ones_like(val_y))
        loss = float((F.binary_cross_entropy(p, val_y, reduction="none") * w).mean())
        auprc = classification_metrics(val_y.numpy(), prob)["auprc"]
        return {"val_loss": loss, "val_auprc": math.nan if auprc is None else auprc}

    out = run.stage_dir("finetune", name)
    meta = {"architecture": encoder_architecture(run), "head": cfg.finetune.head_hidden,
            "train_cfg": asdict(tcfg), "init": init, "label_fraction": fraction,
            "label_seed": seed}
    result = fit(model, cfg=tcfg, run_dir=out, kind=KIND,
                 signature=classifier_signature(run, model_has_prior),
                 meta=meta, n_train=len(train_x), train_step=train_step, validate=validate,
                 monitor="val_loss", mode="min", device=device, resume=resume,
                 stage=f"finetune {name}", params=params,
                 on_start=lambda: save_experiment(cfg, out / "config.json", stage="finetune",
                                                  manifest=str(run.manifest)))
    heatmap_scale = load_residual_scale(run)
    cae_trained = all(p.exists() for p in cae_checkpoints(run.dir, run.config))
    fuse = cfg.finetune.residual_fusion and cae_trained
    residuals = None
    if cae_trained and (fuse or heatmap_scale is None):
        residuals = compute_residuals(run)  # every rank: it may shard
        heatmap_scale = residuals.heatmap_scale
    if not is_main():  # rank 0 writes the model's records
        return result, out
    val_prob = predict_crops(model, val_x, t, device)
    fusion = None
    if cfg.finetune.residual_fusion and not cae_trained:
        # e.g. a supervised model in a run without stage 1: the classifier alone
        log.warning("finetune %s: no CAE in %s, so no residual fusion", name, run.dir)
    elif fuse:
        fusion = fit_residual_fusion(run, model, residuals, device)
        scores = focal_crop_scores(run, residuals, val_crops.records)
        val_prob = fusion.probability(val_prob, [scores[r.key].mean() for r in val_crops.records])
    threshold, threshold_source = choose_decision_threshold(val_y.numpy(), val_prob)
    _write_labels_used(out / "labels_used.csv", train_crops.records, run)
    write_json(out / "model.json", {
        "name": name, "kind": KIND, "init": init, "init_sha256": init_sha,
        "label_fraction": fraction, "label_seed": seed, "val_fraction": val_fraction,
        "n_train_sinuses": len(train_crops.records), "n_train_anomalous": int(pos),
        "n_val_sinuses": len(val_crops.records), "threshold": float(threshold),
        "threshold_source": threshold_source,
        "uncertain_band": list(cfg.finetune.uncertain_band),
        "modality": cfg.data.intensity.modality, "best_epoch": result.best_epoch,
        "heatmap_scale": heatmap_scale, "score_prior": model_has_prior,
        "residual_fusion": fusion.to_dict() if fusion else None,
        "labels_used": "labels_used.csv", "code_version": code_version(),
        "labels_file": str(Path(labels_source).resolve()) if labels_source else None,
        "labels_file_sha256": file_sha256(labels_source) if labels_source else None})
    if set_default:
        write_json(run.dir / "model.json", {"finetune": name})
    return result, out


def fit_residual_fusion(run: Run, model: torch.nn.Module, residuals, device: torch.device
                        ) -> ResidualFusion:
    """Fusion weights from every training sinus of the run (labels unused): the spread of the
    classifier's logit and of the focal residual score over them."""
    t = run.config.data.crop.test_crops_per_side
    train = [r for r in run.split("train") if r.key in residuals.scores]
    x = flat_tensor(residuals.crops.subset([r.key for r in train]), t)
    probs = predict_crops(model, x, t, device)
    scores = focal_crop_scores(run, residuals, train)
    return ResidualFusion.fit(focal_run(run).config.residual, probs,
                              [scores[r.key].mean() for r in train])


@torch.no_grad()
def predict_crops(model: torch.nn.Module, x: torch.Tensor, n: int, device: torch.device,
                  batch: int = 64) -> np.ndarray:
    """Mean probability over each sinus's ``n`` crops: ``x`` is ``(N * n, 1, S, S, S)``."""
    model.eval()
    logits = []
    for s in range(0, len(x), batch):
        logits.append(model(to_input(x[s:s + batch], device)).float().cpu())
    prob = torch.sigmoid(torch.cat(logits)).view(-1, n).mean(1)
    return prob.numpy()


def _write_labels_used(path: Path, records: Sequence[SinusRecord], run: Run) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "case_id", "subject_id", "side", "label", "anomaly_types", "image"])
    for r in records:
        w.writerow([r.key, r.case_id, r.subject_id, r.side, r.label, ";".join(r.anomaly_types),
                    r.image])
    write_text(path, buf.getvalue())
