"""The phantom cohort generator, checked through real files (``synth``: test_phantom_cli.py).

Small cohorts (a few cases, 2 mm voxels) keep the file fast; every check reads what was written
with SimpleITK, or the in-memory case where a test needs the exact painted truth.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from paranasal_ssl.anomalies import ANOMALY_CODES
from paranasal_ssl.config import CropConfig
from paranasal_ssl.crops import extract_crop
from paranasal_ssl.geometry import RAS_TO_LPS
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.phantom import PhantomConfig, preset
from paranasal_ssl.phantom.cohort import build_case, generate_cohort, side_roi
from paranasal_ssl.phantom.findings import reader_label, sample_side
from paranasal_ssl.scan_io import image_from_array, read_scan

REPORTABLE_CODES = {ANOMALY_CODES[k] for k in ANOMALY_CODES if k != "mucosal_thickening"}


def small_config(**changes) -> PhantomConfig:
    cfg = preset("realistic")
    cfg.cases = 6
    cfg.seed = 11
    cfg.grid.spacing_mm = [2.0, 2.0, 2.0]
    cfg.grid.render_max_mm = 2.0  # paint at 2 mm directly (no sub-voxels): faster tests
    cfg.label_noise_scale = 0.0  # labels equal the truth unless a test turns noise on
    cfg.ct.cbct = 0.0  # cone-beam HU offsets (up to +-80 HU) would blur the HU range checks
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg.validate()


def forced(kind: str, modality: str = "ct", realism: str = "easy", **grid) -> PhantomConfig:
    """One 1 mm case whose two sides both have ``kind`` and nothing else."""
    cfg = preset(realism)
    cfg.cases, cfg.modality, cfg.anomaly_fraction = 1, modality, 1.0
    cfg.findings.type_weights = {kind: 1.0}
    cfg.findings.second_finding = 0.0
    for key, value in grid.items():
        setattr(cfg.grid, key, value)
    return cfg.validate()


@pytest.fixture(scope="module")
def ct_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct_cohort")
    records = generate_cohort(small_config(), out, workers=1)
    return out, records


def roi_box(image: sitk.Image, roi) -> tuple:
    """``[k, j, i]`` slices of the voxels inside the RAS ROI's bounding box."""
    idx = np.array([image.TransformPhysicalPointToContinuousIndex(
        [float(v) for v in RAS_TO_LPS @ c]) for c in roi.corners_ras()])
    lo = np.maximum(np.floor(idx.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(0)).astype(int) + 1, np.asarray(image.GetSize()))
    return tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))


