"""The browser QA report: one image per case side, valid markup, escaped text, slices in the
radiological orientation with the heatmap where the finding is."""

from __future__ import annotations

import base64
import html.parser
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib import image as mpimg

from helpers.images import rotation
from paranasal_ssl.cli.main import main
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI, ras_to_lps
from paranasal_ssl.manifest import read_manifest, write_manifest
from paranasal_ssl.review.html_report import write_report
from paranasal_ssl.review.session import open_session
from paranasal_ssl.review.slices import planes_for, sample, side_figure_png
from paranasal_ssl.scan_io import image_from_array


@pytest.fixture(scope="module")
def predicted(trained_run, tiny_cohort, tmp_path_factory):
    """Three phantom cases plus one whose scan is missing, with real predictions."""
    run, _ = trained_run
    root = tmp_path_factory.mktemp("report")
    records = read_manifest(tiny_cohort)
    keep = sorted({r.case_id for r in records})[:3]
    cases = write_manifest([r for r in records if r.case_id in keep], root / "cases.csv")
    assert main(["predict", "--model", str(run.dir), "--manifest", str(cases), "--out",
                 str(root / "preds"), "--device", "cpu", "--progress", "none"]) == 0
    missing = records[0].roi
    with open(cases, "a") as f:  # a fourth case whose scan does not exist
        f.write(f"ghost,ghost,images/ghost.nii.gz,left,,,{missing.center[0]},"
                f"{missing.center[1]},{missing.center[2]},30,40,40,,ct,\n")
    return root, cases, keep


