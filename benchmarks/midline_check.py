"""How close the estimated head midline (``head_frame.head_midplane``, behind the wrong-side box
warning of ``predict``, Slicer and the review) lies to the middle between the two sinuses.

For each phantom setting, makes a cohort in a temporary folder and compares the estimate with
the middle of the generator's two sinus centres: the RAS x where the estimated plane crosses
the left-right line through that middle, minus the middle's x. On the whole scan, with 30% of
the scan's columns cut away on either side (a field of view centred off the midline, as a
cone-beam field on one cheek), with the head turned 25 deg about the superior axis (yawed) and
with it tilted 15 deg towards a shoulder (rolled), one way on even cases and the other on odd
ones. The tissue centre of mass (its RAS x), the estimate before the mirror search, is
reported beside it. The real Cranium CT (when installed) is scored against the middle of its
suggested boxes, whole, with 20% and 35% cut away, yawed and rolled. Writes OUT.json and
OUT.md with the machine and the code version.

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

from check_args import phantom_sides, run_phantom_checks, turned  # noqa: E402

from paranasal_ssl.geometry import lps_to_ras  # noqa: E402
from paranasal_ssl.head_frame import head_midplane  # noqa: E402
from paranasal_ssl.midline import tissue_centre  # noqa: E402
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
YAW_DEG, ROLL_DEG = 25.0, 15.0  # the turned views


def views(image, middle, cuts=(CUT,), sign: float = 1.0):
    """(name, image, middle): the whole scan, each cut from the low and the high column end,
    then the head turned by ``sign`` x (``YAW_DEG``, then ``ROLL_DEG``) about ``middle`` (RAS
    mm), with the middle turned along."""
    yield "whole", image, middle
    n = image.GetSize()[0]
    for cut in cuts:
        yield f"low {cut:.0%} cut", image[int(n * cut):, :, :], middle
        yield f"high {cut:.0%} cut", image[:int(n * (1 - cut)), :, :], middle
    for name, yaw, roll in (("yawed", YAW_DEG, 0.0), ("rolled", 0.0, ROLL_DEG)):
        moved, centre = turned(image, {"middle": middle}, sign * yaw, sign * roll)
        yield f"{name} {sign * (yaw or roll):+.0f} deg", moved, centre["middle"]


def errors(image, middle) -> dict:
    """Errors (mm, along RAS x at ``middle``, RAS mm) of the midline estimates."""
    modality = detect_modality(image)
    start = time.perf_counter()
    mirror = head_midplane(image, modality).x_at(middle)
    seconds = time.perf_counter() - start
    centre_x = float(lps_to_ras(tissue_centre(image, modality))[0])
    return {"mirror": mirror - middle[0], "centre_of_mass": centre_x - middle[0],
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
    for index, sides in enumerate(cases_sides):
        middle = (sides["left"].roi.center + sides["right"].roi.center) / 2.0
        scan = read_scan(sides["left"].image)
        for view, image, centre in views(scan, middle, sign=(-1.0) ** index):
            group = "cut" if view.endswith("cut") else view.split()[0]  # whole, yawed, rolled
            rows[group].append(errors(image, centre))
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
    middle = (boxes["left"].center + boxes["right"].center) / 2.0
    return {"middle_of_suggested_boxes_x": float(middle[0]),
            **{view: errors(image, centre) for view, image, centre
               in views(scan, middle, (0.2, 0.35))}}


def markdown(report: dict) -> str:
    lines = [f"# Head midline estimate on phantoms ({report['code_version']})", "",
             f"Machine: {report['environment'].get('processor', '?')}, "
             f"{report['environment'].get('cpu_threads', '?')} threads. Error = estimate - "
             "middle between the two sinus centres (RAS x, mm); *cut*: 30% of the scan's "
             "columns removed on one side (both sides, so two per case); *yawed*, *rolled*: the "
             f"head turned {YAW_DEG:g} deg about the superior axis, or tilted {ROLL_DEG:g} deg "
             "towards a shoulder, one way on even cases and the other on odd ones (error at the "
             "sinuses' level and depth). Mirror: the plane of best mirror symmetry, turned with "
             "the head (the estimate in use); centre of mass: the tissue's.", "",
             "| setting | scans | mirror: median / max error (mm) | > 10 mm | centre of mass: "
             "median / max | > 10 mm | s/scan |", "|---|---|---|---|---|---|---|"]
    for r in report["settings"]:
        for view in ("whole", "cut", "yawed", "rolled"):
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
