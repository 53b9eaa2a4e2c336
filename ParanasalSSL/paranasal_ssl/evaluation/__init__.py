"""Evaluation: classification metrics, bootstrap CIs, heatmap localisation, Markdown tables.

Pure functions: numpy arrays in, plain dicts and small dataclasses out. See each module's
docstring for its conventions (threshold rule ``score >= t``, None + a note for undefined
metrics, cluster-stratified bootstrap).
"""

from paranasal_ssl.evaluation.bootstrap import (
    Interval,
    PairedDifference,
    RunSummary,
    aggregate_runs,
    bootstrap_ci,
    bootstrap_counts,
    paired_bootstrap_diff,
)
from paranasal_ssl.evaluation.classification import (
    check_binary_inputs,
    choose_decision_threshold,
    choose_threshold_max_f1,
    classification_metrics,
    few_labels_note,
    per_group_metrics,
    sensitivity_at_specificity,
    threshold_metrics,
)
from paranasal_ssl.evaluation.localisation import (
    aggregate_localisation,
    best_dice,
    dice_at_threshold,
    false_positive_volume_ml,
    localisation_metrics,
    pointing_game,
    voxel_auprc,
)
from paranasal_ssl.evaluation.report import format_table, format_value

__all__ = [
    "Interval",
    "PairedDifference",
    "RunSummary",
    "aggregate_localisation",
    "aggregate_runs",
    "best_dice",
    "bootstrap_ci",
    "bootstrap_counts",
    "check_binary_inputs",
    "choose_decision_threshold",
    "choose_threshold_max_f1",
    "classification_metrics",
    "dice_at_threshold",
    "false_positive_volume_ml",
    "few_labels_note",
    "format_table",
    "format_value",
    "localisation_metrics",
    "paired_bootstrap_diff",
    "per_group_metrics",
    "pointing_game",
    "sensitivity_at_specificity",
    "threshold_metrics",
    "voxel_auprc",
]
