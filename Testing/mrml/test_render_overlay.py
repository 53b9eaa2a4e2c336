"""scripts/render_overlay.py renders the phantom with its heatmap through vtkMRMLSliceLogic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import slicer

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_overlay.py"


def test_overlay_png_shows_heat_over_the_scan(tmp_path):
    spec = importlib.util.spec_from_file_location("render_overlay", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "overlay.png"
    before = getattr(slicer, "mrmlScene", None)
    assert module.main(["--out", str(out), "--size", "96", "--cache", str(tmp_path)]) == 0
    rgb = mpimg.imread(out)[..., :3]
    assert rgb.shape[1] > 2 * rgb.shape[0]  # three views side by side
    grey = (np.ptp(rgb, axis=2) < 0.02) & (rgb.mean(axis=2) < 0.98)
    hot = (rgb[..., 0] - rgb[..., 2] > 0.3) & (rgb[..., 0] > 0.6)  # heat colours
    assert grey.sum() > 5000 and hot.sum() > 50
    assert getattr(slicer, "mrmlScene", None) is before  # the script put back what it replaced
