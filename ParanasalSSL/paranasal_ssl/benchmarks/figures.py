"""Benchmark figures: AUPRC against label fraction per method, and an example montage."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from paranasal_ssl.benchmarks.protocol import METHOD_TITLES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works headless and inside Slicer's Python
    import matplotlib.pyplot as plt

    return plt


def plot_auprc_vs_fraction(summary: dict, path: Path) -> Path:
    """Mean AUPRC over draws with its pooled 95% CI band; label-free scores as lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fractions = set()
    for i, (method, rows) in enumerate(summary["methods"].items()):
        fr = sorted((float(f), r) for f, r in rows.items() if r.get("auprc") is not None)
        if not fr:
            continue
        x = np.array([f for f, _ in fr]) * 100
        fractions.update(x.tolist())
        m = np.array([r["auprc"] for _, r in fr])
        lo = np.array([r["auprc_ci"][0] for _, r in fr])
        hi = np.array([r["auprc_ci"][1] for _, r in fr])
        c = colours[i % len(colours)]
        lw = 2.6 if method == "residual-pretext" else 1.4
        ax.plot(x, m, "o-", color=c, lw=lw, label=METHOD_TITLES.get(method, method))
        ax.fill_between(x, lo, hi, color=c, alpha=0.12)
    styles = ["--", ":", "-.", (0, (6, 2))]
    for j, (name, z) in enumerate(summary["zero_label"].items()):
        ax.axhline(z["auprc"], color=("0.15", "0.35", "0.5", "0.25")[j % 4], ls=styles[j % 4],
                   lw=1.2, label=f"{name} (no labels)")
    ax.axhline(summary["prevalence"], color="0.6", lw=1, label="chance (prevalence)")
    ax.set_xscale("log")
    ticks = sorted(fractions)  # the measured fractions, written as they were asked for
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("labelled training subjects (%)")
    ax.set_ylabel("test AUPRC")
    ax.set_title(f"{summary['cohort']}: {summary['n_test_sinuses']} test sinuses, "
                 f"prevalence {summary['prevalence']:.2f}")
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    # beside the axes, not over them: at 25% prevalence the curves sit where any corner is
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_montage(examples: List[dict], path: Path, title: str) -> Path:
    """One column per example: coronal slice of the crop with the residual heatmap (global
    scale, 0.5 = twice the 99.9th percentile of normal residuals) and the mask outline."""
    plt = _pyplot()
    n = max(1, len(examples))
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n, 2.6), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        crop, heat, mask = ex["crop"], ex["heatmap"], ex["mask"]
        j = int(ex["slice"])
        ax.imshow(crop[:, j][::-1], cmap="gray", vmin=0, vmax=1)
        h = np.ma.masked_less(heat[:, j][::-1], 0.5)
        ax.imshow(h, cmap="inferno", vmin=0.5, vmax=1.0, alpha=0.75)
        if mask is not None and mask[:, j].any():
            ax.contour(mask[:, j][::-1] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"{ex['kind']}  p={ex['probability']:.2f}\n{ex['types']}", fontsize=7)
        ax.axis("off")
    for ax in axes[0][len(examples):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
