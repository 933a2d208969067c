"""The training loop: L1 loss (+ distillation), Adam, warm-up + schedule, clipping, EMA, validation, checkpoints, resume.

Run folder (``runs/<name>`` or ``--out``)::

    config.yaml            the checked config
    last.safetensors       latest weights (+ last_ema.safetensors with EMA)
    last.pt                optimizer, scheduler, EMA, step, timers (torch.save; weights_only load)
    best.safetensors       the evaluated weights (EMA if on) with the best validation PSNR
    log.csv, tb/           step, loss, lr, it/s, val PSNR/SSIM; TensorBoard events
    results.json           model, recipe, scale, steps, train seconds, val metrics, config

Exact resume: the batch of update ``s`` and the RNG the model sees during it are functions of
``(seed, s, rank)`` (see :mod:`binsr.train.sampling`); the optimizer, scheduler and EMA state are
restored bit for bit. A resumed run therefore repeats an uninterrupted run's losses exactly on the
same hardware and thread count. Multi-process runs: see :mod:`binsr.train.distributed`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
from torch.utils.data import Dataset
from tqdm import tqdm

from binsr.cpu import cpu_name
from binsr.errors import BinsrError, UsageError
from binsr.train import distributed
from binsr.files import atomic_write, make_folder
from binsr.memory import check_step_memory
from binsr.train.checkpoint import (init_weights, load_checkpoint, load_state, save_checkpoint, save_weights,
                                    signature_of)
from binsr.train.config import RESUME_NEUTRAL, TrainConfig, config_diff, with_defaults
from binsr.train.ema import ModelEMA
from binsr.train.optim import build_optimizer, build_scheduler
from binsr.train.precision import cast_summary, float32_binary, prepare_model, resolve_precision
from binsr.train.runlog import RunLog
from binsr.train.sampling import make_loader, mix_seed

__all__ = ["train", "Evaluator"]

log = logging.getLogger(__name__)

#: ``evaluate(model, dataset_name, scale) -> {"psnr": ..., "ssim": ...}``
Evaluator = Callable[[nn.Module, str, int], Mapping[str, float]]


def _build_model(cfg: TrainConfig) -> nn.Module:
    from binsr.models import create

    try:
        return create(cfg.model.name, scale=cfg.scale, recipe=cfg.model.recipe, **cfg.model.kwargs)
    except TypeError as exc:
        raise UsageError(f"model.kwargs do not fit {cfg.model.name!r}: {exc}") from None


def _build_teacher(cfg: TrainConfig) -> nn.Module | None:
    """``train.distill.teacher`` in eval mode: ``zoo:<name>`` or a binsr weights file of ``cfg.scale``."""
    from binsr.models import build_for_eval, from_weights

    source = cfg.train.distill.teacher
    if source is None:
        return None
    if source.startswith("zoo:"):
        return build_for_eval(source, cfg.scale)
    if not Path(source).is_file():
        raise UsageError(f"train.distill.teacher: no such weights file {source!r}")
    teacher = from_weights(source)
    if teacher.signature["scale"] != cfg.scale:
        raise UsageError(f"train.distill.teacher {source!r} is an x{teacher.signature['scale']} model, not x{cfg.scale}")
    return teacher


def _build_dataset(cfg: TrainConfig, data_root: str | None) -> Dataset:
    from binsr.data import TrainPatches
    from binsr.data.paths import data_root as find_data_root

    train_dir = find_data_root(data_root or cfg.data.data_root) / "train"
    return TrainPatches([train_dir / name for name in cfg.data.train_sets], scale=cfg.scale,
                        patch_size=cfg.data.patch_size, augment=cfg.data.augment, seed=cfg.seed,
                        sampling=cfg.data.sampling)


def _default_evaluator(cfg: TrainConfig, data_root: str | None) -> Evaluator:
    """``binsr.evaluation.evaluate`` on the validation set, opened now so that a missing set fails early."""
    from binsr.evaluation import evaluate, open_dataset

    val_set = open_dataset(cfg.val.dataset, cfg.scale, data_root=data_root)

    def run(model: nn.Module, dataset: str, scale: int) -> Mapping[str, float]:
        return evaluate(model, val_set, scale)

    return run


class _Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, env: distributed.DistEnv, resume: bool,
                 model: nn.Module | None, dataset: Dataset | None, evaluate: Evaluator | None,
                 data_root: str | None, teacher: nn.Module | None = None) -> None:
        from binsr.nn import set_progress

        self.cfg, self.run_dir, self.env, self.set_progress = cfg, run_dir, env, set_progress
        t = cfg.train
        has_run = (run_dir / "last.pt").exists()
        if has_run and not resume:
            raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or --out for a new folder")
        if resume and not has_run:
            raise UsageError(f"nothing to resume in {run_dir} (no last.pt)")
        state = self._read_state() if resume else None

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.module = (model if model is not None else _build_model(cfg)).to(env.device)
        if cfg.model.init_from and state is None:
            loaded, skipped = init_weights(self.module, cfg.model.init_from)
            if env.is_main:
                log.info("initialised %d tensors from %s; fresh: %s", len(loaded), cfg.model.init_from,
                         ", ".join(skipped) or "none")
        self.precision = resolve_precision(t.precision, env.device)
        prepare_model(self.module, self.precision)
        check_step_memory(self.module, cfg.scale, cfg.data.patch_size, cfg.data.batch_size, env.device)
        if env.is_main:  # before the data is read: a file in the way is one line, not a late traceback
            make_folder(run_dir, "run")
        self.evaluate = evaluate if evaluate is not None else _default_evaluator(cfg, data_root or cfg.data.data_root)
        if env.is_main:
            log.info("precision %s (train.precision %s; %s)%s, %d threads, %s", self.precision, t.precision,
                     cast_summary(self.module, self.precision),
                     ", compiled" if t.compile else "", torch.get_num_threads(),
                     cpu_name() if env.device.type == "cpu" else env.device)
        self.ema = ModelEMA(self.module, t.ema) if t.ema > 0 else None
        self.teacher = teacher if teacher is not None else _build_teacher(cfg)
        if self.teacher is not None:  # frozen, eval mode, the student's binary dtype
            self.teacher = prepare_model(self.teacher.to(env.device).eval().requires_grad_(False), self.precision)
            if t.compile:
                self.teacher = torch.compile(self.teacher)
        self.optimizer = build_optimizer([p for p in self.module.parameters() if p.requires_grad], t)
        self.scheduler = build_scheduler(self.optimizer, t)
        self.step, self.train_seconds, self.best = 0, 0.0, {"psnr": -math.inf}
        if state is not None:
            self._load(state)
        self._logged_step = self.step
        self.net: nn.Module = self.module
        if env.enabled:
            device_ids = [env.device] if env.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.module, device_ids=device_ids)
        if t.compile:  # the training forward only: validation and checkpoints use self.module
            self.net = torch.compile(self.net)
        dataset = dataset if dataset is not None else _build_dataset(cfg, data_root)
        self.loader = make_loader(dataset, cfg.data.batch_size, cfg.seed, self.step, env.rank, env.world_size,
                                  cfg.data.num_workers, pin_memory=env.device.type == "cuda")
        self.runlog: RunLog | None = None
        if env.is_main:
            if not resume:
                atomic_write(run_dir / "config.yaml",
                             lambda tmp: tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
            self.runlog = RunLog(run_dir, self.step, cfg.log.tensorboard)
        env.barrier()

    # -- checkpoints -------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        """``last.pt``, refused if the config differs in anything that changes the losses."""
        state = load_state(self.run_dir / "last.pt", map_location=self.env.device)
        diffs = config_diff(with_defaults(state["config"]), self.cfg.to_dict(), ignore=RESUME_NEUTRAL)
        if diffs:
            raise UsageError(f"the config differs from the run being resumed ({'; '.join(diffs)}); "
                             "resume with the run's config.yaml or start a new run")
        return state

    def _load(self, state: dict[str, Any]) -> None:
        load_checkpoint(self.run_dir, self.module, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.step, self.train_seconds, self.best = state["step"], state["train_seconds"], state["best"]
        if state["world_size"] != self.env.world_size and self.env.is_main:
            log.warning("resuming a %d-process run with %d processes: the batches differ from an uninterrupted run",
                        state["world_size"], self.env.world_size)

    def _save(self) -> None:
        save_checkpoint(self.run_dir, {
            "step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None, "train_seconds": self.train_seconds,
            "best": self.best, "config": self.cfg.to_dict(), "world_size": self.env.world_size,
        }, self.module, self.ema.module if self.ema is not None else None, self.cfg.train.ema)

    # -- validation --------------------------------------------------------------------------
    def _validate(self) -> dict[str, float]:
        target = self.ema.module if self.ema is not None else self.module
        target.eval()
        with torch.no_grad(), float32_binary(target, self.precision):
            metrics = self.evaluate(target, self.cfg.val.dataset, self.cfg.scale)
        self.module.train()
        result = {"psnr": float(metrics["psnr"]), "ssim": float(metrics["ssim"])}
        if result["psnr"] > self.best["psnr"]:
            self.best = {"step": self.step, **result}
            save_weights(self.run_dir / "best.safetensors", target,
                         extra={"step": self.step, "val_dataset": self.cfg.val.dataset, **result,
                                "ema": self.cfg.train.ema if self.ema is not None else 0})
        return result

    # -- one update ----------------------------------------------------------------------------
    def _update(self, batch: Any) -> float:
        """One optimizer update; returns the loss averaged over ranks (NaN/inf: update skipped)."""
        cfg, env = self.cfg, self.env
        progress = self.step / cfg.train.steps
        self.set_progress(self.module, progress)
        if self.ema is not None:
            self.set_progress(self.ema.module, progress)
        torch.manual_seed(mix_seed(cfg.seed, self.step, env.rank, 3))
        lr_img, hr_img = (x.to(env.device, non_blocking=True) for x in batch)
        self.optimizer.zero_grad(set_to_none=True)
        sr = self.net(lr_img)
        loss = F.l1_loss(sr, hr_img)
        if self.teacher is not None:  # train.distill: + weight * L1 to the teacher's image
            with torch.no_grad():
                target = self.teacher(lr_img)
            loss = loss + cfg.train.distill.weight * F.l1_loss(sr, target)
        loss.backward()  # on every rank even if NaN, so that DDP's gradient all-reduce stays in step
        mean = loss.detach().clone()
        if env.enabled:
            dist.all_reduce(mean)
            mean /= env.world_size
        norm = get_total_norm([p.grad for p in self.module.parameters() if p.grad is not None])
        value, norm_value = torch.stack([mean, norm.to(mean)]).tolist()  # gradients are equal on all ranks
        finite = math.isfinite(value) and math.isfinite(norm_value)
        if finite:
            if cfg.train.grad_clip > 0:
                clip_grads_with_norm_(self.module.parameters(), cfg.train.grad_clip, norm)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.module)
        self.scheduler.step()
        self.step += 1
        return value if finite else math.nan

    def _time_is_up(self, start: float, stop_after: float | None) -> bool:
        """Has ``stop_after`` passed since ``start``? Decided by rank 0 for all ranks."""
        if stop_after is None:
            return False
        up = torch.tensor([float(time.perf_counter() - start >= stop_after)], device=self.env.device)
        if self.env.enabled:
            dist.broadcast(up, 0)
        return bool(up.item())

    def run(self, stop_after: float | None = None) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        start = time.perf_counter()
        bar = tqdm(total=t.steps, initial=self.step, unit="it", dynamic_ncols=True,
                   disable=not (self.env.is_main and cfg.log.progress))
        losses: list[float] = []
        interval_s, nonfinite, val = 0.0, 0, None
        session_start, session_s = self.step, 0.0
        self.module.train()
        tick = time.perf_counter()
        for _, batch in zip(range(self.step, t.steps), self.loader):
            lr = self.optimizer.param_groups[0]["lr"]
            loss = self._update(batch)
            elapsed = time.perf_counter() - tick
            self.train_seconds += elapsed
            session_s += elapsed
            interval_s += elapsed
            if math.isnan(loss):
                nonfinite += 1
                if self.env.is_main:
                    log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)",
                                self.step, nonfinite)
                if nonfinite >= t.max_nonfinite:
                    raise BinsrError(f"training diverged: {nonfinite} consecutive non-finite losses up to step "
                                     f"{self.step} (lr {lr:.3g}); lower train.lr or set train.grad_clip")
            else:
                nonfinite = 0
                losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            last = self.step == t.steps
            row_train = None
            if self.step % cfg.log.every == 0 or last:
                n = len(losses)
                row_train = {"loss": sum(losses) / n if n else math.nan, "lr": lr,
                             "it_s": (self.step - self._logged_step) / interval_s if interval_s else 0.0}
                losses, interval_s = [], 0.0
                self._logged_step = self.step
            val = None
            if self.env.is_main:
                if (cfg.val.every and self.step % cfg.val.every == 0) or last:
                    val = self._validate()
                    bar.write(f"step {self.step}: {cfg.val.dataset} PSNR {val['psnr']:.3f} dB, SSIM {val['ssim']:.4f}")
                if row_train or val:
                    self.runlog.write(self.step, row_train, val)
                if self.step % t.checkpoint_every == 0 or last:
                    self._save()
            if not last and self._time_is_up(start, stop_after):
                if self.env.is_main:
                    if self.step % t.checkpoint_every:
                        self._save()
                    self.runlog.close()
                    log.info("stopped at step %d after %.0f s (--stop-after); --resume continues", self.step,
                             time.perf_counter() - start)
                bar.close()
                self.env.barrier()
                return {"name": cfg.name, "steps": self.step, "stopped": True, "run_dir": str(self.run_dir)}
            tick = time.perf_counter()
        bar.close()
        result: dict[str, Any] = {}
        if self.env.is_main:
            if val is None:  # nothing left to train (resumed a finished run)
                val = self._validate()
            sig = signature_of(self.module)
            result = {
                "name": cfg.name, "model": sig["model"], "recipe": sig["recipe"], "scale": sig["scale"],
                "kwargs": sig["kwargs"], "params": sum(p.numel() for p in self.module.parameters()),
                "steps": self.step, "world_size": self.env.world_size, "device": str(self.env.device),
                "train_seconds": round(self.train_seconds, 2),
                "it_s": round((self.step - session_start) / session_s, 4) if session_s else None,
                "precision": self.precision, "compile": cfg.train.compile, "threads": torch.get_num_threads(),
                "cpu": cpu_name(),
                "val": {"dataset": cfg.val.dataset, "step": self.step, **val,
                        "weights": "ema" if self.ema is not None else "model"},
                "best": {**self.best, "file": "best.safetensors"},
                "config": cfg.to_dict(),
            }
            atomic_write(self.run_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
            self.runlog.close()
        self.env.barrier()
        return result


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = False, device: str = "auto",
          data_root: str | None = None, model: nn.Module | None = None, dataset: Dataset | None = None,
          evaluate: Evaluator | None = None, stop_after: float | None = None,
          teacher: nn.Module | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (default ``<log.root>/<name>``); returns ``results.json`` (rank 0),
    or ``{"name", "steps", "stopped": True, "run_dir"}`` when ``stop_after`` cut the run short.

    Args:
        cfg: a checked config (:func:`binsr.train.load_config`).
        run_dir: the run folder.
        resume: continue from ``run_dir/last.pt``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        data_root: overrides ``data.data_root``.
        model: a model to train instead of ``binsr.models.create(...)``; it must carry ``.signature``.
        dataset: instead of ``binsr.data.TrainPatches``: ``dataset[i]`` is an ``(lr, hr)`` pair of
            float tensors that depends on ``i`` only, for any ``i >= 0``.
        evaluate: ``evaluate(model, dataset_name, scale) -> {"psnr", "ssim"}`` instead of
            ``binsr.evaluation.evaluate``.
        stop_after: seconds after which the run checkpoints and returns (``--resume`` continues
            it exactly: a checkpoint is a checkpoint, whenever it is written).
        teacher: the distillation teacher instead of ``train.distill.teacher``'s model (used only
            when ``train.distill.teacher`` is set or this is given).
    """
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.log.root) / cfg.name
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    env = distributed.setup(device)
    try:
        return _Trainer(cfg, run_dir, env, resume, model, dataset, evaluate, data_root, teacher).run(stop_after)
    finally:
        distributed.teardown(env)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark = flags[2]
