"""The paper's network against this project's, in one run on one machine, at equal crop size.

Paper network (Bhattacharya et al. 2024, as published): the ``paper`` profile's 3D ResNet-18
encoder (widths 64-512, k7 stem, max-pool) with its U-Net decoder for the pretext task, and for
fine-tuning a classifier whose forward ALSO runs that decoder (the published code kept it; its
output is discarded, so only its forward cost is counted: the comparison favours the paper),
in float32 with the default memory layout. This project: the ``cpu-small`` networks (narrow
ResNet, encoder-only classifier) with its speed settings (channels_last_3d; bf16 autocast on
CUDA only; batch norm folded into the convolutions for inference). The CAE of both is the
paper's design (the cpu-small one has a 256-d latent instead of 512).

Measured per stage network: training samples/s (forward + backward + AdamW step), peak memory
(the measuring process's peak RSS on CPU, ``max_memory_allocated`` on CUDA; each measurement
in a fresh process) and FLOPs per sample (``FlopCounterMode``), from which the fraction of the
machine's peak float32 FLOP/s (a large matrix product timed in the same run) follows; network
time per analysed case (paper: one crop per sinus, as published; this project: its
test-time crops); and AUPRC at 10% labels after a SHORT training of both on the same phantom
cohort with the same optimiser and budget (only the networks differ), so speed is never
bought with accuracy.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from paranasal_ssl.experiment import ExperimentConfig, profile_config
from paranasal_ssl.networks import build_cae, build_classifier, build_pretext
from paranasal_ssl.networks.pretext import ResidualPredictor

STAGES = ("stage 1 CAE", "stage 3 pretext", "stage 4 fine-tuning")
# the paper's encoder (and head) as overrides of a cpu-small run: only the networks differ
PAPER_NETWORK = ["encoder.layers=[2,2,2,2]", "encoder.widths=[64,128,256,512]",
                 "encoder.stem_kernel=7", "encoder.stem_stride=2", "encoder.max_pool=true",
                 "encoder.decoder_widths=[256,128,64,32,16]", "finetune.head_hidden=[256]"]


class PaperClassifier(nn.Module):
    """``(B, 1, S, S, S)`` -> ``(B,)`` logit: encoder, head on the pooled last stage, and the
    U-Net decoder run alongside as in the published fine-tuning code (output unused)."""

    def __init__(self, config, crop: int, hidden=(256,)):
        super().__init__()
        self.net = ResidualPredictor(config, crop)
        layers, c = [], self.net.encoder.out_channels
        for h in hidden:
            layers += [nn.Linear(c, h), nn.ReLU(inplace=True)]
            c = h
        self.head = nn.Sequential(*layers, nn.Linear(c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net.encoder(x)
        h = feats[-1]
        for block, skip in zip(self.net.decoder, self.net._skip_index):
            h = block(h, feats[skip] if skip is not None else None)
        self.net.head(h)  # the decoder's work, done and discarded
        return self.head(feats[-1].mean(dim=(2, 3, 4))).squeeze(1)


def build(which: str, stage: str, crop: int) -> nn.Module:
    """Network of ``stage`` for ``which`` ('paper' or 'ours') at ``crop``^3."""
    cfg = profile_config("paper" if which == "paper" else "cpu-small")
    if stage == STAGES[0]:
        return build_cae(cfg.cae, crop)
    if stage == STAGES[1]:
        return build_pretext(cfg.encoder, crop)
    if which == "paper":
        return PaperClassifier(cfg.encoder, crop, cfg.finetune.head_hidden)
    return build_classifier(cfg.encoder, cfg.finetune.head_hidden)


def measure(spec: dict) -> dict:
    """Run in a fresh process: samples/s of ``spec`` (which, stage, crop, batch, train, device,
    steps, threads) and the peak memory it took."""
    from paranasal_ssl.model_bundle import fold_batchnorm
    from paranasal_ssl.training.device import autocast

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    ours = spec["which"] == "ours"
    fmt = torch.channels_last_3d if ours else torch.contiguous_format
    torch.manual_seed(0)
    model = build(spec["which"], spec["stage"], spec["crop"])
    if ours and not spec["train"]:
        model = fold_batchnorm(model.eval())
    model = model.to(dev, memory_format=fmt).train(spec["train"])
    s = spec["crop"]
    x = torch.rand(spec["batch"], 1, s, s, s, device=dev).contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = autocast(dev) if ours else contextlib.nullcontext()

    def once():
        if spec["train"]:
            with amp:
                loss = model(x).float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode(), amp:
                model(x)

    for _ in range(2):
        once()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(spec["steps"]):
        once()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / spec["steps"]
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"samples_per_s": spec["batch"] / seconds, "seconds_per_batch": seconds,
            "peak_memory_mb": round(peak, 1)}


def flops_per_sample(which: str, stage: str, crop: int, train: bool) -> float:
    """FLOPs of one sample's forward (+ backward when ``train``), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(which, stage, crop).train(train)
    x = torch.rand(2, 1, crop, crop, crop)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).float().mean().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops() / 2


