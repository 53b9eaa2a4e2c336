"""``paranasal-ssl pretrain-baseline``: generic self-supervised baselines on the shared encoder."""

from __future__ import annotations

from paranasal_ssl.cli.common import add_run_options, print_fit, run_from_args

METHOD_CHOICES = ("simclr", "byol", "simsiam", "mim")  # = baselines.METHODS, without torch


def register(sub) -> None:
    p = sub.add_parser("pretrain-baseline",
                       help="pretrain the encoder with SimCLR, BYOL, SimSiam or masked image "
                            "modelling (for comparison with stage 3)",
                       description="Pretrain the shared ResNet encoder with a generic "
                       "self-supervised method on every training-split sinus (labels unused), "
                       "with the same crops, augmentations and training budget "
                       "(pretext_train) as stage 3. Writes RUN/baselines/METHOD/best.pt (the "
                       "encoder alone), to fine-tune with: finetune --init "
                       "RUN/baselines/METHOD/best.pt.")
    add_run_options(p)
    p.add_argument("--method", required=True, choices=METHOD_CHOICES,
                   help="simclr (NT-Xent), byol (EMA target), simsiam (stop-gradient) or mim "
                        "(masked patches, SparK-style)")
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.baselines.train import pretrain_baseline

    r = run_from_args(args)
    result, out = pretrain_baseline(r, args.method, resume=args.resume)
    print_fit(f"pretrain-baseline {args.method}", result, out)
    return 0
