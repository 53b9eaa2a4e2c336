"""The four stages on tiny phantoms: losses fall, residuals flag anomalies, caches are reused,
predictions land in the scan's geometry, and bad input gets clear errors."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from sklearn.metrics import average_precision_score

from helpers.tiny import TINY_OVERRIDES
from paranasal_ssl.benchmarks.external import external_records
from paranasal_ssl.crop_cache import record_key
from paranasal_ssl.crops import roi_box_mask
from paranasal_ssl.errors import CheckpointError, InputError
from paranasal_ssl.inference import predict_scan
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.networks import build_pretext
from paranasal_ssl.scan_io import read_scan
from paranasal_ssl.stages.data import roi_masks
from paranasal_ssl.stages.evaluate_stage import (
    CLASSIFIER_ROW,
    PRIOR_ROW,
    evaluate_model,
    load_classifier,
    model_scores,
    prior_scores,
    report_markdown,
    score_records,
)
from paranasal_ssl.stages.finetune_stage import finetune, initial_classifier
from paranasal_ssl.stages.residual_stage import (
    compute_residuals,
    residual_folder,
    residuals_for_records,
)
from paranasal_ssl.stages.run import open_run
from paranasal_ssl.training.checkpoint import read_checkpoint


def test_every_stage_reduces_its_training_loss(trained_run):
    _, results = trained_run
    for stage in ("cae", "pretext"):
        history = results[stage].history
        assert history[-1]["train_loss"] < history[0]["train_loss"], stage
        assert np.isfinite([h["train_loss"] for h in history]).all()
    # fine-tuning starts from the pretext's sinus score (already a fair fit of the few training
    # sinuses, so their loss is noisy from there): the labels must improve held-out sinuses
    history = results["finetune"].history
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert np.isfinite([h["train_loss"] for h in history]).all()


def test_run_folder_records_config_code_version_and_metrics(trained_run):
    run, results = trained_run
    config = json.loads((run.dir / "config.json").read_text())
    assert config["code_version"].startswith("0.") and config["data"]["crop"]["shape"] == 16
    assert "environment" in config and config["manifest"]
    for stage in ("cae", "pretext"):
        assert (run.dir / stage / "metrics.csv").read_text().startswith("epoch,train_loss")
        assert (run.dir / stage / "best.pt").exists()
    model = json.loads((results["finetune_dir"] / "model.json").read_text())
    assert model["init"] == "pretext" and 0 <= model["threshold"] <= 1
    # the tiny run validates on a few sinuses: too few to choose a threshold from, said so
    assert model["threshold"] == 0.5 and model["threshold_source"].startswith("0.5: too few")
    assert model["heatmap_scale"] > 0 and model["code_version"]
    used = (results["finetune_dir"] / "labels_used.csv").read_text().splitlines()
    assert len(used) == 1 + model["n_train_sinuses"]


def test_residuals_are_larger_inside_anomalies_than_elsewhere_in_the_sinus(trained_run):
    run, _ = trained_run
    res = compute_residuals(run)
    inside, outside = [], []
    for i, r in enumerate(res.crops.records):
        mask = res.crops.masks[i]
        if not r.label or mask is None or not (mask > 0).any():
            continue
        box = roi_box_mask(r.roi, run.config.data.crop, r.side)
        m = np.asarray(res.maps[i][0], np.float32)
        inside.append(m[(mask > 0) & box].mean())
        outside.append(m[(mask == 0) & box].mean())
    assert len(inside) >= 3
    assert np.mean(inside) > 1.5 * np.mean(outside)


def test_residual_and_crop_caches_are_reused(trained_run):
    run, _ = trained_run
    folder = residual_folder(run)
    files = sorted(folder.glob("*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    t = time.perf_counter()
    again = compute_residuals(run)
    assert time.perf_counter() - t < 5
    assert [f.stat().st_mtime_ns for f in sorted(folder.glob("*.npy"))] == stamps
    assert {f.stem for f in files} == {record_key(r) for r in again.crops.records}


def test_residuals_of_another_cohort_match_the_runs_own_and_keep_its_scale(trained_run,
                                                                            tmp_path):
    """An independent test cohort's residuals are computed exactly as the run's own (same CAE,
    crops, gate, score) in their own folder, with the run's heatmap scale, and leave the run's
    scores untouched."""
    run, _ = trained_run
    own = compute_residuals(run)
    scores_csv = (own.folder / "scores.csv").read_bytes()
    some = run.split("test", labelled=True)[:3]
    other = residuals_for_records(run, some, tmp_path / "external")
    assert [r.key for r in other.crops.records] == [r.key for r in some]
    assert other.heatmap_scale == own.heatmap_scale
    index = {r.key: i for i, r in enumerate(own.crops.records)}
    for i, r in enumerate(other.crops.records):
        assert np.array_equal(np.asarray(other.maps[i]), np.asarray(own.maps[index[r.key]]))
        assert other.scores[r.key] == pytest.approx(own.scores[r.key], rel=1e-5)
    assert (own.folder / "scores.csv").read_bytes() == scores_csv
    assert sorted(f.stem for f in (tmp_path / "external").glob("*.npy")) == sorted(
        record_key(r) for r in some)


def test_a_residual_folder_shared_by_two_record_sets_answers_each_with_its_own(trained_run,
                                                                               tmp_path):
    """Maps are cached per sinus; the score table is not: a second, smaller set of sinuses
    whose maps are all there must get its own scores, not the first set's table."""
    run, _ = trained_run
    some = run.split("test", labelled=True)[:3]
    first = residuals_for_records(run, some, tmp_path / "shared").scores
    again = residuals_for_records(run, some[:2], tmp_path / "shared").scores
    assert list(again) == [r.key for r in some[:2]]
    assert again == {k: first[k] for k in again}
    assert list(residuals_for_records(run, some, tmp_path / "shared").scores) == list(first)


