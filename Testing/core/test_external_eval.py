"""``paranasal-ssl evaluate --manifest``: a model (a run or an export) checked on a labelled
manifest of one's own, every scan analysed as ``predict`` does."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from paranasal_ssl.cli.main import main
from paranasal_ssl.external_eval import MODEL_ROW, RESIDUAL_ROW
from paranasal_ssl.manifest import read_manifest, write_manifest


def _evaluate(model, manifest, out):
    return main(["evaluate", "--run", str(model), "--manifest", str(manifest), "--out",
                 str(out), "--device", "cpu", "--bootstrap", "50", "--progress", "none"])


def test_a_labelled_manifest_is_scored_as_predict_scores_it(trained_run, tiny_cohort,
                                                             tmp_path):
    run, _ = trained_run
    records = read_manifest(tiny_cohort)
    manifest = write_manifest(records, tmp_path / "site.csv")
    with open(manifest, "a") as f:  # a case whose scan is gone: left out, named
        r = records[0].roi
        f.write(f"gone,gone,images/gone.nii.gz,left,1,polyp,{r.center[0]},{r.center[1]},"
                f"{r.center[2]},30,40,40,,ct,\n")
    assert _evaluate(run.dir, manifest, tmp_path / "eval") == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    with open(tmp_path / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == results["n_sinuses"] == len(records)
    assert results["skipped"] and results["skipped"][0].startswith("gone:")
    y = [int(row["label"]) for row in rows]
    p = [float(row["probability"]) for row in rows]
    assert results["methods"][MODEL_ROW]["auprc"] == pytest.approx(
        average_precision_score(y, p))
    assert results["prevalence"] == pytest.approx(np.mean(y))
    assert RESIDUAL_ROW in results["methods"] and len(results["manifest_sha256"]) == 64
    # the same probabilities predict writes for the same scans and boxes
    assert main(["predict", "--model", str(run.dir), "--manifest", str(tiny_cohort), "--out",
                 str(tmp_path / "pred"), "--device", "cpu", "--progress", "none"]) == 0
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        predicted = {(row["case_id"], row["side"]): float(row["probability"])
                     for row in csv.DictReader(f)}
    for row in rows:
        assert float(row["probability"]) == pytest.approx(
            predicted[(row["case_id"], row["side"])], abs=1e-6)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "on the labelled manifest `site.csv`" in report and "1 case(s) left out" in report


def test_an_export_evaluates_as_its_run_and_one_class_is_refused(trained_run, tiny_cohort,
                                                                 tmp_path, capsys):
    run, _ = trained_run
    assert main(["export-model", "--model", str(run.dir), "--out", str(tmp_path / "m")]) == 0
    assert _evaluate(run.dir, tiny_cohort, tmp_path / "a") == 0
    assert _evaluate(tmp_path / "m", tiny_cohort, tmp_path / "b") == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text())["methods"]
            for n in ("a", "b"))
    assert a[MODEL_ROW]["auprc"] == b[MODEL_ROW]["auprc"]
    normals = write_manifest([r for r in read_manifest(tiny_cohort) if r.label == 0],
                             tmp_path / "normals.csv")
    assert _evaluate(tmp_path / "m", normals, tmp_path / "c") != 0
    assert "every labelled side is normal" in capsys.readouterr().err
