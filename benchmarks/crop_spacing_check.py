"""Do finer crops let the CAE's residual find small cysts and polyps? A development-cohort check.

    python benchmarks/crop_spacing_check.py DEV_MANIFEST OUT RUN [RUN ...]

(run from the repository root with ``PYTHONPATH=ParanasalSSL:benchmarks``)

Why: on the benchmark's independent cohorts every score, learned or label-free, ranks sides
whose only findings are cysts or polyps under 6 mm below the normal sides (AUROC 0.40-0.51),
and those under 10 mm hold most of the AUPRC no method reaches
(``error_groups_check.py``). At the cpu-small profile's 2 mm crop a 4-6 mm finding shows as
about 7 voxels (``finding_sampling_check.py``). Each RUN is a run folder whose CAEs are trained
(``train-cae``) on the same cohort with other crop settings (e.g. ``--set data.crop.shape=48
--set data.crop.spacing_mm=1.3333333333``: the same 64 mm field at 1.33 mm); for each, the
label-free scores of the development cohort's sinuses - the run's own residual score and the
focal residual score that stage 4 fuses (CT bone gate, 2 mm Gaussian, maximum in the sinus
box) - with AUPRC overall and the AUROC of each finding group against the opposite class.
No label is used, nothing is trained here and no test split is read.

Writes OUT.json (settings, code version, machine) and OUT.md.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from error_groups_check import GROUP_ORDER, finding_group, group_auroc
from sklearn.metrics import average_precision_score

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.version import code_version, environment_info


def run_scores(run_dir: Path, dev: Path) -> dict:
    """Label-free scores per sinus key of ``dev`` with the CAEs of ``run_dir``."""
    from paranasal_ssl.benchmarks.external import external_records
    from paranasal_ssl.residual_fusion import FOCAL_NAME, focal_folder, focal_run
    from paranasal_ssl.stages.residual_stage import residual_folder, residual_scores_for_records
    from paranasal_ssl.stages.run import open_run

    run = open_run(run_dir, device="cpu")
    records = external_records(run, dev)
    own_folder = run.dir / "external" / f"dev-{residual_folder(run).name}"
    crop = run.config.data.crop
    # one CAE pass makes both maps where the run fuses (the focal ones land where the second
    # call reads them); otherwise the second call makes its own
    own = residual_scores_for_records(run, records, own_folder, fusion_maps=True)
    focal = residual_scores_for_records(focal_run(run), records, focal_folder(run, own_folder))
    return {"run": str(run_dir), "crop": {"shape": crop.shape, "spacing_mm": crop.spacing_mm},
            "cae_epochs": run.config.cae_train.epochs,
            "cae_members": len(list((run.dir / "cae").glob("**/best.pt"))),
            "scores": {"zero-label residual": own, FOCAL_NAME: focal}}


def read_dev(dev: Path):
    """``(keys, y, groups)`` of the labelled sides of a development manifest: ``case:side``
    keys, ``(n,)`` labels and ``(n,)`` finding groups (``error_groups_check.finding_group``)."""
    with open(dev, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("0", "1")]
    keys = [f"{r['case_id']}:{r['side']}" for r in rows]
    return (keys, np.array([int(r["label"]) for r in rows]),
            np.array([finding_group(r) for r in rows]))


def summary(keys, y, groups, scores: dict) -> dict:
    """AUPRC of ``scores`` (per key) over all sides and the AUROC of each finding group
    against the opposite class."""
    s = np.array([scores[k] for k in keys])
    row = {"auprc": float(average_precision_score(y, s)), "groups": {}}
    for g in [g for g in GROUP_ORDER if g in set(groups)]:
        row["groups"][g] = {"n": int((groups == g).sum()),
                            "auroc": group_auroc(y, groups == g, s)}
    return row


def main(dev: Path, out: Path, runs) -> dict:
    keys, y, groups = read_dev(dev)
    report = {"dev_manifest": str(dev), "sinuses": len(y), "prevalence": float(y.mean()),
              "code_version": code_version(), "environment": environment_info(),
              "command": " ".join(sys.argv), "runs": []}
    for run_dir in runs:
        result = run_scores(Path(run_dir), dev)
        by_name = {name: summary(keys, y, groups, scores)
                   for name, scores in result.pop("scores").items()}
        result["label_free"] = by_name
        report["runs"].append(result)
        print(f"{run_dir}: " + ", ".join(f"{n} {r['auprc']:.3f}" for n, r in by_name.items()),
              flush=True)
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))
    return report


def markdown(r: dict) -> str:
    cols = [(run, name) for run in r["runs"] for name in run["label_free"]]

    def head(run, name):
        c = run["crop"]
        return (f"{name}, {c['shape']}^3 at {c['spacing_mm']:.3g} mm, CAEs of "
                f"{run['cae_epochs']} epochs")

    return "\n".join([f"# Label-free scores by crop spacing: `{r['dev_manifest']}`", "",
                      f"{r['sinuses']} sinuses, prevalence {r['prevalence']:.3f}; code "
                      f"{r['code_version']}.", ""]
                     + group_table([(head(run, n), run["label_free"][n]) for run, n in cols]))


def group_table(columns) -> list:
    """Markdown lines of a table: one column per ``(header, summary row)``, the AUPRC over all
    sides, then each finding group's AUROC (see ``summary``)."""
    lines = ["| | n | " + " | ".join(h for h, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns),
             "| AUPRC, all sinuses | | " + " | ".join(
                 f"{row['auprc']:.3f}" for _, row in columns) + " |"]
    for g, first in columns[0][1]["groups"].items():
        values = [row["groups"][g]["auroc"] for _, row in columns]
        lines.append(f"| AUROC: {g} | {first['n']} | " + " | ".join(
            "-" if v is None else f"{v:.3f}" for v in values) + " |")
    return lines + [""]

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dev", type=Path, help="the development cohort's manifest.csv")
    parser.add_argument("out", type=Path, help="writes OUT.json and OUT.md")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with trained CAEs")
    args = parser.parse_args()
    print(markdown(main(args.dev, args.out, args.runs)))
