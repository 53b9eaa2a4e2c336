"""A run folder: one experiment's configuration, cohort, splits and stage outputs.

Layout::

    RUN/config.json          resolved ExperimentConfig + manifest + code version + environment
    RUN/splits.json          subject -> train / val / test (patient-level, fixed at creation)
    RUN/cache/               crop cache (or --cache DIR shared between runs)
    RUN/cae/                 stage 1: best.pt, last.pt, metrics.csv, config.json
    RUN/residuals/<cae>/     stage 2: residual maps, scores.csv, calibration.json
    RUN/pretext/             stage 3
    RUN/finetune/<name>/     stage 4 (one folder per label fraction / seed / initialisation)
    RUN/model.json           which fine-tuned model `predict` uses by default
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from paranasal_ssl.atomic import check_writable_dir, write_json
from paranasal_ssl.config import load_json
from paranasal_ssl.errors import ConfigError, InputError
from paranasal_ssl.experiment import (
    ExperimentConfig,
    load_experiment,
    override,
    profile_config,
    save_experiment,
)
from paranasal_ssl.manifest import SinusRecord, read_manifest
from paranasal_ssl.model_export import refuse_training_in_export
from paranasal_ssl.splits import split_records
from paranasal_ssl.training.device import configure_threads, resolve_device
from paranasal_ssl.version import environment_info

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class Run:
    """An opened run folder with its cohort loaded."""

    dir: Path
    config: ExperimentConfig
    manifest: Path
    records: List[SinusRecord]
    split_of_subject: Dict[str, str]
    device: torch.device
    cache_dir: Path
    workers: int = 0

    def split(self, name: str, labelled: Optional[bool] = None,
              label: Optional[int] = None) -> List[SinusRecord]:
        """Records of split ``name`` (subjects unknown to the run's splits are ignored)."""
        out = [r for r in self.records if self.split_of_subject.get(r.subject_id) == name]
        if labelled is not None:
            out = [r for r in out if (r.label is not None) == labelled]
        if label is not None:
            out = [r for r in out if r.label == label]
        return out

    def stage_dir(self, *parts: str) -> Path:
        path = self.dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def open_run(run_dir: Path, manifest: Optional[Path] = None, profile: Optional[str] = None,
             overrides: Sequence[str] = (), device: str = "auto", cache_dir: Optional[Path] = None,
             workers: int = 0, threads: int = 0) -> Run:
    """Open ``run_dir``, creating it from ``manifest`` and ``profile`` the first time.

    An existing run keeps its configuration and splits; ``overrides`` (``section.key=value``) may
    change training settings of later stages but not the data settings that earlier stages
    depend on. Until a stage has written its output, though, the folder holds only settings (a
    first command may have stopped at a check, e.g. a split without normal sinuses): another
    ``--profile`` or other data settings then make the configuration and splits again.
    """
    run_dir = Path(run_dir)
    configure_threads(threads)
    config_path = run_dir / "config.json"
    if config_path.exists():
        refuse_training_in_export(run_dir)
        saved = load_json(config_path)
        config = load_experiment(config_path)
        manifest_path = Path(manifest) if manifest else Path(saved.get("manifest", ""))
        if not manifest:
            manifest_path = (run_dir / manifest_path) if not manifest_path.is_absolute() \
                else manifest_path
        made_by = stage_output(run_dir)
        remake = None
        if profile and profile != config.profile:
            if made_by is not None:
                raise ConfigError(config_path, f"run was made with profile {config.profile!r} "
                                  f"and has trained {made_by}", field="--profile",
                                  expected=f"{config.profile!r} or no --profile")
            remake = override(profile_config(profile), list(overrides))
        elif overrides:
            changed = override(config, list(overrides))
            if changed.data != config.data and made_by is not None:
                raise ConfigError(config_path, "data settings of an existing run cannot change "
                                  f"(its {made_by} depends on them)", field="--set",
                                  expected="a new run folder")
            if changed.data != config.data:
                remake = changed
            config = changed
        if remake is not None:
            log.info("%s has no trained stage yet: its settings and splits are made again",
                     run_dir)
            config, records, split_of_subject = _create(run_dir, remake, manifest_path.resolve(),
                                                        overrides)
        else:
            splits = load_json(run_dir / "splits.json")
            records = read_manifest(manifest_path)
            split_of_subject = dict(splits["subjects"])
            _assign_new_subjects(records, split_of_subject, run_dir)
    else:
        if manifest is None:
            raise InputError(run_dir, "not a run folder yet (no config.json)",
                             expected="--manifest to create it (with --profile)")
        check_writable_dir(run_dir)
        config = override(profile_config(profile or "cpu-small"), list(overrides))
        manifest_path = Path(manifest).resolve()
        config, records, split_of_subject = _create(run_dir, config, manifest_path, overrides)
    _check_modality(records, config, manifest_path)
    cache = Path(cache_dir) if cache_dir else run_dir / "cache"
    return Run(run_dir, config, manifest_path, records, split_of_subject, resolve_device(device),
               cache, workers or min(2, os.cpu_count() or 1))


STAGE_FOLDERS = ("cae", "residuals", "pretext", "finetune", "baselines", "external")


def stage_output(run_dir: Path) -> Optional[str]:
    """The first stage folder of ``run_dir`` that holds a file (what a change of data settings
    would invalidate), or None while the run holds only its settings and crop cache."""
    for name in STAGE_FOLDERS:
        folder = run_dir / name
        if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
            return f"{name}/"
    return None


def _create(run_dir: Path, config: ExperimentConfig, manifest_path: Path,
            overrides: Sequence[str]):
    """Write ``config.json`` and ``splits.json`` for ``manifest_path``; returns the config (its
    modality following the cohort's), the records and subject -> split."""
    records = read_manifest(manifest_path)
    declared = {r.modality for r in records if r.modality}
    if len(declared) == 1 and not any("intensity.modality" in o for o in overrides):
        config.data.intensity.modality = declared.pop()  # follow the cohort's modality
    split_of_subject = make_splits(records, config)
    save_experiment(config, run_dir / "config.json", manifest=str(manifest_path),
                    environment=environment_info(),
                    created=datetime.datetime.now().isoformat(timespec="seconds"))
    write_json(run_dir / "splits.json", {
        "seed": config.data.split.seed, "manifest": str(manifest_path),
        "subjects": split_of_subject})
    return config, records, split_of_subject


def splits_given(records: Sequence[SinusRecord]) -> bool:
    """Whether the manifest's ``split`` column assigns every row (then no split is drawn)."""
    return all(r.extra.get("split", "") in SPLITS for r in records)


def make_splits(records: Sequence[SinusRecord], config: ExperimentConfig) -> Dict[str, str]:
    """Subject -> split: the manifest's ``split`` column where every row has one, else a
    stratified patient-level split seeded by ``data.split.seed``."""
    given = [r.extra.get("split", "") for r in records]
    if splits_given(records):
        out: Dict[str, str] = {}
        for r, g in zip(records, given):
            if out.setdefault(r.subject_id, g) != g:
                raise InputError(None, f"subject {r.subject_id} appears in splits "
                                 f"{out[r.subject_id]} and {g}", field="split",
                                 expected="both sides of a subject in the same split")
        return out
    parts = split_records(records, config.data.split)
    return {r.subject_id: name for name, recs in parts.items() for r in recs}


def _assign_new_subjects(records, split_of_subject, run_dir) -> None:
    unknown = sorted({r.subject_id for r in records} - set(split_of_subject))
    if unknown:
        # new cases (e.g. exported review labels) are for prediction/fine-tuning, never test
        log.info("%d subject(s) not in %s/splits.json: used as training data", len(unknown),
                 run_dir)
        for s in unknown:
            split_of_subject[s] = "train"


def _check_modality(records, config: ExperimentConfig, manifest: Path) -> None:
    other = [r for r in records if r.modality and r.modality != config.data.intensity.modality]
    if other:
        raise InputError(manifest, f"{len(other)} row(s) are {other[0].modality.upper()} "
                         f"(e.g. {other[0].key}) but the run is configured for "
                         f"{config.data.intensity.modality.upper()}", field="modality",
                         expected=f"--set data.intensity.modality={other[0].modality} for a "
                         "new run")
