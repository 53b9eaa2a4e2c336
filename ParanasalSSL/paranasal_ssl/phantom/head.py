"""Paint the head around the sinuses: face, fat, orbits, zygoma, nasal cavity, palate, teeth.

Positions are patient-frame RAS mm (see ``anatomy.py``); ``t`` maps tissue names to values in
the modality's units (HU on CT). Painting is back to front: later tissues cover earlier ones,
with a one-voxel soft edge (partial volume). The sinuses themselves are painted afterwards by
``contents.py`` so their walls cut cleanly through whatever lies here.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from paranasal_ssl.phantom import shapes as S
from paranasal_ssl.phantom.anatomy import Subject, cavity_extent
from paranasal_ssl.phantom.canvas import Canvas

BIG = 1e3


def _bone(c: Canvas, t: Dict[str, float], sd_fn, lo, hi, cortex: float = 1.5) -> None:
    """Solid bone: a cortical shell of ``cortex`` mm around textured cancellous bone."""
    c.paint(sd_fn, lo, hi, t["cortical_bone"])
    c.paint(lambda x, y, z: sd_fn(x, y, z) + np.float32(cortex), lo, hi, t["cancellous_bone"],
            texture=t.get("bone_texture", 0.0))


def render_head(c: Canvas, subj: Subject, t: Dict[str, float]) -> None:
    """Paint everything but the maxillary sinus cavities onto ``c``."""
    hs = subj.half_separation
    _face(c, subj, t)
    for side in ("left", "right"):
        s = 1.0 if side == "right" else -1.0
        sinus = subj.sinuses[side]
        lat = abs(sinus.center[0]) + sinus.width / 2  # lateral apex of the sinus
        # Deep fat pads give the sinus walls fat on the outside, as on CT.
        for cen, rad in (((s * (lat + 2), 12.0, -14.0), (7.0, 10.0, 9.0)),  # buccal fat pad
                         ((s * (hs + 4), -31.0, -2.0), (9.0, 6.0, 14.0)),  # infratemporal fossa
                         ((s * (hs - 7), -24.0, 8.0), (4.0, 3.0, 7.0))):  # pterygopalatine
            c.paint(lambda x, y, z, cen=cen, rad=rad: S.ellipsoid(x, y, z, cen, rad),
                    np.subtract(cen, rad), np.add(cen, rad), t["fat"], texture=t["fat_texture"])
        # Mandibular coronoid process/ramus and the lateral pterygoid plate (bone).
        cen = (s * (lat + 7), -36.0, -20.0)
        _bone(c, t, lambda x, y, z, cen=cen: S.ellipsoid(x, y, z, cen, (3.5, 9.0, 24.0)),
              np.subtract(cen, (4, 10, 25)), np.add(cen, (4, 10, 25)), cortex=1.2)
        cen = (s * (hs - 8), -27.0, -12.0)
        c.paint(lambda x, y, z, cen=cen: S.ellipsoid(x, y, z, cen, (5.0, 1.0, 16.0)),
                np.subtract(cen, (6, 2, 17)), np.add(cen, (6, 2, 17)), t["cortical_bone"])
        # Zygoma body, arch and the lateral orbital rim.
        # The sinus apex points into the zygoma: the body overlaps the apex region, and the
        # sinus is carved out of it later.
        zy = sinus.center[2] + sinus.apex_offset[1]
        cen = (s * (lat + 3), 6.0, zy)
        _bone(c, t, lambda x, y, z, cen=cen: S.ellipsoid(x, y, z, cen, (8.0, 13.0, 12.0)),
              np.subtract(cen, 14), np.add(cen, 14), cortex=2.0)
        for a, b, r in (((s * (lat + 11), -2.0, 6.0), (s * (lat + 14), -52.0, 4.0), 4.0),
                        ((s * (lat + 5), 10.0, 14.0), (s * (lat + 3), 12.0, 50.0), 4.0)):
            c.paint(lambda x, y, z, a=a, b=b, r=r: S.capsule(x, y, z, a, b, r),
                    np.minimum(a, b) - r - 1, np.maximum(a, b) + r + 1, t["cortical_bone"])
        ox = s * (hs + 3)
        ext = cavity_extent(sinus, ox, 3.0)
        roof = (ext[1] if ext else sinus.center[2] + sinus.height / 2) + sinus.walls["roof"]
        _orbit(c, t, s, hs, roof)
    _nasal(c, subj, t, subj.nasal_floor_z)
    _maxilla(c, subj, t)
    _teeth(c, subj, t)


def _face(c: Canvas, subj: Subject, t: Dict[str, float]) -> None:
    """Skin, subcutaneous fat and soft tissue in one pass over the whole grid: the tissue is a
    piecewise-linear function of depth below the skin, which also gives the soft edges."""
    sc = subj.head_scale
    head = S.ellipsoid(c.x, c.y, c.z, (0.0, -10.0, 4.0), (70.0 * sc, 56.0 * sc, 85.0 * sc))
    nose = S.ellipsoid(c.x, c.y, c.z, (0.0, 40.0 * sc, 0.0), (13.0, 15.0, 28.0))
    depth = -S.smooth_union(head, nose, 6.0)  # mm below the skin surface
    w = c.width / 2
    skin, fat = 1.6, subj.fat_mm
    xp = [-w, w, skin - w, skin + w, skin + fat - w, skin + fat + w]
    fp = [t["outside_air"], t["skin"], t["skin"], t["fat"], t["fat"], t["soft_tissue"]]
    c.image[...] = np.interp(depth.ravel(), xp, fp).astype(np.float32).reshape(c.shape)
    if c.texture is not None:
        inside = np.clip((depth - skin) / (2 * w), 0, 1)
        c.image += inside * np.float32(t["soft_texture"]) * c.texture
    # Nostrils: air from the nasal vestibule to the outside.
    for s in (-1.0, 1.0):
        cen = (s * 6.0, 44.0 * sc, subj.nasal_floor_z + 3.0)
        c.paint(lambda x, y, z, cen=cen: S.ellipsoid(x, y, z, cen, (4.0, 10.0, 4.0)),
                np.subtract(cen, 11), np.add(cen, 11), t["outside_air"])


def _orbit(c: Canvas, t, s: float, hs: float, roof: float) -> None:
    """Lower orbit: bony walls, fat, inferior rectus and the globe (vitreous, lens). ``roof``:
    top of the sinus's roof under the orbit, which is the orbital floor."""
    cen = (s * (hs + 3), 3.0, roof + 17.0)
    rad = (17.0, 22.0, 17.0)

    def open_front(sd, x, y, z):  # the orbit is open anteriorly
        return np.maximum(sd, y - np.float32(18.0))

    c.paint(lambda x, y, z: open_front(S.ellipsoid(x, y, z, cen, np.add(rad, 1.5)), x, y, z),
            np.subtract(cen, 19), np.add(cen, 19), t["cortical_bone"])
    c.paint(lambda x, y, z: S.ellipsoid(x, y, z, cen, rad), np.subtract(cen, 18),
            np.add(cen, 18), t["fat"], texture=t["fat_texture"])
    # Inferior orbital rim: a thick bar continuing the sinus's anterior wall upward.
    a, b = (s * (hs - 10), 20.0, roof + 1.0), (s * (hs + 16), 19.0, roof + 3.0)
    c.paint(lambda x, y, z: S.capsule(x, y, z, a, b, 3.0), np.minimum(a, b) - 4,
            np.maximum(a, b) + 4, t["cortical_bone"])
    m = (s * (hs + 3), -2.0, roof + 4.0)
    c.paint(lambda x, y, z: S.ellipsoid(x, y, z, m, (4.0, 16.0, 2.5)), np.subtract(m, 17),
            np.add(m, 17), t["soft_tissue"])
    g = (s * (hs + 3), 14.0, roof + 20.0)
    c.paint(lambda x, y, z: S.sphere(x, y, z, g, 12.0), np.subtract(g, 13), np.add(g, 13),
            t["soft_tissue"])  # sclera
    c.paint(lambda x, y, z: S.sphere(x, y, z, g, 10.8), np.subtract(g, 12), np.add(g, 12),
            t["vitreous"])
    lens = (g[0], g[1] + 8.5, g[2])
    c.paint(lambda x, y, z: S.ellipsoid(x, y, z, lens, (4.5, 2.0, 4.5)), np.subtract(lens, 5),
            np.add(lens, 5), t["lens"])