@pytest.fixture(scope="module")
def fused_model(trained_run):
    """The trained run's own model (the profiles fuse the residual) and the same fine-tuning
    with ``finetune.residual_fusion`` off (``RUN/finetune/plain``)."""

    from paranasal_ssl.experiment import override

    run, results = trained_run
    assert run.config.finetune.residual_fusion
    plain = replace(run, config=override(run.config, ["finetune.residual_fusion=false"]))
    _, folder = finetune(plain, 1.0, 0, "pretext", name="plain", set_default=False)
    return run, results["finetune_dir"], folder


def test_residual_fusion_adds_the_standardised_focal_score_to_the_classifier_logit(
        fused_model, tmp_path):
    from scipy.special import expit, logit

    from paranasal_ssl.residual_fusion import focal_folder, focal_run
    from paranasal_ssl.stages.residual_stage import residual_scores_for_records

    run, folder, plain_folder = fused_model
    name = folder.name
    info = json.loads((folder / "model.json").read_text())
    stats = info["residual_fusion"]
    assert stats["residual"]["smoothing"] == "gaussian" and stats["residual"]["score"] == "max"
    assert stats["residual_sd"] > 0 and stats["logit_sd"] > 0
    residuals = compute_residuals(run)
    # the statistics: every training sinus (labelled or not), the focal maps computed apart
    train = [r for r in run.split("train") if r.key in residuals.scores]
    focal = residual_scores_for_records(focal_run(run), train, tmp_path / "train")
    f_train = np.array([focal[r.key] for r in train])
    assert stats["residual_mean"] == pytest.approx(f_train.mean(), rel=1e-4)
    assert stats["residual_sd"] == pytest.approx(f_train.std(), rel=1e-4)
    p_train = score_records(run, load_classifier(run, name), train, residuals)["tta"]
    assert stats["logit_sd"] == pytest.approx(logit(p_train.astype(float)).std(), rel=1e-3)
    # the scores: fused by hand from the classifier alone and the focal score
    test = run.split("test", labelled=True)
    got = model_scores(run, name, test, residuals)
    alone = score_records(run, load_classifier(run, name), test, residuals)["tta"]
    np.testing.assert_allclose(got["classifier"], alone, rtol=1e-6)
    f_test = residual_scores_for_records(focal_run(run), test, tmp_path / "test")
    # the same focal maps made beside the run's own in one CAE pass, then only read
    residual_scores_for_records(run, test, tmp_path / "own", fusion_maps=True)
    made = sorted(focal_folder(run, tmp_path / "own").glob("*.npy"))
    assert len(made) == len(test)
    for path in made:
        np.testing.assert_allclose(np.load(path), np.load(tmp_path / "test" / path.name),
                                   atol=1e-3)
    stamps = [p.stat().st_mtime_ns for p in made]
    again = residual_scores_for_records(focal_run(run), test, focal_folder(run, tmp_path / "own"))
    assert [p.stat().st_mtime_ns for p in made] == stamps
    assert again == pytest.approx(f_test, rel=1e-6)
    z = (np.array([f_test[r.key] for r in test]) - stats["residual_mean"]) / stats["residual_sd"]
    expected = expit(logit(alone.astype(float)) + stats["logit_sd"] * z)
    np.testing.assert_allclose(got["tta"], expected, rtol=1e-4)
    assert not np.allclose(got["tta"], alone)
    # the evaluation shows the classifier alone beside the fused model
    results = evaluate_model(run, name, "test", n_boot=20, write=False)
    assert CLASSIFIER_ROW in results["methods"]
    # a model without fusion scores as before: the classifier alone
    assert json.loads((plain_folder / "model.json").read_text())["residual_fusion"] is None
    plain = model_scores(run, plain_folder.name, test, residuals)
    assert set(plain) == {"tta", "single"}
    assert CLASSIFIER_ROW not in evaluate_model(run, plain_folder.name, "test", n_boot=20,
                                                write=False)["methods"]


