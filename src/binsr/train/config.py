"""Training configuration: a BasicSR-style YAML file checked against a typed schema.

Sections: ``name``, ``scale``, ``seed``, ``model``, ``data``, ``train``, ``val``, ``log`` (see the
dataclasses below and ``configs/train/*.yaml``). Every key is checked: an unknown key is refused
with a message naming it and listing the valid keys of its section, so a misspelling never
trains silently with a default. ``--set section.key=value`` overrides are applied before the check.
``base: other.yaml`` lays a file on another (:func:`binsr.schema.read_yaml`): a second training
cycle (``configs/zoo/*_c2.yaml``) states only what it changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from binsr.errors import UsageError
from binsr.schema import apply_overrides, check_name, check_seed, from_dict, read_yaml
from binsr.train.precision import PRECISIONS

__all__ = ["TrainConfig", "load_config", "config_from_dict", "apply_overrides", "config_diff"]


@dataclass
class ModelConfig:
    """``binsr.models.create(name, scale, recipe, **kwargs)``; ``init_from``: a binsr weights file
    whose tensors of the same name and shape initialise the model (e.g. the body of another
    scale's run, as EDSR initialises x3/x4 from x2); the others keep their fresh initialisation."""

    name: str = "srresnet"
    recipe: str = "e2fif"
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass
class DataConfig:
    """Training patches; ``batch_size`` is per process (global batch = batch_size x world size)."""

    data_root: str | None = None  # None: --data-root, then $BINSR_DATA, then ../shared/data
    train_sets: list[str] = field(default_factory=lambda: ["T91", "BSD200"])  # folders in <data_root>/train
    patch_size: int = 96  # HR patch side; the LR patch is patch_size // scale
    batch_size: int = 16
    augment: bool = True  # random flips and 90-degree rotations
    sampling: str = "uniform"  # uniform (per image) | area | texture (per tile): binsr.data.TrainPatches
    num_workers: int = 2


@dataclass
class OptimizerConfig:
    type: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    """``cosine`` (to ``eta_min`` at the last step), ``multistep`` (x ``gamma`` at each milestone) or ``constant``."""

    type: str = "cosine"
    eta_min: float = 1e-7
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5


@dataclass
class DistillConfig:
    """Output distillation from a trained teacher (issue 23's lever): the loss gains
    ``weight * L1(student(lr), teacher(lr))`` (Hinton et al. 2015's soft targets, read for SR as an
    L1 pull toward the teacher's image). ``teacher``: a binsr weights file or ``zoo:<name>`` of the
    same scale; ``None`` = off."""

    teacher: str | None = None
    weight: float = 1.0


@dataclass
class TrainSection:
    steps: int = 100_000
    lr: float = 2e-4
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    warmup: int = 0  # linear warm-up steps
    grad_clip: float = 0.0  # max global L2 norm of the gradients; 0 = off
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 = off
    checkpoint_every: int = 1000
    max_nonfinite: int = 10  # stop after this many consecutive NaN/inf losses
    deterministic: bool = True  # deterministic kernels (needed for exact resume on GPU)
    precision: str = "auto"  # auto | bf16 | fp32: the binary convs' operand dtype (binsr.train.precision)
    compile: bool = False  # torch.compile the training step's forward (binsr.train.precision; ~1 min to compile)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class ValConfig:
    every: int = 1000  # 0 = only after the last step
    dataset: str = "Set5"


@dataclass
class LogConfig:
    every: int = 100  # CSV/TensorBoard row every this many steps
    root: str = "runs"  # the run folder is <root>/<name> unless --out is given
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on rank 0


@dataclass
class TrainConfig:
    name: str
    scale: int = 4
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    val: ValConfig = field(default_factory=ValConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: keys that may change between a checkpoint and its resumption without changing the losses
#: (``model.init_from`` is read only when a run starts; a resumed run's weights come from ``last.pt``)
RESUME_NEUTRAL = ("data.data_root", "data.num_workers", "val.", "log.", "train.checkpoint_every", "model.init_from")

_SCHEDULER_KEYS = {"cosine": {"eta_min"}, "multistep": {"milestones", "gamma"}, "constant": set()}
_OPTIMIZERS = ("adam",)
#: data loader processes at most: one per core of a large machine (10^5 would fork as many)
MAX_WORKERS = 64


def _check(cfg: TrainConfig) -> None:
    """Cross-field checks, each a one-line UsageError."""
    t, d = cfg.train, cfg.data
    check_name(cfg.name)
    positive = {"scale": cfg.scale, "train.steps": t.steps, "train.lr": t.lr, "data.batch_size": d.batch_size,
                "data.patch_size": d.patch_size, "train.checkpoint_every": t.checkpoint_every,
                "train.max_nonfinite": t.max_nonfinite, "log.every": cfg.log.every}
    for key, value in positive.items():
        if value <= 0:
            raise UsageError(f"config key {key!r} must be > 0, got {value}")
    nonneg = {"train.warmup": t.warmup, "train.grad_clip": t.grad_clip, "val.every": cfg.val.every,
              "train.distill.weight": t.distill.weight,
              "data.num_workers": d.num_workers, "train.optimizer.weight_decay": t.optimizer.weight_decay,
              "train.scheduler.eta_min": t.scheduler.eta_min}
    for key, value in nonneg.items():
        if value < 0:
            raise UsageError(f"config key {key!r} must be >= 0, got {value}")
    check_seed(cfg.seed)
    if d.num_workers > MAX_WORKERS:
        raise UsageError(f"data.num_workers is at most {MAX_WORKERS} (each worker is a process), got {d.num_workers}")
    if d.patch_size % cfg.scale:
        raise UsageError(f"data.patch_size {d.patch_size} is not a multiple of scale {cfg.scale}")
    from binsr.data import TrainPatches

    if d.sampling not in TrainPatches.SAMPLING:
        raise UsageError(f"unknown data.sampling {d.sampling!r}; valid: {', '.join(TrainPatches.SAMPLING)}")
    if not d.train_sets:
        raise UsageError("config key 'data.train_sets' is empty")
    if not 0.0 <= t.ema < 1.0:
        raise UsageError(f"config key 'train.ema' is a decay in [0, 1), got {t.ema}")
    if t.warmup >= t.steps:
        raise UsageError(f"train.warmup ({t.warmup}) must be smaller than train.steps ({t.steps})")
    if t.precision not in PRECISIONS:
        raise UsageError(f"unknown train.precision {t.precision!r}; valid: {', '.join(PRECISIONS)}")
    if t.optimizer.type not in _OPTIMIZERS:
        raise UsageError(f"unknown train.optimizer.type {t.optimizer.type!r}; valid: {', '.join(_OPTIMIZERS)}")
    if len(t.optimizer.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.optimizer.betas):
        raise UsageError(f"train.optimizer.betas must be two numbers in [0, 1), got {t.optimizer.betas}")
    s = t.scheduler
    if s.type not in _SCHEDULER_KEYS:
        raise UsageError(f"unknown train.scheduler.type {s.type!r}; valid: {', '.join(_SCHEDULER_KEYS)}")
    if s.type == "multistep" and (s.milestones != sorted(s.milestones) or any(m <= 0 for m in s.milestones)):
        raise UsageError(f"train.scheduler.milestones must be increasing positive steps, got {s.milestones}")


def _check_names(cfg: TrainConfig) -> None:
    """Unknown model or recipe: name it and list the valid ones; kwargs the model does not take or
    its constructor refuses (:func:`binsr.models._checked.check_kwargs`)."""
    from binsr.models import names
    from binsr.models._checked import check_kwargs
    from binsr.nn.recipes import recipe_names

    if cfg.model.name not in names():
        raise UsageError(f"unknown model {cfg.model.name!r}; valid models: {', '.join(names())}")
    if cfg.model.recipe not in recipe_names():
        raise UsageError(f"unknown recipe {cfg.model.recipe!r}; valid recipes: {', '.join(recipe_names())}")
    check_kwargs(cfg.model.name, cfg.scale, cfg.model.recipe, cfg.model.kwargs)


def _unused_scheduler_keys(raw: dict[str, Any]) -> None:
    """A scheduler key set (to a non-default value) for another scheduler type is a mistake."""
    sched = raw.get("train", {}).get("scheduler", {}) if isinstance(raw.get("train"), dict) else {}
    if not isinstance(sched, dict):
        return
    kind, defaults = sched.get("type", SchedulerConfig.type), dataclasses.asdict(SchedulerConfig())
    for key, value in sched.items():
        owners = [k for k, keys in _SCHEDULER_KEYS.items() if key in keys]
        if owners and kind not in owners and kind in _SCHEDULER_KEYS and value != defaults[key]:
            raise UsageError(f"train.scheduler.{key} is only used by type {owners[0]}, not {kind}")


def config_from_dict(raw: dict[str, Any], check_names: bool = True) -> TrainConfig:
    """A checked :class:`TrainConfig` from a nested dict (a parsed YAML file)."""
    _unused_scheduler_keys(raw)
    cfg = from_dict(TrainConfig, raw, "")
    _check(cfg)
    if check_names:
        _check_names(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None, check_names: bool = True) -> TrainConfig:
    """Read a YAML config, apply ``--set`` overrides and check it."""
    raw = read_yaml(path)
    return config_from_dict(apply_overrides(raw, overrides or []), check_names=check_names)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "kwargs":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the keys added since it was written set to their defaults, so that a run
    started by an older binsr resumes; a config the schema no longer reads is returned as it is (the
    diff then names the key)."""
    try:
        return config_from_dict(raw, check_names=False).to_dict()
    except UsageError:
        return raw


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: old -> new`` for each leaf that differs (keys starting with an ``ignore`` prefix skipped)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(ignore)]
