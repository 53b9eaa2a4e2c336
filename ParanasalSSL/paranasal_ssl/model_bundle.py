"""A trained model as ``predict`` and the Slicer module use it: config, CAE(s), classifier,
heatmap calibration and decision thresholds, loaded once and kept per folder."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from paranasal_ssl.config import load_json
from paranasal_ssl.errors import CheckpointError, InputError
from paranasal_ssl.experiment import ExperimentConfig, load_experiment
from paranasal_ssl.model_export import EXPORT_FILE, verify_export
from paranasal_ssl.networks import CAEEnsemble, build_cae, build_classifier, cae_signature
from paranasal_ssl.residual_fusion import ResidualFusion
from paranasal_ssl.stages.cae_stage import cae_checkpoints
from paranasal_ssl.training.checkpoint import load_weights
from paranasal_ssl.training.device import prepare_model, resolve_device, to_input


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
    def fusion(self) -> Optional[ResidualFusion]:
        """The residual fusion the model was fine-tuned with (``residual_fusion.py``), if any."""
        data = self.info.get("residual_fusion")
        return ResidualFusion.from_dict(data) if data else None

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
        # The settings the model was fine-tuned with: `--set` overrides of later stages (e.g.
        # cae.ensemble, residual.*) are saved there, not in the run's config.json, and the
        # heatmap calibration in model.json was computed with them.
        saved = ft_dir / "config.json"
        config = load_experiment(saved if saved.exists() else run_dir / "config.json")
        info = load_json(ft_dir / "model.json")
        if (run_dir / EXPORT_FILE).exists():
            changed = verify_export(run_dir)
            if changed:
                raise CheckpointError(run_dir / changed[0], "differs from the exported file "
                                      f"({len(changed)} file(s) changed or missing)",
                                      field="sha256", expected=f"the file {EXPORT_FILE} lists")
        crop = config.data.crop.shape
        members = []
        for path in cae_checkpoints(run_dir, config):
            members.append(build_cae(config.cae, crop))
            load_weights(members[-1], path, "cae", cae_signature(config.cae, crop))
        cae = members[0] if len(members) == 1 else CAEEnsemble(members)
        clf = build_classifier(config.encoder, config.finetune.head_hidden,
                               config.finetune.dropout, prior=bool(info.get("score_prior")))
        load_weights(clf, best, "classifier")
        scale = info.get("heatmap_scale")
        if scale is None:
            raise CheckpointError(ft_dir / "model.json", "no heatmap calibration recorded",
                                  field="heatmap_scale", expected="a model made by `finetune`")
        x = torch.rand(2, 1, crop, crop, crop)
        bundle = ModelBundle(run_dir, ft_dir, config, for_inference(cae, dev, x),
                             for_inference(clf, dev, x), info, float(scale), dev)
        _CACHE[key] = bundle
        return bundle


def for_inference(model: torch.nn.Module, device: torch.device,
                  probe: torch.Tensor) -> torch.nn.Module:
    """``model`` in eval mode on ``device``, with every batch norm folded into the convolution
    before it (one pass over the activations less per layer: about a quarter of the CPU time
    of predict went to eval-mode batch norm). The folded copy is kept only if it gives the
    same output as the original on ``probe`` (``(B, 1, S, S, S)``), so a network whose batch
    norm does not directly follow its convolution is left as it is."""
    model = prepare_model(model, device).eval()
    folded = fold_batchnorm(copy.deepcopy(model))
    folded = prepare_model(folded, device).eval()
    x = to_input(probe, device)
    with torch.inference_mode():
        ref, got = model(x).float(), folded(x).float()
    if torch.allclose(ref, got, rtol=1e-3, atol=1e-4):
        return folded
    return model


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold eval-mode batch norms into the convolution registered just before them (MONAI's
    ResNet: ``conv1``/``bn1``, blocks' ``conv``/``bn`` pairs, downsample ``Sequential``; MONAI's
    ``Convolution``: ``conv`` then ``adn.N``); the batch norm becomes ``Identity``. In place."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    for module in list(model.modules()):
        children = list(module.named_children())
        for (name_a, a), (_, b) in zip(children, children[1:]):
            if not isinstance(a, convs):
                continue
            holder, bn_name = module, None
            if isinstance(b, nn.modules.batchnorm._BatchNorm):
                bn_name = [n for n, c in children if c is b][0]
            elif isinstance(getattr(b, "N", None), nn.modules.batchnorm._BatchNorm):
                holder, bn_name = b, "N"  # MONAI ADN block: norm first
            if bn_name is None:
                continue
            bn = getattr(holder, bn_name)
            if not bn.track_running_stats:
                continue
            setattr(module, name_a, fuse_conv_bn_eval(a.eval(), bn.eval()))
            setattr(holder, bn_name, nn.Identity())
    return model
