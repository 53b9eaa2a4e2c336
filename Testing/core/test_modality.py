"""One modality rule for prediction and ROI suggestion: CT and MRI phantoms, the real head CT,
the same head in MRI-like contrast, and a tight crop of the CT."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.tiny import synth
from paranasal_ssl import inference, roi_suggest
from paranasal_ssl.datasets.cranium import find_cranium, load_cranium
from paranasal_ssl.errors import InputError
from paranasal_ssl.inference import predict_scan
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.modality import air_fraction, detect_modality
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.phantom import preset
from paranasal_ssl.phantom.cohort import build_case
from paranasal_ssl.scan_io import image_from_array, read_scan


@pytest.fixture(scope="module")
def cranium() -> sitk.Image:
    path = find_cranium()
    assert path is not None, "real head CT missing: run scripts/fetch_cranium.sh"
    return load_cranium(path)


def _phantom(modality: str, sequence: str = "flair") -> sitk.Image:
    cfg = preset("easy")
    cfg.modality = modality
    cfg.mri.sequence = sequence
    case = build_case(cfg, 1)
    g = case.geometry
    return image_from_array(case.image, g.spacing, g.origin, g.direction_flat())


def test_prediction_and_roi_suggestion_share_one_detector():
    assert inference.detect_modality is detect_modality
    assert roi_suggest.detect_modality is detect_modality
    assert not hasattr(roi_suggest, "guess_modality")


@pytest.mark.parametrize("modality,sequence", [("ct", "flair"), ("mri", "flair"),
                                               ("mri", "t1"), ("mri", "t2")])
def test_phantoms(modality, sequence):
    assert detect_modality(_phantom(modality, sequence)) == modality


def test_the_real_head_ct_its_mri_like_contrast_and_a_tight_crop(cranium):
    assert detect_modality(cranium) == "ct" and air_fraction(cranium) > 0.3
    hu = sitk.GetArrayFromImage(cranium)
    mri = np.select([hu < -400, hu < -30, hu < 200], [5.0, 700.0, 400.0], 60.0)
    mri = (mri + np.random.default_rng(0).normal(0, 15, mri.shape)).astype(np.float32)
    image = sitk.GetImageFromArray(mri)
    image.CopyInformation(cranium)
    assert detect_modality(image) == "mri" and air_fraction(image) == 0.0
    # the sinus region alone (slices 14-30, facial half): still plenty of air
    assert detect_modality(cranium[80:180, 150:220, 14:30]) == "ct"


def test_predict_refuses_a_scan_of_another_modality(trained_run, tmp_path):
    run, _ = trained_run
    mri = synth(tmp_path / "mri", 1, "--modality", "mri")
    rec = read_manifest(mri)[0]
    with pytest.raises(InputError, match=r"looks like MRI \(0.0% of voxels below -500, "
                       r"intensities .*\) but the model was trained on CT"):
        predict_scan(read_scan(rec.image), {rec.side: rec.roi}, load_model(run.dir, "cpu"))


def test_a_ct_stored_without_its_rescale_intercept_is_told_so(trained_run, tiny_cohort):
    run, _ = trained_run
    rec = read_manifest(tiny_cohort)[0]
    stored = sitk.Cast(read_scan(rec.image), sitk.sitkInt16) + 1024  # raw values: air near 0
    with pytest.raises(InputError, match="Hounsfield units") as error:
        predict_scan(stored, {rec.side: rec.roi}, load_model(run.dir, "cpu"), source="raw.nrrd")
    assert "intensities 0 to" in str(error.value) and "raw.nrrd [modality]" in str(error.value)
