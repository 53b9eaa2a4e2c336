"""Phantom cases and cohorts: sample, paint, acquire, write files, manifest and configuration.

Each case draws from its own random streams, seeded by ``(seed, case index, stream)``, so a case
never depends on how many came before, on the worker that made it, or (for anatomy, findings and
labels) on the modality: the CT and the MRI cohort of one seed show the same heads.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from paranasal_ssl.geometry import SinusROI
from paranasal_ssl.manifest import SinusRecord, write_manifest
from paranasal_ssl.phantom import appearance, findings
from paranasal_ssl.phantom.anatomy import SIDES, Subject, rotation_matrix, sample_subject
from paranasal_ssl.phantom.canvas import (
    FLIP,
    Canvas,
    Geometry,
    centred_geometry,
    downsample,
    subsampled,
)
from paranasal_ssl.phantom.config import MRI_SEQUENCES, PhantomConfig
from paranasal_ssl.phantom.contents import render_sinus
from paranasal_ssl.phantom.head import render_head
from paranasal_ssl.phantom.shapes import sphere
from paranasal_ssl.scan_io import image_from_array, write_image

STREAMS = ("anatomy", "findings", "labels", "geometry", "appearance", "acquisition", "render")
ROI_MARGIN_MM = 3.0  # added on every side of the sinus's extent
GRID_CENTER = (0.0, -4.0, 0.0)  # patient-frame centre of the scanned box (mm)
SCANNER_POSITION_RAS = (0.0, -20.0, -60.0)  # where heads sit in the scanner before jitter
IMAGES, MASKS = "images", "masks"


@dataclass
class PhantomCase:
    """One generated case in memory: ``image`` (int16 ``[k, j, i]``: HU or MRI units),
    ``mask`` (uint8 codes), their ``geometry`` (LPS), and one dict per side."""

    case_id: str
    subject_id: str
    image: np.ndarray
    mask: np.ndarray
    geometry: Geometry
    sides: Dict[str, Dict]
    info: Dict = field(default_factory=dict)


def case_rngs(seed: int, index: int) -> Dict[str, np.random.Generator]:
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(len(STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(STREAMS, children)}


def _direction(rng: np.random.Generator, cfg: PhantomConfig) -> tuple:
    """Storage direction (LPS columns of i, j, k) and its name."""
    name = cfg.grid.orientation
    u = rng.random(5)  # always drawn, so the choice does not shift other draws
    if name == "mixed":
        name = ("lps", "ras", "oblique")[int(u[0] * 3)]
    if name == "ras":  # NIfTI from dcm2niix as ITK reads it
        return np.diag([-1.0, -1.0, 1.0]), name
    if name == "oblique":  # a tilted acquisition, mostly about the L-R axis (gantry tilt)
        deg = cfg.grid.oblique_max_deg * (0.4 + 0.6 * u[1]) * (1 if u[2] < 0.5 else -1)
        return rotation_matrix((deg, (u[3] - 0.5) * deg * 0.5, (u[4] - 0.5) * deg * 0.5)), name
    return np.eye(3), "lps"


def build_case(cfg: PhantomConfig, index: int) -> PhantomCase:
    """Make case ``index`` of the cohort described by ``cfg`` (no file I/O)."""
    t0 = time.perf_counter()
    rngs = case_rngs(cfg.seed, index)
    subject = sample_subject(rngs["anatomy"], cfg)
    sides: Dict[str, Dict] = {}
    for side in SIDES:
        rf = rngs["findings"]
        anomalous = bool(rf.random() < cfg.anomaly_fraction)
        found = findings.sample_side(rf, cfg, subject.sinuses[side].mucosa, anomalous)
        truth, label, reason = findings.reader_label(rngs["labels"], cfg, found)
        sides[side] = {"findings": found, "inflamed": findings.inflamed(rf, cfg, found),
                       "true_label": truth, "label": label, "label_noise": reason}

    rg = rngs["geometry"]
    direction, orientation = _direction(rg, cfg)
    jitter = rg.uniform(-cfg.grid.world_offset_mm, cfg.grid.world_offset_mm, 3)
    head_ras = np.asarray(SCANNER_POSITION_RAS) + jitter
    center_ras = subject.rotation @ np.asarray(GRID_CENTER) + head_ras
    geom = centred_geometry(FLIP @ center_ras, cfg.grid.fov_mm, cfg.grid.spacing_mm, direction)
    render_geom, sub = subsampled(geom, cfg.grid.render_max_mm)

    ra = rngs["appearance"]
    sequence = cfg.mri.sequence
    if sequence == "mixed":
        sequence = MRI_SEQUENCES[int(ra.integers(len(MRI_SEQUENCES)))]
    t = appearance.tissue_values(ra, cfg, sequence)
    up = (0.0, 0.0, 1.0) if cfg.grid.patient_position == "upright" else (0.0, 1.0, 0.0)
    canvas = Canvas(render_geom, subject.rotation, head_ras, up, t["outside_air"])
    canvas.texture = appearance.texture_field(ra, canvas.shape, 1.2 / canvas.width)
    render_head(canvas, subject, t)
    rr = rngs["render"]
    for side in SIDES:
        s = sides[side]
        air = t["inflamed_air"] if s["inflamed"] else t["sinus_air"]
        s["measured"] = render_sinus(canvas, subject, side, s["findings"], t, air, rr)
    metal = _metal(canvas, subject, cfg, rr)
    image, mask = downsample(canvas.image, canvas.mask, sub)
    del canvas
    metal_ijk = [np.stack([_ras_to_index(geom, p) for p in obj]) for obj in metal]
    if cfg.modality == "ct":
        image, info = appearance.acquire_ct(rngs["acquisition"], cfg, image, geom.spacing,
                                            metal_ijk)
    else:
        image, info = appearance.acquire_mri(rngs["acquisition"], cfg, image, geom.spacing)
        info["mri_sequence"] = sequence
    info.update(orientation=orientation, dental_metal=int(bool(metal)),
                head_rotation_deg=" ".join(f"{a:.2f}" for a in subject.rotation_deg),
                seconds=round(time.perf_counter() - t0, 3))
    for side in SIDES:
        sides[side]["variants"] = list(subject.variants[side])
        sides[side]["mucosa_mm"] = subject.sinuses[side].mucosa
    prefix = cfg.id_prefix
    return PhantomCase(f"{prefix}case{index:04d}", f"{prefix}subj{index:04d}", image, mask, geom,
                       sides, info)


def _metal(c: Canvas, subject: Subject, cfg: PhantomConfig, rng) -> List[np.ndarray]:
    """Metal objects as (N, 3) world RAS points along them (a crown: one point; an implant:
    every 2 mm from crown to apex); on MRI also paint their susceptibility voids."""
    out = []
    for tooth in subject.teeth:
        if not tooth.metal:
            continue
        crown = np.asarray(tooth.neck) - (0.0, 0.0, tooth.crown_radii[2] - 0.5)
        pts = [crown]
        if tooth.metal == "implant":
            apex = np.mean(np.asarray(tooth.apices), axis=0)
            n = max(int(np.linalg.norm(apex - crown) / 2.0), 1)
            pts += [crown + (apex - crown) * (k / n) for k in range(1, n + 1)]
        if cfg.modality == "mri":
            for k, p in enumerate(pts):
                r = float(rng.uniform(5.0, 10.0)) if k == 0 else float(rng.uniform(2.5, 4.5))
                c.paint(lambda x, y, z, p=p, r=r: sphere(x, y, z, p, r), p - r - 1, p + r + 1,
                        0.0)
        out.append(np.asarray(pts) @ subject.rotation.T + c.head_center_ras)
    return out


def _ras_to_index(geom: Geometry, ras: np.ndarray) -> np.ndarray:
    lps = FLIP @ np.asarray(ras, float)
    return geom.matrix.T @ (lps - np.asarray(geom.origin)) / np.asarray(geom.spacing)


def side_extra(case: PhantomCase, side: str, cfg: PhantomConfig) -> Dict[str, str]:
    """Extra manifest columns for one side (all strings)."""
    s = case.sides[side]
    found = s["findings"]
    rep = [f for f in found if f.reportable]
    sub = [f for f in found if not f.reportable]
    m = s["measured"]
    depth = m["fluid_depth_mm"]
    subtle = bool(rep) and all(
        (f.kind == "mucosal_thickening" and f.size_mm <= 6.0)
        or (f.kind in ("retention_cyst", "polyp") and f.size_mm < 6.0)
        or (f.kind == "air_fluid_level" and f.fraction < 0.2)
        or (f.kind == "partial_opacification" and f.fraction < 0.35) for f in rep)
    sizes = [f.size_mm for f in rep if f.size_mm > 0]
    lund = 0 if not rep else (2 if any(f.kind == "complete_opacification" for f in rep) else 1)
    info = case.info
    return {
        "true_label": str(s["true_label"]), "label_noise": s["label_noise"],
        "findings": ";".join(f.describe() for f in found),
        "finding_size_mm": f"{max(sizes):.1f}" if sizes else "",
        "subtle": str(int(subtle)),
        "subthreshold_thickening_mm": f"{sub[0].size_mm:.1f}" if sub else "",
        "normal_variants": ";".join(s["variants"]), "mucosa_mm": f"{s['mucosa_mm']:.2f}",
        "sinus_volume_ml": f"{m['volume_ml']:.2f}",
        "opacified_fraction": f"{m['opacified_fraction']:.3f}", "lund_mackay": str(lund),
        "fluid_depth_mm": f"{depth:.1f}" if depth else "",
        "inflamed_air": str(int(s["inflamed"])), "noise_sd": str(info.get("noise_sd", "")),
        "scanner": str(info.get("scanner", "mri")),
        "mri_sequence": str(info.get("mri_sequence", "")),
        "orientation": info["orientation"], "head_rotation_deg": info["head_rotation_deg"],
        "dental_metal": str(info["dental_metal"]), "ghost": str(info.get("ghost", "")),
        "realism": cfg.realism,
    }


def side_roi(case: PhantomCase, side: str) -> SinusROI:
    """Manifest ROI: the sinus's RAS extent plus ``ROI_MARGIN_MM`` on every side."""
    lo, hi = case.sides[side]["measured"]["bbox_ras"]
    return SinusROI.from_values((lo + hi) / 2.0, hi - lo + 2 * ROI_MARGIN_MM)


