"""A trained model as ``predict`` and the Slicer module use it: config, CAE, classifier,
heatmap calibration and decision thresholds, loaded once and kept per folder."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple, Union

import torch

from paranasal_ssl.config import load_json, to_dict
from paranasal_ssl.errors import CheckpointError, InputError
from paranasal_ssl.experiment import ExperimentConfig, load_experiment
from paranasal_ssl.hashing import stable_hash
from paranasal_ssl.networks import build_cae, build_classifier
from paranasal_ssl.training.checkpoint import load_weights
from paranasal_ssl.training.device import prepare_model, resolve_device


@dataclass
class ModelBundle:
    """Everything needed to analyse a scan. ``info`` is the fine-tuned model's ``model.json``."""

    run_dir: Path
    finetune_dir: Path
    config: ExperimentConfig
    cae: torch.nn.Module
    classifier: torch.nn.Module
    info: dict
    heatmap_scale: float
    device: torch.device

    @property
    def modality(self) -> str:
        return self.config.data.intensity.modality

    @property
    def name(self) -> str:
        return f"{self.run_dir.name}/{self.info.get('name', self.finetune_dir.name)}"


_CACHE: Dict[Tuple[str, str, float], ModelBundle] = {}
_LOCK = threading.Lock()


def resolve_model_dir(path: Union[str, Path]) -> Tuple[Path, Path]:
    """(run folder, fine-tune folder) from a run folder (uses its ``model.json``) or a
    fine-tune folder (``RUN/finetune/<name>``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model folder not found",
                         expected="a run folder made by `paranasal-ssl` (or its finetune/<name>)")
    if (path / "model.json").exists() and (path / "best.pt").exists():
        return path.parent.parent, path
    if (path / "config.json").exists() and (path / "cae").is_dir():
        if not (path / "model.json").exists():
            raise InputError(path, "the run has no fine-tuned model yet",
                             expected="run `paranasal-ssl finetune` first")
        name = load_json(path / "model.json")["finetune"]
        return path, path / "finetune" / name
    raise InputError(path, "not a paranasal-ssl model folder",
                     expected="a folder with config.json and cae/, or finetune/<name>/")


def load_model(path: Union[str, Path], device: str = "auto") -> ModelBundle:
    """Load (or reuse) the model in ``path`` on ``device``."""
    run_dir, ft_dir = resolve_model_dir(path)
    dev = resolve_device(device)
    best = ft_dir / "best.pt"
    key = (str(ft_dir.resolve()), str(dev), best.stat().st_mtime if best.exists() else 0.0)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        config = load_experiment(run_dir / "config.json")
        info = load_json(ft_dir / "model.json")
        crop = config.data.crop.shape
        cae = build_cae(config.cae, crop)
        load_weights(cae, run_dir / "cae" / "best.pt", "cae",
                     stable_hash({"cae": to_dict(config.cae), "crop": crop}))
        clf = build_classifier(config.encoder, config.finetune.head_hidden,
                               config.finetune.dropout)
        load_weights(clf, best, "classifier")
        scale = info.get("heatmap_scale")
        if scale is None:
            raise CheckpointError(ft_dir / "model.json", "no heatmap calibration recorded",
                                  field="heatmap_scale", expected="a model made by `finetune`")
        bundle = ModelBundle(run_dir, ft_dir, config, prepare_model(cae, dev).eval(),
                             prepare_model(clf, dev).eval(), info, float(scale), dev)
        _CACHE[key] = bundle
        return bundle
