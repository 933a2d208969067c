"""Depth-first chains against conv by conv, per thread count (``Runtime._chains`` on and off):
one packed model end to end on a random LR image, wall clock, median of --repeat calls per
round, rounds alternating, in one process. The outputs must be equal (chains change the
schedule, not the arithmetic)::

    taskset -c 0,1 .venv/bin/python benchmarks/chain_threads.py [--model zoo:srresnet_lite16_e2fif_x4] [--size 320x180]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from binsr.deploy import Runtime
from binsr.pretrained import packed_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zoo:srresnet_lite16_e2fif_x4", help="zoo:<name> or a .bsr file")
    ap.add_argument("--size", default="320x180", help="LR image WxH")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    path = packed_file(args.model[4:]) if args.model.startswith("zoo:") else args.model
    if path is None:
        raise SystemExit(f"{args.model} has no packed file")
    w, h = (int(v) for v in args.size.split("x"))
    x = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    print(f"{args.model}, {w}x{h} LR, ms (median of {args.repeat} calls per round, {args.rounds} rounds):")
    for threads in (int(t) for t in args.threads.split(",")):
        rt = Runtime(path, threads=threads)
        chains, times = rt._chains, {"chains": [], "conv by conv": []}
        if not chains:
            print(f"  {threads} thread(s): the model has no chain")
            continue
        outs = {}
        for _ in range(args.rounds):
            for mode in times:
                rt._chains = chains if mode == "chains" else {}
                outs[mode] = rt.run_hwc(x).copy()
                calls = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    rt.run_hwc(x)
                    calls.append(time.perf_counter() - t)
                times[mode].append(statistics.median(calls) * 1e3)
        if not np.array_equal(outs["chains"], outs["conv by conv"]):
            raise SystemExit("chains and conv by conv disagree")
        best = {mode: min(v) for mode, v in times.items()}
        print(f"  {threads} thread(s): " + ", ".join(f"{m} " + " / ".join(f"{t:.1f}" for t in v) for m, v in times.items())
              + f"; chains {best['conv by conv'] / best['chains']:.2f}x (best rounds)")


if __name__ == "__main__":
    main()
