"""``paranasal-ssl predict`` on one scan: boxes from the command line or suggested, and the
suggested boxes printed as options that give the same analysis again."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from paranasal_ssl.cli.main import main
from paranasal_ssl.manifest import read_manifest


@pytest.fixture(scope="module")
def sick_case(tiny_cohort):
    """(image path, {side: manifest ROI}) of a case with an opacified side."""
    records = read_manifest(tiny_cohort)
    sick = next(r for r in records if "opacification" in " ".join(r.anomaly_types))
    return sick.image, {r.side: r.roi for r in records if r.case_id == sick.case_id}


def _predict(run, image, out, *options):
    return main(["predict", "--model", str(run.dir), "--image", str(image), "--out", str(out),
                 "--device", "cpu", "--progress", "none", *options])


def test_a_side_without_a_box_names_the_ways_to_give_one(trained_run, sick_case, tmp_path,
                                                         capsys):
    run, _ = trained_run
    image, _ = sick_case
    assert _predict(run, image, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "[--roi-left]" in err and "--suggest-rois" in err and str(image.name) in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_suggested_boxes_are_recorded_and_printed_as_reusable_options(trained_run, sick_case,
                                                                      tmp_path, capsys):
    run, _ = trained_run
    image, truth = sick_case
    right = truth["right"]
    given = [f"{v:g}" for v in (*right.center_ras, *right.size_mm)]
    assert _predict(run, image, tmp_path / "a", "--suggest-rois", "--roi-right", *given) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    left = summary["sides"]["left"]
    assert left["roi_source"].startswith("suggested (") and "confidence" in left["roi_source"]
    assert summary["sides"]["right"]["roi_source"] == "command line"
    # the suggestion lands on the sinus the phantom's manifest boxes
    assert np.linalg.norm(np.subtract(left["roi"]["center_ras"], truth["left"].center)) < 15
    # the printed options reproduce the analysis (to the rounding of the printed box)
    line = next(x for x in printed.splitlines() if x.startswith("left box suggested"))
    options = shlex.split(line.split(": ", 1)[1])
    assert "--roi-right" not in line and options[0] == "--roi-left"
    assert _predict(run, image, tmp_path / "b", *options, "--roi-right", *given) == 0
    again = json.loads((tmp_path / "b" / "summary.json").read_text())["sides"]
    assert again["left"]["roi_source"] == "command line"
    np.testing.assert_allclose(again["left"]["roi"]["center_ras"], left["roi"]["center_ras"],
                               atol=0.06)
    assert again["left"]["probability"] == pytest.approx(left["probability"], abs=0.02)


def test_suggest_rois_with_a_manifest_points_to_review_manifest(trained_run, tiny_cohort,
                                                                tmp_path, capsys):
    run, _ = trained_run
    assert main(["predict", "--model", str(run.dir), "--manifest", str(tiny_cohort),
                 "--out", str(tmp_path), "--suggest-rois", "--progress", "none"]) == 2
    assert "review manifest --suggest-missing" in capsys.readouterr().err
