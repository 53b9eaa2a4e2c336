"""``paranasal-ssl train-cae``: stage 1."""

from __future__ import annotations

from paranasal_ssl.cli.common import add_run_options, print_fit, run_from_args


def register(sub) -> None:
    p = sub.add_parser("train-cae", help="stage 1: train the autoencoder on normal crops",
                       description="Stage 1: train the 3D convolutional autoencoder on the NORMAL "
                       "crops of the training split (L1 loss), early-stopped on validation "
                       "normals. Writes RUN/cae/{best.pt,last.pt,metrics.csv,config.json}.")
    add_run_options(p, creates=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.stages.cae_stage import train_cae

    r = run_from_args(args)
    print_fit("train-cae", train_cae(r, resume=args.resume), r.dir / "cae")
    return 0
