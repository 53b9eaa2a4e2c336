"""Is a scan CT or MRI? One cheap rule, shared by prediction (does the scan fit the model?) and
by the ROI suggestion (which contrast to look for).

CT stores Hounsfield units: air is about -1000 HU, and every head CT holds air (outside the
head, in the nasal cavity, the airways and any aerated sinus). MRI intensities are arbitrary
but never far below zero. So a scan is CT when a noticeable share of its voxels is air-like
(below -500). A CT cropped so tightly that it holds no air at all (a fully opacified sinus and
nothing else) reads as MRI; such a crop cannot be analysed anyway.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

AIR_BELOW = -500.0  # HU: well below fat (-100) and partial-volume mucosa, above air (-1000)
MIN_AIR_FRACTION = 0.01  # share of voxels; a head CT has 10-60 %
MAX_SAMPLES = 200_000  # voxels looked at, evenly strided over the whole volume


def air_fraction(image: sitk.Image) -> float:
    """Share of (sampled) voxels below ``AIR_BELOW``."""
    values = sitk.GetArrayViewFromImage(image).ravel()
    sample = values[:: max(1, values.size // MAX_SAMPLES)]
    return float(np.mean(sample < AIR_BELOW)) if sample.size else 0.0


def detect_modality(image: sitk.Image) -> str:
    """'ct' if at least ``MIN_AIR_FRACTION`` of the voxels are air in HU, else 'mri'."""
    return "ct" if air_fraction(image) >= MIN_AIR_FRACTION else "mri"


def modality_evidence(image: sitk.Image) -> str:
    """What ``detect_modality`` saw, for an error message: air share and intensity range."""
    values = sitk.GetArrayViewFromImage(image)
    return (f"{100 * air_fraction(image):.1f}% of voxels below {AIR_BELOW:g}, intensities "
            f"{float(values.min()):g} to {float(values.max()):g}")
