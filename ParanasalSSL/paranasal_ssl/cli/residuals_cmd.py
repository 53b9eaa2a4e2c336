"""``paranasal-ssl residuals``: stage 2."""

from __future__ import annotations

from paranasal_ssl.cli.common import add_run_options, add_shard_option, parse_shard, run_from_args


def register(sub) -> None:
    p = sub.add_parser("residuals", help="stage 2: residual maps and zero-label scores",
                       description="Stage 2: residual maps |x - CAE(x)| (median-filtered) for "
                       "every crop of the manifest, cached by case, side and CAE checkpoint, "
                       "plus a per-sinus residual score (the zero-label baseline, scores.csv).")
    add_run_options(p)
    add_shard_option(p, "sinuses")
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.stages.residual_stage import compute_residuals
    from paranasal_ssl.training.distributed import is_main

    shard = parse_shard(args.shard)
    r = run_from_args(args)
    res = compute_residuals(r, shard=shard)
    if res is None:
        print(f"residuals: shard {shard[0]}/{shard[1]} done; the last shard to finish writes "
              "scores.csv and calibration.json")
        return 0
    if not is_main():
        return 0
    print(f"residuals: {len(res.crops.records)} sinuses -> {res.folder} "
          f"(heatmap scale {res.heatmap_scale:.4g})")
    for key, why in res.crops.failures.items():
        print(f"  skipped {key}: {why}")
    return 0
