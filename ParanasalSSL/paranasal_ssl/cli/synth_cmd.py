"""``paranasal-ssl synth``: make a synthetic CT or MRI phantom cohort with a manifest."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from paranasal_ssl.atomic import check_writable_dir
from paranasal_ssl.cli import arg_types
from paranasal_ssl.config import from_dict, load_json, save_config
from paranasal_ssl.errors import InputError
from paranasal_ssl.progress import Progress
from paranasal_ssl.version import code_version

log = logging.getLogger(__name__)
# Saved in cohort_config.json beside the configuration, but not part of it.
RECORD_KEYS = ("code_version", "command", "arguments", "summary")

EPILOG = """\
examples:
  paranasal-ssl synth cohort_ct --cases 200 --modality ct --seed 0
  paranasal-ssl synth cohort_mri --cases 100 --modality mri --mri-sequence mixed
  paranasal-ssl synth thick --cases 50 --spacing 0.5,0.5,3 --orientation mixed
  paranasal-ssl synth screening --cases 300 --anomaly-fraction 0.25
  paranasal-ssl synth again --config cohort_ct/cohort_config.json   # regenerate exactly

OUT receives images/<case>.nii.gz (int16: HU on CT), masks/<case>.nii.gz (uint8 codes of
paranasal_ssl.anomalies.ANOMALY_CODES), manifest.csv (one row per sinus side, ROI in RAS mm)
and cohort_config.json (every setting, the code version and this command line).
"""


def register(subparsers) -> None:
    from paranasal_ssl.cli.main import add_progress_option

    p = subparsers.add_parser(
        "synth", help="make a synthetic head CT/MRI phantom cohort with anomalies and a manifest",
        description="Make phantom head scans around both maxillary sinuses (realistic anatomy, "
                    "normal variants, subtle findings, scanner effects), their anomaly label "
                    "masks and a manifest with one row per sinus side. Deterministic for a seed, "
                    "whatever the number of workers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT", type=Path, help="output folder (created if needed)")
    p.add_argument("--cases", type=arg_types.positive_int, default=None,
                   help="number of cases (subjects); default 100")
    p.add_argument("--modality", choices=("ct", "mri"), default=None, help="default ct")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--spacing", type=arg_types.spacing, default=None, metavar="MM",
                   help="voxel size in mm: one value (isotropic) or x,y,z, e.g. 0.5,0.5,3 for "
                        "thick slices (default 1)")
    p.add_argument("--anomaly-fraction", type=arg_types.fraction, default=None, metavar="P",
                   help="per-side prevalence of reportable findings (default 0.5; a screening "
                        "population is nearer 0.25)")
    p.add_argument("--noise", type=arg_types.non_negative, default=None, metavar="SCALE",
                   help="multiplies every noise level (0 = noise-free; default 1)")
    p.add_argument("--label-noise", type=arg_types.non_negative, default=None, metavar="SCALE",
                   help="multiplies the near-threshold label-noise rates (0 = labels equal the "
                        "truth; default 1)")
    p.add_argument("--realism", choices=("realistic", "easy"), default=None,
                   help="preset: realistic (default) or easy (no variants, noise or artefacts; "
                        "for debugging)")
    p.add_argument("--orientation", choices=("lps", "ras", "oblique", "mixed"), default=None,
                   help="storage direction of the volumes: lps (identity, as axial DICOM; "
                        "default), ras (diag(-1,-1,1), as dcm2niix NIfTI in ITK), oblique "
                        "(tilted), mixed (one of these per case)")
    p.add_argument("--mri-sequence", choices=("flair", "t1", "t2", "mixed"), default=None,
                   help="MRI contrast (default flair)")
    p.add_argument("--patient-position", choices=("supine", "upright"), default=None,
                   help="gravity for air-fluid levels: supine (CT/MRI; fluid posterior; "
                        "default) or upright (dental cone-beam; fluid inferior)")
    p.add_argument("--id-prefix", default=None, metavar="TEXT",
                   help="put TEXT before every case and subject id (e.g. ext- for a second "
                        "cohort whose ids must not clash with the first's)")
    p.add_argument("--config", type=Path, default=None, metavar="JSON",
                   help="start from a saved cohort_config.json (other options override it)")
    p.add_argument("--workers", type=arg_types.positive_int, default=None,
                   help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cohort already in OUT")
    add_progress_option(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The cohort configuration from a saved file or preset, then the explicit options."""
    from paranasal_ssl.phantom.config import PhantomConfig, preset

    if args.config is not None:
        data = load_json(args.config)
        data = {k: v for k, v in data.items() if k not in RECORD_KEYS}
        cfg = from_dict(PhantomConfig, data, source=args.config)
        if args.realism is not None and args.realism != cfg.realism:
            raise InputError(args.config, f"--realism {args.realism} conflicts with the saved "
                             f"preset {cfg.realism!r}", expected="one of them")
    else:
        cfg = preset(args.realism or "realistic")
    for attr, value in (("cases", args.cases), ("modality", args.modality), ("seed", args.seed),
                        ("anomaly_fraction", args.anomaly_fraction),
                        ("noise_scale", args.noise), ("label_noise_scale", args.label_noise),
                        ("id_prefix", args.id_prefix)):
        if value is not None:
            setattr(cfg, attr, value)
    if args.spacing is not None:
        cfg.grid.spacing_mm = list(args.spacing)
    if args.orientation is not None:
        cfg.grid.orientation = args.orientation
    if args.patient_position is not None:
        cfg.grid.patient_position = args.patient_position
    if args.mri_sequence is not None:
        cfg.mri.sequence = args.mri_sequence
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    from paranasal_ssl.phantom import cohort

    cfg = build_config(args)
    out = check_writable_dir(args.out)
    if (out / "manifest.csv").exists() and not args.overwrite:
        raise InputError(out, "already holds a cohort (manifest.csv)",
                         expected="an empty folder, or --overwrite to replace it")
    if args.overwrite:
        for sub in (cohort.IMAGES, cohort.MASKS):
            for old in (out / sub).glob("*case[0-9]*.nii.gz"):  # any --id-prefix
                old.unlink()
    workers = args.workers or cohort.default_workers()
    command = ["paranasal-ssl", *getattr(args, "argv", [])]  # as ``cli.main`` parsed it
    arguments = {k: v for k, v in vars(args).items() if k not in ("func", "argv")}
    t0 = time.perf_counter()
    with Progress("synth", total=int(cfg.cases), unit="case") as bar:
        records = cohort.generate_cohort(
            cfg, out, workers=workers,
            on_case=lambda i: bar.update(1, cases_per_s=(bar.done + 1) / max(
                time.perf_counter() - t0, 1e-9)))
    seconds = time.perf_counter() - t0
    stats = cohort.summary(records)
    stats.update(seconds=round(seconds, 2), workers=workers,
                 cases_per_second=round(cfg.cases / seconds, 3))
    save_config(cfg, out / "cohort_config.json", code_version=code_version(), command=command,
                arguments=arguments, summary=stats)
    print(f"synth: {stats['cases']} {cfg.modality.upper()} cases ({stats['sides']} sides) in "
          f"{seconds:.1f} s -> {out / 'manifest.csv'}; prevalence {stats['prevalence']:.2f} "
          f"(truth {stats['true_prevalence']:.2f}), sinus volume "
          f"{stats['sinus_volume_ml_mean']:.1f} +/- {stats['sinus_volume_ml_sd']:.1f} mL")
    return 0
