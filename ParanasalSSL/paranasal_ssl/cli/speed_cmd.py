"""``paranasal-ssl speed``: throughput and memory benchmark of the stages and of predict."""

from __future__ import annotations

from pathlib import Path

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
    p.add_argument("--steps", type=int, default=6, help="timed iterations per network")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="report folder")
    p.set_defaults(func=run)


def run(args) -> int:
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
