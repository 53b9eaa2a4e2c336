"""How many crop voxels show a small finding: the crop grid's spacing against the finding's size.

    python benchmarks/finding_sampling_check.py MANIFEST OUT [--cases 400] [--spacings 2 1.333 1]

For each labelled sinus of a phantom cohort's ``MANIFEST`` (the first ``--cases`` cases) and
each crop spacing (the field of view kept at the cpu-small profile's 64 mm, so 32^3 voxels at
2 mm, 48^3 at 1.333 mm, 64^3 at 1 mm; linear interpolation as in training), it counts the crop
voxels that lie in the finding (ground-truth mask, nearest neighbour) and read as tissue, not
air (above -500 HU on CT, the intensity baseline's level), and reports their median per group
of ``error_groups_check.finding_group``: a finding that a crop shows with one or two voxels has
no shape a model can tell from a normal lining. No model is involved.

Writes OUT.json (code version, machine) and OUT.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import OrderedDict, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from error_groups_check import GROUP_ORDER, finding_group

from paranasal_ssl.atomic import write_json, write_text
from paranasal_ssl.config import CropConfig
from paranasal_ssl.crops import extract_crop
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.version import code_version, environment_info

FOV_MM = 64.0
TISSUE_HU = -500.0


def visible_voxels(image, mask, record, spacing: float) -> int:
    """Crop voxels inside the finding (mask > 0) that read above ``TISSUE_HU``."""
    crop = CropConfig(shape=int(round(FOV_MM / spacing / 8)) * 8, spacing_mm=spacing,
                      jitter_mm=0.0)
    crop = replace(crop, spacing_mm=FOV_MM / crop.shape)
    hu, _ = extract_crop(image, record.roi, crop, record.side, pad_value=-1000.0)
    lab, _ = extract_crop(mask, record.roi, replace(crop, interpolation="nearest"),
                          record.side, pad_value=0.0)
    return int(((lab > 0) & (hu > TISSUE_HU)).sum())


def main(manifest: Path, out: Path, cases: int, spacings) -> dict:
    with open(manifest, newline="") as f:
        rows = {f"{r['case_id']}:{r['side']}": r for r in csv.DictReader(f)}
    records = [r for r in read_manifest(manifest) if r.label is not None]
    if any(r.modality != "ct" for r in records):
        raise SystemExit(f"{manifest}: the tissue level is in HU, so this check reads CT "
                         "cohorts only (column modality = ct)")
    case_ids = list(OrderedDict.fromkeys(r.case_id for r in records))[:cases]
    keep = set(case_ids)
    counts = defaultdict(lambda: defaultdict(list))
    images = {}
    for r in records:
        if r.case_id not in keep:
            continue
        if r.case_id not in images:
            images = {r.case_id: (sitk.ReadImage(str(r.image), sitk.sitkFloat32),
                                  sitk.ReadImage(str(r.mask), sitk.sitkUInt8))}
        image, mask = images[r.case_id]
        group = finding_group(rows[r.key])
        for s in spacings:
            counts[group][s].append(visible_voxels(image, mask, r, s))
    report = {"manifest": str(manifest), "cases": len(case_ids), "fov_mm": FOV_MM,
              "tissue_hu": TISSUE_HU, "spacings_mm": list(spacings),
              "code_version": code_version(), "environment": environment_info(),
              "command": " ".join(sys.argv), "groups": OrderedDict()}
    for g in [g for g in GROUP_ORDER if g in counts]:
        report["groups"][g] = {"n": len(counts[g][spacings[0]]), "median_voxels": {
            f"{s:g}": float(np.median(counts[g][s])) for s in spacings},
            "share_with_at_most_2_voxels": {
            f"{s:g}": float(np.mean(np.asarray(counts[g][s]) <= 2)) for s in spacings}}
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))
    return report


def markdown(r: dict) -> str:
    sp = [f"{s:g}" for s in r["spacings_mm"]]
    lines = [f"# Finding voxels in a {r['fov_mm']:g} mm crop, by crop spacing", "",
             f"`{r['manifest']}`, first {r['cases']} cases; voxels inside the ground-truth "
             f"finding that read above {r['tissue_hu']:g} HU; code {r['code_version']}.", "",
             "| group | n | " + " | ".join(f"median voxels at {s} mm" for s in sp) + " | "
             + " | ".join(f"<= 2 voxels at {s} mm" for s in sp) + " |",
             "|---|---|" + "---|" * (2 * len(sp))]
    for g, row in r["groups"].items():
        lines.append(f"| {g} | {row['n']} | " + " | ".join(
            f"{row['median_voxels'][s]:g}" for s in sp) + " | " + " | ".join(
            f"{100 * row['share_with_at_most_2_voxels'][s]:.0f}%" for s in sp) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.333, 1.0])
    args = parser.parse_args()
    print(markdown(main(args.manifest, args.out, args.cases, args.spacings)))
