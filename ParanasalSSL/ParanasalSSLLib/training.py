"""Command lines of the training jobs the module starts (run by ``job_runner`` in the
background) and what they leave behind. Pure: no Slicer, no Qt."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

STAGES = ("train-cae", "residuals", "pretrain", "finetune")
STAGE_CHOICES = ("all",) + STAGES
DEVICES = ("auto", "cuda", "cpu")
MODEL_LINE = "model: "  # printed by `paranasal-ssl demo` with the trained run folder


def stageCommands(stage: str, runFolder, manifest=None, device: str = "auto") -> List[List[str]]:
    """Core arguments for one stage or for ``all`` four, in order, on ``runFolder``.

    ``manifest`` is needed for a new run (stage 1); later stages reuse the run's own.
    """
    if stage not in STAGE_CHOICES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGE_CHOICES}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    stages = STAGES if stage == "all" else (stage,)
    commands = []
    for name in stages:
        args = [name, "--run", str(runFolder), "--device", device, "--progress", "json"]
        if manifest and str(manifest) not in ("", "."):
            args += ["--manifest", str(manifest)]
        commands.append(args)
    return commands


def demoCommand(outFolder, device: str = "auto", modality: str = "ct") -> List[str]:
    """``paranasal-ssl demo``: phantoms, the four stages (cpu-small profile), a model."""
    return ["demo", "--out", str(outFolder), "--device", device, "--modality", modality,
            "--progress", "json"]


def demoFolder() -> Path:
    """Where the module's "Train demo model" button writes (per user, per version)."""
    from ParanasalSSLLib.settings import modelCacheFolder

    return modelCacheFolder() / "demo"


def cachedDemoModel() -> Optional[Path]:
    """The demo model trained earlier on this computer by this version, if there is one."""
    run = demoFolder() / "run"
    return run if (run / "model.json").is_file() else None


def modelFolderFromLog(lines: Iterable[str]) -> Optional[Path]:
    """The run folder a finished demo printed (``model: <folder>  (results: ...)``)."""
    found = None
    for line in lines:
        if line.startswith(MODEL_LINE):
            found = Path(line[len(MODEL_LINE):].split("  (")[0].strip())
    return found


def progressText(record: dict) -> str:
    """One status line from a progress record: stage, done/total and the metrics."""
    metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in (record.get("metrics") or {}).items())
    done, total = record.get("done"), record.get("total")
    count = f"{done}/{total}" if total else f"{done}"
    return f"{record.get('stage')}: {count} {metrics}".strip()
