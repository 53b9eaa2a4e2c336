"""``paranasal-ssl evaluate``: metrics of a fine-tuned model on a split."""

from __future__ import annotations

from paranasal_ssl.cli import arg_types
from paranasal_ssl.cli.common import add_compute_options


def register(sub) -> None:
    from pathlib import Path

    p = sub.add_parser("evaluate", help="AUPRC, AUROC, sensitivity@specificity, F1, Brier, "
                       "per type, localisation",
                       description="Evaluate a run's fine-tuned model on a split (default test) "
                       "against the zero-label residual score and, for a model fine-tuned "
                       "from the pretext, against its own starting point (the classifier "
                       "before any label): AUPRC with prevalence, AUROC, "
                       "sensitivity at 90/95% specificity, F1 at the threshold chosen on "
                       "validation, Brier score, 95% bootstrap intervals by subject, per "
                       "anomaly type, and heatmap localisation where masks exist. With "
                       "--manifest, evaluate any model folder (a run, RUN/finetune/<name>, an "
                       "export) on a labelled manifest of your own instead: each scan analysed "
                       "as predict does, no run data needed.")
    p.add_argument("--run", type=Path, required=True,
                   help="run folder; with --manifest any model folder (a run, "
                   "RUN/finetune/<name>, an export-model folder)")
    p.add_argument("--model", help="fine-tuned model name (default: the run's model.json)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--manifest", type=Path,
                   help="labelled manifest of your own to evaluate on (external validation)")
    p.add_argument("--out", type=Path,
                   help="with --manifest: folder for results.json, report.md and "
                   "predictions.csv (default: <manifest>-eval beside the manifest)")
    p.add_argument("--bootstrap", type=arg_types.positive_int, default=1000,
                   help="bootstrap resamples")
    add_compute_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.stages.evaluate_stage import evaluate_model, report_markdown
    from paranasal_ssl.stages.run import open_run

    if args.manifest is not None:
        return _on_manifest(args)

    r = open_run(args.run, device=args.device, cache_dir=args.cache, workers=args.workers,
                 threads=args.threads)
    results = evaluate_model(r, args.model, args.split, n_boot=args.bootstrap)
    print(report_markdown(results))
    print(f"written to {results['folder']}")
    return 0


def _on_manifest(args) -> int:
    from paranasal_ssl.external_eval import evaluate_on_manifest
    from paranasal_ssl.training.device import configure_threads

    configure_threads(args.threads)
    model = args.run / "finetune" / args.model if args.model else args.run
    out = args.out or args.manifest.with_name(f"{args.manifest.stem}-eval")
    results = evaluate_on_manifest(model, args.manifest, out, device=args.device,
                                   n_boot=args.bootstrap)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"written to {results['folder']}")
    return 0
