"""Anomalies of one sinus side: what to put where (sampling), and the reader's label.

Labelling rule (documented choice):

* A side is truly anomalous (``true_label`` 1) if it has a reportable finding: mucosal thickening
  whose total lining exceeds ``labels.thickening_threshold_mm`` (4 mm: over 4 mm is reportable),
  or any retention cyst, polyp, air-fluid level, partial or complete opacification.
* Thickening of 2-4 mm is a sub-threshold (incidental) finding: painted, marked in the label mask
  with its code (so localisation can be scored), listed in ``anomaly_types``, but ``true_label``
  0. Normal lining (<= 3 mm) is background in the mask.
* Reader labels (``label``) equal the truth except near the clinical threshold: a side whose
  only finding is thickening within +-1 mm of 4 mm is labelled the other way with probability
  ``near_threshold_flip``; a side whose only reportable findings are cysts/polyps under 5 mm is
  labelled normal with probability ``small_lesion_miss``. Both scale with
  ``label_noise_scale`` (0 = labels equal the truth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from paranasal_ssl.phantom.config import PhantomConfig
from paranasal_ssl.phantom.sinus import FACE_DIRECTIONS, FACES

FOCAL_TYPES = ("retention_cyst", "polyp")
# A second finding on an anomalous side is one of these (complete opacification excludes all).
SECOND_TYPES = ("mucosal_thickening", "retention_cyst", "polyp", "air_fluid_level")
OTHER_WALLS = ("medial", "lateral", "anterior", "posterolateral", "roof")


@dataclass
class Finding:
    """One anomaly. ``size_mm``: total lining thickness (thickening), diameter (cyst, polyp),
    depth along gravity (fluid; filled in when painted) or 0; ``fraction``: target fraction of
    the cavity (opacification) or depth fraction (fluid)."""

    kind: str
    size_mm: float = 0.0
    fraction: float = 0.0
    reportable: bool = True
    params: Dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind in ("partial_opacification", "complete_opacification"):
            return f"{self.kind}:{self.fraction:.2f}"
        return f"{self.kind}:{self.size_mm:.1f}mm"


def _direction(rng: np.random.Generator, wall: str, jitter: float = 0.35) -> List[float]:
    d = np.asarray(FACE_DIRECTIONS[wall], float)
    d = d / np.linalg.norm(d) + rng.normal(0.0, jitter, 3)
    return (d / np.linalg.norm(d)).tolist()


def _lognormal(rng, median_logsd: Sequence[float], lo_hi: Sequence[float]) -> float:
    median, log_sd = median_logsd
    return float(np.clip(median * np.exp(rng.normal(0.0, log_sd)), lo_hi[0], lo_hi[1]))


def _thickening(rng, cfg: PhantomConfig, mucosa: float, reportable: bool) -> Finding:
    f, thr = cfg.findings, cfg.labels.thickening_threshold_mm
    if reportable:
        total = thr + f.thickening_min_excess_mm + rng.exponential(max(f.thickening_excess_mean_mm,
                                                                       1e-6))
        total = float(min(total, f.thickening_max_mm))
    else:
        lo = max(f.subthreshold_mm[0], mucosa + 0.5)
        total = float(rng.uniform(lo, max(lo, min(f.subthreshold_mm[1], thr))))
    names = list(f.thickening_patterns)
    w = np.asarray([f.thickening_patterns[n] for n in names], float)
    pattern = names[int(rng.choice(len(names), p=w / w.sum()))]
    excess = total - mucosa
    lining = {n: mucosa for n in FACES}
    if pattern == "floor":  # thickest on the floor, tapering up the walls
        lining["floor"] = total
        for n in ("medial", "anterior", "posterolateral"):
            lining[n] = mucosa + excess * float(rng.uniform(0.1, 0.45))
    elif pattern == "circumferential":
        for n in FACES:
            lining[n] = mucosa + excess * float(rng.uniform(0.6, 1.0))
        lining[str(rng.choice(FACES))] = total
    else:  # focal: one or two walls
        for n in rng.choice(FACES, size=int(rng.integers(1, 3)), replace=False):
            lining[str(n)] = total
    wave = f.thickening_wave_mm * min(1.0, excess / 3.0)
    return Finding("mucosal_thickening", total, reportable=reportable,
                   params={"pattern": pattern, "lining": lining, "wave": wave,
                           "wave_seed": int(rng.integers(2**31))})


def _cyst(rng, cfg: PhantomConfig) -> Finding:
    f = cfg.findings
    diameter = _lognormal(rng, f.cyst_diameter_mm, f.cyst_diameter_range_mm)
    wall = "floor" if rng.random() < f.cyst_on_floor else str(rng.choice(OTHER_WALLS))
    return Finding("retention_cyst", diameter, params={
        "wall": wall, "direction": _direction(rng, wall),
        "depth": float(rng.uniform(0.0, 0.45)),  # centre inside the air: a dome, not a ball
        "flatten": float(rng.uniform(0.75, 1.0))})


def _polyp(rng, cfg: PhantomConfig) -> Finding:
    f = cfg.findings
    diameter = _lognormal(rng, f.polyp_diameter_mm, f.polyp_diameter_range_mm)
    wall = str(rng.choice(FACES))
    lobes = []
    for _ in range(int(rng.integers(f.polyp_lobes[0], f.polyp_lobes[1] + 1)) - 1):
        d = rng.normal(0.0, 1.0, 3)
        lobes.append(((d / np.linalg.norm(d)).tolist(), float(rng.uniform(0.4, 0.7))))
    return Finding("polyp", diameter, params={
        "wall": wall, "direction": _direction(rng, wall), "depth": float(rng.uniform(0.5, 0.9)),
        "lobes": lobes})


def sample_side(rng: np.random.Generator, cfg: PhantomConfig, mucosa: float,
                anomalous: bool) -> List[Finding]:
    """Findings for one side. ``anomalous``: draw reportable findings; else maybe an incidental
    sub-threshold thickening. Draws a fixed pattern of random numbers per branch."""
    f = cfg.findings
    found: List[Finding] = []
    if not anomalous:
        if rng.random() < f.incidental_thickening:
            found.append(_thickening(rng, cfg, mucosa, reportable=False))
        return found
    names = [n for n, w in f.type_weights.items() if w > 0]
    w = np.asarray([f.type_weights[n] for n in names], float)
    kinds = [names[int(rng.choice(len(names), p=w / w.sum()))]]
    if kinds[0] != "complete_opacification" and rng.random() < f.second_finding:
        second = [n for n in SECOND_TYPES if n not in kinds and f.type_weights.get(n, 0) > 0]
        if second:
            kinds.append(str(rng.choice(second)))
    for kind in kinds:
        if kind == "mucosal_thickening":
            found.append(_thickening(rng, cfg, mucosa, reportable=True))
        elif kind == "retention_cyst":
            found.append(_cyst(rng, cfg))
        elif kind == "polyp":
            found.append(_polyp(rng, cfg))
        elif kind == "air_fluid_level":
            found.append(Finding(kind, fraction=float(rng.uniform(*f.fluid_depth_fraction))))
        elif kind == "partial_opacification":
            found.append(Finding(kind, fraction=float(rng.uniform(*f.partial_fraction)), params={
                "wave_seed": int(rng.integers(2**31)),
                "hyperdense": bool(rng.random() < f.hyperdense_opacity)}))
        else:
            found.append(Finding(kind, fraction=1.0, params={
                "bubble": bool(rng.random() < f.complete_residual_air),
                "hyperdense": bool(rng.random() < f.hyperdense_opacity)}))
    return found


def inflamed(rng: np.random.Generator, cfg: PhantomConfig, found: Sequence[Finding]) -> bool:
    """Whether the side's air reads as inflamed (~-840 HU). One draw per side, always."""
    u = rng.random()
    inflammatory = any(x.reportable and x.kind in ("mucosal_thickening", "air_fluid_level",
                                                   "partial_opacification") for x in found)
    return bool(inflammatory and u < cfg.findings.inflamed_air)


def reader_label(rng: np.random.Generator, cfg: PhantomConfig, found: Sequence[Finding]
                 ) -> Tuple[int, int, str]:
    """(true_label, label, reason): the truth and what a reader would have written.

    Always draws one number so label noise never shifts other random streams.
    """
    lab, u = cfg.labels, rng.random()
    scale = cfg.label_noise_scale
    reportable = [x for x in found if x.reportable]
    truth = int(bool(reportable))
    thick = [x for x in found if x.kind == "mucosal_thickening"]
    others = [x for x in found if x.kind != "mucosal_thickening"]
    if thick and not others and \
            abs(thick[0].size_mm - lab.thickening_threshold_mm) <= lab.near_threshold_band_mm:
        if u < min(1.0, lab.near_threshold_flip * scale):
            return truth, 1 - truth, "near_threshold"
    elif reportable and all(x.kind in ("retention_cyst", "polyp") or not x.reportable
                            for x in found) and \
            all(x.size_mm < lab.small_lesion_mm for x in reportable):
        if u < min(1.0, lab.small_lesion_miss * scale):
            return truth, 0, "small_lesion_missed"
    return truth, truth, ""
