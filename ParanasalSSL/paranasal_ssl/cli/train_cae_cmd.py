"""``paranasal-ssl train-cae``: stage 1."""

from __future__ import annotations

from paranasal_ssl.cli.common import add_run_options, print_fit, run_from_args


def register(sub) -> None:
    p = sub.add_parser("train-cae", help="stage 1: train the autoencoder on normal crops",
                       description="Stage 1: train the 3D convolutional autoencoder on the NORMAL "
                       "crops of the training split (L1 loss), early-stopped on validation "
                       "normals. Writes RUN/cae/{best.pt,last.pt,metrics.csv,config.json}; with "
                       "cae.ensemble=N > 1 (the profiles' default is 3) CAEs 2..N, seeds "
                       "cae_train.seed+1.., go to RUN/cae/member-1.. and stage 2 averages "
                       "their residual maps.")
    add_run_options(p, creates=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.stages.cae_stage import cae_checkpoints, train_cae

    r = run_from_args(args)
    results = train_cae(r, resume=args.resume)
    for k, (result, path) in enumerate(zip(results, cae_checkpoints(r.dir, r.config))):
        stage = "train-cae" if len(results) == 1 else f"train-cae {k + 1}/{len(results)}"
        print_fit(stage, result, path.parent)
    return 0
