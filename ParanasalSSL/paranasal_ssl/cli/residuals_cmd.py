"""``paranasal-ssl residuals``: stage 2."""

from __future__ import annotations

from paranasal_ssl.cli.common import add_run_options, run_from_args


def register(sub) -> None:
    p = sub.add_parser("residuals", help="stage 2: residual maps and zero-label scores",
                       description="Stage 2: residual maps |x - CAE(x)| (median-filtered) for "
                       "every crop of the manifest, cached by case, side and CAE checkpoint, "
                       "plus a per-sinus residual score (the zero-label baseline, scores.csv).")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paranasal_ssl.stages.residual_stage import compute_residuals

    r = run_from_args(args)
    res = compute_residuals(r)
    print(f"residuals: {len(res.crops.records)} sinuses -> {res.folder} "
          f"(heatmap scale {res.heatmap_scale:.4g})")
    for key, why in res.crops.failures.items():
        print(f"  skipped {key}: {why}")
    return 0
