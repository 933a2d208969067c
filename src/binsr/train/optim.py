"""Optimizer and learning-rate schedule: Adam, linear warm-up, then cosine, multi-step or constant."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from binsr.train.config import TrainSection

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainSection) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (the only optimizer the config accepts)."""
    o = cfg.optimizer
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def lr_factor(step: int, cfg: TrainSection) -> float:
    """Multiplier of ``cfg.lr`` for the update with 0-based index ``step``.

    Warm-up ramps linearly over the first ``warmup`` updates (1/warmup, 2/warmup, ..., 1); the
    cosine decays from 1 at the end of warm-up to ``eta_min / lr`` at the last update; multi-step
    milestones are absolute update counts.
    """
    s = cfg.scheduler
    if s.type == "cosine":
        t = min(max(step - cfg.warmup, 0) / max(cfg.steps - 1 - cfg.warmup, 1), 1.0)
        floor = s.eta_min / cfg.lr
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif s.type == "multistep":
        factor = s.gamma ** bisect_right(s.milestones, step)
    else:
        factor = 1.0
    if step < cfg.warmup:
        factor *= (step + 1) / cfg.warmup
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainSection) -> LambdaLR:
    """A ``LambdaLR`` stepping :func:`lr_factor` once per update."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
