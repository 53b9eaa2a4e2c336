"""Tissue values and acquisition effects: CT Hounsfield units or MRI-like contrast.

``tissue_values`` gives the value painted for each tissue name (HU on CT, stored MRI units);
``acquire_ct`` / ``acquire_mri`` turn the painted (partial-volume) image into a scan: PSF blur,
dental metal streaks, correlated noise and calibration on CT; bias field, motion ghosts and
Rician noise on MRI. Arrays are ``[k, j, i]`` on the stored grid; ``spacing`` is (i, j, k) mm.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from paranasal_ssl.phantom.config import PhantomConfig

# Order of the per-subject draws (fixed, so adding a tissue at the end changes nothing else).
CT_TISSUES = ("outside_air", "sinus_air", "inflamed_air", "nasal_air", "fat", "soft_tissue",
              "skin", "mucosa", "thickening", "polyp", "cyst", "fluid", "opacity", "fungal",
              "cortical_bone", "cancellous_bone", "cartilage", "dentin", "enamel", "pulp",
              "vitreous", "lens", "metal")
MRI_ALIASES = {"outside_air": "air", "sinus_air": "air", "inflamed_air": "air",
               "nasal_air": "air", "dentin": "tooth", "enamel": "tooth", "metal": "air",
               "pulp": "soft_tissue", "fungal": "fungal", "fungal_spot": "cortical_bone"}
# Fungal concretions are dark on T2 (metal-like), intermediate on T1 (assumed relative values).
FUNGAL_MRI = {"t1": 0.3, "t2": 0.12, "flair": 0.2}


def tissue_values(rng: np.random.Generator, cfg: PhantomConfig, sequence: str
                  ) -> Dict[str, float]:
    """Per-subject tissue values, including ``*_texture`` amplitudes for the texture field."""
    if cfg.modality == "ct":
        t = {}
        for name in CT_TISSUES:
            mean, sd = cfg.ct.hu[name]
            t[name] = float(rng.normal(mean, sd)) if sd > 0 else float(mean)
        t["inflamed_air"] = float(np.clip(t["inflamed_air"], -960.0, -700.0))
        t["fungal_spot"] = float(rng.uniform(250.0, 435.0))  # spots up to ~435 HU
        t.update(bone_texture=120.0, fat_texture=8.0, soft_texture=5.0)
        return t
    table = dict(cfg.mri.signal[sequence])
    table.setdefault("fungal", FUNGAL_MRI[sequence])
    jitter = cfg.mri.contrast_jitter
    t = {}
    for name in CT_TISSUES + ("fungal_spot",):
        key = MRI_ALIASES.get(name, name)
        factor = float(np.exp(rng.normal(0.0, jitter))) if jitter > 0 else 1.0
        t[name] = float(table[key]) * factor * cfg.mri.scale
    t.update(bone_texture=0.06 * cfg.mri.scale, fat_texture=0.03 * cfg.mri.scale,
             soft_texture=0.02 * cfg.mri.scale)
    return t


def texture_field(rng: np.random.Generator, shape: Tuple[int, ...], sigma_vox: float
                  ) -> np.ndarray:
    """Smooth unit-variance noise (trabecular bone, fat lobules, muscle texture)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox)
    return f / np.float32(max(float(f.std()), 1e-6))


def psf(image: np.ndarray, spacing: Sequence[float], fwhm_mm: float) -> np.ndarray:
    """Gaussian point-spread function of ``fwhm_mm`` (the reconstruction kernel)."""
    if fwhm_mm <= 0:
        return image
    sigma = [fwhm_mm / 2.355 / s for s in reversed(tuple(spacing))]  # [k, j, i] order
    return ndimage.gaussian_filter(image, sigma, mode="nearest")


def _noise_level(rng, median_logsd: Sequence[float], scale: float, spacing) -> float:
    median, log_sd = median_logsd
    per_mm3 = median * float(np.exp(rng.normal(0.0, log_sd)))
    # Quantum noise scales with 1/sqrt(voxel volume): thin slices are noisier.
    return per_mm3 * scale / float(np.sqrt(np.prod(spacing)))


def acquire_ct(rng: np.random.Generator, cfg: PhantomConfig, image: np.ndarray,
               spacing: Sequence[float], metal_ijk: List[np.ndarray]
               ) -> Tuple[np.ndarray, Dict]:
    """Painted HU -> int16 CT with PSF, metal streaks, correlated noise and calibration."""
    ct = cfg.ct
    cbct = bool(rng.random() < ct.cbct)
    sd = _noise_level(rng, ct.noise_sd_hu, cfg.noise_scale, spacing)
    if cbct:
        sd *= ct.cbct_noise_factor
    gain = 1.0 + float(rng.normal(0.0, ct.calibration_scale)) * (4.0 if cbct else 1.0)
    offset = float(rng.normal(0.0, ct.calibration_offset_hu))
    if cbct:
        offset += float(rng.uniform(-ct.cbct_offset_hu, ct.cbct_offset_hu))
    out = psf(image, spacing, cfg.grid.psf_fwhm_mm)
    streaks = _metal_streaks(rng, out.shape, spacing, metal_ijk, ct.streak_hu)
    if streaks is not None:
        out += streaks
    if sd > 0:
        n = texture_field(rng, out.shape, ct.noise_correlation_voxels)
        out += n * np.float32(sd)
    out = out * np.float32(gain) + np.float32(offset)
    lo, hi = ct.clip_hu
    out = np.clip(np.rint(out), lo, hi).astype(np.int16)
    return out, {"scanner": "cbct" if cbct else "ct", "noise_sd": round(sd, 2),
                 "metal_streaks": int(streaks is not None)}