def _maxilla(c: Canvas, subj: Subject, t) -> None:
    """Hard palate (nasal floor), the horseshoe alveolar process holding the teeth, and the
    sinus walls joined to it by a smooth bony buttress; cancellous bone inside."""
    hs, nf = subj.half_separation, subj.nasal_floor_z
    yc, ax, ay = subj.arch
    pc = (0.0, 4.0, nf - 2.5)

    def palate(x, y, z):  # a plate filling the dental arch (not a box with square corners)
        k = np.sqrt((x / np.float32(ax + 2.0)) ** 2 + ((y - np.float32(yc)) / np.float32(ay + 2.0))
                    ** 2)
        inside_arch = (k - np.float32(1.0)) * np.float32(min(ax, ay))
        return np.maximum(S.box(x, y, z, pc, (hs - 3.0, 30.0, 2.5), 1.5), inside_arch)

    floor = min(sn.center[2] - sn.height / 2 - sn.alveolar_recess for sn in subj.sinuses.values())
    top, bottom = floor + 8.0, subj.crest_z - 1.0

    def arch(x, y, z):
        k0 = np.sqrt((x / np.float32(ax)) ** 2 + ((y - np.float32(yc)) / np.float32(ay)) ** 2)
        k1 = np.sqrt((x / np.float32(ax * ax)) ** 2 + ((y - np.float32(yc)) / np.float32(ay * ay))
                     ** 2)
        # The ridge narrows from ~16 mm under the sinus to ~8 mm at the crest.
        half = np.float32(4.0) + np.float32(4.0) * np.clip((z - np.float32(bottom))
                                                           / np.float32(top - bottom), 0, 1)
        ring = np.abs(k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))) - half
        slab = np.maximum(z - np.float32(top), np.float32(bottom) - z)
        back = np.float32(yc - 2.0) - y  # ends at the maxillary tuberosity behind the molars
        return S.smooth_max([ring, slab, back], 1.0)

    alo, ahi = (-ax - 10, yc - 4, bottom - 2), (ax + 10, yc + ay + 10, top + 2)
    plo, phi = np.subtract(pc, (hs, 31, 4)), np.add(pc, (hs, 31, 4))
    c.paint(arch, alo, ahi, t["cortical_bone"])
    c.paint(palate, plo, phi, t["cortical_bone"])
    for sn in subj.sinuses.values():
        lo, hi = sn.bounds(margin=2.0)

        def buttress(x, y, z, sn=sn):
            u, v, w = sn.local(x, y, z)
            return S.smooth_union(sn.outer_sd(u, v, w), arch(x, y, z), 6.0)

        c.paint(buttress, lo, hi, t["cortical_bone"])
    tex = t.get("bone_texture", 0.0)
    c.paint(lambda x, y, z: arch(x, y, z) + np.float32(1.5), alo, ahi, t["cancellous_bone"],
            texture=tex)
    c.paint(lambda x, y, z: palate(x, y, z) + np.float32(1.0), plo, phi, t["cancellous_bone"],
            texture=tex)


