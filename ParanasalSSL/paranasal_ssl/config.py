"""One configuration object for every stage, saved as JSON beside every artefact.

Sections are plain dataclasses so they read well in code and round-trip through JSON. Unknown or
mistyped keys in a saved file are refused with the field's dotted name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Union

from paranasal_ssl.atomic import write_json
from paranasal_ssl.errors import ConfigError

MODALITIES = ("ct", "mri")
INTERPOLATIONS = ("linear", "bspline", "nearest")


@dataclass
class CropConfig:
    """How a sinus crop is cut from a scan.

    The crop is a cube of ``shape`` voxels per edge at ``spacing_mm`` (isotropic), centred on
    the ROI centre and oriented along the ROI's axes (RAS-aligned unless the ROI is rotated).
    With ``fov="roi"`` the spacing is instead chosen per ROI so the cube covers the ROI's
    largest edge.
    """

    shape: int = 64
    spacing_mm: float = 1.0
    fov: str = "fixed"  # "fixed": shape * spacing_mm mm; "roi": the ROI's largest edge
    interpolation: str = "linear"
    mirror_right: bool = True  # right sinuses are mirrored left-right to look like left ones
    jitter_mm: float = 1.0  # uniform random centre offset per axis, training and test time
    train_crops_per_side: int = 4  # jittered crops cached per sinus for training
    test_crops_per_side: int = 5  # jittered crops averaged at prediction time (1 = no TTA)

    @property
    def fov_mm(self) -> float:
        return self.shape * self.spacing_mm

    def validate(self, prefix: str = "crop") -> None:
        _require(self.shape >= 8, f"{prefix}.shape", self.shape, "an integer >= 8")
        _require(self.shape % 8 == 0, f"{prefix}.shape", self.shape,
                 "a multiple of 8 (the networks downsample three times)")
        _require(self.spacing_mm > 0, f"{prefix}.spacing_mm", self.spacing_mm, "> 0 mm")
        _require(self.fov in ("fixed", "roi"), f"{prefix}.fov", self.fov, "'fixed' or 'roi'")
        _require(self.interpolation in INTERPOLATIONS, f"{prefix}.interpolation",
                 self.interpolation, " or ".join(INTERPOLATIONS))
        _require(self.jitter_mm >= 0, f"{prefix}.jitter_mm", self.jitter_mm, ">= 0")
        _require(self.train_crops_per_side >= 1, f"{prefix}.train_crops_per_side",
                 self.train_crops_per_side, ">= 1")
        _require(self.test_crops_per_side >= 1, f"{prefix}.test_crops_per_side",
                 self.test_crops_per_side, ">= 1")


@dataclass
class IntensityConfig:
    """How scan values become network inputs in [0, 1].

    CT: clip to a fixed Hounsfield window (physical units, so no per-crop statistics).
    MRI: per-crop ``percentiles`` rescaled to [0, 1] and clipped (as in the paper).
    """

    modality: str = "ct"
    ct_window_hu: List[float] = field(default_factory=lambda: [-1000.0, 600.0])
    mri_percentiles: List[float] = field(default_factory=lambda: [1.0, 99.0])

    def validate(self, prefix: str = "intensity") -> None:
        _require(self.modality in MODALITIES, f"{prefix}.modality", self.modality, "'ct' or 'mri'")
        lo, hi = self.ct_window_hu
        _require(hi > lo, f"{prefix}.ct_window_hu", self.ct_window_hu,
                 "[low, high] with high > low")
        plo, phi = self.mri_percentiles
        _require(0 <= plo < phi <= 100, f"{prefix}.mri_percentiles", self.mri_percentiles,
                 "0 <= low < high <= 100")

    @property
    def pad_value(self) -> float:
        """Value for voxels outside the scan: air (-1024 HU on CT, 0 on MRI)."""
        return -1024.0 if self.modality == "ct" else 0.0


@dataclass
class SplitConfig:
    """Patient-level split of a cohort (fractions of subjects)."""

    train: float = 0.6
    val: float = 0.2
    test: float = 0.2
    seed: int = 0

    def validate(self, prefix: str = "split") -> None:
        total = self.train + self.val + self.test
        _require(abs(total - 1.0) < 1e-6, prefix, [self.train, self.val, self.test],
                 "train + val + test = 1")
        _require(min(self.train, self.val, self.test) > 0, prefix,
                 [self.train, self.val, self.test], "every fraction > 0")


@dataclass
class DataConfig:
    """The data sections shared by every stage."""

    crop: CropConfig = field(default_factory=CropConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def validate(self) -> DataConfig:
        self.crop.validate()
        self.intensity.validate()
        self.split.validate()
        return self


def _require(ok: bool, field_name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(None, f"invalid value {value!r}", field=field_name, expected=expected)


def to_dict(obj: Any) -> Dict[str, Any]:
    """A dataclass (nested) as a plain dict for JSON."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: Dict[str, Any], source: Union[str, Path, None] = None,
              prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys by their dotted name.

    Missing keys take the dataclass defaults, so files written by older versions still load.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, f"expected an object, got {type(data).__name__}",
                          field=prefix or None)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(source, f"unknown key(s) {unknown}", field=prefix or None,
                          expected=f"keys among {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        sub = _dataclass_type(cls, f)
        dotted = f"{prefix}.{name}" if prefix else name
        kwargs[name] = from_dict(sub, value, source, dotted) if sub else value
    return cls(**kwargs)


def _dataclass_type(cls: type, f: dataclasses.Field) -> type | None:
    import typing

    hints = typing.get_type_hints(cls)
    t = hints.get(f.name)
    return t if dataclasses.is_dataclass(t) else None


def save_config(obj: Any, path: Union[str, Path], **extra: Any) -> None:
    """Save a config dataclass as JSON (atomically), with extra top-level entries such as
    ``code_version``."""
    data = {**extra, **to_dict(obj)}
    write_json(path, data)


def load_json(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
