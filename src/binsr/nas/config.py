"""Search configuration: a YAML file checked against a typed schema (``configs/search/*.yaml``).

Sections: ``name``, ``scale``, ``seed``, ``data``, ``supernet``, ``search``, ``reg``, ``log``.
Unknown keys are refused with the list of valid ones; ``--set section.key=value`` overrides are
applied before the check. Defaults follow SRBNAS (Su et al., Biomimetics 2024, Sec. 5-6) and
PC-DARTS (Xu et al., ICLR 2020) where the paper is silent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from binsr.errors import UsageError
from binsr.schema import apply_overrides, check_name, check_seed, from_dict, read_yaml
from binsr.train.precision import PRECISIONS

__all__ = ["SearchConfig", "load_search_config", "search_config_from_dict", "apply_overrides"]


@dataclass
class DataSection:
    """HR training images, split by image into a weight split and a held-out arch split."""

    data_root: str | None = None  # None: --data-root, then $BINSR_DATA, then ../shared/data
    train_sets: list[str] = field(default_factory=lambda: ["T91"])
    arch_fraction: float = 0.5  # share of the images held out for the alpha/beta step
    patch_size: int = 64  # HR patch side; the LR patch is patch_size // scale
    batch_size: int = 16
    max_images: int = 0  # use only the first N images (sorted); 0 = all


@dataclass
class SupernetSection:
    """Macro-architecture and search space (paper Table 1, Figure 2)."""

    num_cells: int = 3
    num_feat: int = 64
    steps: int = 4  # intermediate nodes per cell
    ops: list[str] = field(default_factory=lambda: [
        "dil_conv_3x3", "conv_3x3", "dil_conv_5x5", "conv_5x5", "conv_7x7", "skip_connect"])
    groups: int = 2  # group count of every binary group conv (supernet: on num_feat // partial_k channels)
    partial_k: int = 8  # PC-DARTS: 1/k of the channels go through the mixed op
    beta_norm: str = "softmax"  # edge weights s_ij: softmax over a node's inputs (PC-DARTS) or sigmoid


@dataclass
class SearchSection:
    """Bi-level optimisation (DARTS Sec. 2.3); lrs from SRBNAS Sec. 6, the rest from PC-DARTS."""

    epochs: int = 30
    steps_per_epoch: int = 50
    model_lr: float = 1e-3  # Adam on the supernet weights
    model_lr_min: float = 1e-4  # cosine schedule floor
    arch_lr: float = 6e-4  # Adam on alphas and betas
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    order: str = "first"  # "first" or "second" (DARTS unrolled step, finite-difference Hessian)
    warmup_epochs: int = 0  # epochs of weight-only training before the arch steps start
    precision: str = "auto"  # auto | bf16 | fp32: the binary convs' operand dtype (binsr.train.precision)
    grad_clip: float = 5.0  # max L2 norm of the weight gradients; 0 = off
    stop_at_skips: int = 0  # DARTS+ early stop: end when the derived cell has this many skip_connect; 0 = off
    shrink_epochs: list[int] = field(default_factory=list)  # P-DARTS: epochs that start by shrinking the ops
    shrink_keep: list[int] = field(default_factory=list)  # ops kept per edge at each of shrink_epochs


@dataclass
class RegSection:
    """Regularisers of eqs. 4-8 (lambda, gamma from EBNAS: 1.5, 0.8; (mu, rho) from Table 4)."""

    lambda_alpha: float = 1.5
    mu: float = 0.8  # L1 weight in R(alpha)
    rho: float = 0.2  # L2 weight in R(alpha)
    l1_on: str = "softmax"  # "softmax": eq. 4 as written (zero gradient); "raw": mu * sum|alpha|
    lambda_beta: float = 1.5  # eq. 8's beta weight, written mu there: see binsr.nas.architect
    gamma: float = 0.8
    ramp_epochs: int = 0  # E of eq. 6: full weight from epoch E on; 0 = search.epochs


@dataclass
class LogSection:
    tensorboard: bool = True
    progress: bool = True  # tqdm bar
    checkpoint_every: int = 1  # epochs
    plot_every: int = 5  # epochs between redraws of cell.png and the history PNGs; 0 = at the end only


@dataclass
class SearchConfig:
    name: str
    scale: int = 4
    seed: int = 0
    data: DataSection = field(default_factory=DataSection)
    supernet: SupernetSection = field(default_factory=SupernetSection)
    search: SearchSection = field(default_factory=SearchSection)
    reg: RegSection = field(default_factory=RegSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cfg: SearchConfig) -> None:
    from binsr.nas.ops import OPS

    d, n, s, r = cfg.data, cfg.supernet, cfg.search, cfg.reg
    check_name(cfg.name)
    positive = {"scale": cfg.scale, "data.patch_size": d.patch_size, "data.batch_size": d.batch_size,
                "supernet.num_cells": n.num_cells, "supernet.num_feat": n.num_feat, "supernet.steps": n.steps,
                "supernet.groups": n.groups, "supernet.partial_k": n.partial_k, "search.epochs": s.epochs,
                "search.steps_per_epoch": s.steps_per_epoch, "search.model_lr": s.model_lr,
                "search.arch_lr": s.arch_lr, "log.checkpoint_every": cfg.log.checkpoint_every}
    if s.precision not in PRECISIONS:
        raise UsageError(f"unknown search.precision {s.precision!r}; valid: {', '.join(PRECISIONS)}")
    for key, value in positive.items():
        if value <= 0:
            raise UsageError(f"config key {key!r} must be > 0, got {value}")
    nonneg = {"data.max_images": d.max_images, "search.warmup_epochs": s.warmup_epochs,
              "search.grad_clip": s.grad_clip, "search.arch_weight_decay": s.arch_weight_decay,
              "search.model_lr_min": s.model_lr_min, "reg.lambda_alpha": r.lambda_alpha, "reg.mu": r.mu,
              "reg.rho": r.rho, "reg.lambda_beta": r.lambda_beta, "reg.gamma": r.gamma,
              "reg.ramp_epochs": r.ramp_epochs, "log.plot_every": cfg.log.plot_every}
    for key, value in nonneg.items():
        if value < 0:
            raise UsageError(f"config key {key!r} must be >= 0, got {value}")
    check_seed(cfg.seed)
    for key, value, top in (("supernet.num_cells", n.num_cells, 64), ("supernet.steps", n.steps, 16),
                            ("supernet.num_feat", n.num_feat, 1024)):
        if value > top:  # the supernet's modules grow as cells x steps^2: built, a huge one takes hours
            raise UsageError(f"config key {key!r} is at most {top} (DARTS: 8 cells, 4 steps), got {value}")
    if d.patch_size % cfg.scale:
        raise UsageError(f"data.patch_size {d.patch_size} is not a multiple of scale {cfg.scale}")
    if not 0.0 < d.arch_fraction < 1.0:
        raise UsageError(f"data.arch_fraction must be in (0, 1), got {d.arch_fraction}")
    if not d.train_sets:
        raise UsageError("config key 'data.train_sets' is empty")
    if n.num_feat % n.partial_k or (n.num_feat // n.partial_k) % n.groups:
        raise UsageError(f"supernet.num_feat ({n.num_feat}) / partial_k ({n.partial_k}) must be a multiple of "
                         f"supernet.groups ({n.groups})")
    unknown = [o for o in n.ops if o not in OPS]
    if unknown or len(set(n.ops)) != len(n.ops) or not [o for o in n.ops if o != "none"]:
        raise UsageError(f"supernet.ops must be distinct names from {', '.join(OPS)} with one besides none, "
                         f"got {n.ops}")
    choices = {"supernet.beta_norm": (n.beta_norm, ("softmax", "sigmoid")),
               "search.order": (s.order, ("first", "second")), "reg.l1_on": (r.l1_on, ("softmax", "raw"))}
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise UsageError(f"config key {key!r} must be one of {', '.join(valid)}, got {value!r}")
    if s.warmup_epochs >= s.epochs:
        raise UsageError(f"search.warmup_epochs ({s.warmup_epochs}) must be smaller than search.epochs ({s.epochs})")
    if (len(s.shrink_epochs) != len(s.shrink_keep) or s.shrink_epochs != sorted(set(s.shrink_epochs))
            or not all(0 < e < s.epochs for e in s.shrink_epochs)
            or not all(1 <= k < n_ops for k, n_ops in zip(s.shrink_keep, [len(n.ops), *s.shrink_keep]))):
        raise UsageError(f"search.shrink_epochs must rise within (0, {s.epochs}) and search.shrink_keep give, per "
                         f"entry, fewer ops than before (at least 1 of {len(n.ops)}); got {s.shrink_epochs} and "
                         f"{s.shrink_keep}")
    if len(s.arch_betas) != 2 or not all(0.0 <= b < 1.0 for b in s.arch_betas):
        raise UsageError(f"search.arch_betas must be two numbers in [0, 1), got {s.arch_betas}")


def search_config_from_dict(raw: dict[str, Any]) -> SearchConfig:
    """A checked :class:`SearchConfig` from a nested dict (a parsed YAML file)."""
    cfg = from_dict(SearchConfig, raw, "")
    _check(cfg)
    return cfg


def load_search_config(path: str | Path, overrides: list[str] | None = None) -> SearchConfig:
    """Read a YAML search config, apply ``--set`` overrides and check it."""
    raw = read_yaml(path)
    return search_config_from_dict(apply_overrides(raw, overrides or []))