def world_ras(image: sitk.Image, kji: np.ndarray) -> np.ndarray:
    """(N, 3) ``[k, j, i]`` voxel indices -> RAS mm."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    ijk = np.asarray(kji, float)[:, ::-1]
    lps = np.asarray(image.GetOrigin()) + (ijk * image.GetSpacing()) @ d.T
    return lps * np.array([-1.0, -1.0, 1.0])


# --- files, manifest, determinism ---------------------------------------------------------------

def test_cohort_files_manifest_and_geometry(ct_cohort):
    out, records = ct_cohort
    rows = read_manifest(out / "manifest.csv", require_labels=True)
    assert len(rows) == 12 and {r.side for r in rows} == {"left", "right"}
    assert {r.subject_id for r in rows} == {f"subj{i:04d}" for i in range(6)}
    for r in rows:
        assert r.image.is_file() and r.mask.is_file() and r.modality == "ct"
        assert r.roi.size.min() > 15 and r.roi.size.max() < 80
        assert float(r.extra["noise_sd"]) > 0 and r.extra["true_label"] in ("0", "1")
    image = read_scan(rows[0].image)
    assert image.GetSpacing() == (2.0, 2.0, 2.0)
    assert np.linalg.norm(image.GetOrigin()) > 10  # a real, non-zero origin
    assert image.GetPixelID() == sitk.sitkInt16
    mask = sitk.ReadImage(str(rows[0].mask))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == image.GetSize()
    assert np.allclose(mask.GetOrigin(), image.GetOrigin())
    # The left sinus lies on the patient's left: smaller RAS x than the right one.
    by_side = {r.side: r for r in rows if r.case_id == "case0000"}
    assert by_side["left"].roi.center[0] < by_side["right"].roi.center[0] - 35


def test_same_seed_gives_identical_cases_whatever_the_workers(tmp_path):
    cfg = small_config(cases=3)
    a = generate_cohort(cfg, tmp_path / "one", workers=1)
    b = generate_cohort(cfg, tmp_path / "two", workers=2)
    for ra, rb in zip(a, b):
        for pa, pb in ((ra.image, rb.image), (ra.mask, rb.mask)):
            ia, ib = sitk.ReadImage(str(pa)), sitk.ReadImage(str(pb))
            assert np.array_equal(sitk.GetArrayViewFromImage(ia), sitk.GetArrayViewFromImage(ib))
            assert ia.GetOrigin() == ib.GetOrigin() and ia.GetDirection() == ib.GetDirection()
    text = [(tmp_path / d / "manifest.csv").read_text() for d in ("one", "two")]
    assert text[0] == text[1]
    # A case does not depend on how many cases the cohort has; another seed differs.
    bigger = build_case(small_config(cases=50), 2)
    again = build_case(cfg, 2)
    assert np.array_equal(bigger.image, again.image) and np.array_equal(bigger.mask, again.mask)
    other = build_case(small_config(cases=3, seed=12), 2)
    assert not np.array_equal(other.image, again.image)


def test_ct_and_mri_of_one_seed_show_the_same_head():
    ct = build_case(small_config(), 1)
    mri = build_case(small_config(modality="mri"), 1)
    assert np.array_equal(ct.mask, mri.mask)
    for side in ("left", "right"):
        assert side_roi(ct, side) == side_roi(mri, side)


# --- labels and masks ---------------------------------------------------------------------------

def test_labels_match_the_masks(ct_cohort):
    out, _ = ct_cohort
    rows = read_manifest(out / "manifest.csv")
    assert 0 < sum(r.label for r in rows) < len(rows)
    for r in rows:
        mask = sitk.ReadImage(str(r.mask))
        codes = set(np.unique(sitk.GetArrayViewFromImage(mask)[roi_box(mask, r.roi)])) - {0}
        assert codes == {ANOMALY_CODES[t] for t in r.anomaly_types}, r.key
        assert r.label == int(r.extra["true_label"])  # label noise is off here
        if r.label == 1:
            thick = r.extra["findings"].startswith("mucosal_thickening:")
            assert codes & REPORTABLE_CODES or (thick and float(r.extra["finding_size_mm"]) > 4)
        else:
            assert codes <= {ANOMALY_CODES["mucosal_thickening"]}
            assert bool(codes) == bool(r.extra["subthreshold_thickening_mm"])
            if codes:
                assert 2.0 <= float(r.extra["subthreshold_thickening_mm"]) <= 4.0


def test_label_noise_only_near_the_clinical_threshold():
    cfg = small_config(label_noise_scale=5.0)  # every near-threshold side flips
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(400):
        found = sample_side(rng, cfg, 1.7, anomalous=bool(rng.random() < 0.5))
        truth, label, reason = reader_label(rng, cfg, found)
        assert truth == int(any(f.reportable for f in found))
        if label != truth:
            flips += 1
            only = [f for f in found if f.kind == "mucosal_thickening"]
            if reason == "near_threshold":
                assert len(found) == 1 and 3.0 <= only[0].size_mm <= 5.0
            else:
                assert reason == "small_lesion_missed"
                assert all(f.size_mm < 5.0 for f in found if f.reportable)
    assert flips > 10
    quiet = small_config(label_noise_scale=0.0)
    for _ in range(200):
        found = sample_side(rng, quiet, 1.7, anomalous=True)
        truth, label, _ = reader_label(rng, quiet, found)
        assert truth == label == 1


def test_prevalence_follows_the_anomaly_fraction():
    rng = np.random.default_rng(1)
    for fraction in (0.25, 0.5):
        cfg = small_config(anomaly_fraction=fraction)
        truth = [reader_label(rng, cfg, sample_side(rng, cfg, 1.7, rng.random() < fraction))[0]
                 for _ in range(2000)]
        assert abs(np.mean(truth) - fraction) < 0.04


# --- anatomy and intensities --------------------------------------------------------------------

def test_ct_sinus_is_air_where_the_manifest_says(ct_cohort):
    out, _ = ct_cohort
    rows = read_manifest(out / "manifest.csv")
    centre_crop = CropConfig(shape=8, spacing_mm=1.25)  # a 10 mm cube at the ROI centre
    whole = CropConfig(shape=32, fov="roi")
    checked = 0
    volumes = []
    for r in rows:
        image = read_scan(r.image)
        volumes.append(float(r.extra["sinus_volume_ml"]))
        box, _ = extract_crop(image, r.roi, whole, r.side, pad_value=-1024.0)
        assert np.percentile(box, 99) > 250  # bony walls around the sinus
        if r.anomaly_types or r.extra["inflamed_air"] == "1":
            continue
        # A pyramid fills about a third of its bounding box, and the box centre lies a few mm
        # inside the cavity: the centre of the crop is air, the whole ROI crop partly.
        crop, _ = extract_crop(image, r.roi, centre_crop, r.side, pad_value=-1024.0)
        if "hypoplasia" not in r.extra["normal_variants"]:  # small: its centre may be lining
            assert np.mean(crop < -500) > 0.35, r.key
            assert crop[3:5, 3:5, 3:5].mean() < -500, r.key  # the very centre is air
        assert 0.05 < np.mean(box < -500) < 0.6, r.key
        a = sitk.GetArrayViewFromImage(image)[roi_box(image, r.roi)]
        core = ndimage.binary_erosion(a < -500)  # away from partial-volume walls
        assert core.sum() > 10 and -1000 < np.median(a[core]) < -950, r.key  # about -976 HU
        # Air inside the ROI: the reported (bony) sinus volume minus the 1-3 mm lining over
        # ~40 cm2 of wall and the partial-volume rim of 2 mm voxels.
        air_ml = float(np.sum(a < -500)) * 8.0 / 1000.0
        assert 0.3 * volumes[-1] < air_ml < 1.05 * volumes[-1], r.key
        checked += 1
    assert checked >= 2
    assert all(2.0 < v < 40.0 for v in volumes)
    assert 10.0 < np.mean(volumes) < 22.0  # literature 15.7 +/- 5.3 mL


def test_sinus_volumes_follow_the_literature():
    from paranasal_ssl.phantom.anatomy import sample_subject
    from paranasal_ssl.phantom.cohort import case_rngs

    cfg = preset("realistic")
    g = np.arange(-40, 40, 1.25, dtype=np.float32)
    u, v, w = np.meshgrid(g, g, g, indexing="ij")
    vols = []
    for i in range(30):
        for sn in sample_subject(case_rngs(0, i)["anatomy"], cfg).sinuses.values():
            vols.append(float(np.sum(sn.sd(u, v, w) < 0)) * 1.25**3 / 1000.0)
    assert 13.5 < np.mean(vols) < 18.5 and 3.0 < np.std(vols) < 7.5


def test_ct_tissue_values():
    case = build_case(forced("complete_opacification"), 0)
    opaque = case.mask == ANOMALY_CODES["complete_opacification"]
    core = ndimage.binary_erosion(opaque, iterations=2)
    assert core.sum() > 1000
    assert 10 <= np.median(case.image[core]) <= 40  # soft-tissue opacity, ~29 HU
    assert case.image.max() > 1300  # teeth
    assert case.image.min() <= -990  # air outside the head


def test_fluid_level_is_horizontal_in_the_scanner():
    # Oblique storage and a rotated head: the surface must follow gravity, not the image axes.
    for position, up in (("supine", 1), ("upright", 2)):
        cfg = forced("air_fluid_level", realism="realistic", orientation="oblique",
                     patient_position=position)
        cfg.noise_scale = 0.0
        cfg.anatomy.head_rotation_sd_deg = 4.0
        cfg.variants.bony_septum = 0.0
        cfg.findings.fluid_depth_fraction = [0.3, 0.6]  # a surface wide enough to fit a plane
        case = build_case(cfg, 3)
        g = case.geometry
        image = image_from_array(case.image, g.spacing, g.origin, g.direction_flat())
        fluid = case.mask == ANOMALY_CODES["air_fluid_level"]
        air = case.image < -500
        # Fluid voxels touching sinus air along an image axis: the fluid surface.
        touch = np.zeros_like(fluid)
        for axis in range(3):
            for shift in (1, -1):
                touch |= np.roll(air, shift, axis)
        surface = world_ras(image, np.argwhere(fluid & touch))
        fl = world_ras(image, np.argwhere(fluid))
        air_pts = world_ras(image, np.argwhere(air))
        for side in ("left", "right"):
            roi = side_roi(case, side)

            def within(p, roi=roi):
                return p[np.all(np.abs(p - roi.center) < roi.size / 2, axis=1)]

            top = within(surface)
            assert len(top) > 30, (position, side)
            normal = np.linalg.svd(top - top.mean(0), full_matrices=False)[2][-1]
            assert abs(normal[up]) > 0.95, (position, side, normal)
            assert np.ptp(top[:, up]) < 3.0, (position, side)  # flat within the voxel staircase
            # The fluid is on the dependent side of the air (posterior when supine).
            assert within(fl)[:, up].mean() < within(air_pts)[:, up].mean(), (position, side)
            assert case.sides[side]["findings"][0].size_mm > 0


def test_mri_contrast_order():
    # Tissue regions from the noise-free CT of the same head (same seed, same anatomy).
    ref_cfg = forced("retention_cyst", realism="realistic")
    ref_cfg.findings.cyst_diameter_range_mm = [12.0, 20.0]
    ref_cfg.noise_scale = 0.0
    ct = build_case(ref_cfg, 0)

    def core(m):
        return ndimage.binary_erosion(m, iterations=1)

    regions = {"air": core(ct.image < -900), "fat": core((ct.image > -110) & (ct.image < -60)),
               "soft": core((ct.image > 35) & (ct.image < 60) & (ct.mask == 0)),
               "bone": ct.image > 1300,
               "cyst": core(ct.mask == ANOMALY_CODES["retention_cyst"])}
    assert all(m.sum() > 20 for m in regions.values())
    for sequence in ("flair", "t2", "t1"):
        cfg = forced("retention_cyst", modality="mri", realism="realistic")
        cfg.findings.cyst_diameter_range_mm = [12.0, 20.0]
        cfg.mri.sequence = sequence
        case = build_case(cfg, 0)
        assert np.array_equal(case.mask, ct.mask)
        img = case.image.astype(float)
        med = {name: float(np.median(img[m])) for name, m in regions.items()}
        top = np.percentile(img, 99)
        assert med["air"] < 0.1 * top and med["bone"] < 0.35 * top, (sequence, med)
        assert med["fat"] > med["soft"] > med["air"], (sequence, med)
        if sequence in ("t2", "flair"):
            assert med["cyst"] > 1.5 * med["soft"], (sequence, med)  # fluid and mucosa bright
        else:
            assert med["cyst"] < med["soft"], (sequence, med)  # T1: fluid dark


# --- orientation --------------------------------------------------------------------------------

def test_roi_stays_right_in_ras_whatever_the_storage_direction(tmp_path):
    centres = {}
    for orientation in ("lps", "ras", "oblique"):
        cfg = small_config(cases=2, anomaly_fraction=0.0)
        cfg.grid.orientation = orientation
        cfg.findings.incidental_thickening = 0.0
        out = tmp_path / orientation
        rows = generate_cohort(cfg, out, workers=1)
        image = read_scan(rows[0].image)
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        if orientation == "ras":
            assert np.allclose(direction, np.diag([-1, -1, 1]))
        elif orientation == "oblique":
            assert not np.allclose(np.abs(direction), np.eye(3), atol=0.05)
        else:
            assert np.allclose(direction, np.eye(3))
        for r in read_manifest(out / "manifest.csv"):
            crop, _ = extract_crop(read_scan(r.image), r.roi, CropConfig(shape=8, spacing_mm=1.25),
                                   r.side, pad_value=-1024.0)
            if "hypoplasia" not in r.extra["normal_variants"]:
                assert crop[3:5, 3:5, 3:5].mean() < -500, (orientation, r.key)  # centre is air
            assert np.mean(crop < -500) > 0.1, (orientation, r.key)
            centres.setdefault(r.key, []).append(r.roi.center)
    for key, points in centres.items():
        spread = np.ptp(np.asarray(points), axis=0)
        assert spread.max() < 3.0, (key, spread)  # same head, same place, any storage
