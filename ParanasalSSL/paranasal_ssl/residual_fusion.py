"""Stage 4's score with the CAE's explicit residual evidence beside the classifier's.

The fine-tuned classifier reads a distillation of the stage-2 residual, and that residual's
10 mm median erases small findings (cysts, polyps). The *focal* residual keeps them: the same
CAE(s), the residual kept only below a bone level on CT (150 HU), a 2 mm Gaussian instead of
the median and the maximum in the sinus box (``FOCAL_RESIDUAL``; see ``ResidualConfig``). With
``finetune.residual_fusion`` a sinus's score adds the two pieces of evidence in units of their
spread over the run's training sinuses (labels unused, so no label is spent on the weights):

    fused logit = logit(p) + sd(logit p_train) * (f - mean(f_train)) / sd(f_train)

with ``p`` the classifier's crop-averaged probability and ``f`` the crop-averaged focal score.
The result stays on the classifier's logit scale (its mean at the training mean of ``f``), and
the decision threshold is chosen on the validation split with the fused probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
from scipy.special import expit, logit

from paranasal_ssl.config import from_dict, to_dict
from paranasal_ssl.experiment import ResidualConfig, override
from paranasal_ssl.manifest import SinusRecord
from paranasal_ssl.stages.run import Run

FOCAL_RESIDUAL = ["residual.smoothing=gaussian", "residual.bone_gate_hu=150",
                  "residual.score=max"]
FOCAL_NAME = "focal residual (bone gate, 2 mm Gaussian, max)"


def focal_run(run: Run) -> Run:
    """``run`` with the focal residual settings (the same CAEs, crops and folders)."""
    return replace(run, config=override(run.config, FOCAL_RESIDUAL))


def focal_folder(run: Run, residuals_folder: Path) -> Path:
    """Where the focal maps of the sinuses behind ``residuals_folder`` (the run's own residuals
    or an external cohort's) are cached: ``RUN/external/<that folder>-focal-<focal key>``."""
    from paranasal_ssl.stages.residual_stage import residual_folder

    key = residual_folder(focal_run(run)).name
    return run.dir / "external" / f"{Path(residuals_folder).name}-focal-{key}"


def focal_crop_scores(run: Run, residuals, records: Sequence[SinusRecord]
                      ) -> Dict[str, np.ndarray]:
    """``(t,)`` focal residual scores of each sinus's test-time crops, per key of ``records``
    (which must be sinuses of ``residuals``, a ``ResidualSet``, whose crops are used). Only
    these are computed; no process synchronisation (rank 0 may call it alone)."""
    from paranasal_ssl.stages.residual_stage import crop_score_table

    focal = focal_run(run)
    if focal.config.residual == run.config.residual:  # the run's own residual is the focal one
        folder = residuals.folder
    else:
        folder = focal_folder(run, residuals.folder)
    crops = residuals.crops.subset([r.key for r in records])
    return crop_score_table(focal, records, folder, crops=crops)


@dataclass
class ResidualFusion:
    """The fused score's settings, saved in ``model.json`` as ``residual_fusion``."""

    residual: dict  # the focal ResidualConfig (every field) whose score is fused
    residual_mean: float  # mean and sd of the crop-averaged focal score, training sinuses
    residual_sd: float
    logit_sd: float  # sd of the classifier's logit over the same sinuses

    @classmethod
    def fit(cls, residual: ResidualConfig, train_probs: Sequence[float],
            train_scores: Sequence[float]) -> ResidualFusion:
        """From the classifier's crop-averaged probabilities and the focal scores of the
        training sinuses (``(N,)`` each; labels unused)."""
        scores = np.asarray(train_scores, np.float64)
        logits = _logit(train_probs)
        return cls(residual=to_dict(residual), residual_mean=float(scores.mean()),
                   residual_sd=float(scores.std()) or 1.0,
                   logit_sd=float(logits.std()) or 1.0)

    def residual_config(self) -> ResidualConfig:
        return from_dict(ResidualConfig, self.residual)

    def probability(self, probs, scores) -> np.ndarray:
        """``(N,)`` fused probabilities from the classifier's probabilities and the focal
        scores ``(N,)`` of the same sinuses (or crops)."""
        z = (np.asarray(scores, np.float64) - self.residual_mean) / self.residual_sd
        return expit(_logit(probs) + self.logit_sd * z)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ResidualFusion:
        return from_dict(cls, data)


def _logit(probs) -> np.ndarray:
    # the classifier's float32 sigmoid saturates at 0 and 1; keep the logit finite
    return logit(np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7))