def _metal_streaks(rng, shape, spacing, metal_ijk: List[np.ndarray], amp_range
                   ) -> np.ndarray | None:
    """Streaks radiating in the axial (acquisition) plane from dental metal, with dark bands
    between metal objects in the same slice; strongest in the metal's slices, fading over a
    few mm. ``metal_ijk``: one (N, 3) array of continuous (i, j, k) points per metal object."""
    if not metal_ijk:
        return None
    nk, nj, ni = shape
    si, sj, sk = spacing
    jj, ii = np.meshgrid(np.arange(nj, dtype=np.float32) * sj,
                         np.arange(ni, dtype=np.float32) * si, indexing="ij")
    out = np.zeros(shape, np.float32)
    amp = float(rng.uniform(*amp_range))
    rays = []  # one fixed set of rays per object: streaks stay coherent along an implant
    for _ in metal_ijk:
        n = int(rng.integers(8, 16))
        rays.append((rng.uniform(0.0, np.pi, n), amp * rng.uniform(0.3, 1.0, n)
                     * rng.choice([-1.0, 1.0], n), rng.uniform(0.5, 1.2, n)))
    for k in range(nk):
        centres = []
        plane = np.zeros((nj, ni), np.float32)
        for obj, (angles, amps, widths) in zip(metal_ijk, rays):
            obj = np.asarray(obj, float)
            dz = np.abs(obj[:, 2] - k) * sk
            q = int(np.argmin(dz))
            if dz[q] >= 8.0:
                continue
            weight = float(np.exp(-(dz[q] / 3.0) ** 2))
            cx, cy = obj[q, 0] * si, obj[q, 1] * sj
            centres.append((cx, cy, weight))
            dx, dy = ii - np.float32(cx), jj - np.float32(cy)
            r = np.sqrt(dx * dx + dy * dy)
            star = np.zeros((nj, ni), np.float32)
            for th, a, wd in zip(angles, amps, widths):
                dperp = np.abs(-np.sin(th) * dx + np.cos(th) * dy)
                star += np.float32(a) * np.exp(-dperp ** 2 / np.float32(2 * wd ** 2))
            plane += star * np.exp(-r / np.float32(35.0)) * np.clip(r / 4.0, 0, 1) \
                * np.float32(weight)
        for m in range(len(centres)):  # dark bands between metal objects (photon starvation)
            for n in range(m + 1, len(centres)):
                (ax, ay, wa), (bx, by, wb) = centres[m], centres[n]
                ex, ey = bx - ax, by - ay
                length = float(np.hypot(ex, ey))
                if length < 1e-3:
                    continue
                dx, dy = ii - np.float32(ax), jj - np.float32(ay)
                along = (dx * ex + dy * ey) / length
                across = np.abs(-dx * ey + dy * ex) / length
                band = (along > 0) & (along < length)
                plane -= np.float32(0.5 * amp * min(wa, wb)) * band * np.exp(-across ** 2 / 8.0)
        if centres:
            out[k] += plane
    return out


def acquire_mri(rng: np.random.Generator, cfg: PhantomConfig, image: np.ndarray,
                spacing: Sequence[float]) -> Tuple[np.ndarray, Dict]:
    """Painted signal -> int16 MRI with PSF, bias field, motion ghosts and Rician noise."""
    m = cfg.mri
    out = psf(image, spacing, cfg.grid.psf_fwhm_mm)
    if m.bias_amplitude > 0:
        out *= _bias_field(rng, out.shape, m.bias_amplitude)
    ghost = 0.0
    if rng.random() < m.ghost:
        ghost = float(rng.uniform(*m.ghost_amplitude))
        shift = out.shape[1] // int(rng.integers(2, 5))  # phase encoding along the j axis
        out = out + np.float32(ghost / 2) * (np.roll(out, shift, 1) + np.roll(out, -shift, 1))
    sigma = _noise_level(rng, m.noise_sigma, cfg.noise_scale, spacing) * m.scale
    if sigma > 0:
        n1 = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
        n2 = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
        out = np.sqrt((out + n1) ** 2 + n2 ** 2)  # magnitude of complex data: Rician
    out = np.clip(np.rint(out), 0, 32767).astype(np.int16)
    return out, {"noise_sd": round(sigma, 2), "ghost": round(ghost, 3)}


def _bias_field(rng, shape, amplitude: float) -> np.ndarray:
    """exp of a random quadratic polynomial over the box, scaled to about +-``amplitude``."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    k, j, i = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = (i, j, k, i * i - 0.33, j * j - 0.33, k * k - 0.33, i * j, i * k, j * k)
    coef = rng.normal(0.0, 1.0, len(terms))
    log = sum(np.float32(c) * tm for c, tm in zip(coef, terms))
    log = log / np.float32(max(float(np.abs(log).max()), 1e-6))
    return np.exp(np.float32(amplitude) * log).astype(np.float32)