def test_predict_with_a_fused_model_reports_the_classifier_and_the_focal_score(
        fused_model, tiny_cohort):
    from paranasal_ssl.residual_fusion import ResidualFusion

    run, folder, plain_folder = fused_model
    records = read_manifest(tiny_cohort)
    case = [r for r in records if r.case_id == records[0].case_id]
    image = read_scan(case[0].image)
    rois = {r.side: r.roi for r in case}
    fused = predict_scan(image, rois, load_model(folder, "cpu"))
    plain = predict_scan(image, rois, load_model(plain_folder, "cpu"))
    fusion = ResidualFusion.from_dict(json.loads((folder / "model.json").read_text())[
        "residual_fusion"])
    for side, pred in fused.sides.items():
        assert pred.focal_residual_score is not None and pred.focal_residual_score >= 0
        assert pred.probability == pytest.approx(float(fusion.probability(
            [pred.classifier_probability], [pred.focal_residual_score])[0]), rel=1e-6)
        assert pred.classifier_probability == pytest.approx(
            float(np.mean(pred.crop_probabilities)), rel=1e-6)
        assert plain.sides[side].classifier_probability is None
        row = pred.to_dict()
        assert row["classifier_probability"] == round(pred.classifier_probability, 6)
    assert fused.summary()["model"]["residual_fusion"] is True
    assert plain.summary()["model"]["residual_fusion"] is False


def test_an_external_cohort_sharing_subjects_with_the_run_is_refused(trained_run, tiny_cohort):
    run, _ = trained_run
    with pytest.raises(InputError) as err:
        external_records(run, tiny_cohort)
    assert "subject_id" in str(err.value) and "also in the benchmark cohort" in str(err.value)


