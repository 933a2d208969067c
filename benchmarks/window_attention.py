"""The compiled SwinIR window attention alone (``binsr.deploy.transformer.window_attention``): the
token map of a 320x180 LR image (padded to 320x184) with SwinIR-light's 60 channels, 6 heads and
8 x 8 windows, plain and shifted, in float64 (the zoo models' ``fp64`` ops) and float32; median of
``--repeat`` calls, timed by the calling thread's CPU time (1 thread). A checksum per case shows that
two builds give the same output. Builds side by side: run it once per build, alternating, with
``PYTHONPATH`` at a copy of the package that holds the other build's extension::

    taskset -c 0 .venv/bin/python benchmarks/window_attention.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from binsr.deploy import transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    h, w, c, heads, window = 184, 320, 60, 6, 8
    qkv = rng.standard_normal((h, w, 3 * c), dtype=np.float32)
    bias_t = rng.standard_normal((heads, window**2, window**2), dtype=np.float32)
    scale = (c // heads) ** -0.5
    for fp64 in (True, False):
        for shift in (0, window // 2):
            times = []
            for _ in range(args.repeat):
                t0 = time.thread_time()
                out = transformer.window_attention(qkv, heads, window, shift, bias_t, scale, 1, True, fp64)
                times.append(time.thread_time() - t0)
            print(f"{'float64' if fp64 else 'float32'} shift {shift}: {statistics.median(times) * 1e3:.1f} ms "
                  f"(checksum {float(out.astype(np.float64).sum()):.10g})")


if __name__ == "__main__":
    main()