def peak_flops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Float32 FLOP/s of the best of ``reps`` ``n x n`` matrix products (the machine's peak)."""
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def throughput(device: str, crop: int, batch: int, steps: int, threads: int,
               tta: int) -> Dict[str, dict]:
    """Per stage and network: training samples/s, peak memory, FLOPs, fraction of peak; and
    the network seconds per analysed case (both sides)."""
    dev = torch.device(device)
    peak = peak_flops(dev)
    ctx = multiprocessing.get_context("spawn")
    out: Dict[str, dict] = {"peak_gflops_fp32": round(peak / 1e9, 1)}
    for stage in STAGES:
        row = {}
        for which in ("paper", "ours"):
            spec = dict(which=which, stage=stage, crop=crop, batch=batch, train=True,
                        device=device, steps=steps, threads=threads)
            with ctx.Pool(1) as pool:
                m = pool.apply(measure, (spec,))
            f = flops_per_sample(which, stage, crop, True)
            m.update(gflops_per_sample=round(f / 1e9, 3),
                     fraction_of_peak=round(f * m["samples_per_s"] / peak, 4))
            m["samples_per_s"] = round(m["samples_per_s"], 2)
            row[which] = m
        row["ratio"] = round(row["ours"]["samples_per_s"] / row["paper"]["samples_per_s"], 2)
        out[stage] = row
    case = {}
    for which, crops in (("paper", 1), ("ours", tta)):  # crops per sinus at test time
        seconds = 0.0
        for stage, n in ((STAGES[2], 2 * crops), (STAGES[0], 2)):  # classifier, CAE
            spec = dict(which=which, stage=stage, crop=crop, batch=n, train=False,
                        device=device, steps=steps, threads=threads)
            with ctx.Pool(1) as pool:
                seconds += pool.apply(measure, (spec,))["seconds_per_batch"]
        case[which] = {"crops_per_sinus": crops, "network_seconds_per_case": round(seconds, 4)}
    case["ratio"] = round(case["paper"]["network_seconds_per_case"]
                          / case["ours"]["network_seconds_per_case"], 2)
    out["inference per case"] = case
    return out


def crop_spacing_mm(crop: int) -> float:
    """Voxel size that keeps the cpu-small field of view (32 x 2 mm = 64 mm) at ``crop`` voxels:
    64^3 crops at 1 mm as in the paper, not 64 x 2 mm = 128 mm boxes reaching outside the head."""
    small = profile_config("cpu-small").data.crop
    return small.shape * small.spacing_mm / crop


def compare_overrides(crop: int, epochs: int) -> List[str]:
    """Settings both networks of the AUPRC check train with (on the cpu-small profile)."""
    return [f"data.crop.shape={crop}", f"data.crop.spacing_mm={crop_spacing_mm(crop):g}",
            f"cae_train.epochs={max(epochs, 10)}", f"pretext_train.epochs={epochs}",
            f"finetune_train.epochs={max(epochs, 5)}", "finetune_train.min_epochs=1"]


def auprc_at_fraction(manifest: Path, out: Path, crop: int, epochs: int, device: str,
                      fraction: float = 0.1) -> Dict[str, dict]:
    """Train both networks briefly on ``manifest`` (same data, CAE, residuals, optimiser and
    budget) and evaluate each at ``fraction`` of the labels on the test split."""
    from paranasal_ssl.stages.cae_stage import train_cae
    from paranasal_ssl.stages.evaluate_stage import evaluate_model
    from paranasal_ssl.stages.finetune_stage import finetune
    from paranasal_ssl.stages.pretext_stage import pretrain
    from paranasal_ssl.stages.residual_stage import compute_residuals
    from paranasal_ssl.stages.run import open_run

    common = compare_overrides(crop, epochs)
    ours = open_run(out / "ours", manifest=manifest, profile="cpu-small", overrides=common,
                    device=device)
    train_cae(ours)
    compute_residuals(ours)
    if (out / "paper").exists():
        shutil.rmtree(out / "paper")
    shutil.copytree(out / "ours", out / "paper", ignore=shutil.ignore_patterns(
        "pretext", "finetune", "model.json"))
    paper = open_run(out / "paper", overrides=common + PAPER_NETWORK, device=device)
    results = {}
    for which, run in (("paper", paper), ("ours", ours)):
        t = time.perf_counter()
        pretrain(run)
        _, folder = finetune(run, fraction, 0, "pretext")
        ev = evaluate_model(run, folder.name, "test", n_boot=200)
        m = ev["methods"]
        results[which] = {
            "auprc_crop_averaged": m["model (crop-averaged)"]["auprc"],
            "auprc_single_crop": m["model (single crop)"]["auprc"],
            "auprc_ci": m["model (crop-averaged)"]["auprc_ci"],
            "zero_label_residual_auprc": m["zero-label residual score"]["auprc"],
            "prevalence": ev["prevalence"], "n_test_sinuses": ev["n_sinuses"],
            "train_seconds": round(time.perf_counter() - t, 1)}
    results["settings"] = {"label_fraction": fraction, "pretext_epochs": epochs,
                           "crop": crop, "cohort": str(manifest)}
    return results


def run_compare(device: str, crop: int, out: Path, manifest: Optional[Path] = None,
                batch: int = 8, steps: int = 3, threads: int = 0, epochs: int = 3,
                auprc: bool = True) -> dict:
    """The whole comparison; ``manifest`` None skips AUPRC unless ``auprc`` (then a phantom
    cohort is synthesised into ``out``)."""
    from paranasal_ssl.version import environment_info

    if threads:  # the peak matrix product and the recorded environment use them too
        torch.set_num_threads(threads)
    small: ExperimentConfig = profile_config("cpu-small")
    report = {"environment": environment_info(), "device": device, "crop": crop,
              "batch": batch, "timed_steps": steps,
              "throughput": throughput(device, crop, batch, steps, threads,
                                       small.data.crop.test_crops_per_side)}
    if auprc:
        if manifest is None:
            from paranasal_ssl.cli.main import main

            assert main(["synth", str(out / "cohort"), "--cases", "40",
                         "--spacing", f"{min(2.0, crop_spacing_mm(crop)):g}",
                         "--seed", "11", "--progress", "none"]) == 0
            manifest = out / "cohort" / "manifest.csv"
        report["auprc_at_10pct"] = auprc_at_fraction(manifest, out / "runs", crop, epochs,
                                                     device)
    return report


def markdown(report: dict) -> str:
    from paranasal_ssl.evaluation import format_table

    env, tp = report["environment"], report["throughput"]
    lines = [f"# Paper network vs this project ({env['processor']}, {env['cpu_threads']} "
             f"threads, CUDA: {env['cuda']}, torch {env['torch']})", "",
             f"Equal crop size {report['crop']}^3, training batch {report['batch']}; machine "
             f"peak float32 {tp['peak_gflops_fp32']} GFLOP/s (matrix product, same run).", ""]
    rows: List[dict] = []
    for stage in STAGES:
        for which in ("paper", "ours"):
            m = tp[stage][which]
            rows.append({"stage": stage, "network": which,
                         "train samples/s": m["samples_per_s"],
                         "GFLOP/sample": m["gflops_per_sample"],
                         "% of peak": round(100 * m["fraction_of_peak"], 1),
                         "peak MB": m["peak_memory_mb"],
                         "ours/paper": tp[stage]["ratio"] if which == "ours" else ""})
    lines += [format_table(rows, list(rows[0])), ""]
    case = tp["inference per case"]
    paper_s, ours_s = (case[w]["network_seconds_per_case"] for w in ("paper", "ours"))
    lines += [f"Network time per case (both sides): paper {paper_s} s (1 crop per sinus), ours "
              f"{ours_s} s ({case['ours']['crops_per_sinus']} crops per sinus); paper/ours "
              f"{case['ratio']}.", ""]
    if "auprc_at_10pct" in report:
        a = report["auprc_at_10pct"]
        rows = [{"network": w, "AUPRC (crop-averaged)": a[w]["auprc_crop_averaged"],
                 "AUPRC (1 crop)": a[w]["auprc_single_crop"],
                 "zero-label residual": a[w]["zero_label_residual_auprc"],
                 "prevalence": a[w]["prevalence"], "test sinuses": a[w]["n_test_sinuses"]}
                for w in ("paper", "ours")]
        s = a["settings"]
        lines += [f"AUPRC at {s['label_fraction']:.0%} labels after a SHORT training ("
                  f"{s['pretext_epochs']} pretext epochs, small phantom cohort): indicative only.",
                  "", format_table(rows, list(rows[0])), ""]
    return "\n".join(lines)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
