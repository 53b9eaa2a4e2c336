"""``paranasal-ssl export-model``: a trained model as a small folder to use elsewhere."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli.main import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "export-model", help="copy a trained model (a few MB) to use on another machine",
        description="Copy what predict and the Slicer module need of a trained model - the "
        "configuration, each CAE's best checkpoint and one fine-tuned classifier with its "
        "threshold and calibration - into a new folder, with EXPORT.json recording its "
        "origin, code version and a SHA-256 per file (checked whenever it is loaded). The "
        "run's crop caches, residual maps, other fine-tunes and training-cohort paths stay "
        "behind; the export predicts and reviews but cannot train.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", type=Path, required=True,
                   help="run folder (its default model) or RUN/finetune/<name>")
    p.add_argument("--out", type=Path, required=True, help="new folder to write")
    p.add_argument("--with-training-cases", action="store_true",
                   help="also copy labels_used.csv, the case ids the classifier was trained "
                   "on (may identify patients)")
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.model_export import export_model

    report = export_model(args.model, args.out, args.with_training_cases)
    print(f"exported model {report.finetune} -> {report.path} ({len(report.files)} files, "
          f"{report.bytes / 1e6:.1f} MB); use it as --model {report.path} or Slicer's model "
          "folder")
    return 0