def test_predict_writes_heatmap_in_the_scan_geometry(trained_run, tiny_cohort, tmp_path):
    run, _ = trained_run
    records = read_manifest(tiny_cohort)
    sick = next(r for r in records if "complete_opacification" in r.anomaly_types
                or "partial_opacification" in r.anomaly_types)
    case = [r for r in records if r.case_id == sick.case_id]
    image = read_scan(case[0].image)
    bundle = load_model(run.dir, "cpu")
    pred = predict_scan(image, {r.side: r.roi for r in case}, bundle)
    heat, region = pred.heatmap_image(), pred.region_image()
    for out in (heat, region):
        assert out.GetSize() == image.GetSize()
        np.testing.assert_allclose(out.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(out.GetSpacing(), image.GetSpacing())
        np.testing.assert_allclose(out.GetDirection(), image.GetDirection())
    h = sitk.GetArrayViewFromImage(heat)
    assert 0 <= h.min() and h.max() <= 1 and h.max() > 0
    for p in pred.sides.values():
        assert 0 <= p.probability <= 1 and len(p.crop_probabilities) == 2
        assert p.call in ("normal", "uncertain", "anomalous")
        # the strongest residual lies inside the side's ROI box
        assert np.all(np.abs(np.subtract(p.peak_ras, p.roi.center)) <= p.roi.size / 2 + 4)


def test_label_fraction_leaving_a_class_empty_is_a_clear_error(trained_run):
    run, _ = trained_run
    with pytest.raises(InputError, match="label fraction 0.01"):
        finetune(run, 0.01, 0, "random", name="too-few", set_default=False)


def test_corrupt_or_mismatched_checkpoint_is_refused(trained_run, tmp_path):
    import shutil

    run, results = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run.dir, copy, ignore=shutil.ignore_patterns("cache", "residuals"))
    best = copy / "finetune" / results["finetune_dir"].name / "best.pt"
    best.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load checkpoint") as err:
        load_model(copy, "cpu")
    assert "best.pt" in str(err.value)
    # a CAE checkpoint put where the classifier belongs: refused by kind, not by a traceback
    shutil.copy(copy / "cae" / "best.pt", best)
    with pytest.raises(CheckpointError, match="holds a cae model"):
        load_model(copy, "cpu")


def test_a_pretrained_encoder_fine_tunes_at_its_scaled_learning_rate(trained_run):
    """``finetune.encoder_lr_scale`` slows a pretrained encoder, not the head, and never a
    random one: the encoder of a run at 0.1 moves about a tenth as far as at 1."""
    import copy

    run, _ = trained_run
    start = read_checkpoint(run.dir / "pretext" / "best.pt", "pretext")["model"]

    def moved(scale: float, init: str = "pretext") -> dict:
        cfg = copy.deepcopy(run.config)
        cfg.finetune.encoder_lr_scale = scale
        cfg.finetune_train.patience = 0  # every epoch runs: compare the last weights
        name = f"lr-scale-{scale:g}-{init}"
        finetune(replace(run, config=cfg), 1.0, 0, init, name=name, set_default=False)
        last = read_checkpoint(run.dir / "finetune" / name / "last.pt", "classifier")["model"]
        enc = [k for k in last if k.startswith("encoder.") and k.endswith("conv1.weight")]
        before = {k: start[k] for k in enc} if init == "pretext" else None
        return {"encoder": sum(float((last[k] - before[k]).norm()) for k in enc)
                if before else None, "head": last["head.0.weight"], "state": last}

    full, slow = moved(1.0), moved(0.1)
    assert 0.03 < slow["encoder"] / full["encoder"] < 0.3
    assert not torch.equal(slow["head"], full["head"])  # the head trained in both
    # from scratch the scale does not apply: identical training either way
    a, b = moved(1.0, "random"), moved(0.1, "random")
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


def test_finetune_from_scratch_works_in_a_run_without_a_cae(tmp_path, tiny_cohort):
    """A from-scratch classifier needs no CAE; its model simply has no heatmap calibration."""
    run = open_run(tmp_path / "run", manifest=tiny_cohort, overrides=TINY_OVERRIDES,
                   device="cpu", workers=1)
    result, folder = finetune(run, 1.0, 0, "random", name="scratch", set_default=False)
    info = json.loads((folder / "model.json").read_text())
    assert info["init"] == "random" and info["heatmap_scale"] is None
    assert info["score_prior"] is False
    assert info["residual_fusion"] is None  # nothing to fuse without a CAE
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_finetuning_starts_from_the_pretext_sinus_score(trained_run):
    """With no label seen yet the classifier's logit is the pretext's sinus-level score, and the
    saved model reloads with the same structure (prior included)."""
    run, results = trained_run
    model, sha = initial_classifier(run, "pretext")
    assert sha and model.prior is not None
    pretext = build_pretext(run.config.encoder, run.config.data.crop.shape, score_head=True)
    pretext.load_state_dict(read_checkpoint(run.dir / "pretext" / "best.pt", "pretext")["model"])
    x = torch.rand(3, 1, 16, 16, 16)
    with torch.no_grad():
        expected = pretext.eval()(x, with_score=True)[1]
        np.testing.assert_allclose(model.eval()(x).numpy(), expected.numpy(), atol=1e-5)
    assert not initial_classifier(run, "random")[0].prior  # only the pretext has a score head
    info = json.loads((results["finetune_dir"] / "model.json").read_text())
    assert info["score_prior"] is True
    assert load_model(results["finetune_dir"]).classifier.prior is not None


