"""How fast ``paranasal-ssl synth`` makes phantom cases on this machine.

Generates a cohort into a temporary folder (default: 200 CT cases at 1 mm with all cores, the
target being under 120 s on a 2-core machine), then writes a JSON and a Markdown report with the
machine (``paranasal_ssl.version.environment_info()``), the settings, cases per second, the time
per case inside the workers, and the cohort's prevalence and sinus volume statistics.

    .venv/bin/python benchmarks/synth_speed.py                      # 200 CT cases
    .venv/bin/python benchmarks/synth_speed.py --cases 40 --modality mri --spacing 0.5,0.5,3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ParanasalSSL"))

from paranasal_ssl.cli.synth_cmd import _spacing  # noqa: E402
from paranasal_ssl.config import to_dict  # noqa: E402
from paranasal_ssl.phantom import preset  # noqa: E402
from paranasal_ssl.phantom.cohort import (  # noqa: E402
    build_case,
    default_workers,
    generate_cohort,
    summary,
)
from paranasal_ssl.version import environment_info  # noqa: E402

TARGET_SECONDS_PER_200 = 120.0  # the target: 200 cases in under 2 minutes, 2 cores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--modality", choices=("ct", "mri"), default="ct")
    p.add_argument("--spacing", type=_spacing, default=[1.0, 1.0, 1.0])
    p.add_argument("--realism", choices=("realistic", "easy"), default="realistic")
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", type=Path, default=ROOT / "bench_out" / "synth_speed",
                   help="report path without suffix (.json and .md are written)")
    args = p.parse_args(argv)

    cfg = preset(args.realism)
    cfg.cases, cfg.modality, cfg.seed = args.cases, args.modality, args.seed
    cfg.grid.spacing_mm = list(args.spacing)
    cfg.validate()
    # One in-process case first: time per case without process or file overheads.
    t = time.perf_counter()
    case = build_case(cfg, 0)
    single = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        t = time.perf_counter()
        records = generate_cohort(cfg, Path(tmp), workers=args.workers)
        seconds = time.perf_counter() - t
        disk_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.nii.gz")) / 1e6
    stats = summary(records)
    rate = args.cases / seconds
    report = {
        "benchmark": "synth_speed",
        "environment": environment_info(),
        "settings": {"cases": args.cases, "modality": args.modality, "spacing_mm": args.spacing,
                     "realism": args.realism, "workers": args.workers, "seed": args.seed,
                     "grid_voxels": int(np.prod(case.image.shape)),
                     "grid_shape_kji": list(case.image.shape)},
        "results": {"seconds": round(seconds, 2), "cases_per_second": round(rate, 3),
                    "seconds_per_200_cases": round(200.0 / rate, 1),
                    "target_seconds_per_200_cases_2_cores": TARGET_SECONDS_PER_200,
                    "single_case_in_process_s": round(single, 3),
                    "disk_mb_per_case": round(disk_mb / args.cases, 3)},
        "cohort": stats,
        "phantom_config": to_dict(cfg),
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    env = report["environment"]
    res = report["results"]
    md = [
        "# Phantom generation speed (`paranasal-ssl synth`)", "",
        f"Machine: {env['processor']}, {args.workers} worker(s), Python {env['python']}, "
        f"numpy {env['numpy']}, SimpleITK {env['SimpleITK']}; code {env['paranasal_ssl']}.", "",
        "| setting | value |", "|---|---|",
        f"| cases | {args.cases} |", f"| modality | {args.modality} |",
        f"| spacing (mm) | {args.spacing} |", f"| realism | {args.realism} |",
        f"| grid (k, j, i) | {report['settings']['grid_shape_kji']} |", "",
        "| result | value |", "|---|---|",
        f"| total time | {res['seconds']} s |",
        f"| cases per second | {res['cases_per_second']} |",
        f"| time for 200 cases | {res['seconds_per_200_cases']} s (target < 120 s on 2 cores) |",
        f"| one case in process | {res['single_case_in_process_s']} s |",
        f"| disk per case | {res['disk_mb_per_case']} MB |",
        f"| prevalence (labels / truth) | {stats['prevalence']} / {stats['true_prevalence']} |",
        f"| sinus volume | {stats['sinus_volume_ml_mean']} +/- {stats['sinus_volume_ml_sd']} mL "
        f"(range {stats['sinus_volume_ml_range']}) |", "",
    ]
    args.report.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
