"""The real head CT from Debian's invesalius-examples: both maxillary sinuses crop as air."""

from __future__ import annotations

import numpy as np
import pytest

from paranasal_ssl.config import CropConfig, IntensityConfig
from paranasal_ssl.crops import extract_crop, normalise
from paranasal_ssl.datasets.cranium import find_cranium, load_cranium
from paranasal_ssl.geometry import SinusROI, lps_to_ras

# Sinus centres (index i, j, k) = centroids of the two air cavities lateral to the nasal cavity
# in slices 14-30 (about 3.6 and 3.8 mL of air). Column 0 is taken as the patient's right.
RIGHT_IJK = (109.5, 175.0, 22.0)
LEFT_IJK = (155.0, 180.5, 22.5)


@pytest.fixture(scope="module")
def cranium():
    path = find_cranium()
    assert path is not None, "Cranium.inv3 missing: run scripts/fetch_cranium.sh (CI does)"
    return load_cranium(path)


def roi_at(image, ijk):
    centre = lps_to_ras(image.TransformContinuousIndexToPhysicalPoint(ijk))
    return SinusROI.from_values(centre, [25, 35, 30])


def test_cranium_geometry_and_units(cranium):
    assert cranium.GetSize() == (256, 256, 108)
    np.testing.assert_allclose(cranium.GetSpacing(), [0.957, 0.957, 1.5], atol=1e-3)
    right = roi_at(cranium, RIGHT_IJK).center
    left = roi_at(cranium, LEFT_IJK).center
    assert right[0] > 0 > left[0]  # RAS: right sinus at +R
    assert 40 < np.linalg.norm(right - left) < 60  # sinus centres ~5 cm apart


@pytest.mark.parametrize("shape, spacing", [(32, 2.0), (64, 1.0)])
def test_both_maxillary_sinuses_crop_mostly_air(cranium, shape, spacing):
    cfg = CropConfig(shape=shape, spacing_mm=spacing)
    crops = {}
    for side, ijk in (("right", RIGHT_IJK), ("left", LEFT_IJK)):
        crop, _ = extract_crop(cranium, roi_at(cranium, ijk), cfg, side, pad_value=-1024)
        half = max(1, round(4 / spacing))  # the central 8 mm cube (the sinuses are small)
        centre = crop[(slice(shape // 2 - half, shape // 2 + half),) * 3]
        assert (centre < -500).mean() > 0.8, f"{side} sinus centre is not air"
        assert (crop > 250).mean() > 0.02  # bony walls and maxilla around it
        crops[side] = normalise(crop, IntensityConfig(modality="ct"))
    # mirrored right looks like left (bilateral symmetry) more than unmirrored right does
    a, b = crops["left"].ravel(), crops["right"].ravel()
    mirrored_corr = np.corrcoef(a, b)[0, 1]
    unmirrored_corr = np.corrcoef(a, crops["right"][:, :, ::-1].ravel())[0, 1]
    assert mirrored_corr > unmirrored_corr + 0.1
