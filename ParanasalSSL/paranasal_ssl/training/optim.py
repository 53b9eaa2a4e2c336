"""Optimisers (Adam, AdamW, SGD, LARS) and a per-step warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from paranasal_ssl.experiment import TrainConfig


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017), as the paper used for its pretext task.

    SGD with momentum whose step for each weight tensor is scaled by
    ``trust * ||w|| / (||grad|| + weight_decay * ||w||)``. Biases and normalisation parameters
    (1-D tensors) are neither scaled nor decayed, as is usual.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust=trust))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    if group["weight_decay"]:
                        d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.norm(p), torch.norm(d)
                    ratio = torch.where((w_norm > 0) & (d_norm > 0),
                                        group["trust"] * w_norm / d_norm, torch.ones_like(w_norm))
                    d = d.mul(ratio)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return LARS(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch - warm)
        progress = min(1.0, (step - warm) / total)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    """Every group's rate: ``base_lr * factor``, times the group's ``lr_scale`` if it has one."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_scale", 1.0)
