"""Fixtures for the core suites: small phantom cohorts and trained tiny runs, made once."""

from __future__ import annotations

import pytest

from helpers.tiny import TINY_OVERRIDES, synth
from paranasal_ssl.stages.run import open_run


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """14 CT phantom cases at 2 mm (both classes in every split)."""
    return synth(tmp_path_factory.mktemp("cohort"), 14)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_cohort):
    """A run folder with all four stages trained in the tiny configuration."""
    from paranasal_ssl.stages.cae_stage import train_cae
    from paranasal_ssl.stages.finetune_stage import finetune
    from paranasal_ssl.stages.pretext_stage import pretrain

    run = open_run(tmp_path_factory.mktemp("run") / "run", manifest=tiny_cohort,
                   profile="cpu-small", overrides=TINY_OVERRIDES, device="cpu", workers=1)
    results = {"cae": train_cae(run), "pretext": pretrain(run)}
    results["finetune"], results["finetune_dir"] = finetune(run, 1.0, 0, "pretext")
    return run, results
