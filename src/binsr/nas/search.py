"""The SRBNAS search loop (Su et al., Biomimetics 2024, Sec. 5-6): alternating bi-level updates.

Per step: one alpha/beta step on a held-out batch (eq. 8, :class:`~binsr.nas.architect.Architect`;
skipped during ``search.warmup_epochs``), then one Adam step of the supernet weights on a train
batch (L1 loss), with ``binsr.nn.set_progress`` driving the EDE schedule over the whole search.
Every epoch writes the derived ``genotype.json``, the alpha/beta history CSVs, ``history.csv``,
``summary.json`` and, atomically, ``checkpoint.pt`` for ``--resume``; ``cell.png`` and the
history PNGs every ``log.plot_every`` epochs and at the end. The search time is the wall time of
the epochs (sampling, arch and weight steps), summed over resumed sessions; ``cpu_time_s`` is the
process CPU time of the same spans (what a dedicated core would need, on a shared machine).
``search.shrink_epochs`` / ``shrink_keep`` shrink the ops of every edge at the start of those
epochs (P-DARTS). ``search.stop_at_skips`` ends the search early the DARTS+ way (Liang et al. 2019): at the first
architecture epoch whose derived cell holds that many ``skip_connect`` edges, keeping the cell of
the epoch before; ``summary.json`` says when (``stopped``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from binsr import nn as bnn
from binsr.cpu import cpu_name
from binsr.errors import UsageError
from binsr.memory import check_fits, check_step_memory, model_bytes
from binsr.nas.architect import Architect
from binsr.nas.config import SearchConfig
from binsr.nas.data import PatchSampler, split_images
from binsr.nas.genotype import Genotype, load_genotype, plot_cell
from binsr.nas.regularizers import ramp
from binsr.nas.supernet import Supernet
from binsr.train.precision import prepare_model, resolve_precision
from binsr.files import atomic_write, make_folder
from binsr.train.checkpoint import load_state, save_state

__all__ = ["run_search", "build_supernet"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
_RESUME_NEUTRAL = ("log",)


def build_supernet(cfg: SearchConfig) -> Supernet:
    n = cfg.supernet
    return Supernet(cfg.scale, num_cells=n.num_cells, num_feat=n.num_feat, steps=n.steps, ops=n.ops,
                    groups=n.groups, partial_k=n.partial_k, beta_norm=n.beta_norm)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _edge_names(steps: int) -> list[tuple[int, int]]:
    return [(j, i) for j in range(steps) for i in range(j + 2)]


def _write_history(out: Path, model: Supernet, state: dict[str, Any], plots: bool) -> None:
    """alpha_history.csv / beta_history.csv (one row per epoch, edge, op) and, if ``plots``, their PNGs."""
    alphas, betas = state["alpha_history"], state["beta_history"]
    epochs = [int(r["epoch"]) for r in state["rows"]]
    edges = _edge_names(model.steps)
    probs = torch.softmax(alphas, dim=-1)
    rows: list[list[Any]] = [["epoch", "node", "input", "op", "alpha", "p"]]
    for t, e in enumerate(epochs):
        for k, (j, i) in enumerate(edges):
            rows += [[e, j, i, op, f"{alphas[t, k, o]:.6g}", f"{probs[t, k, o]:.6g}"] for o, op in enumerate(model.ops)]
    _write_text(out / "alpha_history.csv", _csv(rows))
    s_hist = torch.stack([torch.cat(model.edge_weights(b)) for b in betas]) if len(betas) else betas
    rows = [["epoch", "node", "input", "beta", "s"]]
    for t, e in enumerate(epochs):
        rows += [[e, j, i, f"{betas[t, k]:.6g}", f"{s_hist[t, k]:.6g}"] for k, (j, i) in enumerate(edges)]
    _write_text(out / "beta_history.csv", _csv(rows))
    if not (plots and epochs):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(j + 2 for j, _ in edges)
    fig, axes = plt.subplots(model.steps, ncol, figsize=(3 * ncol, 2.2 * model.steps), squeeze=False, sharex=True)
    for k, (j, i) in enumerate(edges):
        ax = axes[j][i]
        for o, op in enumerate(model.ops):
            ax.plot(epochs, probs[:, k, o].tolist(), label=op)
        ax.set_title(f"node {j} <- {('c_{k-2}', 'c_{k-1}')[i] if i < 2 else i - 2}", fontsize=8)
        ax.tick_params(labelsize=7)
    for j in range(model.steps):
        for i in range(j + 2, ncol):
            axes[j][i].axis("off")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.supxlabel("epoch")
    fig.supylabel("softmax(alpha)")
    fig.tight_layout()
    fig.savefig(out / "alpha_history.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, model.steps, figsize=(3.2 * model.steps, 2.8), squeeze=False)
    start = 0
    for j in range(model.steps):
        for i in range(j + 2):
            axes[0][j].plot(epochs, s_hist[:, start + i].tolist(), label=f"input {i}")
        axes[0][j].set_title(f"node {j}", fontsize=9)
        axes[0][j].legend(fontsize=6)
        start += j + 2
    fig.supxlabel("epoch")
    fig.supylabel(f"s_ij ({model.beta_norm}(beta))")
    fig.tight_layout()
    fig.savefig(out / "beta_history.png", dpi=100)
    plt.close(fig)


def _write_outputs(out: Path, cfg: SearchConfig, model: Supernet, state: dict[str, Any], done: bool) -> Genotype:
    epochs_done = len(state["rows"])
    every = cfg.log.plot_every
    plots = done or bool(every and epochs_done % every == 0)
    geno = model.genotype()
    meta = {"config": cfg.name, "scale": cfg.scale, "epochs": epochs_done, "ops": model.ops,
            "searched_num_cells": cfg.supernet.num_cells, "searched_num_feat": cfg.supernet.num_feat,
            "mu": cfg.reg.mu, "rho": cfg.reg.rho, "l1_on": cfg.reg.l1_on,
            "search_time_s": round(state["elapsed"], 1), "complete": done, "stopped": state["stopped"]}
    geno = Genotype(geno.nodes, geno.groups, meta)
    geno.save(out / "genotype.json")
    if plots:
        plot_cell(geno, out / "cell.png", title=f"{cfg.name}: epoch {epochs_done}/{cfg.search.epochs}, "
                                                 f"groups={geno.groups}")
    _write_history(out, model, state, plots)
    hist = [["epoch", "train_l1", "arch_l1", "reg_alpha", "reg_beta", "ramp", "model_lr", "epoch_s"]]
    hist += [[r[k] for k in hist[0]] for r in state["rows"]]
    _write_text(out / "history.csv", _csv(hist))
    summary = {"name": cfg.name, "complete": done, "stopped": state["stopped"], "epochs": epochs_done,
               "steps": state["step"],
               "search_time_s": round(state["elapsed"], 1), "search_time_h": round(state["elapsed"] / 3600, 3),
               "sec_per_epoch": round(state["elapsed"] / max(epochs_done, 1), 1),
               "cpu_time_s": round(state["cpu"], 1),  # CPU seconds of this process (all threads)
               "torch_threads": torch.get_num_threads(), "genotype": geno.to_dict()["nodes"]}
    _write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return geno


def _check_resume(saved: dict[str, Any], cfg: SearchConfig) -> None:
    old, new = saved, cfg.to_dict()
    diffs = [k for k in sorted(set(old) | set(new)) if k not in _RESUME_NEUTRAL and old.get(k) != new.get(k)]
    if diffs:
        raise UsageError(f"config differs from the checkpoint's in {', '.join(diffs)}; use a new --out folder")


def run_search(cfg: SearchConfig, out: str | Path, resume: bool = False, data_root: str | None = None,
               device: str = "cpu") -> Genotype:
    """Search with ``cfg`` into folder ``out`` (see the module docstring) on ``device``; returns the genotype."""
    out = Path(out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise UsageError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    if resume and not ckpt.exists():
        raise UsageError(f"--resume: no {CHECKPOINT} in {out}")
    torch.manual_seed(cfg.seed)
    s = cfg.search
    with torch.device("meta"):  # shapes only: its weights must fit before they are allocated
        weights = model_bytes(build_supernet(cfg))
    check_fits(weights, torch.device(device), "the supernet's weights", "lower supernet.num_feat, num_cells or steps")
    model = build_supernet(cfg).to(device)
    precision = resolve_precision(s.precision, torch.device(device))
    prepare_model(model, precision)
    check_step_memory(model, cfg.scale, cfg.data.patch_size, cfg.data.batch_size, torch.device(device))
    make_folder(out, "search")
    w_opt = torch.optim.Adam(model.weight_parameters(), lr=s.model_lr)
    total = s.epochs * s.steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=total, eta_min=min(s.model_lr_min, s.model_lr))
    r = cfg.reg
    architect = Architect(model, s.arch_lr, tuple(s.arch_betas), s.arch_weight_decay, r.lambda_alpha, r.mu, r.rho,
                          r.l1_on, r.lambda_beta, r.gamma, s.order)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "elapsed": 0.0, "cpu": 0.0, "rows": [], "stopped": None,
                             "alpha_history": torch.zeros(0, *model.alphas.shape),
                             "beta_history": torch.zeros(0, *model.betas.shape)}
    if resume:
        saved = load_state(ckpt, map_location=device)
        _check_resume(saved["config"], cfg)
        model.load_state_dict(saved["model"])
        w_opt.load_state_dict(saved["w_opt"])
        sched.load_state_dict(saved["sched"])
        architect.optimizer.load_state_dict(saved["a_opt"])
        gen.set_state(saved["generator"].cpu())
        torch.set_rng_state(saved["torch_rng"].cpu())
        state = {k: saved.get(k, v) for k, v in state.items()}
        state["alpha_history"], state["beta_history"] = state["alpha_history"].cpu(), state["beta_history"].cpu()
        log.info("resuming %s at epoch %d/%d", out, state["epoch"], s.epochs)
    else:
        _write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    d = cfg.data
    w_paths, a_paths = split_images(data_root or d.data_root, d.train_sets, d.arch_fraction, cfg.seed, d.max_images)
    w_data, a_data = (PatchSampler(p, cfg.scale, d.patch_size) for p in (w_paths, a_paths))
    log.info("search %s: %d weight / %d arch images, %d epochs x %d steps, %d threads, precision %s, %s", cfg.name,
             len(w_paths), len(a_paths), s.epochs, s.steps_per_epoch, torch.get_num_threads(), precision, cpu_name())
    writer = None
    if cfg.log.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=state["step"])
    bar = tqdm(total=total, initial=state["step"], disable=not cfg.log.progress, desc=cfg.name, unit="step",
               dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    ramp_epochs = r.ramp_epochs or s.epochs
    model.train()
    try:
        while state["epoch"] < s.epochs and not state["stopped"]:
            epoch, t0, c0 = state["epoch"], time.perf_counter(), time.process_time()
            if epoch in s.shrink_epochs:  # P-DARTS; the mask is saved with the model, so a resume keeps it
                keep = s.shrink_keep[s.shrink_epochs.index(epoch)]
                model.shrink(keep)
                log.info("epoch %d: %d ops kept per edge", epoch + 1, keep)
            lin = ramp(epoch, ramp_epochs)
            sums = {"train_l1": 0.0, "arch_l1": 0.0, "reg_alpha": 0.0, "reg_beta": 0.0}
            n_arch = 0
            for _ in range(s.steps_per_epoch):
                bnn.set_progress(model, state["step"] / total)
                lr_t, hr_t = (t.to(device) for t in w_data.sample(d.batch_size, gen))
                if epoch >= s.warmup_epochs:
                    lr_v, hr_v = (t.to(device) for t in a_data.sample(d.batch_size, gen))
                    a = architect.step(lr_v, hr_v, lin, (lr_t, hr_t), sched.get_last_lr()[0])
                    sums["arch_l1"] += a.task
                    sums["reg_alpha"] += a.reg_alpha
                    sums["reg_beta"] += a.reg_beta
                    n_arch += 1
                w_opt.zero_grad(set_to_none=True)
                loss_t = F.l1_loss(model(lr_t), hr_t)
                loss_t.backward()
                loss = loss_t.item()
                if s.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.weight_parameters(), s.grad_clip)
                w_opt.step()
                sched.step()
                if not math.isfinite(loss):
                    raise UsageError(f"the supernet loss became {loss} at step {state['step']}; "
                                     "lower search.model_lr")
                sums["train_l1"] += loss
                state["step"] += 1
                if writer is not None and state["step"] % 10 == 0:
                    writer.add_scalar("loss/train_l1", loss, state["step"])
                bar.update(1)
                bar.set_postfix(epoch=epoch, l1=f"{loss:.4f}", refresh=False)
            state["elapsed"] += time.perf_counter() - t0
            state["cpu"] += time.process_time() - c0
            row = {"epoch": epoch, "train_l1": sums["train_l1"] / s.steps_per_epoch, "ramp": lin,
                   "arch_l1": sums["arch_l1"] / max(n_arch, 1), "reg_alpha": sums["reg_alpha"] / max(n_arch, 1),
                   "reg_beta": sums["reg_beta"] / max(n_arch, 1), "model_lr": sched.get_last_lr()[0],
                   "epoch_s": time.perf_counter() - t0}
            state["rows"].append(row)
            state["alpha_history"] = torch.cat([state["alpha_history"], model.alphas.detach().cpu()[None]])
            state["beta_history"] = torch.cat([state["beta_history"], model.betas.detach().cpu()[None]])
            state["epoch"] = epoch + 1
            skips = (sum(op == "skip_connect" for node in model.genotype().nodes for op, _ in node)
                     if s.stop_at_skips and epoch >= s.warmup_epochs else 0)
            if s.stop_at_skips and skips >= s.stop_at_skips:
                # DARTS+ (Liang et al. 2019, arXiv:1909.06035, Sec. 3.2): stop, keep the cell of the
                # epoch before (its alphas and betas), the last one short of the skip threshold
                state["stopped"] = f"epoch {epoch + 1}: {skips} skip_connect >= search.stop_at_skips"
                with torch.no_grad():
                    model.alphas.copy_(state["alpha_history"][-2])
                    model.betas.copy_(state["beta_history"][-2])
                log.info("early stop at %s; keeping epoch %d's cell", state["stopped"], epoch)
            done = state["epoch"] == s.epochs or bool(state["stopped"])
            geno = _write_outputs(out, cfg, model, state, done)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(f"epoch/{k}", v, epoch)
                probs = torch.softmax(model.alphas.detach(), -1).mean(0)
                writer.add_scalars("alpha/mean_p", {op: float(p) for op, p in zip(model.ops, probs)}, epoch)
                writer.add_text("genotype", json.dumps(geno.to_dict()["nodes"]), epoch)
                writer.flush()
            if done or state["epoch"] % cfg.log.checkpoint_every == 0:
                save_state(ckpt, {**state, "config": cfg.to_dict(), "model": model.state_dict(),
                                  "w_opt": w_opt.state_dict(), "sched": sched.state_dict(),
                                  "a_opt": architect.optimizer.state_dict(), "generator": gen.get_state(),
                                  "torch_rng": torch.get_rng_state()})
            log.info("epoch %d/%d  train L1 %.4f  arch L1 %.4f  %.1f s  %s", epoch + 1, s.epochs, row["train_l1"],
                     row["arch_l1"], row["epoch_s"], json.dumps(geno.to_dict()["nodes"]))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return load_genotype(out / "genotype.json")
