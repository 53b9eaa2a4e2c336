"""Export a trained model as a small folder for ``predict`` and the Slicer module elsewhere.

A run folder holds crop caches, residual maps, every fine-tune and the baselines: hundreds of
MB to GB, and the paths of the training cohort. What analysing a scan needs is a few MB: the
configuration, each CAE's best checkpoint, and one fine-tuned classifier with its
``model.json`` (threshold, heatmap calibration, residual-fusion statistics). The export keeps
the run folder's layout, so it *is* a model folder wherever one is asked for, plus
``EXPORT.json``: where it came from, when, with which code, and a SHA-256 per file.

An export cannot train: its training scans and splits stay with the run (``open_run`` refuses
it by name). The list of training cases (``labels_used.csv``, which may hold patient
identifiers) is left out unless asked for.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.config import load_json
from paranasal_ssl.errors import InputError
from paranasal_ssl.experiment import load_experiment
from paranasal_ssl.hashing import file_sha256
from paranasal_ssl.version import code_version

EXPORT_FILE = "EXPORT.json"
FINETUNE_FILES = ("best.pt", "model.json", "config.json", "metrics.csv")
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ExportReport:
    path: Path
    finetune: str
    files: Dict[str, str]  # relative path -> SHA-256
    bytes: int


def model_files(model_dir: PathLike, with_training_cases: bool = False
                ) -> Tuple[str, List[Tuple[Path, str]]]:
    """(fine-tune name, [(source file, path inside the export)]) of what ``load_model`` reads."""
    from paranasal_ssl.model_bundle import resolve_model_dir
    from paranasal_ssl.stages.cae_stage import cae_checkpoints

    run_dir, ft_dir = resolve_model_dir(model_dir)
    saved = ft_dir / "config.json"
    config = load_experiment(saved if saved.exists() else run_dir / "config.json")
    name = ft_dir.name
    files = [(run_dir / "config.json", "config.json")]
    for checkpoint in cae_checkpoints(run_dir, config):
        relative = checkpoint.relative_to(run_dir).as_posix()
        files.append((checkpoint, relative))
        if (checkpoint.parent / "config.json").exists():
            files.append((checkpoint.parent / "config.json",
                          f"{Path(relative).parent.as_posix()}/config.json"))
    wanted = FINETUNE_FILES + (("labels_used.csv",) if with_training_cases else ())
    files += [(ft_dir / f, f"finetune/{name}/{f}") for f in wanted if (ft_dir / f).exists()]
    missing = [str(src) for src, _ in files if not src.is_file()]
    if missing:
        raise InputError(missing[0], "missing from the model folder",
                         expected="a trained model (every CAE of the ensemble and a fine-tuned "
                         "classifier)")
    return name, files


def export_model(model_dir: PathLike, out: PathLike,
                 with_training_cases: bool = False) -> ExportReport:
    """Copy the model in ``model_dir`` (a run folder or its ``finetune/<name>``) to ``out``,
    which must not exist or be empty. Written in a temporary folder beside ``out``, checked by
    loading it, then renamed into place: an interrupted export leaves nothing behind."""
    from paranasal_ssl.model_bundle import load_model

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists", field="--out",
                         expected="a new (or empty) folder; an export never overwrites")
    name, files = model_files(model_dir, with_training_cases)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        digests = {}
        for src, relative in files:
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            digests[relative] = _sha256(dest)
        write_json(staging / "model.json", {"finetune": name})
        digests["model.json"] = _sha256(staging / "model.json")
        write_text(staging / "MODEL_CARD.md", model_card(staging, name))
        digests["MODEL_CARD.md"] = _sha256(staging / "MODEL_CARD.md")
        write_json(staging / EXPORT_FILE, {
            "exported_from": str(Path(model_dir).resolve()),
            "finetune": name,
            "exported_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "code_version": code_version(),
            "trained_with_code": load_json(staging / "config.json").get("code_version"),
            "training_cases_included": with_training_cases,
            "sha256": digests,
        })
        load_model(staging, "cpu")  # complete and loadable, or no export at all
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    size = sum((out / relative).stat().st_size for relative in digests)
    return ExportReport(out, name, digests, size)


def model_card(folder: Path, name: str) -> str:
    """A page for the person who receives the model: what it analyses, how it was trained, how
    it decides, and what its numbers rest on (from its config.json, model.json, metrics.csv)."""
    from paranasal_ssl.inference import call_band

    saved = folder / "finetune" / name / "config.json"  # fine-tunes of older runs have none
    config = load_experiment(saved if saved.exists() else folder / "config.json")
    info = load_json(folder / "finetune" / name / "model.json")
    crop = config.data.crop
    threshold = info.get("threshold", 0.5)
    low, high = call_band(info.get("uncertain_band", config.finetune.uncertain_band), threshold)
    lines = [f"# ParanasalSSL model `{name}`", "",
             "Maxillary-sinus anomaly classifier and residual heatmap (research software, not "
             "a medical device).", "",
             f"- **Modality**: {config.data.intensity.modality.upper()}"
             + (f" (intensities windowed to {config.data.intensity.ct_window_hu} HU)"
                if config.data.intensity.modality == "ct" else ""),
             f"- **Input**: one box per maxillary sinus (RAS mm); {crop.shape}^3 crops at "
             f"{crop.spacing_mm} mm, {crop.test_crops_per_side} jittered crops per side",
             f"- **Stages**: {config.cae.ensemble} CAE(s) (profile {config.profile}), encoder "
             f"initialised from `{info.get('init')}`, fine-tuned on "
             f"{info.get('n_train_sinuses')} labelled sinuses ({info.get('n_train_anomalous')} "
             f"anomalous; label fraction {info.get('label_fraction')}), best epoch "
             f"{info.get('best_epoch')}",
             f"- **Decision**: anomalous from p = {threshold:.3f} ("
             + info.get("threshold_source", f"max F1 on {info.get('n_val_sinuses')} "
                        "validation sinuses") + f"), called uncertain between {low:.3f} and "
             f"{high:.3f}; p is the classifier's score "
             + ("fused with the CAEs' focal residual score" if info.get("residual_fusion")
                else "alone")]
    best = _best_epoch_metrics(folder / "finetune" / name / "metrics.csv",
                               info.get("best_epoch"))
    if best:
        lines.append(f"- **Validation at the best epoch**: {best} (on "
                     f"{info.get('n_val_sinuses')} sinuses: a check, not an evaluation)")
    lines += [f"- **Code**: trained with {info.get('code_version')}, exported with "
              f"{code_version()}", "",
              "Check low-confidence sinus boxes and calls before relying on them; evaluate "
              "it on your own labelled scans (`paranasal-ssl evaluate --run THIS_FOLDER "
              "--manifest yours.csv`) before any use beyond research.", ""]
    return "\n".join(lines)


def _best_epoch_metrics(path: Path, epoch) -> str:
    import csv

    if not path.exists() or epoch is None:
        return ""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch") == str(epoch):
                return ", ".join(f"{k} {float(v):.3f}" for k, v in row.items()
                                 if k.startswith("val_") and v)
    return ""


def verify_export(folder: PathLike) -> List[str]:
    """Files of an export whose SHA-256 differs from ``EXPORT.json`` (or that are missing)."""
    folder = Path(folder)
    recorded = load_json(folder / EXPORT_FILE)["sha256"]
    return [relative for relative, digest in recorded.items()
            if not (folder / relative).is_file() or _sha256(folder / relative) != digest]


def refuse_training_in_export(run_dir: Path) -> None:
    """An export holds no training data: say so by name instead of a missing-file error."""
    marker = Path(run_dir) / EXPORT_FILE
    if marker.exists():
        source = load_json(marker).get("exported_from", "the run folder it came from")
        raise InputError(run_dir, "is an exported model (for predict and review only)",
                         expected=f"its run folder ({source}) to train, fine-tune or evaluate")


def _sha256(path: Path) -> str:
    return file_sha256(path, length=64)
