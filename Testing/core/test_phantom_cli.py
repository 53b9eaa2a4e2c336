"""``paranasal-ssl synth`` as a user runs it: help, bad arguments, a cohort written to disk,
refusal to overwrite, exact regeneration from the saved configuration, id prefixes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from paranasal_ssl.cli.main import COMMAND_MODULES, build_parser
from paranasal_ssl.config import from_dict
from paranasal_ssl.manifest import read_manifest
from paranasal_ssl.phantom import PhantomConfig
from paranasal_ssl.scan_io import read_scan


def run_cli(python_exe, *args, cwd=None):
    return subprocess.run([python_exe, "-m", "paranasal_ssl", "synth", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_cli_help_and_bad_arguments(python_exe, tmp_path):
    done = run_cli(python_exe, "--help")
    assert done.returncode == 0
    for option in ("--cases", "--modality", "--seed", "--spacing", "--anomaly-fraction",
                   "--noise", "--realism", "--orientation", "--workers", "--overwrite"):
        assert option in done.stdout
    bad = run_cli(python_exe, tmp_path / "x", "--spacing", "0.5,abc")
    assert bad.returncode == 2 and "--spacing" in bad.stderr and "0.5,abc" in bad.stderr
    assert not (tmp_path / "x" / "manifest.csv").exists()


def test_every_command_is_registered_and_its_help_reads_as_written():
    """argparse %-formats option help but not descriptions: a '%%' written for one shows
    literally in the other. Defaults are shown where there is one, never as "None". Every
    command module must also register (none silently left out)."""
    def subcommands(parser):
        actions = parser._subparsers._group_actions if parser._subparsers else []
        return {name: sub for a in actions for name, sub in a.choices.items()}

    commands = subcommands(build_parser())
    assert len(commands) == len(COMMAND_MODULES)
    nested = {f"{name} {action}": sub for name, parser in commands.items()
              for action, sub in subcommands(parser).items()}
    assert "review export" in nested
    for name, sub in {**commands, **nested}.items():
        text = sub.format_help()
        assert "%%" not in text and "%(" not in text, name
        assert "(default: None)" not in text and "(default: False)" not in text, name
        assert sub.description or name in nested, f"{name} has no description"
    assert "95% bootstrap" in commands["benchmark"].format_help()
    assert "5/10/100%," in commands["benchmark"].format_help()


def test_cli_makes_a_cohort_refuses_to_overwrite_and_regenerates(python_exe, tmp_path, capsys):
    out = tmp_path / "cohort"
    done = run_cli(python_exe, out, "--cases", 2, "--modality", "mri", "--seed", 5,
                   "--spacing", "2,2,3", "--workers", 1, "--progress", "json",
                   "--orientation", "ras")
    assert done.returncode == 0, done.stderr
    assert '@@progress {"stage": "synth"' in done.stdout
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 4 and all(r.modality == "mri" for r in rows)
    image = read_scan(rows[0].image)
    assert image.GetSpacing() == (2.0, 2.0, 3.0)
    saved = json.loads((out / "cohort_config.json").read_text())
    assert saved["code_version"] and "synth" in saved["command"]
    assert saved["modality"] == "mri" and saved["grid"]["spacing_mm"] == [2.0, 2.0, 3.0]
    # In process from here (same code path as the command, without another start-up).
    from paranasal_ssl.cli.main import main

    assert main(["synth", str(out), "--cases", "2", "--progress", "none"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["synth", str(blocker / "out"), "--cases", "1", "--progress", "none"]) == 2
    assert "cannot write here" in capsys.readouterr().err
    # Regenerate exactly from the saved configuration.
    assert main(["synth", str(tmp_path / "copy"), "--config", str(out / "cohort_config.json"),
                 "--workers", "1", "--progress", "none"]) == 0
    cfg = from_dict(PhantomConfig, {k: v for k, v in saved.items() if k not in (
        "code_version", "command", "arguments", "summary")})
    assert cfg.cases == 2 and cfg.seed == 5
    for r in rows:
        copy = Path(tmp_path / "copy" / "images" / r.image.name)
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(copy))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(r.image))))
    assert main(["synth", str(out), "--cases", "1", "--overwrite", "--workers", "1",
                 "--progress", "none"]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 2
    assert len(list((out / "images").glob("*.nii.gz"))) == 1
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" / "case0000.nii.gz")))
    # A second cohort whose ids cannot clash with the first's (same images: the prefix is only
    # a name); --overwrite clears the unprefixed files.
    assert main(["synth", str(out), "--cases", "1", "--overwrite", "--workers", "1",
                 "--id-prefix", "ext-", "--progress", "none"]) == 0
    ext = read_manifest(out / "manifest.csv")
    assert {(r.case_id, r.subject_id) for r in ext} == {("ext-case0000", "ext-subj0000")}
    assert [p.name for p in (out / "images").glob("*.nii.gz")] == ["ext-case0000.nii.gz"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(ext[0].image))), plain)
    assert main(["synth", str(tmp_path / "bad"), "--cases", "1", "--id-prefix", "a/b",
                 "--progress", "none"]) == 2
    assert "id_prefix" in capsys.readouterr().err