def write_case(case: PhantomCase, out: Path, cfg: PhantomConfig) -> List[SinusRecord]:
    """Write the image and mask (.nii.gz, atomically) and return the case's two records."""
    g = case.geometry
    img_path = out / IMAGES / f"{case.case_id}.nii.gz"
    mask_path = out / MASKS / f"{case.case_id}.nii.gz"
    write_image(image_from_array(case.image, g.spacing, g.origin, g.direction_flat()), img_path)
    write_image(image_from_array(case.mask, g.spacing, g.origin, g.direction_flat()), mask_path)
    records = []
    for side in SIDES:
        s = case.sides[side]
        types = []
        for f in s["findings"]:
            if f.kind not in types:
                types.append(f.kind)
        records.append(SinusRecord(
            case_id=case.case_id, subject_id=case.subject_id, image=img_path.resolve(),
            side=side, roi=side_roi(case, side), label=int(s["label"]),
            anomaly_types=tuple(types), mask=mask_path.resolve(), modality=cfg.modality,
            extra=side_extra(case, side, cfg)))
    return records


def make_and_write(cfg: PhantomConfig, index: int, out: str) -> List[SinusRecord]:
    """Worker entry point (picklable): build case ``index`` and write its files."""
    return write_case(build_case(cfg, index), Path(out), cfg)


