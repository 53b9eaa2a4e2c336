"""Per-subject anatomy: sinus shapes, head rotation, teeth and normal variants (sampling only).

All positions are in the patient frame: RAS mm fixed to the head, origin midway between the two
sinus centres (x toward the patient's right, y anterior, z superior). Rendering is in
``head.py`` (everything but the sinuses) and ``contents.py`` (sinus walls, lining, variants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from paranasal_ssl.phantom.config import PhantomConfig
from paranasal_ssl.phantom.sinus import SinusShape

SIDES = ("left", "right")
# Upper teeth from the midline back: (name, angle on the arch from the front in degrees, root
# length mm, root radius at the neck mm, roots, crown radii mm). Typical adult dimensions.
TEETH = (
    ("I1", 4.0, 13.0, 3.0, 1, (3.5, 2.5, 4.5)), ("I2", 13.0, 13.0, 2.6, 1, (3.0, 2.5, 4.0)),
    ("C", 23.0, 17.0, 3.2, 1, (3.8, 3.5, 4.5)), ("PM1", 35.0, 14.0, 2.8, 2, (3.5, 4.2, 4.0)),
    ("PM2", 46.0, 14.0, 2.8, 1, (3.5, 4.2, 4.0)), ("M1", 58.0, 12.5, 2.2, 3, (5.0, 5.0, 3.5)),
    ("M2", 71.0, 12.0, 2.1, 3, (4.7, 4.7, 3.5)), ("M3", 84.0, 11.0, 2.0, 3, (4.3, 4.3, 3.3)),
)
MOLARS = ("PM2", "M1", "M2")  # teeth whose roots can reach the sinus floor


@dataclass
class Tooth:
    side: str
    name: str
    apices: List[Tuple[float, float, float]]  # root tips (patient mm)
    neck: Tuple[float, float, float]  # centre of the tooth at the alveolar crest
    root_radius: float
    crown_radii: Tuple[float, float, float]
    metal: str = ""  # "" none, "crown" (filling/crown) or "implant" (metal post along the root)
    protrudes: bool = False  # its roots bulge into the sinus floor


@dataclass
class Subject:
    """Everything about one head that does not depend on the modality or the findings."""

    rotation: np.ndarray  # (3, 3) patient -> scanner RAS (a few degrees)
    rotation_deg: Tuple[float, float, float]
    sinuses: Dict[str, SinusShape]
    half_separation: float
    nasal_floor_z: float
    crest_z: float
    arch: Tuple[float, float, float]  # (centre y, semi-axis x, semi-axis y) of the dental arch
    teeth: List[Tooth]
    septal_deviation: float
    turbinate_swelling: Dict[str, float]
    fat_mm: float
    head_scale: float
    texture_seed: int = 0
    septa: Dict[str, Optional[dict]] = field(default_factory=dict)
    variants: Dict[str, List[str]] = field(default_factory=dict)


def rotation_matrix(deg: Tuple[float, float, float]) -> np.ndarray:
    """Rotation about x (pitch), then y (roll), then z (yaw), angles in degrees."""
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _clipped_normal(rng, mean, sd, lo, hi, size=None):
    return np.clip(rng.normal(mean, sd, size), lo, hi)


def sample_subject(rng: np.random.Generator, cfg: PhantomConfig) -> Subject:
    """Draw one subject's anatomy. Uses only ``rng`` so it is reproducible per case."""
    a, var = cfg.anatomy, cfg.variants
    sd_rot = a.head_rotation_sd_deg
    rot_deg = tuple(float(v) for v in _clipped_normal(rng, 0.0, sd_rot, -3 * sd_rot - 1e-9,
                                                      3 * sd_rot + 1e-9, 3))
    scale = float(_clipped_normal(rng, 1.0, a.size_scale_sd, 0.7, 1.3))
    dims = np.array([a.sinus_width_mm, a.sinus_ap_mm, a.sinus_height_mm]) * scale * \
        _clipped_normal(rng, 1.0, a.dim_cv, 0.8, 1.2, 3)
    half_sep = float(_clipped_normal(rng, *a.half_separation_mm, 24.0, 32.0))
    medial_x = half_sep - a.sinus_width_mm / 2.0  # the nasal cavity's lateral wall
    sinuses, variants, septa = {}, {}, {}
    for side in SIDES:
        s = 1.0 if side == "right" else -1.0
        notes: List[str] = []
        d = dims * _clipped_normal(rng, 1.0, a.asymmetry_cv, 0.85, 1.15, 3)
        wall_factor = 1.0
        if rng.random() < var.hypoplasia:
            d = d * rng.uniform(*var.hypoplasia_scale)
            wall_factor = 1.6  # hypoplastic sinuses have thick walls
            notes.append("hypoplasia")
        walls = {n: float(t * wall_factor * _clipped_normal(rng, 1.0, a.wall_cv, 0.6, 1.5))
                 for n, t in a.wall_mm.items()}
        mucosa = float(_clipped_normal(rng, a.mucosa_mm[0], a.mucosa_mm[1], 1.0,
                                       a.mucosa_max_mm))
        alveolar = float(rng.uniform(0.0, 1.5))
        if rng.random() < var.deep_alveolar_recess:
            alveolar = float(rng.uniform(*var.alveolar_recess_mm))
            notes.append("deep_alveolar_recess")
        zygomatic = float(rng.uniform(0.0, 1.5))
        if rng.random() < var.deep_zygomatic_recess:
            zygomatic = float(rng.uniform(*var.zygomatic_recess_mm))
            notes.append("deep_zygomatic_recess")
        tilt = _clipped_normal(rng, 0.0, 3.0, -8.0, 8.0, 3)
        axes = rotation_matrix(tuple(tilt)) @ np.diag([s, 1.0, 1.0])
        center = (s * (medial_x + d[0] / 2.0) + float(rng.normal(0.0, 1.0)),
                  float(rng.normal(0.0, 1.5)), float(rng.normal(0.0, 1.5)))
        # The lateral apex (zygomatic recess) sits high: the roof (orbital floor) slopes gently,
        # the floor rises steeply to it, so coronal sections are wide at the top and narrow
        # toward the alveolar recess, axial sections triangular with the apex lateral.
        apex = (float(rng.normal(0.05, 0.07)) * d[1], float(rng.normal(0.25, 0.06)) * d[2])
        sinuses[side] = SinusShape(side, center, axes, float(d[0]), float(d[1]), float(d[2]),
                                   a.apex_fraction, apex, a.rounding_mm, walls, mucosa,
                                   alveolar, zygomatic, wobble=a.shape_wobble_mm,
                                   wobble_seed=int(rng.integers(2**31)))
        septa[side] = None
        if rng.random() < var.bony_septum:
            septa[side] = {"v": float(rng.uniform(-0.3, 0.3)) * d[1],
                           "height": float(rng.uniform(*var.septum_height_mm)),
                           "thickness": float(rng.uniform(0.8, 1.5)),
                           "sagittal": bool(rng.random() < 0.25)}
            notes.append("bony_septum")
        variants[side] = notes
    floor = min(sinuses[s].center[2] - sinuses[s].height / 2 for s in SIDES)
    nasal_floor = floor + float(rng.uniform(4.0, 9.0))  # sinus floor ~5-10 mm below nasal floor
    subject = Subject(
        rotation=rotation_matrix(rot_deg), rotation_deg=rot_deg, sinuses=sinuses,
        half_separation=half_sep, nasal_floor_z=nasal_floor, crest_z=0.0,
        arch=(-22.0, half_sep - 3.0, 52.0), teeth=[],
        septal_deviation=float(rng.uniform(*a.septal_deviation_mm)) * float(rng.choice([-1, 1])),
        turbinate_swelling={side: float(rng.uniform(*var.turbinate_swelling)) for side in SIDES},
        fat_mm=float(rng.uniform(*a.subcutaneous_fat_mm)),
        head_scale=float(_clipped_normal(rng, 1.0, 0.04, 0.9, 1.1)),
        texture_seed=int(rng.integers(2**31)), septa=septa, variants=variants)
    _place_teeth(rng, cfg, subject)
    return subject


