"""``paranasal-ssl manifest``: a cohort of scans with labels but no boxes becomes a training
manifest - boxes suggested on the scans, labels and subjects kept, sources named."""

from __future__ import annotations

import csv

import numpy as np

from paranasal_ssl.cli.main import main
from paranasal_ssl.manifest import read_manifest


def _cohort_list(tiny_cohort, path, n_cases=3):
    """A CSV like a clinical export: scan, side, label and subject; one side keeps its box."""
    records = read_manifest(tiny_cohort)
    keep = sorted({r.case_id for r in records})[:n_cases]
    chosen = [r for r in records if r.case_id in keep]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "subject_id", "image", "side", "label", "roi_center_r",
                    "roi_center_a", "roi_center_s", "roi_size_r", "roi_size_a", "roi_size_s"])
        for i, r in enumerate(chosen):
            box = [*r.roi.center_ras, *r.roi.size_mm] if i == 0 else [""] * 6
            w.writerow([r.case_id, f"patient-{r.subject_id}", r.image, r.side, r.label, *box])
        w.writerow(["gone", "patient-x", "missing.nii.gz", "left", 0, *[""] * 6])
    return chosen


def test_a_labelled_list_without_boxes_becomes_a_training_manifest(tiny_cohort, tmp_path,
                                                                    capsys):
    chosen = _cohort_list(tiny_cohort, tmp_path / "cohort.csv")
    assert main(["manifest", "--cases", str(tmp_path / "cohort.csv"), "--out",
                 str(tmp_path / "out" / "manifest.csv"), "--progress", "none"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(chosen)} sides" in printed and "left out: gone" in printed
    made = {r.key: r for r in read_manifest(tmp_path / "out" / "manifest.csv",
                                            require_labels=True)}
    assert sorted(made) == sorted(r.key for r in chosen)
    for i, truth in enumerate(chosen):
        r = made[truth.key]
        assert (r.label, r.subject_id, r.image) == (truth.label, f"patient-{truth.subject_id}",
                                                    truth.image)
        if i == 0:  # the list's own box, untouched
            assert r.extra["roi_source"] == "list"
            np.testing.assert_allclose(r.roi.center, truth.roi.center, atol=1e-3)
        else:
            assert r.extra["roi_source"].startswith("suggested (")
            assert np.linalg.norm(r.roi.center - truth.roi.center) < 15


def test_no_suggest_refuses_a_side_without_a_box(tiny_cohort, tmp_path, capsys):
    _cohort_list(tiny_cohort, tmp_path / "cohort.csv", n_cases=1)
    assert main(["manifest", "--cases", str(tmp_path / "cohort.csv"), "--out",
                 str(tmp_path / "manifest.csv"), "--no-suggest", "--progress", "none"]) == 2
    assert "no box for right" in capsys.readouterr().err
    assert not (tmp_path / "manifest.csv").exists()
