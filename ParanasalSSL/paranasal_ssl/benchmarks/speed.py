"""Speed and memory of each stage's network and of ``predict`` on one case.

Training throughput counts forward + backward + optimiser step on random crops of the profile's
size and batch, already on the device (no data handling: the bound a training epoch can reach),
with the training loop's precision (bf16 autocast on CUDA); inference counts float32 forward
passes under ``torch.inference_mode``, as ``predict`` runs them. ``predict`` is
timed end to end (scan read, both sides with test-time crops, heatmap back in scan geometry,
outputs written) in a fresh subprocess, whose peak resident memory is reported too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from paranasal_ssl.experiment import ExperimentConfig, profile_config
from paranasal_ssl.networks import build_cae, build_classifier, build_pretext
from paranasal_ssl.training.device import autocast, memory_format, resolve_device


def time_network(model: torch.nn.Module, crop: int, batch: int, device: torch.device,
                 steps: int = 6, warmup: int = 2, train: bool = True) -> float:
    """Samples per second for ``steps`` timed iterations after ``warmup``."""
    fmt = memory_format(device)
    model = model.to(device=device, memory_format=fmt)
    x = torch.rand(batch, 1, crop, crop, crop, device=device).contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train(train)

    def once():
        if train:
            with autocast(device):
                out = model(x)
            loss = out.float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode():  # float32, as predict runs
                model(x)

    for _ in range(warmup):
        once()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        once()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def network_throughput(config: ExperimentConfig, device: torch.device, steps: int = 6
                       ) -> Dict[str, Dict[str, float]]:
    s = config.data.crop.shape
    nets = {
        "stage 1 CAE": (build_cae(config.cae, s), config.cae_train.batch_size),
        "stage 3 pretext (encoder + decoder)": (build_pretext(config.encoder, s),
                                                config.pretext_train.batch_size),
        "stage 4 classifier (encoder + head)": (
            build_classifier(config.encoder, config.finetune.head_hidden),
            config.finetune_train.batch_size),
    }
    out = {}
    for name, (net, batch) in nets.items():
        batch = min(batch, 32) if device.type == "cpu" else batch
        out[name] = {
            "batch": batch,
            "params_millions": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
            "train_samples_per_s": round(time_network(net, s, batch, device, steps), 2),
            "inference_samples_per_s": round(time_network(net, s, batch, device, steps,
                                                          train=False), 2),
        }
    return out


def predict_timing(model_dir: Path, manifest: Path, repeats: int = 5, device: str = "auto"
                   ) -> dict:
    """Run ``predict`` on the first case of ``manifest`` in a fresh process, ``repeats`` times
    after one warm-up; return per-case seconds (median, min) and the process's peak RSS."""
    code = f"""
import json, resource, time, tempfile, statistics, sys
from pathlib import Path
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.model_bundle import load_model
from paranasal_ssl.inference import predict_scan
from paranasal_ssl.scan_io import read_scan, write_image
recs = read_manifest({str(manifest)!r})
case = [r for r in recs if r.case_id == recs[0].case_id]
bundle = load_model({str(model_dir)!r}, {device!r})
times = []
out = Path(tempfile.mkdtemp())
for i in range({repeats} + 1):
    t = time.perf_counter()
    image = read_scan(case[0].image)
    pred = predict_scan(image, {{r.side: r.roi for r in case}}, bundle, source=str(case[0].image))
    write_image(pred.heatmap_image(), out / "heatmap.nii.gz")
    write_image(pred.region_image(), out / "region.nii.gz")
    if i:
        times.append(time.perf_counter() - t)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"median_s": statistics.median(times), "min_s": min(times),
                  "peak_rss_mb": rss, "scan_size": list(image.GetSize()),
                  "scan_spacing_mm": list(image.GetSpacing()), "sides": len(case)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_speed(profile: str, device: str = "auto", model_dir: Optional[Path] = None,
              manifest: Optional[Path] = None, steps: int = 6) -> dict:
    dev = resolve_device(device)
    config = profile_config(profile)
    report = {"profile": profile, "device": str(dev), "crop_shape": config.data.crop.shape,
              "crop_spacing_mm": config.data.crop.spacing_mm,
              "networks": network_throughput(config, dev, steps)}
    if model_dir and manifest:
        report["predict_per_case"] = predict_timing(model_dir, manifest, device=device)
    return report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
