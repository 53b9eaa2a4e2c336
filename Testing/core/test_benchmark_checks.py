"""The benchmark folder's analysis scripts (benchmarks/*.py): where the AUPRC lies by finding
group, how many crop voxels show a finding at each crop spacing, and the focal map's shape."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from error_groups_check import finding_group, perfected  # noqa: E402
from false_alarm_check import main as false_alarm_main  # noqa: E402
from finding_sampling_check import main as sampling_main  # noqa: E402
from finding_sampling_check import visible_voxels  # noqa: E402
from focal_shape_check import crop_shape_scores  # noqa: E402

from paranasal_ssl.manifest import read_manifest  # noqa: E402


def _row(label, true_label, findings="", sub=""):
    return {"label": label, "true_label": true_label, "findings": findings,
            "subthreshold_thickening_mm": sub}


@pytest.mark.parametrize("row, group", [
    (_row("0", "0"), "normal, no finding"),
    (_row("0", "0", sub="2.4"), "normal, sub-threshold lining 2-3 mm"),
    (_row("0", "0", sub="3.5"), "normal, sub-threshold lining 3-4 mm"),
    (_row("0", "1", "retention_cyst:4.5mm"), "normal label, reportable finding (label noise)"),
    (_row("1", "0", sub="3.9"), "anomalous label, no reportable finding (label noise)"),
    (_row("1", "1", "retention_cyst:3.6mm"), "cyst/polyp only, < 4 mm"),
    (_row("1", "1", "polyp:5.0mm"), "cyst/polyp only, 4-6 mm"),
    (_row("1", "1", "polyp:7.0mm;retention_cyst:6.1mm"), "cyst/polyp only, 6-10 mm"),
    (_row("1", "1", "polyp:7.0mm;retention_cyst:12.0mm"), "cyst/polyp only, >= 10 mm"),
    (_row("1", "1", "mucosal_thickening:4.5mm"), "thickening only, 4-5 mm"),
    (_row("1", "1", "mucosal_thickening:5.5mm"), "thickening only, 5-6 mm"),
    (_row("1", "1", "mucosal_thickening:6.2mm"), "thickening only, >= 6 mm"),
    (_row("1", "1", "mucosal_thickening:5mm;retention_cyst:6mm"),
     "opacification, fluid or several findings"),
    (_row("1", "1", "partial_opacification:0.84"), "opacification, fluid or several findings"),
])
def test_each_sinus_falls_in_the_group_its_truth_names(row, group):
    assert finding_group(row) == group


def test_auprc_with_a_group_ranked_perfectly_matches_the_hand_computed_value():
    y = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.8, 0.1, 0.2])  # AUPRC (1/1 + 2/4) / 2 = 0.75
    assert perfected(y, score, np.zeros(4, bool)) == pytest.approx(0.75)
    # the positive at 0.1 to the top: both positives first
    assert perfected(y, score, np.array([0, 0, 1, 0], bool)) == pytest.approx(1.0)
    # the normal at 0.8 to the bottom: 1, 0, 1, 0 -> (1/1 + 2/3) / 2
    assert perfected(y, score, np.array([0, 1, 0, 0], bool)) == pytest.approx(5 / 6)
    assert score.tolist() == [0.9, 0.8, 0.1, 0.2]  # the caller's scores are left alone


def test_a_finer_crop_shows_a_finding_with_more_voxels_and_a_clear_side_with_none(
        tiny_cohort, tmp_path):
    records = [r for r in read_manifest(tiny_cohort) if r.label is not None]
    with open(tiny_cohort, newline="") as f:
        rows = {f"{r['case_id']}:{r['side']}": r for r in csv.DictReader(f)}
    found = next(r for r in records if rows[r.key]["findings"] and r.label == 1)
    clear = next(r for r in records if finding_group(rows[r.key]) == "normal, no finding")
    counts = {}
    for rec in (found, clear):
        image = sitk.ReadImage(str(rec.image), sitk.sitkFloat32)
        mask = sitk.ReadImage(str(rec.mask), sitk.sitkUInt8)
        counts[rec.key] = [visible_voxels(image, mask, rec, s) for s in (2.0, 1.0)]
    coarse, fine = counts[found.key]
    # halving the spacing gives about 8 times the voxels in the same finding
    assert coarse > 0 and 4 * coarse < fine < 12 * coarse
    assert counts[clear.key] == [0, 0]
    report = sampling_main(tiny_cohort, tmp_path / "sampling", cases=3, spacings=[2.0, 1.0])
    assert sum(g["n"] for g in report["groups"].values()) == 6  # 3 cases, both sides
    assert (tmp_path / "sampling.json").exists()
    assert "median voxels at 2 mm" in (tmp_path / "sampling.md").read_text()


def test_a_dome_stands_out_from_its_surroundings_where_a_layer_of_equal_height_does_not():
    import torch

    s = 24
    z, y, x = torch.meshgrid(*[torch.arange(s, dtype=torch.float32)] * 3, indexing="ij")
    dome = torch.exp(-((z - 12) ** 2 + (y - 12) ** 2 + (x - 4) ** 2) / (2 * 2.0 ** 2))
    layer = torch.exp(-((x - 4) ** 2) / (2 * 2.0 ** 2))  # along a whole wall, same height
    maps = torch.stack([dome, layer])[:, None]  # (2, 1, S, S, S)
    box = torch.zeros_like(maps, dtype=torch.bool)
    box[..., 2:22, 2:22, 2:22] = True
    scores = {k: v.tolist() for k, v in crop_shape_scores(maps, box).items()}
    assert scores["max"][0] == pytest.approx(scores["max"][1], rel=1e-6)  # the peak alone ties
    for name in ("peak over its surroundings, sigma 2.5", "max - 90th percentile"):
        assert scores[name][0] > scores[name][1] + 0.2, name
    # the layer's peak still stands out across the wall (its thickness), less than the dome's
    fine = scores["peak over its surroundings, sigma 1.5"]
    assert 0 < fine[1] < fine[0]


def test_a_variant_whose_normal_sides_score_high_is_named_as_a_false_alarm(tiny_cohort,
                                                                           tmp_path):
    """On a real phantom manifest, with scores built so that the clean normal sides carrying
    one variant score above every anomalous side and the other clean normals below: that
    variant raises the score (AUROC 1 against the others), ranks above every anomalous side
    (AUROC 0), and holds every "anomalous" call among clean normals."""
    import json

    with open(tiny_cohort, newline="") as f:
        rows = list(csv.DictReader(f))
    clean = [r for r in rows if r["label"] == "0" and r["true_label"] == "0"
             and not float(r["subthreshold_thickening_mm"] or 0)]
    variant = next(v for r in clean for v in r["normal_variants"].split(";") if v)
    high = {(r["case_id"], r["side"]) for r in clean if variant in r["normal_variants"]}
    assert 0 < len(high) < len(clean)
    with open(tmp_path / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "side", "subject_id", "label", "probability", "call",
                    "classifier_probability", "focal_residual_score"])
        for r in rows:
            p = 0.9 if (r["case_id"], r["side"]) in high else (0.5 if r["label"] == "1" else 0.1)
            w.writerow([r["case_id"], r["side"], r["subject_id"], r["label"], p,
                        "anomalous" if p > 0.7 else "uncertain" if p > 0.3 else "normal", p, p])
    assert false_alarm_main([str(tmp_path / "predictions.csv"), str(tiny_cohort),
                             str(tmp_path / "fa")]) == 0
    report = json.loads((tmp_path / "fa.json").read_text())
    assert report["clean_normal"] == len(clean)
    entry = report["factors"][f"variant: {variant.replace('_', ' ')}"]
    assert entry["n"] == len(high) and entry["false_alarms"]["anomalous"] == 1.0
    assert entry["auroc_vs_anomalous"]["model"] == 0.0
    assert entry["raises_score"]["model"][0] == 1.0
    share = report["false_alarms_all_clean_normals"]["anomalous"]
    assert share == pytest.approx(len(high) / len(clean))
    assert "| variant: " in (tmp_path / "fa.md").read_text()
    # the lining's thickness against scores built without it: a correlation, not a constant
    assert set(report["lining_spearman"]) == {"model", "classifier alone", "focal residual"}
    assert all(-1 <= rho <= 1 for rho in report["lining_spearman"].values())
