"""Crops: exact inversion, mirroring, rotated ROIs, coverage errors, intensity profiles."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.images import oblique_image, rotation
from paranasal_ssl.config import CropConfig, IntensityConfig
from paranasal_ssl.crops import crop_geometry, extract_crop, normalise, paste, uncrop
from paranasal_ssl.errors import InputError
from paranasal_ssl.geometry import SinusROI, ras_to_lps
from paranasal_ssl.scan_io import image_from_array


def aligned_scan(shape=(40, 50, 60), seed=0):
    rng = np.random.default_rng(seed)
    return image_from_array(rng.normal(size=shape).astype(np.float32), (1, 1, 1), (3, -4, 5))


def voxel_corner_roi(image, index_ijk, size=(20, 20, 20)):
    """ROI whose centre sits between voxels so an even-shaped 1 mm crop lands on the grid."""
    c_lps = np.array(image.TransformIndexToPhysicalPoint(index_ijk)) + 0.5
    return SinusROI.from_values(ras_to_lps(c_lps), size)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("interp", ["nearest", "linear"])
def test_crop_then_uncrop_returns_original_region_exactly(side, interp):
    image = aligned_scan()
    roi = voxel_corner_roi(image, (30, 25, 20))
    cfg = CropConfig(shape=16, spacing_mm=1.0, interpolation=interp)
    crop, geom = extract_crop(image, roi, cfg, side, pad_value=0.0)
    values, box = uncrop(crop, geom, image, interpolation=interp)
    inside = values != 0
    assert inside.sum() == 16 ** 3
    original = sitk.GetArrayFromImage(image)[box]
    np.testing.assert_allclose(values[inside], original[inside], atol=1e-5)


def test_right_crop_is_mirrored_left_right():
    image = aligned_scan()
    roi = voxel_corner_roi(image, (30, 25, 20))
    cfg = CropConfig(shape=16)
    left, _ = extract_crop(image, roi, cfg, "left", 0.0)
    right, geom = extract_crop(image, roi, cfg, "right", 0.0)
    assert geom.mirrored
    np.testing.assert_array_equal(right, left[:, :, ::-1])
    no_mirror, _ = extract_crop(image, roi, CropConfig(shape=16, mirror_right=False), "right", 0.0)
    np.testing.assert_array_equal(no_mirror, left)


def test_crop_axes_are_superior_anterior_right_whatever_the_storage_direction():
    """The same anatomy stored with different direction matrices gives the same crop."""
    k, j, i = np.meshgrid(np.arange(30), np.arange(30), np.arange(30), indexing="ij")
    # value encodes LPS position: x (L) dominant, y (P) middle, z (S) small
    base = image_from_array((i * 100 + j * 10 + k).astype(np.float32), (1, 1, 1), (0, 0, 0))
    flipped = sitk.Flip(base, [True, True, False])  # stored RAS-like, same physical content
    np.testing.assert_allclose(flipped.GetDirection(), [-1, 0, 0, 0, -1, 0, 0, 0, 1])
    roi = SinusROI.from_values(ras_to_lps([14.5, 14.5, 14.5]), [10, 10, 10])
    cfg = CropConfig(shape=8)
    a, _ = extract_crop(base, roi, cfg, "left", 0.0)
    b, _ = extract_crop(flipped, roi, cfg, "left", 0.0)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # axis 2 (i) runs toward patient Right = decreasing LPS x: values drop by 100 per step
    assert np.allclose(np.diff(a, axis=2), -100)
    assert np.allclose(np.diff(a, axis=1), -10)  # j toward Anterior = decreasing LPS y
    assert np.allclose(np.diff(a, axis=0), 1)  # k toward Superior


def test_rotated_roi_samples_along_its_axes():
    k, j, i = np.meshgrid(np.arange(40), np.arange(40), np.arange(40), indexing="ij")
    image = image_from_array((k * 1.0).astype(np.float32), (1, 1, 1), (0, 0, 0))  # value = S mm
    tilt = rotation(0, 30.0)  # ROI tilted 30 degrees about the R axis
    roi = SinusROI.from_values(ras_to_lps([20, 20, 20]), [10, 10, 10], tilt)
    crop, geom = extract_crop(image, roi, CropConfig(shape=8), "left", 0.0)
    # along crop axis j the superior coordinate grows by sin(30 deg) per mm
    step = np.diff(crop, axis=1)[2:6, 2:6, 2:6]
    np.testing.assert_allclose(step, np.sin(np.deg2rad(30)), atol=1e-4)
    values, box = uncrop(np.ones_like(crop), geom, image)
    assert values.max() == pytest.approx(1.0) and values.sum() > 0.8 * 8 ** 3


def test_uncrop_on_oblique_anisotropic_scan_is_close():
    image = oblique_image(shape=(30, 60, 60), spacing=(0.6, 0.6, 1.2), dtype=np.float32)
    smooth = sitk.SmoothingRecursiveGaussian(image, 3.0)  # band-limited content
    centre = smooth.TransformContinuousIndexToPhysicalPoint([30, 30, 15])
    roi = SinusROI.from_values(ras_to_lps(centre), [16, 16, 16])
    cfg = CropConfig(shape=16, spacing_mm=0.8)
    crop, geom = extract_crop(smooth, roi, cfg, "right", 0.0)
    values, box = uncrop(crop, geom, smooth)
    full = np.zeros(sitk.GetArrayViewFromImage(smooth).shape, np.float32)
    paste(full, values, box, mode="set")
    again, _ = extract_crop(image_from_array(full, smooth.GetSpacing(), smooth.GetOrigin(),
                                             smooth.GetDirection()), roi, cfg, "right", 0.0)
    core = (slice(3, -3),) * 3
    rel = np.abs(again[core] - crop[core]).mean() / np.abs(crop[core]).mean()
    assert rel < 0.05


def test_roi_outside_scan_is_refused_with_side_and_position():
    image = aligned_scan()
    roi = SinusROI.from_values([500.0, 0.0, 0.0], [20, 20, 20])
    with pytest.raises(InputError) as err:
        extract_crop(image, roi, CropConfig(shape=16), "left", 0.0, source="scan.nii.gz")
    text = str(err.value)
    assert "scan.nii.gz" in text and "left ROI" in text and "outside the scan" in text


@pytest.mark.parametrize("size", [[0, 10, 10], [10, -1, 10], [np.nan, 1, 1]])
def test_zero_or_invalid_roi_size_refused(size):
    with pytest.raises(InputError, match="ROI size"):
        SinusROI.from_values([0, 0, 0], size, source="manifest.csv")


def test_fov_roi_mode_scales_spacing_to_roi():
    geom = crop_geometry(SinusROI.from_values([0, 0, 0], [30, 48, 40]),
                         CropConfig(shape=16, fov="roi"), "left")
    assert geom.spacing == pytest.approx(3.0)


def test_jitter_offset_moves_the_crop_in_ras():
    roi = SinusROI.from_values([10, 20, 30], [20, 20, 20])
    g0 = crop_geometry(roi, CropConfig(shape=16), "left")
    g1 = crop_geometry(roi, CropConfig(shape=16), "left", offset_mm=(1.0, 0, 0))
    # +1 mm along R is -1 mm along LPS x
    np.testing.assert_allclose(np.subtract(g1.origin_lps, g0.origin_lps), [-1, 0, 0], atol=1e-9)


def test_ct_window_and_mri_percentiles():
    ct = normalise(np.array([-2000, -1000, -200, 600, 3000], np.float32),
                   IntensityConfig(modality="ct", ct_window_hu=[-1000, 600]))
    np.testing.assert_allclose(ct, [0, 0, 0.5, 1, 1])
    rng = np.random.default_rng(0)
    mri = normalise(rng.uniform(100, 900, size=10000), IntensityConfig(modality="mri"))
    assert mri.min() == 0 and mri.max() == 1
    assert 0.45 < np.median(mri) < 0.55
    assert (mri == 1).mean() == pytest.approx(0.01, abs=0.002)


def test_the_strongest_residual_is_in_the_box_or_at_its_centre_when_there_is_none():
    """A heatmap crop mapped back onto an oblique scan: its maximum is found where the crop put
    it; an all-zero heatmap has no strongest residual, so the box centre stands in (the argmax
    of zeros was the corner of the crop's bounding box, where Slicer's jump went)."""
    from paranasal_ssl.inference import strongest_residual

    image = oblique_image(shape=(40, 50, 60), spacing=(1.0, 1.0, 1.0))
    roi = SinusROI.from_values(
        ras_to_lps(image.TransformContinuousIndexToPhysicalPoint((30, 25, 20))), (20, 20, 20))
    cfg = CropConfig(shape=16, spacing_mm=2.0)
    _, geom = extract_crop(image, roi, cfg, "left", pad_value=0.0)
    heat = np.zeros((16, 16, 16), np.float32)
    values, box = uncrop(heat, geom, image)
    peak_lps, value = strongest_residual(values, box, image, roi)
    assert value == 0.0
    np.testing.assert_allclose(ras_to_lps(peak_lps), roi.center)
    heat[11, 4, 9] = 1.0  # one hot crop voxel: the peak lies within a crop voxel of it
    values, box = uncrop(heat, geom, image)
    peak_lps, value = strongest_residual(values, box, image, roi)
    hot_lps = geom.points_lps(np.array([[9, 4, 11]]))[0]
    assert value > 0 and np.linalg.norm(np.asarray(peak_lps) - hot_lps) < 2.0 * np.sqrt(3)
