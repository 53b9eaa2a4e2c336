"""``paranasal-ssl speed``: throughput and memory benchmark of the stages and of predict."""

from __future__ import annotations

from pathlib import Path

from paranasal_ssl.cli import arg_types
from paranasal_ssl.training.device import DEVICE_CHOICES


def register(sub) -> None:
    p = sub.add_parser("speed", help="benchmark: samples/s per stage, predict time and memory",
                       description="Measure training and inference samples/s of each stage's "
                       "network for the chosen profiles, and (with --model and --manifest) the "
                       "end-to-end predict time and peak memory per case in a fresh process. "
                       "Writes OUT/speed.json and OUT/speed.md with the machine and settings.")
    p.add_argument("--profile", action="append", choices=("cpu-small", "paper"),
                   help="profiles to measure (repeatable; default cpu-small)")
    p.add_argument("--model", type=Path, help="a trained run folder, for predict timing")
    p.add_argument("--manifest", type=Path, help="a manifest; its first case is predicted")
    p.add_argument("--steps", type=arg_types.positive_int, default=6,
                   help="timed iterations per network")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="report folder")
    g = p.add_argument_group("paper comparison", "--compare-paper: the paper's network (ResNet-18 "
                             "encoder + U-Net decoder, decoder kept running in fine-tuning) "
                             "against this project's at equal crop size; writes "
                             "OUT/paper_compare.{json,md}")
    g.add_argument("--compare-paper", action="store_true", help="run the comparison instead")
    g.add_argument("--crop", type=arg_types.non_negative_int, default=0,
                   help="crop edge in voxels for both (default: 64 on CUDA, 32 on CPU)")
    g.add_argument("--batch", type=arg_types.positive_int, default=8,
                   help="training batch for throughput")
    g.add_argument("--epochs", type=arg_types.positive_int, default=3,
                   help="pretext epochs of the short training behind the AUPRC check")
    g.add_argument("--compare-manifest", type=Path,
                   help="cohort for the AUPRC check (default: 40 synthetic phantom cases)")
    g.add_argument("--no-auprc", action="store_true", help="throughput only")
    g.add_argument("--threads", type=arg_types.non_negative_int, default=0,
                   help="torch CPU threads (default: all)")
    p.set_defaults(func=run)


def run_compare(args) -> int:
    from paranasal_ssl.atomic import write_json, write_text
    from paranasal_ssl.benchmarks.paper_compare import markdown, run_compare
    from paranasal_ssl.training.device import resolve_device

    dev = resolve_device(args.device)
    crop = args.crop or (64 if dev.type == "cuda" else 32)
    report = run_compare(str(dev), crop, args.out, args.compare_manifest, args.batch,
                         args.steps, args.threads, args.epochs, not args.no_auprc)
    write_json(args.out / "paper_compare.json", report)
    text = markdown(report)
    write_text(args.out / "paper_compare.md", text)
    print(text)
    return 0


def run(args) -> int:
    if args.compare_paper:
        return run_compare(args)
    from paranasal_ssl.atomic import write_json, write_text
    from paranasal_ssl.benchmarks.speed import run_speed
    from paranasal_ssl.evaluation import format_table
    from paranasal_ssl.version import environment_info

    reports = [run_speed(p, args.device, args.model, args.manifest, args.steps)
               for p in (args.profile or ["cpu-small"])]
    env = environment_info()
    write_json(args.out / "speed.json", {"environment": env, "reports": reports})
    lines = [f"# Speed ({env['processor']}, {env['cpu_threads']} threads, "
             f"torch {env['torch']}, CUDA: {env['cuda']})", ""]
    for r in reports:
        rows = [{"network": k, **v} for k, v in r["networks"].items()]
        lines += [f"## {r['profile']} ({r['crop_shape']}^3 crops at {r['crop_spacing_mm']} mm, "
                  f"{r['device']})", "", format_table(rows, list(rows[0])), ""]
        if "predict_per_case" in r:
            pc = r["predict_per_case"]
            lines += [f"predict, one case ({pc['sides']} sides, scan {pc['scan_size']}): median "
                      f"{pc['median_s']:.2f} s, min {pc['min_s']:.2f} s, peak memory "
                      f"{pc['peak_rss_mb']:.0f} MB", ""]
    write_text(args.out / "speed.md", "\n".join(lines))
    print("\n".join(lines))
    return 0