class StrictParser(html.parser.HTMLParser):
    """Tracks open tags; void elements need no end tag."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass  # <img ... />: opens and closes

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_report_has_one_image_per_case_side_and_opens_without_errors(predicted, tmp_path):
    root, cases, keep = predicted
    session = open_session(cases, "qa", root / "preds")
    session.record(keep[0], "left", verdict="anomalous", anomaly_type="polyp",
                   heatmap_on_target=False, comment="<script>alert('x')</script> & more")
    out = tmp_path / "report.html"
    result = write_report(session, out)
    text = out.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)" />', text)
    assert len(images) == result.images == 2 * len(keep)
    assert sorted(alt.split(":")[0] for _, alt in images) == sorted(
        f"{c} {s}" for c in keep for s in ("left", "right"))
    for data, _ in images:
        png = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert png.shape[0] > 200 and png.shape[1] > 400 and png.shape[2] in (3, 4)
    ET.fromstring(text.split("\n", 1)[1])  # well-formed (XHTML syntax)
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)" in text
    assert "ghost" in text and "scan not found" in text  # listed, not fatal
    assert any(s.startswith("ghost") for s in result.skipped)
    assert "Reader verdict" in text and "polyp" in text and "not reviewed" in text
    assert text.count("<th>Sinus box</th><td>manifest</td>") == 2 * len(keep)


def test_report_command_with_images_beside_the_page_and_a_read_only_folder(predicted,
                                                                           tmp_path):
    root, cases, keep = predicted
    out = tmp_path / "site" / "index.html"
    assert main(["report", "--cases", str(cases), "--predictions", str(root / "preds"),
                 "--out", str(out), "--images-dir", str(tmp_path / "site" / "img"),
                 "--progress", "none"]) == 0
    links = re.findall(r'<img src="(img/[^"]+\.png)"', out.read_text())
    assert len(links) == 2 * len(keep)
    assert all((out.parent / link).is_file() for link in links)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        (locked / "probe").write_text("x")
        locked = Path("/sys/kernel")  # root ignores permissions; nobody writes into sysfs
    except OSError:
        pass
    with pytest.raises(InputError, match="cannot write here"):
        write_report(open_session(cases, "qa", root / "preds", read_only=True),
                     locked / "r.html")


def test_a_box_predict_warned_about_is_named_in_the_report(predicted, tmp_path):
    import json
    import shutil

    root, cases, keep = predicted
    preds = shutil.copytree(root / "preds", tmp_path / "preds")
    summary_path = preds / keep[0] / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["box_notes"] = ["the left box lies 20 mm into the patient's right half"]
    summary_path.write_text(json.dumps(summary))
    out = tmp_path / "report.html"
    write_report(open_session(cases, "qa", preds), out)
    text = out.read_text(encoding="utf-8")
    assert text.count("Check the box:") == 1
    assert "Check the box: the left box lies 20 mm into the patient&#x27;s right half" in text


def test_slices_are_radiological_and_the_overlay_sits_on_the_finding():
    """An oblique scan with a bright blob 12 mm to the patient's right and 8 mm anterior of the
    box centre, and a heatmap blob there: the axial slice shows it left of and above the
    centre, and the figure's axial panel shows heat colours only with the heatmap."""
    direction = rotation(2, 20) @ rotation(0, 10)
    scan = image_from_array(np.full((60, 60, 60), -1000, np.int16), (1.0, 1.0, 1.0),
                            (-30, -30, -30), direction.ravel())
    roi = SinusROI.from_values([5.0, 3.0, -4.0], [30, 40, 40])
    blob_ras = roi.center + [12.0, 8.0, 0.0]
    arr = sitk.GetArrayFromImage(scan)
    heat = np.zeros(arr.shape, np.float32)
    idx = scan.TransformPhysicalPointToIndex([float(v) for v in ras_to_lps(blob_ras)])
    i, j, k = idx
    arr[k - 2:k + 3, j - 2:j + 3, i - 2:i + 3] = 500
    heat[k - 2:k + 3, j - 2:j + 3, i - 2:i + 3] = 0.9
    scan = image_from_array(arr, scan.GetSpacing(), scan.GetOrigin(), scan.GetDirection())
    heat_image = image_from_array(heat, scan.GetSpacing(), scan.GetOrigin(), scan.GetDirection())
    axial = planes_for(roi, scan)["axial"]
    grey = sample(scan, axial)
    rows, cols = np.nonzero(grey > 0)
    centre_r, centre_c = (np.array(grey.shape) - 1) / 2
    assert cols.mean() < centre_c - 8 / axial.spacing_mm  # patient's right on the left
    assert rows.mean() < centre_r - 5 / axial.spacing_mm  # anterior up
    coronal = sample(heat_image, planes_for(roi, scan, through=blob_ras)["coronal"])
    assert coronal.max() > 0.5  # the slice through the blob cuts it

    def heat_pixels(png_bytes):
        rgb = mpimg.imread(io.BytesIO(png_bytes), format="png")[..., :3]
        panel = rgb[:, : rgb.shape[1] * 45 // 100]  # axial panel, left of the colour bar
        r, g, b = panel[..., 0], panel[..., 1], panel[..., 2]
        return int(((r > 0.6) & (r - g > 0.15) & (r - b > 0.35)).sum())  # orange, not yellow

    with_heat = side_figure_png(scan, roi, "t", heat_image, threshold=0.5, through=blob_ras)
    without = side_figure_png(scan, roi, "t", None, through=blob_ras)
    assert heat_pixels(with_heat) > 20 and heat_pixels(without) == 0


def test_a_tilted_series_is_shown_with_what_reading_changed(tiny_cohort, tmp_path):
    """A case whose DICOM series was resampled onto a regular grid says so above its images."""
    from helpers.images import tilted_copy, write_dicom_series

    record = read_manifest(tiny_cohort)[0]
    tilted, positions = tilted_copy(sitk.ReadImage(str(record.image)), 15.0)
    write_dicom_series(tilted, tmp_path / "scans" / "tilted", positions=positions)
    box = ",".join(f"{v:g}" for v in (*record.roi.center_ras, *record.roi.size_mm))
    cases = tmp_path / "cases.csv"
    cases.write_text("case_id,image,side,roi_center_r,roi_center_a,roi_center_s,roi_size_r,"
                     f"roi_size_a,roi_size_s\ntilted,scans/tilted,{record.side},{box}\n")
    assert main(["report", "--cases", str(cases), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert '<p class="scan-note">Scan: slices stacked 15.0 deg off their normal (gantry tilt)' \
        in page
    assert page.count("<img ") == 1
