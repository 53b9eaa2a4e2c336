"""``paranasal-ssl finetune``: stage 4."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli import arg_types
from paranasal_ssl.cli.common import add_run_options, print_fit, run_from_args


def register(sub) -> None:
    p = sub.add_parser("finetune", help="stage 4: fine-tune a classifier on a label fraction",
                       description="Stage 4: encoder + MLP head, normal vs anomalous, trained "
                       "on a patient-level label-fraction subset of the training split (nested "
                       "across fractions), validated on the same fraction of the validation "
                       "split. The decoder is not run. With --labels, fine-tune on an exported "
                       "label manifest (e.g. from case review) instead of the run's train split.")
    add_run_options(p)
    p.add_argument("--label-fraction", type=arg_types.label_fraction, default=None,
                   help="fraction of training subjects whose labels are used (default: config)")
    p.add_argument("--label-seed", type=arg_types.non_negative_int, default=None,
                   help="which nested subset to draw")
    p.add_argument("--init", default="pretext",
                   help="encoder initialisation: pretext (stage 3), random, or a checkpoint path")
    p.add_argument("--labels", type=Path,
                   help="labelled manifest to fine-tune on (rows need labels)")
    p.add_argument("--name", help="model name (default f<fraction>-s<seed>-<init>)")
    p.add_argument("--no-default", action="store_true",
                   help="do not make this the run's default model for predict")
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.manifest import read_manifest
    from paranasal_ssl.stages.finetune_stage import finetune

    r = run_from_args(args)
    records = None
    if args.labels:
        records = read_manifest(args.labels, require_labels=True)
        r.records = r.records + [x for x in records if x.key not in {y.key for y in r.records}]
    result, out = finetune(r, args.label_fraction, args.label_seed, args.init, args.name,
                           resume=args.resume, set_default=not args.no_default, records=records,
                           labels_source=args.labels)
    print_fit("finetune", result, out)
    return 0
