"""The benchmark's independent test cohort: the models of a cohort's cells, scored on subjects
that no stage has seen.

The cohort's own test split (80 sinuses in cpu-small) gives pooled 95% AUPRC intervals of about
+/-0.07, too wide to show a 0.04 margin with non-overlapping intervals however real it is. An
independent test cohort (same phantom generator and settings, another seed; or the user's own
labelled manifest) is scored by the classifiers already fine-tuned for the headline fraction,
with the run's CAE (residuals, heatmap scale) and pretext (score before fine-tuning): nothing is
trained or chosen on it. Scores are stored per cell (``OUT/cells/<cohort>-external/``) and read
back on a resumed run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from paranasal_ssl.atomic import write_json
from paranasal_ssl.benchmarks.cells import synth_phantom_cohort
from paranasal_ssl.benchmarks.protocol import COHORTS, EXTERNAL_SEED_OFFSET, BenchmarkPlan
from paranasal_ssl.config import load_json
from paranasal_ssl.errors import InputError
from paranasal_ssl.manifest import SinusRecord, read_manifest
from paranasal_ssl.progress import Progress
from paranasal_ssl.stages.run import Run

log = logging.getLogger(__name__)


def external_manifest(out: Path, plan: BenchmarkPlan, cohort: str) -> Optional[Path]:
    """The independent test cohort's manifest: the user's (``plan.external_manifests``), or
    ``plan.external_cases`` phantoms made in ``OUT/cohorts/<cohort>-external`` (once, and again
    for another size); None when the plan has none for this cohort."""
    if cohort in plan.external_manifests:
        return Path(plan.external_manifests[cohort]).resolve()
    if plan.external_cases <= 0 or cohort not in COHORTS:
        return None
    args, seed = COHORTS[cohort]
    # another --external-cases makes the cohort again (the first cases stay the same, and so
    # do their cached residuals); its cells are scored again because their sinuses changed
    return synth_phantom_cohort(out / "cohorts" / f"{cohort}-external", plan.external_cases,
                                seed + EXTERNAL_SEED_OFFSET, [*args, "--id-prefix", "ext-"],
                                replace=True)


def external_records(run: Run, manifest: Path) -> List[SinusRecord]:
    """The labelled sinuses of ``manifest``; refuses subjects the run already holds (a test
    cohort that shares a subject with training is not independent)."""
    records = [r for r in read_manifest(manifest) if r.label is not None]
    if not records:
        raise InputError(manifest, "no labelled sinus in the independent test cohort",
                         field="label", expected="0 or 1 on the sinuses to score")
    shared = sorted({r.subject_id for r in records} & set(run.split_of_subject))
    if shared:
        raise InputError(manifest, f"{len(shared)} subject(s) also in the benchmark cohort "
                         f"(e.g. {shared[0]})", field="subject_id",
                         expected="subjects the benchmark cohort does not contain")
    modalities = {r.modality for r in records if r.modality}
    want = run.config.data.intensity.modality
    if modalities and modalities != {want}:
        raise InputError(manifest, f"modality {sorted(modalities)} in a {want} benchmark",
                         field="modality", expected=want)
    return records


def score_external(run: Run, plan: BenchmarkPlan, cohort: str, manifest: Path,
                   cells_dir: Path) -> Tuple[list, object, Dict[str, Dict[float, List[dict]]]]:
    """Records, residuals and per-method cells (headline fraction, every draw) of the
    independent test cohort; each cell's scores are computed once and stored."""
    from paranasal_ssl.stages.evaluate_stage import model_scores
    from paranasal_ssl.stages.residual_stage import residual_folder, residuals_for_records

    wanted = external_records(run, manifest)
    folder = run.dir / "external" / f"{cohort}-{residual_folder(run).name}"
    residuals = residuals_for_records(run, wanted, folder)
    available = {r.key for r in residuals.crops.records}
    records = [r for r in wanted if r.key in available]
    f = plan.headline_fraction
    cells: Dict[str, Dict[float, List[dict]]] = {m: {f: []} for m in plan.methods}
    keys = [r.key for r in records]
    with Progress(f"independent test {cohort}", total=len(plan.methods) * len(plan.seeds),
                  unit="cell") as progress:
        for m in plan.methods:
            for s in plan.seeds:
                path = cells_dir / m / f"f{f:g}-s{s}.json"
                cell = load_json(path) if path.exists() else None
                if cell is None or ("skipped" not in cell and (
                        cell.get("keys") != keys or cell.get("model_json") != _model_json(
                            run, m, f, s))):  # other sinuses, or the model was made again
                    cell = _score_cell(run, m, f, s, records, residuals, model_scores)
                    write_json(path, cell)
                cells[m][f].append(cell)
                progress.update(1, method=m)
    return records, residuals, cells


def _model_json(run: Run, method: str, fraction: float, seed: int) -> Optional[dict]:
    path = run.dir / "finetune" / f"bench-{method}-f{fraction:g}-s{seed}" / "model.json"
    return load_json(path) if path.exists() else None


def _score_cell(run: Run, method: str, fraction: float, seed: int, records, residuals,
                model_scores) -> dict:
    name = f"bench-{method}-f{fraction:g}-s{seed}"
    folder = run.dir / "finetune" / name
    if not (folder / "best.pt").exists():  # the cohort's cell was skipped (e.g. one class)
        return {"method": method, "fraction": fraction, "seed": seed,
                "skipped": f"no classifier {name} in {run.dir / 'finetune'}"}
    probs = model_scores(run, name, records, residuals)
    return {"method": method, "fraction": fraction, "seed": seed, "model": name,
            "model_json": load_json(folder / "model.json"), "keys": [r.key for r in records],
            "tta": probs["tta"].tolist(), "single": probs["single"].tolist(),
            **({"classifier": probs["classifier"].tolist()} if "classifier" in probs else {})}


def external_summary(run: Run, plan: BenchmarkPlan, cohort: str, manifest: Path,
                     out: Path) -> dict:
    """The cohort's summary (``aggregate.summarise_cohort``) on its independent test cohort:
    every method at the headline fraction, the label-free references, heatmap localisation."""
    from paranasal_ssl.benchmarks.aggregate import summarise_cohort
    from paranasal_ssl.benchmarks.reference_scores import label_free_references
    from paranasal_ssl.stages.evaluate_stage import localisation

    records, residuals, cells = score_external(run, plan, cohort, manifest,
                                               out / "cells" / f"{cohort}-external")
    references = label_free_references(run, residuals, records,
                                       with_prior="residual-pretext" in plan.methods)
    loc = {"CAE residual heatmap": localisation(run, residuals, records)}
    summary = summarise_cohort(f"{cohort}: independent test cohort", plan, records, cells,
                               references, loc)
    summary["manifest"] = str(manifest)
    summary["test_set"] = (f"Independent test cohort (`{manifest}`; no stage trained, stopped "
                           "or chose a threshold on it)")
    return summary
