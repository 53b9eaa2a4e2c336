"""How close the estimated head midline (``box_sides.head_midline_x``, behind the wrong-side box
warning of ``predict``, Slicer and the review) lies to the middle between the two sinuses.

For each phantom setting, makes a cohort in a temporary folder and compares the estimate with
the middle of the generator's two sinus centres (RAS x), on the whole scan and with 30% of the
scan's columns cut away on either side (a field of view centred off the midline, as a cone-beam
field on one cheek). The tissue centre of mass, the estimate before the mirror search, is
reported beside it. The real Cranium CT (when installed) is scored against the middle of its
suggested boxes, whole and with 20% and 35% cut away. Writes OUT.json and OUT.md with the
machine and the code version.

    .venv/bin/python benchmarks/midline_check.py benchmarks/results/midline_check
    .venv/bin/python benchmarks/midline_check.py OUT --cases 5 --settings ct
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ParanasalSSL"))

from check_args import phantom_sides, run_phantom_checks  # noqa: E402

from paranasal_ssl.midline import _tissue_centre_x, head_midline_x  # noqa: E402
from paranasal_ssl.modality import detect_modality  # noqa: E402
from paranasal_ssl.scan_io import read_scan  # noqa: E402

SETTINGS = {
    "ct": ["--modality", "ct"],
    "ct-ras": ["--modality", "ct", "--orientation", "ras"],
    "ct-thick-oblique": ["--modality", "ct", "--spacing", "0.5,0.5,3", "--orientation",
                         "oblique"],
    "mri-t1": ["--modality", "mri", "--mri-sequence", "t1", "--orientation", "mixed"],
    "mri-t2": ["--modality", "mri", "--mri-sequence", "t2", "--orientation", "mixed"],
    "mri-flair-thick": ["--modality", "mri", "--mri-sequence", "flair", "--spacing",
                        "0.7,0.7,3.5", "--orientation", "mixed"],
}
CUT = 0.3  # share of the columns cut away on one side


def views(image, cuts=(CUT,)):
    """(name, image): the whole scan, then each cut from the low and the high column end."""
    yield "whole", image
    n = image.GetSize()[0]
    for cut in cuts:
        yield f"low {cut:.0%} cut", image[int(n * cut):, :, :]
        yield f"high {cut:.0%} cut", image[:int(n * (1 - cut)), :, :]


def errors(image, middle: float) -> dict:
    modality = detect_modality(image)
    start = time.perf_counter()
    mirror = head_midline_x(image, modality)
    seconds = time.perf_counter() - start
    return {"mirror": mirror - middle, "centre_of_mass": _tissue_centre_x(image, modality) - middle,
            "seconds": seconds}


def summary(rows) -> dict:
    out = {}
    for key in ("mirror", "centre_of_mass"):
        e = np.abs([r[key] for r in rows])
        out[key] = {"median_mm": float(np.median(e)), "max_mm": float(e.max()),
                    "over_10_mm": int((e > 10).sum())}
    out["n"] = len(rows)
    out["seconds_per_scan"] = float(np.mean([r["seconds"] for r in rows]))
    return out


def check_setting(name: str, options, cases: int, seed: int, folder: Path) -> dict:
    cases_sides = phantom_sides(folder / name, options, cases, seed)
    rows = collections.defaultdict(list)
    for sides in cases_sides:
        middle = (sides["left"].roi.center[0] + sides["right"].roi.center[0]) / 2.0
        scan = read_scan(sides["left"].image)
        for view, image in views(scan):
            rows["whole" if view == "whole" else "cut"].append(errors(image, middle))
    return {"setting": name, "synth_options": list(options), "cases": len(cases_sides),
            "seed": seed, **{view: summary(r) for view, r in rows.items()}}


def check_cranium() -> dict | None:
    from paranasal_ssl.datasets.cranium import find_cranium, load_cranium
    from paranasal_ssl.roi_suggest import suggest_rois

    path = find_cranium()
    if path is None:
        return None
    scan = load_cranium(path)
    boxes = suggest_rois(scan).rois
    middle = (boxes["left"].center[0] + boxes["right"].center[0]) / 2.0
    return {"middle_of_suggested_boxes_x": middle,
            **{view: errors(image, middle) for view, image in views(scan, (0.2, 0.35))}}


def markdown(report: dict) -> str:
    lines = [f"# Head midline estimate on phantoms ({report['code_version']})", "",
             f"Machine: {report['environment'].get('processor', '?')}, "
             f"{report['environment'].get('cpu_threads', '?')} threads. Error = estimate - "
             "middle between the two sinus centres (RAS x, mm); *cut*: 30% of the scan's "
             "columns removed on one side (both sides, so two per case). Mirror: the plane of "
             "best mirror symmetry (the estimate in use); centre of mass: the tissue's.", "",
             "| setting | scans | mirror: median / max error (mm) | > 10 mm | centre of mass: "
             "median / max | > 10 mm | s/scan |", "|---|---|---|---|---|---|---|"]
    for r in report["settings"]:
        for view in ("whole", "cut"):
            s = r[view]
            lines.append(f"| {r['setting']} ({view}) | {s['n']} | "
                         f"{s['mirror']['median_mm']:.1f} / {s['mirror']['max_mm']:.1f} | "
                         f"{s['mirror']['over_10_mm']} | {s['centre_of_mass']['median_mm']:.1f} "
                         f"/ {s['centre_of_mass']['max_mm']:.1f} | "
                         f"{s['centre_of_mass']['over_10_mm']} | {s['seconds_per_scan']:.3f} |")
    cranium = report.get("cranium")
    if cranium:
        lines += ["", "Real Cranium CT (middle of the suggested boxes at RAS x "
                  f"{cranium['middle_of_suggested_boxes_x']:.1f} mm): "
                  + "; ".join(f"{view}: mirror {e['mirror']:+.1f}, centre of mass "
                              f"{e['centre_of_mass']:+.1f} mm" for view, e in cranium.items()
                              if isinstance(e, dict))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    return run_phantom_checks(__doc__, SETTINGS, check_setting, markdown, cases=20,
                              seed=300, argv=argv, extra=lambda: {"cranium": check_cranium()})


if __name__ == "__main__":
    sys.exit(main())
