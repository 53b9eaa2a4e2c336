"""The voxel grid a phantom is painted on, and its physical geometry.

Three frames are involved:

* patient frame: RAS millimetres fixed to the head (x toward the patient's right, y anterior,
  z superior), origin midway between the two sinus centres. Anatomy is described here.
* world (scanner) frame: the patient frame after the head's slight rotation and placement on the
  table. SimpleITK stores it as LPS; RAS = LPS with x and y negated. Gravity is fixed here.
* index frame: voxel (i, j, k) of the stored image; numpy arrays are indexed ``[k, j, i]``.

Thick slices are rendered as ``sub`` thinner sub-slices and averaged (``downsample``), which is
the slice profile: a 1 mm wall crossing a 3 mm slice reads as a third of its density.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from paranasal_ssl.phantom.shapes import occupancy

FLIP = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS
Slices = Tuple[slice, slice, slice]


@dataclass(frozen=True)
class Geometry:
    """Stored image geometry: ``size`` (i, j, k) voxels, ``spacing`` (mm, i/j/k), ``origin``
    (LPS mm, centre of voxel 0), ``direction`` (3x3, columns = i, j, k axes in LPS)."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[Tuple[float, float, float], ...]

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) continuous (i, j, k) -> (N, 3) LPS mm."""
        return np.asarray(self.origin) + (np.asarray(ijk, float) * self.spacing) @ self.matrix.T

    def direction_flat(self) -> Tuple[float, ...]:
        return tuple(float(v) for v in self.matrix.ravel())


def centred_geometry(center_lps: Sequence[float], fov_mm: Sequence[float],
                     spacing: Sequence[float], direction: np.ndarray) -> Geometry:
    """A grid of about ``fov_mm`` along its own axes, centred on ``center_lps``."""
    sp = np.asarray(spacing, float)
    size = np.maximum(np.round(np.asarray(fov_mm, float) / sp).astype(int), 2)
    origin = np.asarray(center_lps, float) - direction @ (sp * (size - 1) / 2.0)
    return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in sp),
                    tuple(float(o) for o in origin), tuple(map(tuple, direction)))


def subsampled(geom: Geometry, max_mm: float) -> Tuple[Geometry, Tuple[int, int, int]]:
    """The render grid: each voxel split into ``sub`` = ceil(spacing / max_mm) parts per axis."""
    sp = np.asarray(geom.spacing)
    sub = np.maximum(np.ceil(sp / max_mm - 1e-6).astype(int), 1)
    rsp = sp / sub
    d = geom.matrix
    origin = np.asarray(geom.origin) - d @ (rsp * (sub - 1) / 2.0)
    size = np.asarray(geom.size) * sub
    return (Geometry(tuple(int(s) for s in size), tuple(float(s) for s in rsp),
                     tuple(float(o) for o in origin), geom.direction),
            tuple(int(s) for s in sub))


class Canvas:
    """Patient-frame coordinates of every render voxel, and the image and label mask painted.

    ``x, y, z``: float32 ``[k, j, i]`` patient-frame RAS mm; ``height``: world coordinate along
    the upward vertical (against gravity), mm; ``image``: float32 tissue values; ``mask``: uint8
    anomaly codes. ``width``: the partial-volume ramp (mm) used by ``paint``.
    """

    def __init__(self, geom: Geometry, head_rotation: np.ndarray, head_center_ras: Sequence[float],
                 up_ras: Sequence[float], background: float):
        self.geom = geom
        r = np.asarray(head_rotation, float)  # patient -> world RAS rotation
        t = np.asarray(head_center_ras, float)
        self.rotation, self.head_center_ras = r, t
        d = FLIP @ geom.matrix * np.asarray(geom.spacing)  # index -> world RAS (linear part)
        o = FLIP @ np.asarray(geom.origin)
        self.affine = r.T @ d  # index -> patient
        self.offset = r.T @ (o - t)
        ni, nj, nk = geom.size
        i = np.arange(ni, dtype=np.float32)[None, None, :]
        j = np.arange(nj, dtype=np.float32)[None, :, None]
        k = np.arange(nk, dtype=np.float32)[:, None, None]
        shape = (nk, nj, ni)

        def axis(row: np.ndarray, off: float) -> np.ndarray:
            out = np.empty(shape, np.float32)
            out[...] = (np.float32(row[0]) * i + np.float32(row[1]) * j
                        + np.float32(off) + np.float32(row[2]) * k)
            return out

        self.x, self.y, self.z = (axis(self.affine[a], self.offset[a]) for a in range(3))
        up = np.asarray(up_ras, float) / np.linalg.norm(up_ras)
        self.height = axis(up @ d, float(up @ o))
        self.width = float(np.mean(geom.spacing))
        self.image = np.full(shape, background, np.float32)
        self.mask = np.zeros(shape, np.uint8)
        self._inverse = np.linalg.inv(self.affine)
        self.texture: Optional[np.ndarray] = None

    @property
    def shape(self) -> Tuple[int, int, int]:
        return self.image.shape

    def box(self, lo: Sequence[float], hi: Sequence[float], pad: int = 2) -> Optional[Slices]:
        """``[k, j, i]`` slices covering the patient-frame box ``lo``..``hi`` (mm); None if the
        box misses the grid."""
        lo = np.asarray(lo, float)
        hi = np.asarray(hi, float)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                            for c in (lo[2], hi[2])])
        ijk = (corners - self.offset) @ self._inverse.T
        first = np.maximum(np.floor(ijk.min(0)).astype(int) - pad, 0)
        last = np.minimum(np.ceil(ijk.max(0)).astype(int) + pad, np.asarray(self.geom.size) - 1)
        if (last < first).any():
            return None
        return tuple(slice(int(first[a]), int(last[a]) + 1) for a in (2, 1, 0))

    def coords(self, sl: Slices) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x[sl], self.y[sl], self.z[sl]

    def paint(self, sd_fn: Callable, lo: Sequence[float], hi: Sequence[float], value: float,
              texture: float = 0.0, within: Optional[np.ndarray] = None
              ) -> Optional[Tuple[Slices, np.ndarray, np.ndarray]]:
        """Composite a tissue over the image where ``sd_fn(x, y, z) < 0`` (soft edge).

        ``lo``/``hi``: patient-frame bounding box of the shape (mm). ``texture``: amplitude of
        the case's smooth texture field added to ``value``. ``within``: optional occupancy (same
        box) the shape is limited to. Returns (slices, sd, occupancy) or None off-grid.
        """
        sl = self.box(lo, hi)
        if sl is None:
            return None
        sd = sd_fn(*self.coords(sl))
        occ = occupancy(sd, self.width)
        if within is not None:
            occ = np.minimum(occ, within)
        self.composite(sl, occ, value, texture)
        return sl, sd, occ

    def composite(self, sl: Slices, occ: np.ndarray, value: float, texture: float = 0.0) -> None:
        img = self.image[sl]
        v = np.float32(value)
        if texture and self.texture is not None:
            v = v + np.float32(texture) * self.texture[sl]
        img += occ * (v - img)


def downsample(image: np.ndarray, mask: np.ndarray, sub: Sequence[int]
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Average ``image`` over sub-voxels (``sub`` per i, j, k axis); a stored voxel is labelled
    when at least half its sub-voxels are anomalous, with their most frequent code."""
    si, sj, sk = (int(s) for s in sub)
    if (si, sj, sk) == (1, 1, 1):
        return image, mask
    nk, nj, ni = image.shape
    shape6 = (nk // sk, sk, nj // sj, sj, ni // si, si)
    out = image.reshape(shape6).mean(axis=(1, 3, 5), dtype=np.float32)
    m6 = mask.reshape(shape6)
    n = sk * sj * si
    counts = np.stack([(m6 == c).sum(axis=(1, 3, 5)) for c in range(1, int(mask.max()) + 1)]) \
        if mask.max() > 0 else None
    labels = np.zeros(out.shape, np.uint8)
    if counts is not None:
        anomalous = counts.sum(0) * 2 >= n
        labels[anomalous] = (np.argmax(counts, axis=0) + 1)[anomalous].astype(np.uint8)
    return out, labels