def _teeth(c: Canvas, subj: Subject, t) -> None:
    """Roots (tapered dentin cones) and crowns (enamel over dentin, or metal)."""
    for tooth in subj.teeth:
        neck = np.asarray(tooth.neck)
        if tooth.metal == "implant":  # one titanium screw in place of the roots
            a = np.mean(np.asarray(tooth.apices), axis=0) - (0.0, 0.0, 1.0)
            c.paint(lambda x, y, z, a=a, n=neck: S.capsule(x, y, z, n, a, 2.0, 1.6),
                    np.minimum(neck, a) - 3, np.maximum(neck, a) + 3, t["metal"])
        for apex in ([] if tooth.metal == "implant" else tooth.apices):
            a = np.asarray(apex)
            c.paint(lambda x, y, z, a=a, n=neck + (0, 0, 1.0), r=tooth.root_radius:
                    S.capsule(x, y, z, n, a, r, 0.9),
                    np.minimum(neck, a) - 4, np.maximum(neck, a) + 4, t["dentin"])
        r = np.asarray(tooth.crown_radii)
        cc = neck - (0.0, 0.0, r[2] - 0.5)
        c.paint(lambda x, y, z, cc=cc, r=r: S.ellipsoid(x, y, z, cc, r), cc - r - 1, cc + r + 1,
                t["metal"] if tooth.metal else t["enamel"])
        if not tooth.metal:
            c.paint(lambda x, y, z, cc=cc, r=r: S.ellipsoid(x, y, z, cc, r - 1.4), cc - r,
                    cc + r, t["dentin"])


