"""Synthetic head CT/MRI phantoms of the maxillary sinuses, with anomalies and label masks.

Entry points: ``PhantomConfig`` / ``preset`` (``config.py``: every setting, each with the domain
fact behind it), ``cohort.build_case(cfg, index)`` (one case in memory), ``cohort.write_case``
and ``cohort.generate_cohort`` (files, manifest); the command is ``paranasal-ssl synth``.

How a case is made
------------------
1. Sample the subject (``anatomy.py``): sinus size, shape and asymmetry, head rotation, teeth,
   normal variants; then per side the findings and the reader's label (``findings.py``).
2. Paint smooth implicit shapes (signed distances, ``shapes.py``) on a grid just large enough
   for both sinuses, orbits' lower half and the teeth (``canvas.py``, ``head.py``,
   ``contents.py``). A one-voxel ramp across each surface gives partial volume; thick slices are
   painted as sub-slices and averaged (the slice profile).
3. Acquire (``appearance.py``): PSF blur, then CT (HU, dental metal streaks, correlated noise,
   scanner calibration, cone-beam variant) or MRI (sequence contrast, bias field, ghosts, Rician
   noise). Images are int16 (HU on CT), masks uint8 codes of ``anomalies.ANOMALY_CODES``.

Frames and geometry
-------------------
Anatomy lives in a patient frame (RAS mm fixed to the head). The head is rotated a few degrees
and placed anywhere in the scanner (non-zero origin); images are stored in LPS with direction
identity, diag(-1, -1, 1) ("ras") or an oblique rotation. Manifest ROIs are the sinus cavity's
axis-aligned extent in scanner RAS plus 3 mm on each side; the centre is that box's centre (a
few mm inside the cavity: a pyramid fills about a third of its box).

Gravity (documented choice)
---------------------------
Fluid obeys gravity in the SCANNER, not in the head: patients lie supine for CT and MRI, so the
dependent side is posterior and the air-fluid surface is a plane of constant scanner A-P
coordinate (RAS y), tilted relative to the anatomy when the head is rotated and oblique in
voxel space when the volume is stored obliquely. ``grid.patient_position = "upright"`` (dental
cone-beam) puts the surface at constant S instead. Depth is a random fraction of the cavity's
extent along gravity.

Labels (documented choice)
--------------------------
A side is anomalous when it has a reportable finding: thickening with a total lining over 4 mm,
or any cyst, polyp, fluid level, partial or complete opacification. 2-4 mm thickening is
sub-threshold: painted, coded in the mask, listed in ``anomaly_types`` and ``findings``, but
``true_label`` 0. Normal lining (1-3 mm) is background in the mask. Reader labels differ from
the truth only near the threshold (``labels`` section; ``label_noise`` column says why).

What makes the cohort informative
---------------------------------
Normal variants that mimic findings (lining up to 3 mm, bony septa, deep recesses, roots
bulging into the floor, hypoplasia, asymmetry, rotated head), subtle findings (4-7 mm
thickening, 3-6 mm cysts, small fluid levels), acquisition effects (per-scanner noise, thick
slices, partial-volume walls, metal streaks, cone-beam HU, bias field, ghosts, contrast jitter)
and label noise. The ``easy`` preset turns all of them off for debugging.
"""

from paranasal_ssl.phantom.config import PhantomConfig, preset

__all__ = ["PhantomConfig", "preset"]
