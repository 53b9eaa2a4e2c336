"""Axial and coronal slices through a sinus box, and the PNG figure the QA report shows.

Slices are resampled from the scan (and the heatmap / region, which share its geometry) on a
plane through the ROI centre spanned by the ROI's own axes, so oblique scans and rotated boxes
give the same upright pictures. Radiological convention: the patient's right is on the image's
left; axial images have anterior up, coronal images superior up.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.geometry import SinusROI, ras_to_lps

CT_WINDOW = (-1000.0, 1000.0)  # HU shown from black to white: air, mucosa and bone apart
MAX_PIXELS = 220  # per image side


@dataclass(frozen=True)
class Plane:
    """A plane in RAS mm: ``center``, in-plane unit vectors ``u`` (image columns, left to
    right) and ``v`` (image rows, top to bottom), field of view ``(width, height)`` in mm."""

    center: np.ndarray
    u: np.ndarray
    v: np.ndarray
    fov_mm: Tuple[float, float]
    spacing_mm: float

    @property
    def shape(self) -> Tuple[int, int]:
        """(rows, columns) of the sampled image."""
        return (max(2, int(round(self.fov_mm[1] / self.spacing_mm))),
                max(2, int(round(self.fov_mm[0] / self.spacing_mm))))


def planes_for(roi: SinusROI, scan: sitk.Image, through: Optional[np.ndarray] = None,
               margin: float = 1.5, min_fov_mm: float = 60.0) -> Dict[str, Plane]:
    """Axial and coronal planes spanned by the axes of ``roi`` (R, A, S) through ``through``
    (RAS mm; default the box centre), centred there."""
    centre = roi.center if through is None else np.asarray(through, float)
    axes = roi.axes
    right, anterior, superior = axes[:, 0], axes[:, 1], axes[:, 2]
    size = roi.size * margin
    w = max(size[0], min_fov_mm)
    fov = {"axial": (w, max(size[1], min_fov_mm)), "coronal": (w, max(size[2], min_fov_mm))}
    spacing = max(min(scan.GetSpacing()), max(max(f) for f in fov.values()) / MAX_PIXELS)
    return {"axial": Plane(centre, -right, -anterior, fov["axial"], spacing),
            "coronal": Plane(centre, -right, -superior, fov["coronal"], spacing)}


def sample(image: sitk.Image, plane: Plane, nearest: bool = False,
           default: float = 0.0) -> np.ndarray:
    """(rows, columns) float32 array of ``image`` on ``plane`` (outside the image: ``default``)."""
    rows, cols = plane.shape
    u, v = ras_to_lps(plane.u), ras_to_lps(plane.v)
    n = np.cross(u, v)
    corner = ras_to_lps(plane.center) - u * plane.spacing_mm * (cols - 1) / 2 \
        - v * plane.spacing_mm * (rows - 1) / 2
    ref = sitk.Image(cols, rows, 1, sitk.sitkFloat32)
    ref.SetSpacing([plane.spacing_mm] * 3)
    ref.SetOrigin([float(c) for c in corner])
    ref.SetDirection([float(x) for x in np.stack([u, v, n], axis=1).ravel()])
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), interp,
                        float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)[0]


def looks_like_ct(scan: sitk.Image) -> bool:
    """Hounsfield-like air (1st percentile below -500) on a cheap subsample."""
    a = sitk.GetArrayViewFromImage(scan)
    sub = a[:: max(1, a.shape[0] // 16), ::4, ::4]
    return float(np.percentile(sub, 1)) < -500


def side_figure_png(scan: sitk.Image, roi: SinusROI, title: str,
                    heatmap: Optional[sitk.Image] = None, region: Optional[sitk.Image] = None,
                    region_code: int = 0, threshold: float = 0.5, opacity: float = 0.6,
                    ct: Optional[bool] = None, through: Optional[np.ndarray] = None,
                    dpi: int = 80) -> bytes:
    """PNG bytes: axial and coronal slices through ``through`` (RAS mm, e.g. the strongest
    residual; default the box centre) with the heatmap above ``threshold`` (inferno,
    ``opacity``), the region outline (cyan), the ROI box (dashed green), the point the slices
    pass through (cross) and a colour bar of the residual in [threshold, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    ct = looks_like_ct(scan) if ct is None else ct
    planes = planes_for(roi, scan, through)
    fig = Figure(figsize=(7.2, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    shown = None
    for ax, (name, plane) in zip(axes, planes.items()):
        grey = sample(scan, plane, default=CT_WINDOW[0] if ct else 0.0)
        lo, hi = CT_WINDOW if ct else np.percentile(grey, (1, 99)) + np.array([0, 1e-6])
        extent = (0, plane.fov_mm[0], plane.fov_mm[1], 0)
        ax.imshow(grey, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="bilinear")
        if heatmap is not None:
            heat = sample(heatmap, plane)
            masked = np.ma.masked_less(heat, max(threshold, 1e-3))
            shown = ax.imshow(masked, cmap="inferno", vmin=threshold, vmax=1.0, alpha=opacity,
                              extent=extent, interpolation="nearest")
        if region is not None and region_code:
            mask = sample(region, plane, nearest=True) == region_code
            if mask.any() and not mask.all():
                ys = (np.arange(mask.shape[0]) + 0.5) * plane.spacing_mm
                xs = (np.arange(mask.shape[1]) + 0.5) * plane.spacing_mm
                ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors="cyan",
                           linewidths=1.0)
        box = roi.size[[0, 1]] if name == "axial" else roi.size[[0, 2]]
        offset = roi.center - plane.center  # box centre in plane coordinates (mm)
        bx = plane.fov_mm[0] / 2 + float(offset @ plane.u)
        by = plane.fov_mm[1] / 2 + float(offset @ plane.v)
        ax.add_patch(Rectangle((bx - box[0] / 2, by - box[1] / 2), box[0], box[1], fill=False,
                               ls="--", lw=1.0, ec="lime"))
        ax.plot([plane.fov_mm[0] / 2], [plane.fov_mm[1] / 2], marker="+", color="cyan", ms=8)
        top, bottom = ("A", "P") if name == "axial" else ("S", "I")
        for text, xy in (("R", (0.02, 0.5)), ("L", (0.95, 0.5)), (top, (0.5, 0.93)),
                         (bottom, (0.5, 0.02))):
            ax.text(*xy, text, color="yellow", fontsize=8, transform=ax.transAxes)
        ax.set_title(f"{name} (S {plane.center[2]:.0f} mm)" if name == "axial"
                     else f"{name} (A {plane.center[1]:.0f} mm)", fontsize=9)
        ax.set_xlim(0, plane.fov_mm[0])
        ax.set_ylim(plane.fov_mm[1], 0)
        ax.set_xticks([])
        ax.set_yticks([])
    if shown is not None:
        bar = fig.colorbar(ScalarMappable(Normalize(threshold, 1.0), "inferno"), ax=list(axes),
                           fraction=0.04, pad=0.02)
        bar.set_label("residual heatmap", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
