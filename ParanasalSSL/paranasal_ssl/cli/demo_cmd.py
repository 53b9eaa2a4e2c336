"""``paranasal-ssl demo``: what ``make demo`` runs."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli import arg_types
from paranasal_ssl.cli.main import add_progress_option
from paranasal_ssl.training.device import DEVICE_CHOICES


def register(sub) -> None:
    p = sub.add_parser("demo", help="phantoms -> four stages -> evaluation, on a CPU",
                       description="Make a phantom CT cohort, run the four stages with the "
                       "cpu-small profile, fine-tune with 10% of the labels from the pretext "
                       "encoder and from scratch, compare both with the zero-label residual "
                       "score on the test split, and leave a model for `predict`. About 15 "
                       "minutes on 2 CPU cores; re-running continues where it stopped.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    p.add_argument("--cases", type=arg_types.positive_int, default=160,
                   help="phantom cases (subjects)")
    p.add_argument("--modality", choices=("ct", "mri"), default="ct")
    p.add_argument("--seed", type=arg_types.non_negative_int, default=0, help="phantom cohort seed")
    p.add_argument("--label-fraction", type=arg_types.label_fraction, default=0.1)
    p.add_argument("--label-draws", type=arg_types.positive_int, default=3,
                   help="label subsets (seeds) per method")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="extra configuration overrides")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--workers", type=arg_types.non_negative_int, default=0)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.demo import run_demo

    results = run_demo(args.out, args.cases, args.modality, args.seed, args.label_fraction,
                       tuple(range(args.label_draws)), args.device, args.workers, args.overrides)
    print("\n" + results["table"])
    print("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_s"].items()))
    run_dir = Path(results["run"])
    print(f"\nmodel: {run_dir}  (results: {args.out}/results.md)")
    print("try it on a phantom scan:")
    print(f"  paranasal-ssl predict --model {run_dir} --manifest {results['cohort']}/manifest.csv "
          f"--out {args.out}/predictions")
    return 0
