"""Paint one maxillary sinus: bony walls, lining, air, normal variants and the findings.

Works in the sinus's bounding box on the canvas, with the sinus-local coordinates (u lateral,
v anterior, w superior; see ``sinus.py``). Surfaces used (signed distances, mm):

* ``cav``: the bony cavity (inner surface of the walls); the sinus volume is ``cav < 0``;
* ``air_n``: the air surface with a normal lining (``cav`` + lining thickness);
* ``air``: the air surface after thickening / partial opacification.

Mask codes come from ``paranasal_ssl.anomalies.ANOMALY_CODES``; voxels are marked where a
finding's own surface has them inside (sd < 0); later findings overwrite earlier ones.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from paranasal_ssl.anomalies import ANOMALY_CODES as CODES
from paranasal_ssl.phantom import shapes as S
from paranasal_ssl.phantom.anatomy import Subject
from paranasal_ssl.phantom.canvas import Canvas
from paranasal_ssl.phantom.findings import Finding


def render_sinus(c: Canvas, subj: Subject, side: str, found: List[Finding],
                 t: Dict[str, float], air_value: float, rng: np.random.Generator) -> Dict:
    """Paint the ``side`` sinus with its ``found`` findings. Returns measurements: ``volume_ml``
    (bony cavity), ``bbox_ras`` ((2, 3) lo/hi world RAS mm of the cavity), ``fluid_depth_mm``,
    ``opacified_fraction`` (of the normal air space that findings fill)."""
    sn = subj.sinuses[side]
    lo, hi = sn.bounds(margin=2.0)
    sl = c.box(lo, hi)
    x, y, z = c.coords(sl)
    u, v, w = sn.local(x, y, z)
    faces = sn.face_distances(u, v, w)
    cav = sn.sd(u, v, w, faces=faces)
    occ = S.occupancy(cav, c.width)
    c.composite(sl, S.occupancy(sn.outer_sd(u, v, w, faces, cav), c.width), t["cortical_bone"])
    c.composite(sl, occ, t["mucosa"])
    air_n = cav + np.float32(sn.mucosa)
    air = air_n
    mask = c.mask[sl]
    by_kind = {f.kind: f for f in found}

    thick = by_kind.get("mucosal_thickening")
    if thick is not None:
        p = thick.params
        air_t = sn.sd(u, v, w, p["lining"], faces=faces)
        if p["wave"] > 0:
            air_t = air_t + np.float32(p["wave"]) * S.SmoothNoise(
                np.random.default_rng(p["wave_seed"]), (8.0, 20.0))(u, v, w)
        air_t = np.maximum(air_t, air_n)
        c.composite(sl, S.occupancy(air_n, c.width), t["thickening"])
        mask[(air_n < 0) & (air_t >= 0)] = CODES["mucosal_thickening"]
        air = air_t
    part = by_kind.get("partial_opacification")
    if part is not None:
        noise = S.SmoothNoise(np.random.default_rng(part.params["wave_seed"]), (10.0, 25.0))
        shrink = _shrink_for_fraction(sn, noise, part.fraction)
        air_p = air_n + np.float32(shrink) + np.float32(3.0) * noise(u, v, w)
        value = t["fungal"] if part.params["hyperdense"] else t["opacity"]
        c.composite(sl, S.occupancy(np.maximum(air_n, -air_p), c.width), value)
        mask[(air_n < 0) & (air_p >= 0)] = CODES["partial_opacification"]
        air = np.maximum(air, air_p)
    c.composite(sl, S.occupancy(air, c.width), air_value)

    _variants(c, subj, side, sl, u, v, w, cav, t)

    comp = by_kind.get("complete_opacification")
    if comp is not None:
        value = t["fungal"] if comp.params["hyperdense"] else t["opacity"]
        c.composite(sl, S.occupancy(air_n, c.width), value)
        mask[air_n < 0] = CODES["complete_opacification"]
        if comp.params["hyperdense"]:
            _spots(c, sl, x, y, z, air_n, rng, t)
        if comp.params["bubble"]:  # a little air left at the top (against gravity)
            h = np.where(air_n < -2.0, c.height[sl], -np.inf)
            k = np.unravel_index(int(np.argmax(h)), h.shape)
            b = S.sphere(x, y, z, (x[k], y[k], z[k]), float(rng.uniform(1.5, 3.5)))
            b = np.maximum(b, air_n)
            c.composite(sl, S.occupancy(b, c.width), air_value)
            mask[b < 0] = 0
        air = np.full_like(air, 1e3)

    focal = []
    for f in found:
        if f.kind not in ("retention_cyst", "polyp"):
            continue
        sd = np.maximum(_focal_sd(sn, f, u, v, w), cav)
        c.composite(sl, S.occupancy(sd, c.width), t["cyst" if f.kind == "retention_cyst"
                                                    else "polyp"])
        mask[sd < 0] = CODES[f.kind]
        focal.append(sd)

    fluid_depth = 0.0
    fl = by_kind.get("air_fluid_level")
    if fl is not None:
        h = c.height[sl]
        inside = air < 0
        if inside.any():
            h_lo, h_hi = float(h[inside].min()), float(h[inside].max())
            level = h_lo + fl.fraction * (h_hi - h_lo)
            fluid_depth = level - h_lo
            sd = np.maximum(air, h - np.float32(level))  # horizontal: constant world height
            for other in focal:
                sd = np.maximum(sd, -other)
            c.composite(sl, S.occupancy(sd, c.width), t["fluid"])
            mask[sd < 0] = CODES["air_fluid_level"]
        fl.size_mm = fluid_depth

    inside = cav < 0
    normal_air = air_n < 0
    filled = (mask > 0) & normal_air
    return {
        "volume_ml": float(inside.sum()) * float(np.prod(c.geom.spacing)) / 1000.0,
        "bbox_ras": _bbox_ras(c, subj, x[inside], y[inside], z[inside]),
        "fluid_depth_mm": fluid_depth,
        "opacified_fraction": float(filled.sum()) / max(int(normal_air.sum()), 1),
    }


def _bbox_ras(c: Canvas, subj: Subject, x, y, z) -> np.ndarray:
    """World RAS box (lo, hi) of patient-frame points, grown by half a render voxel."""
    p = np.stack([x, y, z], 1).astype(float)
    ras = p @ subj.rotation.T + np.asarray(c.head_center_ras)
    half = np.abs(c.geom.matrix * np.asarray(c.geom.spacing)).sum(1) / 2.0
    return np.stack([ras.min(0) - half, ras.max(0) + half])


def _shrink_for_fraction(sn, noise, fraction: float) -> float:
    """Lining growth (mm) that fills ``fraction`` of the normal air space, found on a fixed
    1.5 mm local lattice so it does not depend on the image grid."""
    g = [np.arange(-a / 2 - 6, a / 2 + 6, 1.5, dtype=np.float32)
         for a in (sn.width + 2 * sn.zygomatic_recess, sn.ap, sn.height + 2 * sn.alveolar_recess)]
    u, v, w = np.meshgrid(*g, indexing="ij")
    air_n = sn.sd(u, v, w) + np.float32(sn.mucosa)
    keep = air_n < 0
    a, n = air_n[keep], 3.0 * noise(u[keep], v[keep], w[keep])
    lo, hi = -5.0, 40.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if np.mean(a + mid + n >= 0) < fraction:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _focal_sd(sn, f: Finding, u, v, w) -> np.ndarray:
    """A cyst (smooth dome on the wall) or polyp (lobulated nodule, maybe on a stalk)."""
    p, n = sn.surface_point(np.asarray(f.params["direction"]), {
        k: sn.mucosa for k in sn.walls})
    r = f.size_mm / 2.0
    center = p + n * r * f.params["depth"]
    if f.kind == "retention_cyst":
        t1 = np.cross(n, [0.0, 0.0, 1.0] if abs(n[2]) < 0.9 else [1.0, 0.0, 0.0])
        t1 /= np.linalg.norm(t1)
        frame = np.stack([n, t1, np.cross(n, t1)], 1)
        return S.ellipsoid(u, v, w, center, (r * f.params["flatten"], r, r), frame)
    sd = S.sphere(u, v, w, center, r)
    for direction, scale in f.params["lobes"]:
        lobe = center + np.asarray(direction) * r * 0.65
        sd = S.smooth_union(sd, S.sphere(u, v, w, lobe, r * scale), 1.5)
    stalk = S.capsule(u, v, w, p - n * 1.0, center, max(0.3 * r, 1.0))
    return S.smooth_union(sd, stalk, 1.0)


def _spots(c, sl, x, y, z, region, rng, t) -> None:
    """Calcified spots of a fungal-like opacity (up to ~435 HU on CT)."""
    idx = np.argwhere(region < -1.5)
    if not len(idx):
        return
    for k in rng.choice(len(idx), size=min(len(idx), int(rng.integers(2, 6))), replace=False):
        q = tuple(idx[k])
        sd = S.sphere(x, y, z, (x[q], y[q], z[q]), float(rng.uniform(0.6, 1.4)))
        c.composite(sl, S.occupancy(sd, c.width), t["fungal_spot"])


def _variants(c, subj: Subject, side: str, sl, u, v, w, cav, t) -> None:
    """Bony septum and roots bulging through the floor: bone inside the sinus that is normal."""
    sn = subj.sinuses[side]
    mask = c.mask[sl]
    sep = subj.septa.get(side)
    if sep:
        half_t = sep["thickness"] / 2.0
        base = -sn.height / 2 - sn.alveolar_recess - 2.0
        hz = (sep["height"] + 2.0 + sn.alveolar_recess) / 2.0
        if sep["sagittal"]:
            cen, half = (0.05 * sn.width, 0.5 * sep["v"], base + hz), (half_t, 0.35 * sn.ap, hz)
        else:
            cen, half = (-0.1 * sn.width, sep["v"], base + hz), (0.45 * sn.width, half_t, hz)
        plate = S.box(u, v, w, cen, half, min(half_t, 0.5))
        c.composite(sl, S.occupancy(np.maximum(plate - np.float32(sn.mucosa), cav), c.width),
                    t["mucosa"])
        bone = np.maximum(plate, cav)
        c.composite(sl, S.occupancy(bone, c.width), t["cortical_bone"])
        mask[bone < 0] = 0
    x, y, z = c.coords(sl)
    for tooth in subj.teeth:
        if tooth.side != side or not tooth.protrudes:
            continue
        neck = np.asarray(tooth.neck)
        for apex in tooth.apices:
            for grow, value in ((sn.walls["floor"] * 0.6 + sn.mucosa, t["mucosa"]),
                                (sn.walls["floor"] * 0.6, t["cortical_bone"]),
                                (0.0, t["dentin"])):
                sd = S.capsule(x, y, z, neck, apex, tooth.root_radius + grow, 0.9 + grow)
                sd = np.maximum(sd, cav)
                c.composite(sl, S.occupancy(sd, c.width), value)
                if value != t["mucosa"]:
                    mask[sd < 0] = 0
