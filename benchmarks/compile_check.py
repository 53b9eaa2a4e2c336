"""Does ``torch.compile`` pay off for this project's networks on this machine?

Times each stage's network eagerly and compiled (TorchInductor, default mode) with the timing
``speed`` uses (``paranasal_ssl.benchmarks.speed.time_network``: random crops already on the
device, a training step under the training loop's autocast, or an inference pass), and the
compile time (the first call). Writes OUT.json and OUT.md with the machine and the settings.
Run on each kind of machine a user trains on: a result on one does not carry to another.

    .venv/bin/python benchmarks/compile_check.py benchmarks/results/compile_check_cpu
    python3 benchmarks/compile_check.py OUT --profile paper --device cuda --nets pretext cae
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ParanasalSSL"))

from paranasal_ssl.atomic import write_json, write_text  # noqa: E402
from paranasal_ssl.benchmarks.speed import time_network  # noqa: E402
from paranasal_ssl.experiment import profile_config  # noqa: E402
from paranasal_ssl.networks import build_cae, build_classifier, build_pretext  # noqa: E402
from paranasal_ssl.training.device import resolve_device  # noqa: E402
from paranasal_ssl.version import code_version, environment_info  # noqa: E402


def networks(profile: str):
    """name -> (builder, training batch) for the profile's three networks."""
    cfg = profile_config(profile)
    s = cfg.data.crop.shape
    return cfg, {
        "cae": (lambda: build_cae(cfg.cae, s), cfg.cae_train.batch_size),
        "pretext": (lambda: build_pretext(cfg.encoder, s), cfg.pretext_train.batch_size),
        "classifier": (lambda: build_classifier(cfg.encoder, cfg.finetune.head_hidden),
                       cfg.finetune_train.batch_size),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="writes OUT.json and OUT.md")
    parser.add_argument("--profile", default="cpu-small", choices=("cpu-small", "paper"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the warm-up")
    parser.add_argument("--nets", nargs="+", default=["cae", "pretext", "classifier"],
                        choices=("cae", "pretext", "classifier"))
    parser.add_argument("--modes", nargs="+", default=["train", "inference"],
                        choices=("train", "inference"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cfg, nets = networks(args.profile)
    rows = []
    for name in args.nets:
        build, batch = nets[name]
        batch = min(batch, 32) if device.type == "cpu" else batch  # as `speed` does
        for mode in args.modes:
            train = mode == "train"
            torch.manual_seed(0)
            eager = time_network(build(), cfg.data.crop.shape, batch, device, args.steps,
                                 train=train)
            torch.manual_seed(0)
            compiled = torch.compile(build())
            start = time.perf_counter()  # the first call compiles
            time_network(compiled, cfg.data.crop.shape, batch, device, 1, warmup=0,
                         train=train)
            compile_s = time.perf_counter() - start
            fast = time_network(compiled, cfg.data.crop.shape, batch, device, args.steps,
                                train=train)
            rows.append({"network": name, "mode": mode, "batch": batch,
                         "eager_samples_per_s": round(eager, 2),
                         "compiled_samples_per_s": round(fast, 2),
                         "compiled_over_eager": round(fast / eager, 3),
                         "compile_s": round(compile_s, 1)})
            print(rows[-1], flush=True)
    env = environment_info()
    report = {"code_version": code_version(), "environment": env, "command": " ".join(sys.argv),
              "profile": args.profile, "device": str(device), "steps": args.steps,
              "crop": cfg.data.crop.shape, "results": rows}
    lines = [f"# torch.compile check ({report['code_version']})", "",
             f"Machine: {env.get('processor')}, {env.get('cpu_threads')} threads, "
             f"{env.get('cuda') or 'no GPU'}, torch {env.get('torch')}; profile {args.profile} "
             f"({cfg.data.crop.shape}^3 crops), device {device}, {args.steps} timed steps.", "",
             "| network | mode | batch | eager samples/s | compiled samples/s | compiled / eager "
             "| compile s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['mode']} | {r['batch']} | {r['eager_samples_per_s']} | "
              f"{r['compiled_samples_per_s']} | {r['compiled_over_eager']} | {r['compile_s']} |"
              for r in rows]
    write_json(args.out.with_suffix(".json"), report)
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
