"""Heatmap display: colour node, threshold, opacity, pixel-level slice blend, jump to the peak."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from helpers.images import rotation
from ParanasalSSLLib import heatmap_display as heat
from ParanasalSSLLib import mrml_bridge as bridge

SHAPE = (24, 60, 50)  # [k, j, i]


@pytest.fixture
def scanAndHeat(slicerApp):
    """An anisotropic, slightly oblique CT-like scan and a residual map with a hot box, a faint
    box below the threshold and zeros elsewhere."""
    k, j, i = np.indices(SHAPE)
    scanArray = (-1000 + 30 * i + 7 * j + (k % 5) * 40).astype(np.int16)
    ijkToRas = np.eye(4)
    ijkToRas[:3, :3] = rotation(2, 10.0) @ np.diag([0.8, 0.9, 1.6])
    ijkToRas[:3, 3] = [-20.0, -25.0, -15.0]
    scan = slicer.util.addVolumeFromArray(scanArray, ijkToRAS=ijkToRas, name="scan")
    scan.GetDisplayNode().AutoWindowLevelOff()
    scan.GetDisplayNode().SetWindowLevelMinMax(-1000, 1000)
    residual = np.zeros(SHAPE, np.float32)
    residual[8:16, 20:40, 15:35] = 0.9  # hot
    residual[8:16, 45:55, 5:12] = 0.3  # below the threshold used below
    residual[12, 30, 25] = 1.0  # the single strongest voxel
    heatNode = bridge.addVolumeLike(scan, residual, "residual")
    return scan, heatNode, residual


def _voxelOfPixels(sliceNode, volumeNode, rows, cols):
    """[k, j, i] voxel index (rounded) shown at each pixel of the rendered slice."""
    xyToRas = slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS())
    y, x = np.mgrid[0:rows, 0:cols]
    xy = np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
    ijk = np.linalg.inv(bridge.volumeIjkToWorld(volumeNode)) @ (xyToRas @ xy)
    return np.round(ijk[:3]).astype(int).T[:, ::-1].reshape(rows, cols, 3)


def test_heat_colour_table_is_built_in_code_and_found_again(slicerApp):
    node = heat.heatColorNode()
    assert node.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    node.GetColor(0, first)
    node.GetColor(255, last)
    assert first[2] > first[1] and sum(first[:3]) > 0.3  # visible purple, not black
    assert last[0] > 0.95 and last[1] > 0.95  # pale yellow top
    assert heat.heatColorNode() is node  # one table per scene


def test_display_settings_follow_threshold_and_opacity(slicerApp, scanAndHeat):
    scan, heatNode, _ = scanAndHeat
    heat.showHeatmap(heatNode, scan, threshold=0.5, opacity=0.6)
    display = heatNode.GetDisplayNode()
    assert display.GetColorNodeID() == heat.heatColorNode().GetID()
    assert display.GetApplyThreshold()
    assert display.GetLowerThreshold() == pytest.approx(0.5)
    assert display.GetWindowLevelMin() == pytest.approx(0.5)
    assert display.GetWindowLevelMax() == pytest.approx(1.0)
    for name in ("Red", "Yellow", "Green"):
        composite = slicerApp.sliceLogics[name].GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == scan.GetID()
        assert composite.GetForegroundVolumeID() == heatNode.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.6)
    assert heat.setThreshold(heatNode, 0.0) == pytest.approx(heat.MIN_THRESHOLD)
    assert heat.setOpacity(1.7) == 1.0
    heat.hideHeatmap(heatNode)
    assert slicerApp.sliceLogics["Red"].GetSliceCompositeNode().GetForegroundVolumeID() is None


@pytest.mark.parametrize("opacity", [1.0, 0.5])
def test_slice_blend_shows_heat_above_threshold_and_the_scan_unchanged_below(
        slicerApp, scanAndHeat, opacity):
    scan, heatNode, residual = scanAndHeat
    red = slicerApp.sliceLogics["Red"]
    heat.showHeatmap(heatNode, scan, threshold=0.5, opacity=opacity)
    red.FitSliceToBackground()
    heat.jumpSlicesToRas((bridge.volumeIjkToWorld(scan) @ [25, 30, 12, 1.0])[:3])
    blended = slicerApp.renderSlice("Red")
    red.GetSliceCompositeNode().SetForegroundVolumeID(None)
    scanOnly = slicerApp.renderSlice("Red")

    rows, cols = blended.shape[:2]
    kji = _voxelOfPixels(red.GetSliceNode(), scan, rows, cols)
    inGrid = np.all((kji >= 1) & (kji < np.array(SHAPE) - 1), axis=2)
    kc, jc, ic = [np.clip(kji[..., d], 0, SHAPE[d] - 1) for d in range(3)]
    # a pixel counts as hot/cold only if its whole 3x3x3 voxel neighbourhood agrees
    # (linear interpolation blends values at the edges of the boxes)
    neighbourhoodMax = np.max([np.roll(residual, s, axis=a) for a in range(3)
                               for s in (-1, 0, 1)], axis=0)
    neighbourhoodMin = np.min([np.roll(residual, s, axis=a) for a in range(3)
                               for s in (-1, 0, 1)], axis=0)
    hot = inGrid & (neighbourhoodMin[kc, jc, ic] >= 0.9) & (neighbourhoodMax[kc, jc, ic] <= 0.9)
    cold = inGrid & (neighbourhoodMax[kc, jc, ic] < 0.5)
    faint = cold & np.isclose(residual[kc, jc, ic], 0.3)
    assert hot.sum() > 100 and cold.sum() > 1000 and faint.sum() > 20

    # below the threshold (zeros and the faint 0.3 box): the scan, bit for bit
    np.testing.assert_array_equal(blended[cold], scanOnly[cold])
    # above it: the heat colour for 0.9 on a window [0.5, 1], mixed with the scan by the opacity
    expected = heat.heatColors()[int(round((0.9 - 0.5) / 0.5 * 255))] * 255
    mixed = opacity * expected + (1 - opacity) * scanOnly[hot][:, :3]
    np.testing.assert_allclose(blended[hot][:, :3], mixed, atol=3)
    assert (blended[hot][:, 0] > blended[hot][:, 2]).all()  # hot = red dominates blue


def test_jump_to_strongest_residual_puts_every_view_through_the_peak(slicerApp, scanAndHeat):
    scan, heatNode, residual = scanAndHeat
    heat.showHeatmap(heatNode, scan, threshold=0.5, opacity=1.0)
    peak = heat.peakRas(heatNode)
    np.testing.assert_allclose(peak, (bridge.volumeIjkToWorld(scan) @ [25, 30, 12, 1.0])[:3])
    heat.jumpSlicesToRas(peak)
    for name, logic in slicerApp.sliceLogics.items():
        sliceToRas = slicer.util.arrayFromVTKMatrix(logic.GetSliceNode().GetSliceToRAS())
        normal, origin = sliceToRas[:3, 2], sliceToRas[:3, 3]
        assert abs(np.dot(peak - origin, normal)) < 1e-6, name  # the plane holds the peak
        np.testing.assert_allclose(origin, peak, atol=1e-6)  # and the view is centred on it
    # restricted to a mask, the peak is the strongest voxel inside the mask
    mask = np.zeros(SHAPE, bool)
    mask[8:16, 45:55, 5:12] = True
    inMask = heat.peakRas(heatNode, mask)
    k, j, i = np.argwhere(mask)[0]
    np.testing.assert_allclose(inMask, (bridge.volumeIjkToWorld(scan) @ [i, j, k, 1.0])[:3])