def test_evaluation_reports_what_the_labels_added(trained_run):
    """``evaluate`` of a pretext-initialised model scores its starting point too: the
    classifier before fine-tuning, the same numbers as initial_classifier gives."""
    run, results = trained_run
    ev = evaluate_model(run, results["finetune_dir"].name, split="val", n_boot=20, write=False)
    assert {"model (crop-averaged)", "zero-label residual score", PRIOR_ROW} <= set(ev["methods"])
    residuals = compute_residuals(run)
    records = run.split("val", labelled=True)
    direct = score_records(run, initial_classifier(run, "pretext")[0], records, residuals)
    start = prior_scores(run, records, residuals)
    np.testing.assert_allclose([start[r.key] for r in records], direct["tta"], atol=1e-6)
    assert ev["methods"][PRIOR_ROW]["f1"] is None and ev["methods"]["model (crop-averaged)"]["f1"]
    assert "F1 of the model at its decision threshold 0.500 (the model's: 0.5: too few" in \
        report_markdown(ev)
    assert ev["methods"][PRIOR_ROW]["auprc"] == pytest.approx(
        average_precision_score([r.label for r in records], direct["tta"]))
    # a model trained from scratch has no such starting point
    _, scratch = finetune(run, 1.0, 0, "random", name="scratch-eval", set_default=False)
    ev = evaluate_model(run, scratch.name, split="val", n_boot=20, write=False)
    assert PRIOR_ROW not in ev["methods"]


def test_focal_residual_option_has_its_own_cache_and_scores_the_box_maximum(trained_run,
                                                                           tmp_path):
    """The focal residual settings (an option, see ResidualConfig) get their own residual
    folder and score each sinus by the maximum of its map inside the box, averaged over the
    test-time crops; a run saved before these settings keeps its folder."""
    run, _ = trained_run
    focal = open_run(run.dir, overrides=["residual.smoothing=gaussian",
                                         "residual.bone_gate_hu=150", "residual.score=max"],
                     device="cpu", workers=1)
    assert residual_folder(focal).name != residual_folder(run).name
    res = compute_residuals(focal)
    own = compute_residuals(run)
    t = focal.config.data.crop.test_crops_per_side
    for i, r in enumerate(res.crops.records[:4]):
        maps = torch.from_numpy(np.asarray(res.maps[i][:t], np.float32))[:, None]
        inside = maps.masked_fill(~roi_masks([r], focal, t), 0)
        assert res.scores[r.key] == pytest.approx(float(inside.flatten(1).amax(1).mean()),
                                                  rel=1e-5)
        assert not np.array_equal(np.asarray(res.maps[i]), np.asarray(own.maps[i]))
    copy = tmp_path / "old"
    shutil.copytree(run.dir, copy, ignore=shutil.ignore_patterns("cache", "residuals"))
    config = json.loads((copy / "config.json").read_text())
    for key in ("smoothing", "gaussian_sigma_mm", "bone_gate_hu", "pretext_score_quantile"):
        del config["residual"][key]
    (copy / "config.json").write_text(json.dumps(config))
    old = open_run(copy, device="cpu", workers=1, cache_dir=run.cache_dir)
    assert residual_folder(old).name == residual_folder(run).name
