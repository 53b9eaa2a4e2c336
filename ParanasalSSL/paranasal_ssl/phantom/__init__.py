"""Synthetic head CT/MRI phantoms of the maxillary sinuses, with anomalies and label masks.

``PhantomConfig`` (``config.py``) holds every setting; ``cohort.build_case`` makes one case in
memory and ``cohort.generate_cohort`` writes a whole cohort (images, masks, manifest). The other
modules each do one job: ``shapes`` (signed distances), ``canvas`` (grid and frames),
``anatomy`` (per-subject sampling), ``sinus`` (the sinus shape), ``head`` (everything around
the sinuses), ``findings`` (anomalies and labels), ``contents`` (painting a sinus) and
``appearance`` (CT/MRI values and acquisition effects).
"""

from paranasal_ssl.phantom.config import PhantomConfig, preset

__all__ = ["PhantomConfig", "preset"]