def generate_cohort(cfg: PhantomConfig, out: Path, workers: int = 1,
                    on_case: Optional[Callable[[int], None]] = None) -> List[SinusRecord]:
    """Make every case of ``cfg`` under ``out`` and write ``out/manifest.csv``.

    ``workers`` > 1 uses a process pool (spawned, so it is safe beside torch and threads);
    results do not depend on it. ``on_case(index)`` is called as each case finishes (progress,
    cancellation). Returns the manifest records in case order.
    """
    out = Path(out)
    n = int(cfg.cases)
    by_index: Dict[int, List[SinusRecord]] = {}
    workers = max(1, min(int(workers), n))
    if workers == 1:
        for i in range(n):
            by_index[i] = make_and_write(cfg, i, str(out))
            if on_case:
                on_case(i)
    else:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        try:
            futures = {pool.submit(make_and_write, cfg, i, str(out)): i for i in range(n)}
            for fut in as_completed(futures):
                i = futures[fut]
                by_index[i] = fut.result()
                if on_case:
                    on_case(i)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    records = [r for i in range(n) for r in by_index[i]]
    write_manifest(records, out / "manifest.csv")
    return records


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def summary(records: Sequence[SinusRecord]) -> Dict:
    """Prevalence and sinus volume statistics of a cohort's records."""
    labels = np.array([r.label for r in records], float)
    truth = np.array([float(r.extra.get("true_label", r.label)) for r in records])
    vol = np.array([float(r.extra["sinus_volume_ml"]) for r in records])
    return {"cases": len({r.case_id for r in records}), "sides": len(records),
            "prevalence": round(float(labels.mean()), 4),
            "true_prevalence": round(float(truth.mean()), 4),
            "label_noise_rate": round(float(np.mean(labels != truth)), 4),
            "sinus_volume_ml_mean": round(float(vol.mean()), 2),
            "sinus_volume_ml_sd": round(float(vol.std()), 2),
            "sinus_volume_ml_range": [round(float(vol.min()), 2), round(float(vol.max()), 2)]}
