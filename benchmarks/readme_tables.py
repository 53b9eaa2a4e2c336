"""Print the README's two benchmark tables (independent test cohorts; test splits at 1% and
10% labels) from a benchmark's ``results.json``, so the README quotes the report exactly.

    python benchmarks/readme_tables.py benchmarks/results/cpu-small-full/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"residual-pretext": "residual pretext (this method)", "simclr": "SimCLR",
         "byol": "BYOL", "simsiam": "SimSiam", "mim": "masked image modelling (SparK-like)",
         "random-init": "random initialisation"}
REFERENCES = {"zero-label residual": "zero-label CAE residual (no labels)",
              "intensity (non-air fraction)": "intensity: non-air fraction of the sinus "
                                              "(no labels)",
              "residual pretext before fine-tuning": "this method before fine-tuning "
                                                     "(no labels)"}
FOCAL = "focal residual"


def reference_name(key: str) -> str:
    if key.startswith(FOCAL):
        return f"focal residual score{key[len(FOCAL):]} (no labels)"
    return REFERENCES.get(key, key)


def cell(entry: dict, best: bool, alone: bool = True, ci: bool = True) -> str:
    text = f"{entry['auprc']:.3f} +/- {entry['auprc_sd']:.3f}"
    text = f"**{text}**" if best else text
    if ci:
        lo, hi = entry["auprc_ci"]
        text += f" [{lo:.2f}, {hi:.2f}]"
    if alone and entry.get("auprc_classifier_alone") is not None:
        text += f" ({entry['auprc_classifier_alone']:.3f})"
    return text


def independent_table(cohorts: list) -> list:
    ext = [c["external"] for c in cohorts]
    lines = ["| method | " + " | ".join(c["cohort"] for c in cohorts) + " |",
             "|---|" + "---|" * len(cohorts)]
    for m, name in NAMES.items():
        row = []
        for e in ext:
            best = max(e["methods"], key=lambda k: e["methods"][k]["0.1"]["auprc"])
            row.append(cell(e["methods"][m]["0.1"], m == best))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    for key in ext[0]["zero_label"]:
        row = [f"{e['zero_label'][key]['auprc']:.3f} [{e['zero_label'][key]['auprc_ci'][0]:.2f}"
               f", {e['zero_label'][key]['auprc_ci'][1]:.2f}]" for e in ext]
        lines.append(f"| {reference_name(key)} | " + " | ".join(row) + " |")
    lines.append("| prevalence (AUPRC of a random score) | "
                 + " | ".join(f"{e['prevalence']:.3f}" for e in ext) + " |")
    return lines


def split_table(cohorts: list, fractions=("0.01", "0.1")) -> list:
    head = [f"{c['cohort']} {float(f):.0%}" for c in cohorts for f in fractions]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m, name in NAMES.items():
        row = []
        for c in cohorts:
            for f in fractions:
                best = max(c["methods"], key=lambda k: c["methods"][k][f]["auprc"])
                row.append(cell(c["methods"][m][f], m == best, alone=False, ci=False))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    for key in cohorts[0]["zero_label"]:
        row = []
        for c in cohorts:
            row += [f"{c['zero_label'][key]['auprc']:.3f}", ""]
        lines.append(f"| {reference_name(key)} | " + " | ".join(row) + " |")
    lines.append("| prevalence of the test split | "
                 + " | ".join(f"{c['prevalence']:.3f} | " for c in cohorts)[:-3] + " |")
    return lines


def main(path: str) -> None:
    results = json.loads(Path(path).read_text())
    cohorts = [c for c in results["cohorts"] if "external" in c]
    print(f"code {results['code_version']}, {results['total_seconds'] / 60:.1f} min")
    for key, seconds in results["timings_s"].items():  # in minutes
        if isinstance(seconds, dict):
            print(f"  {key}: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items()))
        elif key != "earlier invocations":
            print(f"  {key}: {seconds / 60:.1f}")
    print()
    print("\n".join(independent_table(cohorts)))
    print()
    print("\n".join(split_table(results["cohorts"])))


if __name__ == "__main__":
    main(sys.argv[1])
