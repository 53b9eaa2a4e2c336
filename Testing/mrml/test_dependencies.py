"""Dependency checker: what is missing, what is installed how, what is never replaced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ParanasalSSLLib import dependencies as deps

REPO = Path(__file__).resolve().parents[2]


def _versions(**versions):
    table = {k.replace("_", "-"): v for k, v in versions.items()}
    return lambda name: table.get(name)


SLICER_LIKE = dict(torch=None, monai=None, SimpleITK="2.4.0", numpy="1.26.4", scipy="1.13.0",
                   scikit_learn=None, tqdm="4.66.1", matplotlib="3.8.0", requests="2.31.0",
                   pydicom="2.4.4")


def test_requirements_match_the_project_dependencies():
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    declared = re.findall(r'"([^"]+)"', block)
    parsed = {re.split(r"[<>=!~ ]", d)[0].lower(): d.split(">=")[1] for d in declared}
    assert {r.name.lower(): r.minimum for r in deps.REQUIREMENTS} == parsed


def test_this_environment_satisfies_every_requirement():
    statuses = deps.checkDependencies()  # real importlib.metadata lookups
    assert deps.missing(statuses) == []
    assert deps.summary(statuses) == "All required Python packages are installed."


def test_missing_and_too_old_packages_are_listed_with_their_floor():
    statuses = deps.checkDependencies(versionOf=_versions(**{**SLICER_LIKE, "tqdm": "4.50.0"}))
    text = deps.summary(statuses)
    assert "torch: missing (needs >= 2.2)" in text
    assert "monai: missing (needs >= 1.3)" in text
    assert "scikit-learn: missing (needs >= 1.3)" in text
    assert "tqdm: 4.50.0 is too old (needs >= 4.60)" in text
    assert "numpy" not in text and "SimpleITK" not in text
    assert deps.versionAtLeast("2.13.0+cpu", "2.2") and not deps.versionAtLeast("1.9.1", "1.10")


def test_install_only_what_is_missing_with_floors_and_slicers_packages_pinned(tmp_path):
    versionOf = _versions(**SLICER_LIKE)
    calls, torchCalls = [], []
    installed = deps.installMissing(deps.checkDependencies(versionOf=versionOf), calls.append,
                                    torchInstaller=torchCalls.append, versionOf=versionOf,
                                    workDir=tmp_path)
    assert torchCalls == ["torch>=2.2"]  # torch through PyTorchUtils, never through pip here
    assert len(calls) == 1
    args = calls[0]
    assert args[:2] == ["monai>=1.3", "scikit-learn>=1.3"] and args[2] == "-c"
    constraints = Path(args[3]).read_text().split()
    assert constraints == ["SimpleITK==2.4.0", "numpy==1.26.4", "requests==2.31.0",
                           "pydicom==2.4.4"]
    assert installed == ["torch>=2.2", "monai>=1.3", "scikit-learn>=1.3"]


def test_installed_torch_is_pinned_too_and_nothing_happens_when_all_is_there(tmp_path):
    versionOf = _versions(**{**SLICER_LIKE, "torch": "2.5.1+cu121", "monai": "1.4.0",
                             "scikit_learn": "1.5.0"})
    assert deps.constraintsText(versionOf).startswith("torch==2.5.1+cu121\n")
    calls = []
    assert deps.installMissing(deps.checkDependencies(versionOf=versionOf), calls.append,
                               versionOf=versionOf, workDir=tmp_path) == []
    assert calls == []


def test_slicers_own_packages_are_never_replaced():
    versionOf = _versions(**{**SLICER_LIKE, "SimpleITK": "2.1.0"})
    calls = []
    with pytest.raises(deps.DependencyError, match="SimpleITK: 2.1.0 is too old.*newer Slicer"):
        deps.installMissing(deps.checkDependencies(versionOf=versionOf), calls.append,
                            torchInstaller=calls.append, versionOf=versionOf)
    assert calls == []


def test_torch_without_the_pytorch_extension_asks_for_it():
    versionOf = _versions(**SLICER_LIKE)
    calls = []
    with pytest.raises(deps.DependencyError, match="PyTorch extension"):
        deps.installMissing(deps.checkDependencies(versionOf=versionOf), calls.append,
                            torchInstaller=None, versionOf=versionOf)
    assert calls == []
    assert deps.pyTorchUtilsInstaller() is None  # no PyTorch extension outside Slicer
