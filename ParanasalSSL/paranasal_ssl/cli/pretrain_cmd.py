"""``paranasal-ssl pretrain``: stage 3."""

from __future__ import annotations

from paranasal_ssl.cli.common import add_run_options, print_fit, run_from_args


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="stage 3: learn to predict residual maps (pretext)",
                       description="Stage 3: train a ResNet encoder with a U-Net decoder to "
                       "predict the CAE residual map from the crop (BCE-with-logits), on every "
                       "training-split sinus (labels unused). Computes residuals if needed.")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.stages.pretext_stage import pretrain

    r = run_from_args(args)
    print_fit("pretrain", pretrain(r, resume=args.resume), r.dir / "pretext")
    return 0
