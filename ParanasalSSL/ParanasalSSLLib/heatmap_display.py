"""Residual heatmap over the scan in the slice views: colours, threshold, opacity, jump to peak.

The heatmap is a scalar volume in the scan's geometry with residuals in [0, 1]. It is shown as
the FOREGROUND layer over the scan (background) in every slice view:

- colours come from a colour table built in code (an Inferno-like ramp that starts at a visible
  purple rather than black; file-based tables such as Inferno are not always loaded);
- the window spans [threshold, 1], and ``ApplyThreshold`` makes every value below the threshold
  fully transparent, so the scan shows unchanged there;
- the foreground opacity of the slice composite nodes sets how strongly the heat covers the scan.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import slicer

from ParanasalSSLLib.mrml_bridge import volumeIjkToWorld

HEAT_COLOR_NODE_NAME = "ParanasalSSL Heat"
ROLE_ATTRIBUTE = "ParanasalSSL.Role"
HEAT_COLOR_ROLE = "heatColors"
MIN_THRESHOLD = 1e-3  # a threshold of exactly 0 would paint the whole scan
UPPER_THRESHOLD = 1e6  # nothing above the threshold is hidden

# Inferno (matplotlib) sampled from 0.15 to 1.0: purple -> red -> orange -> pale yellow.
_HEAT_ANCHORS = np.array([
    (0.170, 0.042, 0.341), (0.348, 0.065, 0.430), (0.516, 0.126, 0.421),
    (0.689, 0.192, 0.358), (0.837, 0.288, 0.253), (0.942, 0.436, 0.125),
    (0.987, 0.623, 0.028), (0.968, 0.829, 0.250), (0.988, 0.998, 0.645)])


def heatColors(count: int = 256) -> np.ndarray:
    """(count, 3) RGB in [0, 1]: the anchors interpolated linearly."""
    t = np.linspace(0.0, 1.0, count)
    anchorsT = np.linspace(0.0, 1.0, len(_HEAT_ANCHORS))
    return np.stack([np.interp(t, anchorsT, _HEAT_ANCHORS[:, c]) for c in range(3)], axis=1)


def heatColorNode(scene=None):
    """The module's heat colour table in ``scene`` (created once, found by role afterwards)."""
    scene = scene or slicer.mrmlScene
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    nodes.UnRegister(None)
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if node.GetAttribute(ROLE_ATTRIBUTE) == HEAT_COLOR_ROLE:
            return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEAT_COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetAttribute(ROLE_ATTRIBUTE, HEAT_COLOR_ROLE)
    node.SetAttribute("Category", "ParanasalSSL")
    colors = heatColors()
    node.SetNumberOfColors(len(colors))
    for index, (r, g, b) in enumerate(colors):
        node.SetColor(index, f"residual {index / (len(colors) - 1):.3f}", r, g, b, 1.0)
    node.GetLookupTable().SetRange(0.0, 1.0)
    return node


def showHeatmap(heatmapNode, scanNode, threshold: float = 0.5, opacity: float = 0.6) -> None:
    """Show ``heatmapNode`` over ``scanNode`` in every slice view (foreground over background)."""
    if heatmapNode.GetDisplayNode() is None:
        heatmapNode.CreateDefaultDisplayNodes()
    display = heatmapNode.GetDisplayNode()
    with slicer.util.NodeModify(display):
        display.SetAndObserveColorNodeID(heatColorNode(heatmapNode.GetScene()).GetID())
        display.SetInterpolate(True)
    setThreshold(heatmapNode, threshold)
    for composite in compositeNodes(heatmapNode.GetScene()):
        with slicer.util.NodeModify(composite):
            composite.SetBackgroundVolumeID(scanNode.GetID())
            composite.SetForegroundVolumeID(heatmapNode.GetID())
            composite.SetForegroundOpacity(float(np.clip(opacity, 0.0, 1.0)))


def setThreshold(heatmapNode, threshold: float) -> float:
    """Hide residuals below ``threshold`` and spread the colours over [threshold, 1].

    Returns the threshold used (clipped to [0.001, 1]).
    """
    threshold = float(np.clip(threshold, MIN_THRESHOLD, 1.0))
    display = heatmapNode.GetDisplayNode()
    with slicer.util.NodeModify(display):
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(threshold, max(1.0, threshold + 1e-3))
        display.AutoThresholdOff()
        display.SetThreshold(threshold, UPPER_THRESHOLD)
        display.ApplyThresholdOn()
    return threshold


def setOpacity(opacity: float, scene=None) -> float:
    """Foreground (heat) opacity in every slice view; returns the value used, in [0, 1]."""
    opacity = float(np.clip(opacity, 0.0, 1.0))
    for composite in compositeNodes(scene or slicer.mrmlScene):
        composite.SetForegroundOpacity(opacity)
    return opacity


def hideHeatmap(heatmapNode) -> None:
    """Remove ``heatmapNode`` from the foreground of every slice view that shows it."""
    for composite in compositeNodes(heatmapNode.GetScene()):
        if composite.GetForegroundVolumeID() == heatmapNode.GetID():
            composite.SetForegroundVolumeID(None)


def peakRas(heatmapNode, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """RAS world position (mm, (3,)) of the voxel with the largest residual.

    ``mask``: optional ``[k, j, i]`` boolean array restricting the search (e.g. one side).
    """
    array = slicer.util.arrayFromVolume(heatmapNode)
    if mask is not None:
        array = np.where(mask, array, -np.inf)
    k, j, i = np.unravel_index(int(np.argmax(array)), array.shape)
    return (volumeIjkToWorld(heatmapNode) @ np.array([i, j, k, 1.0]))[:3]


def jumpSlicesToRas(ras, scene=None, centered: bool = True) -> None:
    """Move every slice view so it passes through ``ras`` (and centre the view on it)."""
    scene = scene or slicer.mrmlScene
    mode = (slicer.vtkMRMLSliceNode.CenteredJumpSlice if centered
            else slicer.vtkMRMLSliceNode.OffsetJumpSlice)
    r, a, s = (float(v) for v in np.asarray(ras, float).ravel()[:3])
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, mode)


def compositeNodes(scene) -> list:
    """The slice composite nodes of ``scene`` (one per slice view)."""
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    nodes.UnRegister(None)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
