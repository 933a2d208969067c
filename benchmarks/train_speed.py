"""Training steps per second: fp32, ``train.precision`` auto, and auto with ``train.compile``,
side by side in one run.

One training step (forward, L1 loss, backward, Adam) of a config's model on its batch shape
(random tensors: the data pipeline is not timed), for each variant and thread count. The
variants alternate round by round and the median step time of each is kept, so a busy moment
costs every variant alike. The compiled variant's first two steps are timed apart (compile
seconds) and give the number of steps after which compiling has paid for itself. Issue 20's
measurement::

    .venv/bin/python benchmarks/train_speed.py --config configs/ab/lite16_e2fif_x4_3k.yaml \\
        --threads 1,2 --json benchmarks/train-speed-<cpu>.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from binsr.cpu import cpu_flags, cpu_name
from binsr.files import write_output
from binsr.models import create
from binsr.train import load_config
from binsr.train.precision import prepare_model, resolve_precision


def _step_fn(cfg, precision: str, compiled: bool):
    torch.manual_seed(cfg.seed)
    module = prepare_model(create(cfg.model.name, scale=cfg.scale, recipe=cfg.model.recipe, **cfg.model.kwargs),
                           precision)
    opt = torch.optim.Adam(module.parameters(), cfg.train.lr)
    model = torch.compile(module) if compiled else module
    n, hr = cfg.data.batch_size, cfg.data.patch_size
    lr_img, hr_img = torch.rand(n, 3, hr // cfg.scale, hr // cfg.scale), torch.rand(n, 3, hr, hr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.l1_loss(model(lr_img), hr_img).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ab/lite16_e2fif_x4_3k.yaml")
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (default 5)")
    ap.add_argument("--steps", type=int, default=3, help="steps per round (default 3)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled variant")
    ap.add_argument("--json", help="write the results here ('-': standard output)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    auto = resolve_precision("auto", torch.device("cpu"))
    results = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        variants = {"fp32": ("fp32", False), auto: (auto, False)}
        if not args.no_compile:
            variants[f"{auto}+compile"] = (auto, True)
        steps = {name: _step_fn(cfg, p, c) for name, (p, c) in variants.items()}
        times: dict[str, list[float]] = {p: [] for p in steps}
        warmup_s = {}
        for p, fn in steps.items():  # warm-up: oneDNN primitives, allocator, compilation
            t = time.perf_counter()
            fn(), fn()
            warmup_s[p] = time.perf_counter() - t
        for _ in range(args.rounds):
            for p, fn in steps.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times[p].append((time.perf_counter() - t) / args.steps)
        its = {p: 1 / statistics.median(v) for p, v in times.items()}
        row = {"threads": threads, **{f"{p}_it_s": round(v, 3) for p, v in its.items()},
               **{f"{p}_speedup": round(v / its["fp32"], 3) for p, v in its.items() if p != "fp32"}}
        line = ", ".join(f"{p} {v:.2f} it/s ({v / its['fp32']:.2f}x)" for p, v in its.items())
        compiled = f"{auto}+compile"
        if compiled in its:
            compile_s = warmup_s[compiled] - 2 / its[compiled]
            gain = 1 / its[auto] - 1 / its[compiled]  # seconds saved per step
            row["compile_s"] = round(compile_s, 1)
            row["compile_pays_after_steps"] = round(compile_s / gain) if gain > 0 else None
            line += f"; compiling took {compile_s:.0f} s, " + (
                f"repaid after {row['compile_pays_after_steps']} steps" if gain > 0 else "never repaid")
        results.append(row)
        print(f"{threads} thread(s): {line}", flush=True)
    flags = sorted(cpu_flags() & {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2"})
    out = {"cpu": cpu_name(), "flags": flags, "config": args.config, "auto": auto,
           "batch": [cfg.data.batch_size, cfg.data.patch_size], "torch": torch.__version__, "results": results}
    print(f"{out['cpu']} ({', '.join(flags)}), torch {torch.__version__}, {args.config}")
    if args.json:
        write_output(args.json, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