def cavity_extent(sinus: SinusShape, x: float, y: float) -> Optional[Tuple[float, float]]:
    """Patient z (mm) of the sinus cavity's floor and roof on the vertical line through (x, y),
    or None if the sinus does not cross it."""
    z = np.arange(sinus.center[2] + sinus.height, sinus.center[2] - sinus.height, -0.25)
    pts = np.stack([np.full_like(z, x), np.full_like(z, y), z], 1)
    local = (pts - np.asarray(sinus.center)) @ np.asarray(sinus.axes)
    inside = np.nonzero(sinus.point_sd(local) < 0)[0]
    return (float(z[inside[-1]]), float(z[inside[0]])) if len(inside) else None


def floor_below(sinus: SinusShape, x: float, y: float) -> Optional[float]:
    """Patient z (mm) of the sinus floor over (x, y), or None."""
    ext = cavity_extent(sinus, x, y)
    return None if ext is None else ext[0]


def _place_teeth(rng: np.random.Generator, cfg: PhantomConfig, subject: Subject) -> None:
    var = cfg.variants
    yc, ax, ay = subject.arch
    gap = float(rng.uniform(1.0, 5.0))  # molar apices lie a few mm under the floor
    floors = []
    for side, sinus in subject.sinuses.items():
        theta = np.radians(58.0)
        x = (1.0 if side == "right" else -1.0) * ax * np.sin(theta)
        f = floor_below(sinus, x, yc + ay * np.cos(theta))
        floors.append(sinus.center[2] - sinus.height / 2 if f is None else f)
    subject.crest_z = float(np.mean(floors)) - gap - 12.5
    missing = set()
    if rng.random() < var.missing_molars:
        missing = {(str(rng.choice(("left", "right"))), str(rng.choice(("M1", "M2", "M3"))))}
    metal: Dict[Tuple[str, str], str] = {}
    if rng.random() < var.dental_metal:
        n = int(rng.integers(var.metal_teeth[0], var.metal_teeth[1] + 1))
        for _ in range(n):
            key = (str(rng.choice(("left", "right"))), str(rng.choice(("PM2", "M1", "M2"))))
            # Implants/posts reach up to the sinus floor, so their streaks cross the sinus.
            metal[key] = "implant" if rng.random() < var.implant_fraction else "crown"
    protrude = {side: rng.random() < var.root_protrusion for side in SIDES}
    for side in SIDES:
        s = 1.0 if side == "right" else -1.0
        sinus = subject.sinuses[side]
        if protrude[side]:
            subject.variants[side].append("root_protrusion")
        for name, angle, root_len, radius, n_roots, crown in TEETH:
            if (side, name) in missing:
                continue
            th = np.radians(angle + rng.normal(0.0, 1.0))
            nx, ny = s * ax * np.sin(th), yc + ay * np.cos(th)
            length = root_len * float(_clipped_normal(rng, 1.0, 0.08, 0.8, 1.2))
            floor = floor_below(sinus, nx, ny) if name in MOLARS else None
            apex_z = subject.crest_z + length
            bulge = False
            if floor is not None:
                if protrude[side] and name in ("M1", "M2"):
                    apex_z = floor + float(rng.uniform(*var.root_protrusion_mm))
                    bulge = True
                else:
                    apex_z = min(apex_z, floor - 1.0)
            # Molars have several roots spread around the tooth's long axis.
            spread = 0.0 if n_roots == 1 else 2.3
            apices = []
            for r in range(n_roots):
                phi = 2 * np.pi * r / n_roots + rng.uniform(0, 0.5)
                apices.append((float(nx + spread * np.cos(phi)),
                               float(ny + spread * np.sin(phi)), float(apex_z)))
            subject.teeth.append(Tooth(side, name, apices, (float(nx), float(ny),
                                                            subject.crest_z),
                                       radius, crown, metal.get((side, name), ""), bulge))
