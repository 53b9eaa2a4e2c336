"""Draw the ParanasalSSL icon (128x128 RGBA PNG): a stylised skull seen from the front, its two
maxillary sinuses below the orbits, the left one glowing with a residual heatmap.

    .venv/bin/python scripts/make_icon.py

Writes ParanasalSSL/Resources/Icons/ParanasalSSL.png (module) and Resources/Icons/ParanasalSSL.png
(extension). Deterministic: re-running gives the same picture.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse, FancyBboxPatch, PathPatch, Polygon  # noqa: E402
from matplotlib.path import Path as MPath  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = [REPO / "ParanasalSSL" / "Resources" / "Icons" / "ParanasalSSL.png",
           REPO / "Resources" / "Icons" / "ParanasalSSL.png"]
BONE, EDGE, CAVITY, AIR = "#ece6d6", "#5b5446", "#3b3a44", "#9fc4de"


def skull_outline() -> MPath:
    """Cranium and narrowing face, symmetric about x = 0 (units: icon half-widths)."""
    t = np.linspace(0, np.pi, 60)
    dome = np.c_[0.78 * np.cos(t), 0.12 + 0.78 * np.sin(t)]  # right to left over the top
    left = np.array([[-0.78, 0.05], [-0.74, -0.25], [-0.62, -0.52], [-0.42, -0.78],
                     [-0.18, -0.92]])
    right = left[::-1] * [-1, 1]
    points = np.vstack([dome, left, [[0.0, -0.95]], right])
    return MPath(np.vstack([points, points[:1]]), closed=True)


def sinus(x_sign: float) -> np.ndarray:
    """A rounded-triangle maxillary sinus beside the nose, below the orbit."""
    return np.array([[0.12, -0.10], [0.50, -0.16], [0.42, -0.52], [0.16, -0.48]]) * [x_sign, 1]


def main() -> None:
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1.02, 0.98)
    ax.axis("off")
    ax.add_patch(PathPatch(skull_outline(), facecolor=BONE, edgecolor=EDGE, lw=2.2))
    for sign in (-1, 1):
        ax.add_patch(Ellipse((0.34 * sign, 0.16), 0.42, 0.32, facecolor=CAVITY, edgecolor=EDGE,
                             lw=1.2))
    ax.add_patch(Polygon([[0, 0.02], [0.1, -0.34], [0, -0.40], [-0.1, -0.34]], closed=True,
                         facecolor=CAVITY, edgecolor=EDGE, lw=1.0))
    # right sinus (viewer's left: the patient faces us): clear air
    ax.add_patch(Polygon(sinus(-1), closed=True, facecolor=AIR, edgecolor=EDGE, lw=1.2))
    # left sinus: air with a residual heatmap blob (inferno colours)
    ax.add_patch(Polygon(sinus(1), closed=True, facecolor=AIR, edgecolor=EDGE, lw=1.2))
    inferno = matplotlib.colormaps["inferno"]
    for radius, value in ((0.13, 0.35), (0.095, 0.6), (0.06, 0.8), (0.03, 0.97)):
        ax.add_patch(Ellipse((0.31, -0.32), 2 * radius, 1.6 * radius, facecolor=inferno(value),
                             edgecolor="none", alpha=0.9))
    ax.add_patch(FancyBboxPatch((-0.36, -0.74), 0.72, 0.10, boxstyle="round,pad=0.02",
                                facecolor="#fbfaf5", edgecolor=EDGE, lw=1.0))  # teeth
    for x in np.linspace(-0.27, 0.27, 7):
        ax.plot([x, x], [-0.74, -0.64], color=EDGE, lw=0.6)
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(TARGETS[0], transparent=True, dpi=100)
    plt.close(fig)
    shutil.copyfile(TARGETS[0], TARGETS[1])
    print("\n".join(str(t) for t in TARGETS))


if __name__ == "__main__":
    main()
