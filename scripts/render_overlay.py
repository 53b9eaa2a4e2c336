"""Render a phantom CT slice with the residual heatmap overlay through vtkMRMLSliceLogic.

    .venv/bin/python scripts/render_overlay.py --out Resources/Screenshots/overlay.png
    .venv/bin/python scripts/render_overlay.py --model demo_out/run --out overlay.png

The scan, heatmap and display settings go through the module's own code (ParanasalSSLLib:
results, heatmap display, jump to the strongest residual) on a real MRML scene without the Slicer
application, and the three slice views are rendered exactly as Slicer blends them. With
``--model`` the heatmap is the model's prediction (paranasal_ssl.inference.predict_scan);
without one it is made from the phantom's ground-truth mask, for illustration only (the figure's
title says which).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ParanasalSSL"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("overlay.png"))
    parser.add_argument("--model", type=Path, help="trained model folder (optional)")
    parser.add_argument("--modality", choices=("ct", "mri"), default="ct")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--opacity", type=float, default=0.6)
    parser.add_argument("--size", type=int, default=320, help="pixels per view")
    parser.add_argument("--cache", type=Path, help="phantom folder (default: a temporary one)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ParanasalSSLLib import analysis, heatmap_display, results, sample_data
    from ParanasalSSLLib import mrml_bridge as bridge
    from ParanasalSSLLib.headless import makeHeadlessSlicer

    headless = makeHeadlessSlicer(sliceViews=True, viewSize=args.size).install()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = sample_data.loadPhantom(args.modality, args.cache or Path(tmp))
        scan = nodes["scan"]
        display = scan.GetDisplayNode()
        display.AutoWindowLevelOff()
        if args.modality == "ct":
            display.SetWindowLevel(2000, 0)  # air, soft tissue and bone all readable
        roiNodes = {"left": nodes["leftRoi"], "right": nodes["rightRoi"]}
        if args.model:
            res = analysis.analyzeScan(scan, roiNodes, args.model, threshold=args.threshold,
                                       opacity=args.opacity)
            source = f"model {args.model.name}"
        else:
            truth = np.zeros(tuple(reversed(scan.GetImageData().GetDimensions())), np.uint8)
            segmentation = nodes["truth"].GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                truth |= bridge.arrayFromSegment(nodes["truth"],
                                                 segmentation.GetNthSegmentID(index), scan)
            heat = _smooth(truth.astype(np.float32)) * 0.95
            info = json.loads(sample_data.phantomFiles(
                args.modality, args.cache or Path(tmp))["info"].read_text())
            side = max(info["sides"], key=lambda s: info["sides"][s]["label"])  # anomalous
            res = results.addAnalysisResults(scan, heat, {side: truth}, {side: 1.0},
                                             threshold=args.threshold, opacity=args.opacity)
            source = "ground truth (illustration, no model)"
        for logic in headless.sliceLogics.values():
            logic.FitSliceToBackground()
        peak = res.strongestPeakRas()
        heatmap_display.jumpSlicesToRas(peak)
        for logic in headless.sliceLogics.values():
            logic.GetSliceNode().SetFieldOfView(110, 110, logic.GetSliceNode().GetFieldOfView()[2])
        fig, axes = plt.subplots(1, 3, figsize=(3 * args.size / 100, args.size / 100 + 0.4),
                                 dpi=100)
        for ax, view in zip(axes, ("Red", "Green", "Yellow")):
            ax.imshow(headless.renderSlice(view)[::-1, :, :3])  # VTK rows start at the bottom
            ax.set_title({"Red": "axial", "Green": "coronal", "Yellow": "sagittal"}[view],
                         fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{scan.GetName()}: residual heatmap from {source}, threshold "
                     f"{args.threshold:g}, opacity {args.opacity:g}", fontsize=8)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, bbox_inches="tight")
        plt.close(fig)
    headless.close()
    print(args.out)
    return 0


def _smooth(mask: np.ndarray) -> np.ndarray:
    """A soft residual-like map from a binary mask (values in [0, 1])."""
    from scipy import ndimage

    soft = ndimage.gaussian_filter(mask, 1.5)
    return np.clip(soft / max(float(soft.max()), 1e-6), 0.0, 1.0)


if __name__ == "__main__":
    raise SystemExit(main())
