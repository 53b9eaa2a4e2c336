"""``paranasal-ssl benchmark``: the paper's comparison on phantom cohorts, done properly."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli import arg_types
from paranasal_ssl.cli.main import add_progress_option
from paranasal_ssl.training.device import DEVICE_CHOICES


def register(sub) -> None:
    p = sub.add_parser(
        "benchmark", help="residual pretext vs SimCLR/BYOL/SimSiam/MIM/random/zero-label",
        description="Benchmark the residual pretext against generic self-supervised baselines "
        "(SimCLR, BYOL, SimSiam, masked image modelling), random initialisation, the zero-label "
        "CAE residual score and a plain intensity score, on phantom CT, MRI and screening-like "
        "cohorts: patient-level splits, nested label fractions with several draws, validation "
        "scaled with the fraction, 95% bootstrap CIs by subject, per-type rows, test-time crop "
        "averaging, localisation. Writes OUT/results.json, OUT/report.md and PNG plots; "
        "resumable (finished cells are not recomputed).")
    p.add_argument("--profile", choices=("cpu-small", "paper"), default="cpu-small")
    p.add_argument("--out", type=Path, default=Path("bench_out/benchmark"))
    p.add_argument("--quick", action="store_true",
                   help="one CT cohort, fractions 5/10/100%%, 3 draws, all methods (~30 min CPU)")
    p.add_argument("--cohorts", nargs="+",
                   help="phantom cohorts among ct, mri, ct-screening (default: all three)")
    p.add_argument("--fractions", nargs="+", type=arg_types.label_fraction,
                   help="label fractions, e.g. 0.05 0.1 1")
    p.add_argument("--seeds", nargs="+", type=arg_types.non_negative_int,
                   help="label draws (default 0 1 2)")
    p.add_argument("--methods", nargs="+",
                   choices=("residual-pretext", "simclr", "byol", "simsiam", "mim",
                            "random-init"))
    p.add_argument("--cases", type=arg_types.positive_int, help="phantom cases per cohort")
    p.add_argument("--cohort-manifest", action="append", default=[], metavar="NAME=MANIFEST",
                   help="benchmark on your own labelled cohort instead of phantoms (repeatable)")
    p.add_argument("--external-cases", type=arg_types.non_negative_int, default=None, metavar="N",
                   help="phantom cases of each phantom cohort's independent test cohort, "
                        "scored at the headline fraction (default 400 for cpu-small, 1000 for "
                        "paper, 0 with --quick; 0 = none)")
    p.add_argument("--external-manifest", action="append", default=[], metavar="NAME=MANIFEST",
                   help="your own labelled manifest as cohort NAME's independent test cohort "
                        "(repeatable)")
    p.add_argument("--bootstrap", type=arg_types.positive_int, default=1000,
                   help="bootstrap resamples")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="configuration overrides for new runs")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--workers", type=arg_types.non_negative_int, default=0)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.benchmarks.protocol import make_plan
    from paranasal_ssl.benchmarks.runner import run_benchmark
    from paranasal_ssl.errors import ConfigError

    def named(items, option):
        out = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(None, f"{item!r} has no '='", field=option,
                                  expected="NAME=path/to/manifest.csv")
            name, path = item.split("=", 1)
            out[name] = path
        return out

    plan = make_plan(args.profile, args.quick, args.cohorts, args.fractions, args.seeds,
                     args.methods, args.cases, args.overrides,
                     named(args.cohort_manifest, "--cohort-manifest"), args.external_cases,
                     named(args.external_manifest, "--external-manifest"))
    plan.n_boot = args.bootstrap
    results = run_benchmark(args.out, plan, args.device, args.workers)
    print((args.out / "report.md").read_text())
    print(f"total {results['total_seconds'] / 60:.1f} min -> {args.out}")
    return 0
