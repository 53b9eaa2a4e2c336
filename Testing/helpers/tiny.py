"""A tiny but complete configuration of the method for tests: 16^3 crops at 3 mm.

The CAE gets many cheap steps (150 epochs of a few sinuses at batch 4): fewer and it still
reconstructs grey where a normal sinus holds air, and the air-gated residual is empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

TINY_OVERRIDES: List[str] = [
    "data.crop.shape=16", "data.crop.spacing_mm=3.0", "data.crop.jitter_mm=3.0",
    "data.crop.train_crops_per_side=2", "data.crop.test_crops_per_side=2",
    "cae.channels=[8,16,32]", "cae.kernel_size=3", "cae.latent_dim=64",
    "encoder.widths=[8,8,16,16]", "encoder.decoder_widths=[16,8,8]",
    "cae_train.epochs=150", "cae_train.batch_size=4", "cae_train.lr=0.01",
    "cae_train.patience=0", "cae.ensemble=1",  # one CAE: test_cae_ensemble.py covers more
    # a plain CAE: at 16^3 and 150 tiny epochs it learns to copy, and the heatmap tests need
    # its residual; healing CAEs (the profiles' default) train in test_cae_ensemble.py
    "cae.foreign_patch_prob=0",
    "pretext_train.epochs=4", "pretext_train.batch_size=8", "pretext_train.warmup_epochs=0",
    "finetune_train.epochs=6", "finetune_train.batch_size=8", "finetune.head_hidden=[8]",
    "residual.median_kernel=3",
]


def synth(out: Path, cases: int, *extra: str) -> Path:
    """Make a phantom cohort through the real CLI (in-process) and return its manifest."""
    from paranasal_ssl.cli.main import main

    code = main(["synth", str(out), "--cases", str(cases), "--spacing", "2", "--seed", "3",
                 "--workers", "1", "--progress", "none", *extra])
    assert code == 0
    return out / "manifest.csv"