def _nasal(c: Canvas, subj: Subject, t, nf: float) -> None:
    """Nasal cavity and nasopharynx (air lined by mucosa), septum, turbinates, ethmoid cells."""
    xs = {side: abs(sn.center[0]) - sn.width / 2 - sn.walls["medial"]
          for side, sn in subj.sinuses.items()}
    xn = float(np.mean(list(xs.values())))
    top = nf + 70.0

    def cavity(x, y, z, shrink=0.0):
        body = S.box(x, y, z, (0.0, 2.0, (nf + top) / 2), (xn, 27.0, (top - nf) / 2), 3.0)
        # Narrower toward the roof and toward the nostrils.
        taper = np.abs(x) - np.float32(xn) + (z - np.float32(nf)) * np.float32(0.2) \
            + np.maximum(y - np.float32(14.0), 0) * np.float32(0.35)
        pharynx = S.ellipsoid(x, y, z, (0.0, -36.0, nf + 6.0), (12.0, 11.0, 14.0))
        return S.smooth_union(np.maximum(body, taper), pharynx, 4.0) + np.float32(shrink)

    lo, hi = (-xn - 2, -52.0, nf - 10), (xn + 2, 32.0, top)
    c.paint(cavity, lo, hi, t["mucosa"])
    c.paint(lambda x, y, z: cavity(x, y, z, 2.0), lo, hi, t["nasal_air"])
    dev = subj.septal_deviation

    def septum(x, y, z, half):
        bend = np.float32(dev) * np.exp(-((y - 5.0) / 15.0) ** 2 - ((z - nf - 12.0) / 12.0) ** 2)
        plate = np.abs(x - bend) - np.float32(half)
        extent = S.box(x * 0, y, z, (0.0, 3.0, nf + 35.0), (BIG, 26.0, 36.0), 2.0)
        return np.maximum(plate, extent)

    slo, shi = (-abs(dev) - 6, -25.0, nf - 2), (abs(dev) + 6, 31.0, nf + 72)
    c.paint(lambda x, y, z: septum(x, y, z, 2.6), slo, shi, t["mucosa"])
    c.paint(lambda x, y, z: septum(x, y, z, 1.0), slo, shi, t["cartilage"])
    for side in ("left", "right"):
        s = 1.0 if side == "right" else -1.0
        sw = subj.turbinate_swelling[side]
        for cen, rad, core in (((s * (xs[side] - 3.5 * sw), 0.0, nf + 8.0),
                                (3.5 * sw, 22.0, 5.5 * sw), (1.0, 19.0, 3.0)),  # inferior
                               ((s * xs[side] * 0.55, -2.0, nf + 24.0),
                                (2.8 * sw, 17.0, 6.0), (0.8, 14.0, 4.0))):  # middle
            c.paint(lambda x, y, z, cen=cen, rad=rad: S.ellipsoid(x, y, z, cen, rad),
                    np.subtract(cen, rad) - 1, np.add(cen, rad) + 1, t["mucosa"])
            c.paint(lambda x, y, z, cen=cen, core=core: S.ellipsoid(x, y, z, cen, core),
                    np.subtract(cen, core) - 1, np.add(cen, core) + 1, t["cancellous_bone"])
        # Ethmoid air cells: a foam of thin bony septa (level sets of a smooth random field)
        # between the orbits, above the nasal cavity.
        zr = max(sn.center[2] + sn.height / 2 for sn in subj.sinuses.values())
        waves = S.SmoothNoise(np.random.default_rng(subj.texture_seed + (side == "right")),
                              (9.0, 14.0), waves=5)
        cen = (s * (xn * 0.3 + 7.0), 0.0, zr + 14.0)
        rad = (5.5, 18.0, 16.0)

        def ethmoid(x, y, z, cen=cen, rad=rad):
            return S.ellipsoid(x, y, z, cen, rad)

        def septa(x, y, z, cen=cen, rad=rad, waves=waves):
            sheets = np.abs(waves(x, y, z)) * np.float32(2.5) - np.float32(0.45)
            return np.maximum(sheets, ethmoid(x, y, z))

        lo, hi = np.subtract(cen, rad) - 2, np.add(cen, rad) + 2
        c.paint(ethmoid, lo, hi, t["mucosa"])
        c.paint(lambda x, y, z: ethmoid(x, y, z) + np.float32(1.0), lo, hi, t["nasal_air"])
        c.paint(septa, lo, hi, t["cortical_bone"])
