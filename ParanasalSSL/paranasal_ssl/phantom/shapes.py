"""Signed-distance primitives evaluated on numpy coordinate arrays.

Every function takes the coordinates ``x, y, z`` (float32 arrays of one shape, millimetres, any
frame) and returns the signed distance ``sd`` (mm, same shape): negative inside, positive
outside. Several are approximations (exact on the surface, within a factor of about 2 away from
it), which is enough for painting: a voxel's occupancy only needs ``sd`` within about one voxel
of the surface, where they are close to exact.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray]


def occupancy(sd: np.ndarray, width: float) -> np.ndarray:
    """Fraction of a voxel inside the shape: a linear ramp over ``width`` mm across the surface.

    With ``width`` = the voxel size this is the partial-volume fraction of a plane through the
    voxel (exact for a surface perpendicular to an axis), so thin walls come out with
    intermediate values as on a real scanner.
    """
    return np.clip(0.5 - sd / np.float32(width), 0.0, 1.0)


def to_local(x: np.ndarray, y: np.ndarray, z: np.ndarray, center: Sequence[float],
             axes: np.ndarray | None = None) -> Arrays:
    """Coordinates relative to ``center`` along the COLUMNS of ``axes`` (3x3; None = identity)."""
    dx = x - np.float32(center[0])
    dy = y - np.float32(center[1])
    dz = z - np.float32(center[2])
    if axes is None:
        return dx, dy, dz
    a = np.asarray(axes, dtype=np.float32)
    return (dx * a[0, 0] + dy * a[1, 0] + dz * a[2, 0],
            dx * a[0, 1] + dy * a[1, 1] + dz * a[2, 1],
            dx * a[0, 2] + dy * a[1, 2] + dz * a[2, 2])


def sphere(x, y, z, center: Sequence[float], radius: float) -> np.ndarray:
    dx, dy, dz = to_local(x, y, z, center)
    return np.sqrt(dx * dx + dy * dy + dz * dz) - np.float32(radius)


def ellipsoid(x, y, z, center: Sequence[float], radii: Sequence[float],
              axes: np.ndarray | None = None) -> np.ndarray:
    """Ellipsoid with semi-axes ``radii`` along the columns of ``axes``.

    Uses the k0 (k0 - 1) / k1 approximation (Quilez): exact on the surface and for spheres, a
    good distance estimate near it.
    """
    u, v, w = to_local(x, y, z, center, axes)
    r = np.asarray(radii, dtype=np.float32)
    k0 = np.sqrt((u / r[0]) ** 2 + (v / r[1]) ** 2 + (w / r[2]) ** 2)
    k1 = np.sqrt((u / r[0] ** 2) ** 2 + (v / r[1] ** 2) ** 2 + (w / r[2] ** 2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))


def box(x, y, z, center: Sequence[float], half_size: Sequence[float], rounding: float = 0.0,
        axes: np.ndarray | None = None) -> np.ndarray:
    """Box of half edge lengths ``half_size`` with edges rounded by ``rounding`` mm (exact)."""
    u, v, w = to_local(x, y, z, center, axes)
    h = np.asarray(half_size, dtype=np.float32) - np.float32(rounding)
    qx = np.abs(u) - h[0]
    qy = np.abs(v) - h[1]
    qz = np.abs(w) - h[2]
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
    inside = np.minimum(np.maximum(qx, np.maximum(qy, qz)), 0)
    return outside + inside - np.float32(rounding)


def capsule(x, y, z, a: Sequence[float], b: Sequence[float], radius_a: float,
            radius_b: float | None = None) -> np.ndarray:
    """Segment a-b swept by a sphere whose radius goes linearly from ``radius_a`` to
    ``radius_b`` (a tapered tube: tooth roots, the zygomatic arch)."""
    ax, ay, az = (np.float32(c) for c in a)
    ab = np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)
    denom = np.float32(max(float(ab @ ab), 1e-9))
    px, py, pz = x - ax, y - ay, z - az
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / denom, 0.0, 1.0)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    rb = radius_a if radius_b is None else radius_b
    r = np.float32(radius_a) + t * np.float32(rb - radius_a)
    return np.sqrt(dx * dx + dy * dy + dz * dz) - r


def plane(x, y, z, point: Sequence[float], normal: Sequence[float]) -> np.ndarray:
    """Half-space behind a plane: negative on the side opposite to ``normal``."""
    n = np.asarray(normal, dtype=np.float32)
    n = n / np.float32(np.linalg.norm(n))
    dx, dy, dz = to_local(x, y, z, point)
    return dx * n[0] + dy * n[1] + dz * n[2]


def smooth_max(values: Sequence[np.ndarray], k: float) -> np.ndarray:
    """Log-sum-exp maximum with softness ``k`` mm: intersecting half-spaces with it rounds the
    edges and corners of the polytope by about ``k`` mm (``k`` = 0 is the plain maximum)."""
    stack = list(values)
    m = stack[0]
    for v in stack[1:]:
        m = np.maximum(m, v)
    if k <= 0:
        return m
    kf = np.float32(k)
    acc = np.zeros_like(m)
    for v in stack:
        acc += np.exp((v - m) / kf)
    return m + kf * np.log(acc)


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union) blending over ``k`` mm."""
    if k <= 0:
        return np.minimum(a, b)
    kf = np.float32(k)
    h = np.clip(0.5 + 0.5 * (b - a) / kf, 0.0, 1.0)
    return b + (a - b) * h - kf * h * (1.0 - h)


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` minus ``b``."""
    return np.maximum(a, -b)


def shell(sd: np.ndarray, thickness: float) -> np.ndarray:
    """A wall of ``thickness`` mm just outside the surface of ``sd``."""
    t = np.float32(thickness) / 2
    return np.abs(sd - t) - t


class SmoothNoise:
    """A smooth random field in mm coordinates: a sum of a few random plane waves.

    Cheap (a handful of cosines per voxel), deterministic for a generator, band-limited to
    wavelengths in ``wavelength_mm``; values are roughly in [-1, 1] (unit RMS).
    """

    def __init__(self, rng: np.random.Generator, wavelength_mm: Tuple[float, float] = (8, 20),
                 waves: int = 6):
        d = rng.standard_normal((waves, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=waves)
        self.k = (2 * np.pi * d / lam[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=waves).astype(np.float32)
        self.scale = np.float32(np.sqrt(2.0 / waves))

    def __call__(self, x, y, z) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)
        for k, p in zip(self.k, self.phase):
            out += np.cos(x * k[0] + y * k[1] + z * k[2] + p)
        return out * self.scale
