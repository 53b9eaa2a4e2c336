"""``paranasal-ssl benchmark``: run the protocol, then write results.json, report.md and plots.

Resumable at every level: phantoms, stages and baselines resume from their checkpoints, and
each finished (method, fraction, draw) cell is stored as JSON and read back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from paranasal_ssl.atomic import check_writable_dir, write_json, write_text
from paranasal_ssl.benchmarks.aggregate import summarise_cohort
from paranasal_ssl.benchmarks.cells import prepare_cohort, pretrain_all, run_cell
from paranasal_ssl.benchmarks.external import external_manifest, external_summary
from paranasal_ssl.benchmarks.figures import plot_auprc_vs_fraction, plot_montage
from paranasal_ssl.benchmarks.protocol import BenchmarkPlan
from paranasal_ssl.benchmarks.reference_scores import label_free_references
from paranasal_ssl.benchmarks.report_md import cohort_section
from paranasal_ssl.benchmarks.saliency import classifier_localisation
from paranasal_ssl.progress import Progress
from paranasal_ssl.residual_maps import global_rescale
from paranasal_ssl.version import code_version, environment_info

log = logging.getLogger(__name__)


def run_benchmark(out: Path, plan: BenchmarkPlan, device: str = "auto", workers: int = 0
                  ) -> dict:
    from paranasal_ssl.stages.evaluate_stage import load_classifier, localisation
    from paranasal_ssl.stages.residual_stage import compute_residuals

    out = check_writable_dir(out)
    started = time.perf_counter()
    summaries, timings = [], {"earlier invocations": _earlier_invocations(out)}
    for cohort in plan.cohorts:
        t0 = time.perf_counter()
        run = prepare_cohort(out, plan, cohort, device, workers)
        timings[f"{cohort}: pretraining"] = pretrain_all(run, plan)
        residuals = compute_residuals(run)
        available = {r.key for r in residuals.crops.records}
        test = [r for r in run.split("test", labelled=True) if r.key in available]
        cells_dir = out / "cells" / cohort
        cells: Dict[str, Dict[float, List[dict]]] = {m: {} for m in plan.methods}
        todo = [(m, f, s) for m in plan.methods for f in plan.fractions for s in plan.seeds]
        t1 = time.perf_counter()
        with Progress(f"benchmark {cohort}", total=len(todo), unit="cell") as progress:
            for m, f, s in todo:
                cells[m].setdefault(f, []).append(run_cell(run, m, f, s, cells_dir, test,
                                                           residuals))
                progress.update(1, method=m, fraction=f)
        timings[f"{cohort}: fine-tuning cells"] = round(time.perf_counter() - t1, 1)
        references = label_free_references(run, residuals, test,
                                           with_prior="residual-pretext" in plan.methods)
        loc = {"CAE residual heatmap": localisation(run, residuals, test)}
        f0, s0 = plan.headline_fraction, plan.seeds[0]
        for m in ("residual-pretext", "random-init"):
            name = f"bench-{m}-f{f0:g}-s{s0}"
            if m in plan.methods and (run.dir / "finetune" / name / "best.pt").exists():
                loc[f"Grad-CAM, {m} at {f0:.0%}"] = classifier_localisation(
                    load_classifier(run, name), run, residuals, test, run.device)
        summary = summarise_cohort(cohort, plan, test, cells, references, loc)
        summary["figure"] = plot_auprc_vs_fraction(
            summary, out / f"auprc_vs_fraction_{cohort}.png").name
        summary["montage"] = _montage(run, residuals, test, cells, plan, out, cohort)
        summary["run"] = str(run.dir)
        external = external_manifest(out, plan, cohort)
        if external is not None:
            t2 = time.perf_counter()
            summary["external"] = external_summary(run, plan, cohort, external, out)
            timings[f"{cohort}: independent test cohort"] = round(time.perf_counter() - t2, 1)
        timings[f"{cohort}: total"] = round(time.perf_counter() - t0, 1)
        summaries.append(summary)
        _write(out, plan, summaries, timings, started)  # partial results after each cohort
    return _write(out, plan, summaries, timings, started)


def _earlier_invocations(out: Path) -> List[dict]:
    """Code version and timings of the runs before this one in ``out``: a resumed run reads
    their cells back, so its own timings alone would hide what the results cost."""
    old = out / "results.json"
    if not old.exists():
        return []
    try:
        prev = json.loads(old.read_text())
        timings = dict(prev["timings_s"])
        earlier = timings.pop("earlier invocations", [])
        return earlier + [{"code_version": prev["code_version"], "timings_s": timings,
                           "total_seconds": prev["total_seconds"]}]
    except (ValueError, KeyError, TypeError):
        return []  # an unreadable earlier summary is rewritten below; its cells stay


def _write(out: Path, plan: BenchmarkPlan, summaries, timings, started) -> dict:
    results = {"plan": asdict(plan), "code_version": code_version(),
               "environment": environment_info(), "timings_s": timings,
               "total_seconds": round(time.perf_counter() - started, 1),
               "cohorts": summaries}
    write_json(out / "results.json", results)
    text = [f"# Benchmark ({plan.profile}{', quick' if plan.quick else ''})", "",
            f"Code {results['code_version']}; {results['environment']['processor']}, "
            f"{results['environment']['cpu_threads']} threads, torch "
            f"{results['environment']['torch']}, CUDA {results['environment']['cuda']}; "
            f"{results['total_seconds'] / 60:.0f} min"
            + "".join(f" (resumed; earlier run {e['code_version']}: "
                      f"{e['total_seconds'] / 60:.0f} min)"
                      for e in timings["earlier invocations"])
            + f". Label draws (seeds) "
            f"{plan.seeds}; fractions {plan.fractions}; overrides {plan.overrides}.", ""]
    for s in summaries:
        text += [cohort_section(s, plan.headline_fraction), f"![AUPRC]({s['figure']})", ""]
        if s.get("montage"):
            text += [f"![examples]({s['montage']})", ""]
        if s.get("external"):
            text += [cohort_section(s["external"], plan.headline_fraction)]
    write_text(out / "report.md", "\n".join(text))
    return results


def _montage(run, residuals, test, cells, plan, out: Path, cohort: str):
    """Two true/false positives/negatives of the residual-pretext model (first draw)."""
    runs = cells.get("residual-pretext", {}).get(plan.headline_fraction, [])
    if not runs or "skipped" in runs[0]:
        return None
    cell = runs[0]
    prob = np.array(cell["tta"])
    thr = cell["threshold"]
    index = {r.key: i for i, r in enumerate(residuals.crops.records)}
    examples = []
    for kind, want_label, want_pos in (("TP", 1, True), ("FP", 0, True), ("FN", 1, False),
                                       ("TN", 0, False)):
        idx = [i for i, r in enumerate(test) if r.label == want_label
               and (prob[i] >= thr) == want_pos]
        idx = sorted(idx, key=lambda i: -prob[i] if want_pos else prob[i])[:2]
        for i in idx:
            k = index[test[i].key]
            heat = global_rescale(torch.from_numpy(np.asarray(residuals.maps[k][0], np.float32)),
                                  residuals.heatmap_scale).numpy()
            mask = residuals.crops.masks[k]
            j = int(np.argmax(heat.max(axis=(0, 2)))) if heat.max() > 0 else heat.shape[1] // 2
            if mask is not None and (mask > 0).any():
                j = int(np.argwhere(mask > 0)[:, 1].mean())
            examples.append({"kind": kind, "probability": float(prob[i]),
                             "types": ",".join(test[i].anomaly_types)[:24] or "normal",
                             "crop": np.asarray(residuals.crops.crops[k][0], np.float32),
                             "heatmap": heat, "mask": mask, "slice": j})
    path = out / f"examples_{cohort}.png"
    plot_montage(examples, path, f"{cohort}: residual pretext at "
                 f"{plan.headline_fraction:.0%} labels (draw {cell['seed']}), threshold "
                 f"{thr:.2f}; heat = CAE residual >= 0.5, cyan = ground-truth mask")
    return path.name
