"""One binary layer (64 -> 64 channels unless --channels, 320x180, 1 thread) on the engine vs torch's FP32 conv of the
same shape, alternating, timed by the CPU time of the calling thread instead of the wall clock:
on a core shared with other jobs the wall clock counts their time too, the thread's CPU time only
its own (caches and memory bandwidth stay shared). Ratios within one run are what count.

    taskset -c 0 .venv/bin/python benchmarks/layer_cpu_time.py [--path avx512] [--repeat 21] [--layers 3x3,5x5]
        [--channels 60,180 --layers 1x1]   # SwinIR-light's binary linears: 60-channel words

Two builds side by side: run it once per build, alternating, with PYTHONPATH pointing at a copy of
the package that holds the other build's extension.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from binsr.deploy import BinaryConv, pack_bits, pack_weights
from binsr.deploy.engine import aligned_empty, kernel

LAYERS = {"1x1": (1, 1, 1), "3x3": (3, 1, 1), "5x5": (5, 1, 1), "7x7": (7, 1, 1), "3x3d2": (3, 2, 1), "3x3g4": (3, 1, 4), "3x3g2": (3, 1, 2),
          "3x3d2g2": (3, 2, 2), "5x5g2": (5, 1, 2), "5x5d2g2": (5, 2, 2), "7x7g2": (7, 1, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", default="auto")
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--layers", default="3x3")
    ap.add_argument("--channels", default="64,64", help="input,output channels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    h, w = 180, 320
    c, cout = (int(v) for v in args.channels.split(","))
    x = rng.choice(np.array([-1.0, 1.0], np.float32), (1, h, w, c))
    xb, xt = pack_bits(x), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    for name in args.layers.split(","):
        k, d, g = LAYERS[name]
        wt = rng.choice(np.array([-1.0, 1.0], np.float32), (cout, c // g, k, k))
        conv, wtt = BinaryConv(pack_weights(wt), c, k, d, None, g), torch.from_numpy(wt)
        first = conv(xb, path=args.path, pack=True)
        out, bits = aligned_empty(first.out.shape), aligned_empty(first.bits.shape, np.uint64)
        fns = {"float+bits": lambda: conv(xb, path=args.path, pack=True, out=out, bits_out=bits),
               "bits": lambda: conv(xb, path=args.path, pack=True, out_float=False, bits_out=bits),
               "torch": lambda: F.conv2d(xt, wtt, None, 1, d * (k - 1) // 2, d, g)}
        times: dict[str, list[float]] = {n: [] for n in fns}
        with torch.no_grad():
            for _ in range(args.repeat):
                for n, f in fns.items():
                    f()  # warm
                    t0 = time.thread_time()
                    f()
                    times[n].append(time.thread_time() - t0)
        ms = {n: float(np.median(v)) * 1e3 for n, v in times.items()}
        print(f"{name} {c}->{cout}: float+bits {ms['float+bits']:.2f} ms ({ms['torch'] / ms['float+bits']:.1f}x), "
              f"bits out {ms['bits']:.2f} ms ({ms['torch'] / ms['bits']:.1f}x), torch {ms['torch']:.1f} ms "
              f"[kernel {kernel(args.path)}, 1 thread, CPU time, median of {args.repeat}]")


if __name__ == "__main__":
    main()
