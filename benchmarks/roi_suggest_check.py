"""How often the suggested sinus boxes land on the sinuses, per scan setting (phantoms).

For each setting, makes a phantom cohort in a temporary folder, suggests both boxes on every
scan (``paranasal_ssl.roi_suggest.suggest_rois``, what *Suggest* in Slicer and
``predict --suggest-rois`` run) and compares each box centre with the manifest's box centre
(the generator's sinus, RAS mm). Reports per setting: sides within 10 and 15 mm, cases with
both sides within 15 mm, the median error, the share of high-confidence suggestions and how
often those are right (a high-confidence box should be one the user can trust), and which
method produced them. Writes OUT.json and OUT.md with the machine and the code version.

    .venv/bin/python benchmarks/roi_suggest_check.py benchmarks/results/roi_suggest_check
    .venv/bin/python benchmarks/roi_suggest_check.py OUT --cases 10 --settings ct mri-t2
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ParanasalSSL"))

from check_args import phantom_sides, run_phantom_checks, turned  # noqa: E402

from paranasal_ssl.roi_suggest import suggest_rois  # noqa: E402
from paranasal_ssl.scan_io import read_scan  # noqa: E402

# name -> synth options (each cohort also gets --cases and its own --seed)
SETTINGS = {
    "ct": ["--modality", "ct"],
    "ct-thick-mixed-orientation": ["--modality", "ct", "--spacing", "0.5,0.5,3",
                                   "--orientation", "mixed"],
    "ct-80%-anomalous": ["--modality", "ct", "--anomaly-fraction", "0.8"],
    "mri-t1": ["--modality", "mri", "--mri-sequence", "t1"],
    "mri-t2": ["--modality", "mri", "--mri-sequence", "t2"],
    "mri-flair": ["--modality", "mri", "--mri-sequence", "flair"],
    "mri-thick-mixed": ["--modality", "mri", "--mri-sequence", "mixed", "--spacing",
                        "0.7,0.7,3.5", "--orientation", "mixed"],
    # a field of view off the midline: a fifth of the scan's columns cut away, from the low
    # end on even cases and the high end on odd ones (both sinus centres stay in the field)
    "ct-field-cut-one-side": ["--modality", "ct"],
    "mri-t1-field-cut-one-side": ["--modality", "mri", "--mri-sequence", "t1"],
    # a head tilted towards one shoulder (roll about the antero-posterior axis), 12 deg to the
    # left on even cases and to the right on odd ones, on top of the phantom's own few degrees
    "ct-head-rolled-12deg": ["--modality", "ct"],
    "mri-t1-head-rolled-12deg": ["--modality", "mri", "--mri-sequence", "t1"],
    # a head turned about the superior axis (yaw), 25 deg to the left on even cases and to the
    # right on odd ones: the field, cut close around the face, is wider than deep, so the
    # outline shows no antero-posterior long axis
    "ct-head-turned-25deg": ["--modality", "ct"],
    "mri-t1-head-turned-25deg": ["--modality", "mri", "--mri-sequence", "t1"],
}
CUT_SETTINGS = {"ct-field-cut-one-side": 0.2, "mri-t1-field-cut-one-side": 0.2}
TURNED_SETTINGS = {  # name -> (yaw, roll) in degrees, signs alternating case by case
    "ct-head-rolled-12deg": (0.0, 12.0), "mri-t1-head-rolled-12deg": (0.0, 12.0),
    "ct-head-turned-25deg": (25.0, 0.0), "mri-t1-head-turned-25deg": (25.0, 0.0)}
NEAR_MM, FAR_MM = 10.0, 15.0


def cut_one_side(image, share: float, high_end: bool):
    """``image`` without ``share`` of its columns (index x) at its low or high end."""
    n = image.GetSize()[0]
    return image[:n - int(n * share), :, :] if high_end else image[int(n * share):, :, :]


def check_setting(name: str, options, cases: int, seed: int, folder: Path) -> dict:
    cases_sides = phantom_sides(folder / name, options, cases, seed)
    errors, both, high, high_right, methods, seconds = [], [], 0, 0, collections.Counter(), []
    for index, sides in enumerate(cases_sides):
        image = read_scan(next(iter(sides.values())).image)
        truth = {s: r.roi.center for s, r in sides.items()}
        if name in CUT_SETTINGS:
            image = cut_one_side(image, CUT_SETTINGS[name], high_end=bool(index % 2))
        if name in TURNED_SETTINGS:
            sign = (-1) ** index
            yaw, roll = TURNED_SETTINGS[name]
            image, truth = turned(image, truth, sign * yaw, sign * roll)
        start = time.perf_counter()
        suggestion = suggest_rois(image)
        seconds.append(time.perf_counter() - start)
        case_errors = [float(np.linalg.norm(suggestion.rois[s].center - c))
                       for s, c in truth.items()]
        errors += case_errors
        right = max(case_errors) < FAR_MM
        both.append(right)
        methods[suggestion.method] += 1
        if not suggestion.low_confidence:
            high += 1
            high_right += right
    e = np.array(errors)
    return {"setting": name, "synth_options": list(options), "cases": len(cases_sides),
            "seed": seed, f"sides_within_{NEAR_MM:g}_mm": float(np.mean(e < NEAR_MM)),
            f"sides_within_{FAR_MM:g}_mm": float(np.mean(e < FAR_MM)),
            f"cases_both_within_{FAR_MM:g}_mm": float(np.mean(both)),
            "median_error_mm": float(np.median(e)), "high_confidence_cases": high,
            f"high_confidence_both_within_{FAR_MM:g}_mm": high_right,
            "methods": dict(methods), "seconds_per_scan": float(np.mean(seconds))}


def markdown(report: dict) -> str:
    lines = [f"# ROI suggestion on phantoms ({report['code_version']})", "",
             f"Machine: {report['environment'].get('processor', '?')}, "
             f"{report['environment'].get('cpu_threads', '?')} threads; a case is right when both "
             f"box centres are within {FAR_MM:g} mm of the generator's.", "",
             f"| setting | cases | sides < {NEAR_MM:g} mm | sides < {FAR_MM:g} mm | cases right "
             "| median error (mm) | high confidence (right) | methods | s/scan |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["settings"]:
        methods = ", ".join(f"{k} {v}" for k, v in sorted(r["methods"].items()))
        lines.append(
            f"| {r['setting']} | {r['cases']} | {r[f'sides_within_{NEAR_MM:g}_mm']:.2f} | "
            f"{r[f'sides_within_{FAR_MM:g}_mm']:.2f} | "
            f"{r[f'cases_both_within_{FAR_MM:g}_mm']:.2f} | {r['median_error_mm']:.1f} | "
            f"{r['high_confidence_cases']} ({r[f'high_confidence_both_within_{FAR_MM:g}_mm']}) "
            f"| {methods} | {r['seconds_per_scan']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    return run_phantom_checks(__doc__, SETTINGS, check_setting, markdown, cases=30,
                              seed=100, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
