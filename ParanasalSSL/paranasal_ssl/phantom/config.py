"""``PhantomConfig``: every setting of the phantom cohort, with the domain fact behind it.

Saved as ``OUT/cohort_config.json`` (with the code version and command line) so a cohort can be
regenerated exactly. Distributions are written as small lists: ``[mean, sd]``, ``[low, high]``
(uniform) or ``[median, log_sd]`` (log-normal), as each field's comment says. Sources: the
project's domain notes (docs/domain.md) unless a comment says otherwise; figures marked
"assumed" are realism choices, not measurements, and are the knobs to tune.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List

from paranasal_ssl.anomalies import ANOMALY_CODES
from paranasal_ssl.errors import ConfigError

REALISM_PRESETS = ("easy", "realistic")
ORIENTATIONS = ("lps", "ras", "oblique", "mixed")
MRI_SEQUENCES = ("flair", "t1", "t2")


@dataclass
class GridConfig:
    """The scanned box and how it is stored."""

    # x, y, z voxel size (mm). Sinus CT is 0.4-0.6 mm in plane with 0.6-1 mm slices (older
    # scans 3 mm); population MRI about 1 mm isotropic. 1 mm keeps 200 cases under 2 minutes.
    spacing_mm: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    # L-R, A-P, S-I extent (mm): both sinuses (centres 5-6 cm apart, 25 mm wide), the orbits'
    # lower half above (sinus height 42-47 mm) and the tooth crowns below.
    fov_mm: List[float] = field(default_factory=lambda: [112.0, 96.0, 92.0])
    orientation: str = "lps"  # storage direction: lps (axial DICOM), ras, oblique, mixed
    oblique_max_deg: float = 12.0  # tilt of an oblique acquisition (gantry tilt is up to ~30)
    render_max_mm: float = 1.0  # thick slices are rendered as sub-slices of at most this, then
    # averaged: the slice profile that makes thin walls partial-volume on 3 mm slices
    psf_fwhm_mm: float = 0.8  # in-plane blur of the reconstruction kernel (assumed, bone kernel)
    world_offset_mm: float = 40.0  # head placed anywhere within +-this in the scanner (origin != 0)
    patient_position: str = "supine"  # CT/MRI: supine (fluid posterior); "upright" = dental CBCT


@dataclass
class AnatomyConfig:
    """Head and maxillary sinus anatomy, varied per subject and per side."""

    # Base pyramid size (CT, n=330: width 24-25, A-P 38-40, height 42-47 mm). Recesses and the
    # wall wobble add a few mm, so measured extents come out ~24 x 41 x 47 mm, volume ~16 mL.
    sinus_width_mm: float = 24.5
    sinus_ap_mm: float = 38.0
    sinus_height_mm: float = 43.5
    size_scale_sd: float = 0.09  # common scale per subject; with dim_cv gives ~15.7 +/- 5 mL
    dim_cv: float = 0.06  # independent per-dimension variation per subject
    asymmetry_cv: float = 0.05  # left vs right per dimension (asymmetric sinuses)
    apex_fraction: float = 0.08  # lateral apex face relative to the medial base: a nearly
    # pointed triangular pyramid (base on the nasal wall, apex into the zygoma) with a canine
    # fossa; with these axes its volume is ~16 mL, the literature's 15.7 mL (an ellipsoid with
    # the same axes would be ~22-24 mL)
    rounding_mm: float = 1.2  # rounded edges and corners of the pyramid
    shape_wobble_mm: float = 1.2  # smooth random bulges/dents of the walls (12-30 mm waves):
    # real sinuses differ in outline, not only in size (assumed amplitude)
    half_separation_mm: List[float] = field(default_factory=lambda: [28.0, 1.5])  # [mean, sd]:
    # sinus centres 5-6 cm apart
    wall_mm: Dict[str, float] = field(default_factory=lambda: {
        "anterior": 1.1, "posterolateral": 2.0, "medial": 1.2, "roof": 0.8, "floor": 1.6,
        "lateral": 2.0})  # anterior ~1.1, lateral ~2 mm; orbital floor thin (assumed 0.8)
    wall_cv: float = 0.2  # per-subject variation of every wall
    mucosa_mm: List[float] = field(default_factory=lambda: [1.7, 0.45])  # [mean, sd] normal
    # lining 1.6-1.8 mm; clipped to mucosa_max_mm (normal up to 3 mm, under 3 mm in 73%)
    mucosa_max_mm: float = 3.0
    head_rotation_sd_deg: float = 3.0  # slightly rotated head (a few degrees), per axis
    subcutaneous_fat_mm: List[float] = field(default_factory=lambda: [3.0, 10.0])  # uniform
    septal_deviation_mm: List[float] = field(default_factory=lambda: [0.0, 4.0])  # uniform


@dataclass
class VariantConfig:
    """Normal variants that resemble findings (probabilities per side unless stated)."""

    # Frequencies below are assumed (plausible adult figures; domain.md names the variants, not
    # their rates): they set how often normal anatomy mimics a finding.
    bony_septum: float = 0.25  # Underwood septa
    septum_height_mm: List[float] = field(default_factory=lambda: [3.0, 12.0])  # uniform
    deep_alveolar_recess: float = 0.3  # floor dips between the roots
    alveolar_recess_mm: List[float] = field(default_factory=lambda: [3.0, 8.0])
    deep_zygomatic_recess: float = 0.3  # apex reaches further into the zygoma
    zygomatic_recess_mm: List[float] = field(default_factory=lambda: [3.0, 7.0])
    root_protrusion: float = 0.3  # molar roots bulging into the floor (mimic small cysts)
    root_protrusion_mm: List[float] = field(default_factory=lambda: [1.0, 4.0])
    hypoplasia: float = 0.04  # hypoplastic sinus, with thicker walls
    hypoplasia_scale: List[float] = field(default_factory=lambda: [0.65, 0.85])
    missing_molars: float = 0.15  # per subject: an upper molar missing
    turbinate_swelling: List[float] = field(default_factory=lambda: [0.8, 1.3])  # nasal cycle
    dental_metal: float = 0.25  # per subject: metal fillings/crowns (CT streaks, MRI voids)
    metal_teeth: List[int] = field(default_factory=lambda: [1, 3])
    implant_fraction: float = 0.35  # of metal teeth: implants/posts up to the floor (assumed)


@dataclass
class FindingConfig:
    """Anomalies: which, how big, where."""

    # Relative frequency of the first finding of an anomalous side: thickening ~29%, polyps or
    # retention cysts ~32% (mostly cysts), the rest fluid and opacification (population MRI).
    type_weights: Dict[str, float] = field(default_factory=lambda: {
        "mucosal_thickening": 0.32, "retention_cyst": 0.24, "polyp": 0.10,
        "air_fluid_level": 0.10, "partial_opacification": 0.14, "complete_opacification": 0.10})
    second_finding: float = 0.2  # another finding on the same side (assumed)
    incidental_thickening: float = 0.3  # normal sides with a 2-4 mm (sub-threshold) thickening
    subthreshold_mm: List[float] = field(default_factory=lambda: [2.0, 4.0])  # uniform, total
    thickening_min_excess_mm: float = 0.3  # reportable lining = threshold + this + Exp(mean),
    thickening_excess_mean_mm: float = 3.0  # so most thickenings are subtle (4-7 mm), few thick
    thickening_max_mm: float = 15.0
    thickening_patterns: Dict[str, float] = field(default_factory=lambda: {
        "floor": 0.5, "circumferential": 0.3, "focal": 0.2})  # "often along the floor"
    thickening_wave_mm: float = 1.0  # irregular (lobulated) surface amplitude
    cyst_diameter_mm: List[float] = field(default_factory=lambda: [5.6, 0.45])  # [median,
    # log_sd]: mean about 6 mm; ~1/3 are subtle (under 5 mm)
    cyst_diameter_range_mm: List[float] = field(default_factory=lambda: [3.0, 20.0])  # 3-20 mm
    cyst_on_floor: float = 0.3  # floor in only about 30%
    polyp_diameter_mm: List[float] = field(default_factory=lambda: [8.0, 0.35])  # [median,
    # log_sd], clipped to 5-15 mm
    polyp_diameter_range_mm: List[float] = field(default_factory=lambda: [5.0, 15.0])
    polyp_lobes: List[int] = field(default_factory=lambda: [1, 3])  # may be lobulated
    fluid_depth_fraction: List[float] = field(default_factory=lambda: [0.12, 0.7])  # of the
    # sinus extent along gravity: "any height"
    partial_fraction: List[float] = field(default_factory=lambda: [0.25, 0.85])  # of the cavity
    complete_residual_air: float = 0.25  # a small air bubble left in an opacified sinus
    hyperdense_opacity: float = 0.1  # fungal-like opacity (mean ~64 HU, spots to ~435 HU)
    inflamed_air: float = 0.5  # inflamed sides whose air reads ~-840 HU instead of -976 (a
    # group mean; assumed that half the inflamed sinuses show it)


@dataclass
class LabelConfig:
    """From findings to reader labels. A side is anomalous if it has a reportable finding."""

    thickening_threshold_mm: float = 4.0  # over 4 mm reportable; 2-4 mm often incidental
    near_threshold_band_mm: float = 1.0  # thickening within +-this of the threshold is ambiguous
    near_threshold_flip: float = 0.2  # readers disagree on such sides (assumed rate)
    small_lesion_mm: float = 5.0  # cysts/polyps below this are easy to overlook
    small_lesion_miss: float = 0.15  # ... and are labelled normal this often (assumed rate)


@dataclass
class CTConfig:
    """Hounsfield units and CT acquisition effects."""

    # [mean, sd between subjects] HU. Air -976 (SD 5-7), inflamed air ~-840 (SD ~80), fat -50
    # to -100, mucosa/polyps 10-40 (polyps 10-18, opacity mean ~29), fluid ~0-20, compact bone
    # +250 to +1000 and more (here the solid value before partial volume), teeth enamel
    # ~2000-2950, dentin 1300-1900. Soft-tissue values for muscle, vitreous, lens: assumed.
    hu: Dict[str, List[float]] = field(default_factory=lambda: {
        "outside_air": [-1000.0, 0.0], "sinus_air": [-976.0, 6.0], "inflamed_air": [-840.0, 80.0],
        "nasal_air": [-985.0, 6.0], "fat": [-85.0, 10.0], "soft_tissue": [45.0, 5.0],
        "skin": [40.0, 5.0], "mucosa": [28.0, 6.0], "thickening": [25.0, 6.0],
        "polyp": [14.0, 3.0], "cyst": [15.0, 5.0], "fluid": [12.0, 5.0], "opacity": [29.0, 6.0],
        "fungal": [64.0, 10.0], "cortical_bone": [1400.0, 150.0], "cancellous_bone": [380.0, 60.0],
        "cartilage": [110.0, 15.0], "dentin": [1600.0, 120.0], "enamel": [2500.0, 200.0],
        "pulp": [40.0, 10.0], "vitreous": [10.0, 4.0], "lens": [110.0, 10.0],
        "metal": [3071.0, 0.0]})
    noise_sd_hu: List[float] = field(default_factory=lambda: [14.0, 0.4])  # [median, log_sd]
    # per scanner at 1 mm^3 (scaled by 1/sqrt(voxel volume)); assumed from typical sinus CT
    noise_correlation_voxels: float = 0.7  # CT noise grain (filtered back-projection)
    calibration_offset_hu: float = 4.0  # sd of a per-scanner HU offset
    calibration_scale: float = 0.015  # sd of a per-scanner HU gain
    cbct: float = 0.1  # dental cone-beam CT: more noise and unreliable HU
    cbct_noise_factor: float = 2.5
    cbct_offset_hu: float = 80.0
    streak_hu: List[float] = field(default_factory=lambda: [150.0, 700.0])  # uniform amplitude
    clip_hu: List[float] = field(default_factory=lambda: [-1024.0, 3071.0])  # 12-bit CT range


@dataclass
class MRIConfig:
    """MRI-like contrast and acquisition effects (arbitrary units, stored x ``scale``)."""

    sequence: str = "flair"  # flair (the paper's population FLAIR), t1, t2 or "mixed"
    # Relative signal per tissue: air dark on every sequence; mucosa T1 intermediate, T2/FLAIR
    # bright; fluid and cysts T2 bright, T1 dark (brighter when protein-rich); polyps T2 bright,
    # T1 intermediate to dark; cortical bone and teeth dark; fat bright-ish; vitreous suppressed
    # on FLAIR. Values are assumed, only their order matters.
    signal: Dict[str, Dict[str, float]] = field(default_factory=lambda: {
        "t1": {"air": 0.0, "fat": 0.9, "soft_tissue": 0.35, "skin": 0.5, "mucosa": 0.42,
               "thickening": 0.4, "polyp": 0.3, "cyst": 0.22, "fluid": 0.18, "opacity": 0.35,
               "cortical_bone": 0.04, "cancellous_bone": 0.7, "cartilage": 0.3, "tooth": 0.02,
               "vitreous": 0.1, "lens": 0.55},
        "t2": {"air": 0.0, "fat": 0.6, "soft_tissue": 0.3, "skin": 0.4, "mucosa": 0.72,
               "thickening": 0.8, "polyp": 0.82, "cyst": 0.95, "fluid": 0.97, "opacity": 0.85,
               "cortical_bone": 0.04, "cancellous_bone": 0.45, "cartilage": 0.3, "tooth": 0.02,
               "vitreous": 1.0, "lens": 0.3},
        "flair": {"air": 0.0, "fat": 0.62, "soft_tissue": 0.33, "skin": 0.45, "mucosa": 0.7,
                  "thickening": 0.75, "polyp": 0.72, "cyst": 0.8, "fluid": 0.68, "opacity": 0.78,
                  "cortical_bone": 0.04, "cancellous_bone": 0.5, "cartilage": 0.3,
                  "tooth": 0.02, "vitreous": 0.08, "lens": 0.4}})
    contrast_jitter: float = 0.08  # per-subject log-sd of each tissue's signal (varying contrast)
    bias_amplitude: float = 0.2  # smooth multiplicative bias field, roughly +-20% (coil)
    noise_sigma: List[float] = field(default_factory=lambda: [0.03, 0.35])  # [median, log_sd]
    # Rician noise sigma relative to a signal of 1 at 1 mm^3
    ghost: float = 0.3  # subjects with motion ghosting along the phase-encode axis
    ghost_amplitude: List[float] = field(default_factory=lambda: [0.03, 0.12])  # uniform
    scale: float = 1000.0  # stored integer units per signal 1


@dataclass
class PhantomConfig:
    """Everything that fixes a phantom cohort; with the code version it regenerates it exactly."""

    cases: int = 100
    seed: int = 0
    modality: str = "ct"
    anomaly_fraction: float = 0.5  # per-side prevalence: a labelled cohort is about half
    # anomalous (a screening population nearer 0.25)
    noise_scale: float = 1.0  # multiplies every noise level (0 = noise-free)
    label_noise_scale: float = 1.0  # multiplies the label-noise rates (0 = labels = truth)
    realism: str = "realistic"
    id_prefix: str = ""  # before every case and subject id, e.g. to keep two cohorts apart
    grid: GridConfig = field(default_factory=GridConfig)
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    variants: VariantConfig = field(default_factory=VariantConfig)
    findings: FindingConfig = field(default_factory=FindingConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    ct: CTConfig = field(default_factory=CTConfig)
    mri: MRIConfig = field(default_factory=MRIConfig)

    def validate(self) -> PhantomConfig:
        _require(int(self.cases) >= 1, "cases", self.cases, "an integer >= 1")
        _require(self.modality in ("ct", "mri"), "modality", self.modality, "ct or mri")
        _require(0.0 <= self.anomaly_fraction <= 1.0, "anomaly_fraction", self.anomaly_fraction,
                 "a fraction in [0, 1]")
        _require(self.noise_scale >= 0, "noise_scale", self.noise_scale, ">= 0")
        _require(self.label_noise_scale >= 0, "label_noise_scale", self.label_noise_scale, ">= 0")
        _require(isinstance(self.id_prefix, str) and all(
            c.isalnum() or c in "-_" for c in self.id_prefix), "id_prefix", self.id_prefix,
            "letters, digits, '-' or '_' (it becomes part of file names)")
        sp = self.grid.spacing_mm
        _require(len(sp) == 3 and all(0.1 <= float(s) <= 5.0 for s in sp), "grid.spacing_mm",
                 sp, "three voxel sizes between 0.1 and 5 mm (x, y, z)")
        _require(len(self.grid.fov_mm) == 3 and min(self.grid.fov_mm) >= 60, "grid.fov_mm",
                 self.grid.fov_mm, "three extents >= 60 mm")
        _require(self.grid.orientation in ORIENTATIONS, "grid.orientation",
                 self.grid.orientation, " or ".join(ORIENTATIONS))
        _require(self.grid.patient_position in ("supine", "upright"), "grid.patient_position",
                 self.grid.patient_position, "supine or upright")
        _require(self.mri.sequence in MRI_SEQUENCES + ("mixed",), "mri.sequence",
                 self.mri.sequence, " or ".join(MRI_SEQUENCES + ("mixed",)))
        unknown = sorted(set(self.findings.type_weights) - set(ANOMALY_CODES))
        _require(not unknown, "findings.type_weights", unknown,
                 f"names among {list(ANOMALY_CODES)}")
        _require(sum(self.findings.type_weights.values()) > 0, "findings.type_weights",
                 self.findings.type_weights, "at least one positive weight")
        return self


def preset(name: str) -> PhantomConfig:
    """``realistic`` (default: variants, subtle findings, acquisition effects, label noise) or
    ``easy`` (for debugging: no variants, no noise, no artefacts, labels = truth, upright head,
    findings of clear size)."""
    if name not in REALISM_PRESETS:
        raise ConfigError(None, f"unknown realism preset {name!r}", field="realism",
                          expected=" or ".join(REALISM_PRESETS))
    cfg = PhantomConfig(realism=name)
    if name == "easy":
        cfg.noise_scale = 0.0
        cfg.label_noise_scale = 0.0
        cfg.anatomy.head_rotation_sd_deg = 0.0
        cfg.anatomy.asymmetry_cv = 0.0
        cfg.anatomy.shape_wobble_mm = 0.0
        cfg.anatomy.septal_deviation_mm = [0.0, 0.0]
        v = cfg.variants
        for name_ in ("bony_septum", "deep_alveolar_recess", "deep_zygomatic_recess",
                      "root_protrusion", "hypoplasia", "missing_molars", "dental_metal"):
            setattr(v, name_, 0.0)
        v.turbinate_swelling = [1.0, 1.0]
        f = cfg.findings
        f.incidental_thickening = 0.0
        f.second_finding = 0.0
        f.thickening_min_excess_mm = 3.0
        f.cyst_diameter_range_mm = [8.0, 20.0]
        f.polyp_diameter_range_mm = [8.0, 15.0]
        f.fluid_depth_fraction = [0.3, 0.7]
        f.hyperdense_opacity = 0.0
        f.inflamed_air = 0.0
        f.thickening_wave_mm = 0.0
        cfg.anatomy.mucosa_mm = [1.7, 0.0]
        cfg.ct.cbct = 0.0
        cfg.ct.calibration_offset_hu = 0.0
        cfg.ct.calibration_scale = 0.0
        cfg.mri.bias_amplitude = 0.0
        cfg.mri.ghost = 0.0
        cfg.mri.contrast_jitter = 0.0
    return cfg


def clone(cfg: PhantomConfig) -> PhantomConfig:
    return copy.deepcopy(cfg)


def _require(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(None, f"invalid value {value!r}", field=name, expected=expected)
