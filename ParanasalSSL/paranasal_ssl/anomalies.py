"""The anomaly vocabulary shared by phantoms, manifests, label masks, review and reports."""

from __future__ import annotations

# Integer values in label masks (0 = background). Order follows increasing sinus occupancy.
ANOMALY_CODES = {
    "mucosal_thickening": 1,
    "retention_cyst": 2,
    "polyp": 3,
    "air_fluid_level": 4,
    "partial_opacification": 5,
    "complete_opacification": 6,
}
ANOMALY_TYPES = tuple(ANOMALY_CODES)
CODE_TO_ANOMALY = {v: k for k, v in ANOMALY_CODES.items()}

# Short names readers type in review and on the command line.
ANOMALY_ALIASES = {
    "thickening": "mucosal_thickening",
    "cyst": "retention_cyst",
    "fluid": "air_fluid_level",
    "fluid_level": "air_fluid_level",
    "opacification": "partial_opacification",
    "partial": "partial_opacification",
    "complete": "complete_opacification",
    "opacified": "complete_opacification",
}


def canonical_anomaly(name: str) -> str | None:
    """'cyst' -> 'retention_cyst'; None for an unknown name."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ANOMALY_ALIASES.get(key, key)
    return key if key in ANOMALY_CODES else None
