"""Checkpoints hold weights and plain data only, and load with ``weights_only=True``.

A model file can never run code. Each file records the architecture signature (a hash of the
settings that shape the network) so a checkpoint built for another architecture or crop size
is refused with a clear message instead of a tensor-size traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from paranasal_ssl.atomic import atomic_path
from paranasal_ssl.errors import CheckpointError
from paranasal_ssl.version import code_version

FORMAT = "paranasal-ssl-checkpoint-1"


def save_checkpoint(path: Union[str, Path], model: Union[torch.nn.Module, Dict[str, Any]],
                    kind: str, signature: str, meta: Optional[Dict[str, Any]] = None,
                    training_state: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``{format, kind, signature, meta (JSON text), model, training_state}`` atomically.
    ``model``: a module or its weights (a state dict, e.g. from ``weights_copy``)."""
    weights = model if isinstance(model, dict) else _unwrap(model).state_dict()
    state = {k: v.detach().cpu() for k, v in weights.items()}
    payload = {
        "format": FORMAT,
        "kind": kind,
        "signature": signature,
        "meta": json.dumps({"code_version": code_version(), **(meta or {})}, default=str),
        "model": state,
    }
    if training_state is not None:
        payload["training_state"] = training_state
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: Union[str, Path], kind: Optional[str] = None,
                    signature: Optional[str] = None) -> Dict[str, Any]:
    """Load a checkpoint safely and check what it is; ``meta`` comes back as a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a safe checkpoint"
        raise CheckpointError(path, f"cannot load checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]})",
                              expected="a paranasal-ssl weights-only checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(path, "not a paranasal-ssl checkpoint",
                              expected=f"format {FORMAT}")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(path, f"checkpoint holds a {payload.get('kind')} model",
                              field="kind", expected=f"a {kind} model")
    meta = json.loads(payload.get("meta") or "{}")
    if signature is not None and payload.get("signature") != signature:
        built = meta.get("architecture", {})
        raise CheckpointError(path, f"checkpoint was built for another architecture or crop size "
                              f"({_describe(built)})", field="signature",
                              expected="a checkpoint made with this run's configuration")
    payload["meta"] = meta
    return payload


def load_weights(model: torch.nn.Module, path: Union[str, Path], kind: str,
                 signature: Optional[str] = None, strict: bool = True) -> Dict[str, Any]:
    """Load a checkpoint's weights into ``model``; returns the checkpoint's meta."""
    payload = read_checkpoint(path, kind, signature)
    try:
        _unwrap(model).load_state_dict(payload["model"], strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit this network ({str(exc)[:200]})") from None
    return payload["meta"]


def weights_copy(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A snapshot of ``model``'s weights (on its device) that later training steps leave alone."""
    return {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel / compiled wrappers


def _describe(arch: Dict[str, Any]) -> str:
    if not arch:
        return "no architecture recorded"
    return ", ".join(f"{k}={v}" for k, v in arch.items())
