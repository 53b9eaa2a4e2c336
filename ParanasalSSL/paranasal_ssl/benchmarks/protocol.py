"""The benchmark protocol: which cohorts, methods, label fractions and draws, at what budget.

Every method shares the encoder, crops, augmentation, patient-level splits, label subsets
(nested fractions per draw) and fine-tuning recipe; every self-supervised method (the residual
pretext included) gets the same pretraining budget (``pretext_train``). Nothing is tuned on the
test split: settings come from the profile, the cohort from its realism configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

# name -> (synth arguments, phantom seed). Seeds differ so cohorts are independent samples; a
# cohort's independent test cohort uses its seed + EXTERNAL_SEED_OFFSET.
COHORTS: Dict[str, Tuple[List[str], int]] = {
    "ct": (["--modality", "ct", "--anomaly-fraction", "0.5"], 11),
    "mri": (["--modality", "mri", "--anomaly-fraction", "0.5"], 12),
    "ct-screening": (["--modality", "ct", "--anomaly-fraction", "0.25"], 13),
}
EXTERNAL_SEED_OFFSET = 1000
# Fine-tuned methods: encoder initialisation of the same classifier.
PRETRAINED_METHODS = ("residual-pretext", "simclr", "byol", "simsiam", "mim")
FINETUNED_METHODS = PRETRAINED_METHODS + ("random-init",)
METHOD_TITLES = {
    "residual-pretext": "residual pretext (this method)",
    "simclr": "SimCLR", "byol": "BYOL", "simsiam": "SimSiam",
    "mim": "masked image modelling (SparK-like)", "random-init": "random initialisation",
}


@dataclass
class BenchmarkPlan:
    """What one ``paranasal-ssl benchmark`` invocation runs."""

    profile: str = "cpu-small"
    cohorts: List[str] = field(default_factory=lambda: ["ct", "mri", "ct-screening"])
    fractions: List[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.2, 1.0])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    methods: List[str] = field(default_factory=lambda: list(FINETUNED_METHODS))
    cases: int = 200
    # Phantom cases of an independent test cohort per phantom cohort (same generator, another
    # seed; 0 = none), scored at the headline fraction: 80 test sinuses give +/-0.07 AUPRC
    # intervals, ten times as many about +/-0.02, what a 0.04 margin needs to show.
    external_cases: int = 400
    overrides: List[str] = field(default_factory=list)
    n_boot: int = 1000
    quick: bool = False
    # cohort name -> an existing manifest (your own data) instead of a phantom cohort
    manifests: Dict[str, str] = field(default_factory=dict)
    # cohort name -> your own labelled manifest as that cohort's independent test cohort
    external_manifests: Dict[str, str] = field(default_factory=dict)

    @property
    def headline_fraction(self) -> float:
        return 0.1 if 0.1 in self.fractions else sorted(self.fractions)[len(self.fractions) // 2]


# Budgets that fit the CPU time targets (full cpu-small run ~3 h, --quick ~30 min on 2 cores).
CPU_OVERRIDES = ["cae_train.epochs=60", "pretext_train.epochs=20", "finetune_train.epochs=30",
                 "finetune_train.patience=8"]
QUICK_OVERRIDES = ["cae_train.epochs=40", "pretext_train.epochs=12", "finetune_train.epochs=25",
                   "finetune_train.patience=6"]


def make_plan(profile: str = "cpu-small", quick: bool = False, cohorts=None, fractions=None,
              seeds=None, methods=None, cases=None, overrides=(), manifests=None,
              external_cases=None, external_manifests=None) -> BenchmarkPlan:
    plan = BenchmarkPlan(profile=profile, quick=quick, manifests=dict(manifests or {}),
                         external_manifests=dict(external_manifests or {}))
    if plan.manifests and not cohorts:
        cohorts = list(plan.manifests)
    if quick:
        plan.cohorts, plan.fractions, plan.cases = ["ct"], [0.05, 0.1, 1.0], 160
        plan.external_cases = 0  # keeps --quick within its 30 minutes
    if profile == "cpu-small":
        plan.overrides = list(QUICK_OVERRIDES if quick else CPU_OVERRIDES)
    if profile == "paper":
        plan.cases = 600  # a GPU run: the paper had ~1,000 labelled subjects
        plan.external_cases = 1000
    for name, value in (("cohorts", cohorts), ("fractions", fractions), ("seeds", seeds),
                        ("methods", methods), ("cases", cases)):
        if value:
            setattr(plan, name, list(value) if isinstance(value, (list, tuple)) else value)
    if external_cases is not None:
        plan.external_cases = int(external_cases)
    plan.overrides += list(overrides)
    unknown = [c for c in list(plan.cohorts) + list(plan.external_manifests)
               if c not in COHORTS and c not in plan.manifests]
    bad = [m for m in plan.methods if m not in FINETUNED_METHODS]
    if unknown or bad:
        from paranasal_ssl.errors import ConfigError

        raise ConfigError(None, f"unknown cohort(s) {unknown} or method(s) {bad}",
                          field="--cohorts/--methods",
                          expected=f"cohorts {list(COHORTS)}, methods {list(FINETUNED_METHODS)}")
    return plan
