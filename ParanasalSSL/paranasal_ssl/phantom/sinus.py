"""One maxillary sinus as a smooth implicit shape: a truncated triangular pyramid.

The base lies on the lateral nasal wall (medial), the apex points laterally into the zygoma;
anterior, posterolateral, roof (orbital floor) and floor faces converge from the base toward the
apex, so axial and coronal sections are triangles with rounded corners, as on CT. An optional
alveolar recess (a lobe under the floor) and a deeper zygomatic recess vary the shape.

Local frame (mm): ``u`` lateral (away from the midline), ``v`` anterior, ``w`` superior, origin
at the centre of the pyramid's bounding box; ``axes`` (3x3) has u, v, w as COLUMNS in the
patient RAS frame. For the left sinus u points to RAS -x, so the frame is mirrored: both
sinuses share one description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from paranasal_ssl.phantom import shapes

FACES = ("medial", "lateral", "anterior", "posterolateral", "roof", "floor")
# Outward unit normals (u, v, w) of each face, used to aim findings at a wall.
FACE_DIRECTIONS = {
    "medial": (-1.0, 0.0, 0.0), "lateral": (1.0, 0.0, 0.0), "anterior": (0.3, 1.0, 0.0),
    "posterolateral": (0.5, -1.0, 0.0), "roof": (0.2, 0.0, 1.0), "floor": (0.1, 0.0, -1.0),
}


@dataclass
class SinusShape:
    """Geometry of one sinus in the patient frame (all lengths mm)."""

    side: str  # "left" or "right" (the patient's)
    center: Tuple[float, float, float]  # bounding-box centre of the pyramid, patient RAS mm
    axes: np.ndarray  # (3, 3) columns u, v, w in patient RAS
    width: float  # medial base to lateral apex (u)
    ap: float  # antero-posterior extent of the base (v)
    height: float  # supero-inferior extent of the base (w)
    apex_fraction: float  # size of the truncated apex face relative to the base
    apex_offset: Tuple[float, float]  # (v, w) of the apex face centre relative to the base's
    rounding: float
    walls: Dict[str, float]  # bone thickness per face
    mucosa: float  # normal lining thickness
    alveolar_recess: float = 0.0  # extra floor depth (mm); 0 = none
    zygomatic_recess: float = 0.0  # apex pushed further lateral (mm)
    wobble: float = 0.0  # amplitude (mm) of a smooth random bulging/denting of the walls
    wobble_seed: int = 0
    extra: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Low-frequency (12-30 mm) deformation: every sinus gets its own irregular outline.
        self._wobble = shapes.SmoothNoise(np.random.default_rng(self.wobble_seed), (12.0, 30.0),
                                          waves=5) if self.wobble > 0 else None

    @property
    def sign(self) -> float:
        """+1 for the right sinus (RAS +x is the patient's right), -1 for the left."""
        return 1.0 if self.side == "right" else -1.0

    def bounds(self, margin: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """Patient-frame axis-aligned box (lo, hi) around the sinus and its walls."""
        half = np.array([self.width / 2 + self.zygomatic_recess, self.ap / 2,
                         self.height / 2 + self.alveolar_recess]) + 4.0 + margin
        corners = np.array([[a, b, c] for a in (-half[0], half[0]) for b in (-half[1], half[1])
                            for c in (-half[2], half[2])])
        pts = np.asarray(self.center) + corners @ np.asarray(self.axes).T
        return pts.min(0), pts.max(0)

    # ----------------------------------------------------------------------------------------
    def local(self, x, y, z):
        return shapes.to_local(x, y, z, self.center, self.axes)

    def face_distances(self, u, v, w) -> Dict[str, np.ndarray]:
        """Signed distance (mm) to each face's plane, positive outside, in local coordinates."""
        hw, f = self.width / 2.0, self.apex_fraction
        va, wa = self.apex_offset
        ap = self.ap + 2 * self.rounding  # rounding trims the A-P extent: start a bit longer
        s = u + np.float32(hw)  # 0 at the base, width at the apex

        def slanted(coord, start, end, outward):
            slope = (end - start) / self.width
            norm = np.float32(np.sqrt(1.0 + slope * slope))
            return outward * (coord - np.float32(start) - np.float32(slope) * s) / norm

        return {
            "medial": -u - np.float32(hw),
            "lateral": u - np.float32(hw + self.zygomatic_recess),
            "anterior": slanted(v, ap / 2, va + f * ap / 2, 1.0),
            "posterolateral": slanted(v, -ap / 2, va - f * ap / 2, -1.0),
            "roof": slanted(w, self.height / 2, wa + f * self.height / 2, 1.0),
            "floor": slanted(w, -self.height / 2, wa - f * self.height / 2, -1.0),
        }

    def recess_sd(self, u, v, w, offset: float) -> Optional[np.ndarray]:
        """The alveolar recess lobe (None when absent), grown by -``offset`` mm."""
        if self.alveolar_recess <= 0:
            return None
        depth = self.alveolar_recess
        c = (-0.2 * self.width, 0.1 * self.ap, -self.height / 2 + 4.0)
        r = (0.22 * self.width, 0.24 * self.ap, depth + 4.0)
        return shapes.ellipsoid(u, v, w, c, r) + np.float32(offset)

    def sd(self, u, v, w, offsets: Optional[Dict[str, float]] = None, uniform: float = 0.0,
           faces: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
        """Signed distance of the cavity shrunk by ``offsets[face]`` + ``uniform`` mm per face
        (the air surface for a lining of that thickness)."""
        offsets = offsets or {}
        faces = faces if faces is not None else self.face_distances(u, v, w)
        parts = [faces[n] + np.float32(offsets.get(n, 0.0) + uniform) for n in FACES]
        out = shapes.smooth_max(parts, self.rounding)
        recess = self.recess_sd(u, v, w, offsets.get("floor", 0.0) + uniform)
        if recess is not None:
            out = shapes.smooth_union(out, recess, 5.0)
        # Canine fossa: the anterior wall is dented inward below the infraorbital foramen.
        fossa = shapes.ellipsoid(u, v, w, (0.1 * self.width, self.ap / 2 + 7.0,
                                           -0.12 * self.height), (11.0, 10.0, 13.0))
        out = np.maximum(out, -(fossa + np.float32(offsets.get("anterior", 0.0) + uniform)))
        if self._wobble is not None:
            out = out + np.float32(self.wobble) * np.clip(self._wobble(u, v, w), -1.5, 1.5)
        return out

    def outer_sd(self, u, v, w, faces: Optional[Dict[str, np.ndarray]] = None,
                 cavity: Optional[np.ndarray] = None) -> np.ndarray:
        """Outer surface of the bony wall: the cavity grown by each face's wall thickness,
        blended by how close each face is (offsetting the planes themselves would push the
        pointed apex far out)."""
        faces = faces if faces is not None else self.face_distances(u, v, w)
        cavity = cavity if cavity is not None else self.sd(u, v, w, faces=faces)
        m = faces[FACES[0]]
        for n in FACES[1:]:
            m = np.maximum(m, faces[n])
        k = np.float32(max(self.rounding, 0.5))
        num = np.zeros_like(m)
        den = np.zeros_like(m)
        for n in FACES:
            e = np.exp((faces[n] - m) / k)
            num += e * np.float32(self.walls.get(n, 1.5))
            den += e
        return cavity - num / den

    # ----------------------------------------------------------------------------------------
    def point_sd(self, pts_local: np.ndarray, offsets: Optional[Dict[str, float]] = None
                 ) -> np.ndarray:
        """``sd`` at (N, 3) local points (float32)."""
        p = np.asarray(pts_local, np.float32)
        return self.sd(p[:, 0], p[:, 1], p[:, 2], offsets)

    def inner_center(self) -> np.ndarray:
        """A point well inside (local mm): a quarter of the way from base to apex."""
        va, wa = self.apex_offset
        return np.array([-0.25 * self.width, 0.3 * va, 0.3 * wa])

    def surface_point(self, direction: np.ndarray, offsets: Optional[Dict[str, float]] = None
                      ) -> Tuple[np.ndarray, np.ndarray]:
        """Where a ray from ``inner_center`` along ``direction`` (local) leaves the shape.

        Returns (point, inward unit normal), both local. The normal is the negative gradient.
        """
        d = np.asarray(direction, float)
        d = d / np.linalg.norm(d)
        c = self.inner_center()
        t = np.arange(0.0, 60.0, 0.25)
        sd = self.point_sd(c + t[:, None] * d, offsets)
        outside = np.nonzero(sd >= 0)[0]
        k = int(outside[0]) if len(outside) else len(t) - 1
        if k > 0:  # linear interpolation between the last inside and first outside sample
            a, b = float(sd[k - 1]), float(sd[k])
            tk = t[k - 1] + 0.25 * (-a) / max(b - a, 1e-6)
        else:
            tk = 0.0
        p = c + tk * d
        eps = 0.3
        grad = np.array([
            float(self.point_sd((p + e)[None], offsets)[0] - self.point_sd((p - e)[None],
                                                                             offsets)[0])
            for e in np.eye(3) * eps])
        n = -grad / max(np.linalg.norm(grad), 1e-9)
        return p, n

    def to_patient(self, p_local: np.ndarray) -> np.ndarray:
        return np.asarray(self.center) + np.asarray(self.axes) @ np.asarray(p_local, float)

    def to_local_point(self, p_patient: np.ndarray) -> np.ndarray:
        return np.asarray(self.axes).T @ (np.asarray(p_patient, float) - np.asarray(self.center))
