"""The compiled SwinIR token-wise ops alone (``binsr.deploy.transformer.layer_norm``, ``gelu`` and
SCALES' token gate's linear ``binsr.deploy.fp.linear``, 60 channels to 1): the token map of a 320x180
LR image with SwinIR-light's 60 channels (LayerNorm, token gate) and its MLP's 120 hidden channels
(GELU, inputs of the zoo model's spread), in float64 (the zoo models' ``fp64`` ops) and, for the
first two, float32; median of ``--repeat`` calls, timed by the calling thread's CPU time (1 thread). A
checksum per case shows whether two builds give the same output. Builds side by side: run it once
per build, alternating, with ``PYTHONPATH`` at a copy of the package that holds the other build's
extension::

    taskset -c 0 .venv/bin/python benchmarks/transformer_ops.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from binsr.deploy import fp, transformer


def _median_ms(fn: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    times = []
    for _ in range(repeat):
        t0 = time.thread_time()
        out = fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times) * 1e3, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tokens, c = 180 * 320, 60
    x = (rng.standard_normal((tokens, c), dtype=np.float32) * 3 + 1).astype(np.float32)
    weight, bias = rng.standard_normal(c, dtype=np.float32), rng.standard_normal(c, dtype=np.float32)
    hidden = rng.standard_normal((tokens, 2 * c), dtype=np.float32) * np.float32(0.5)
    gate_w, gate_b = rng.standard_normal((c, 1), dtype=np.float32), np.zeros(1, np.float32)
    cases = {"layer_norm": lambda fp64: transformer.layer_norm(x, weight, bias, 1e-5, 1, True, fp64),
             "gelu": lambda fp64: transformer.gelu(hidden, 1, True, fp64),
             "token gate linear": lambda fp64: fp.linear(x, gate_w, gate_b, fp64, 1)}
    for name, op in cases.items():
        for fp64 in (True, False) if name != "token gate linear" else (True,):
            ms, out = _median_ms(lambda: op(fp64), args.repeat)
            print(f"{name} {'float64' if fp64 else 'float32'}: {ms:.2f} ms "
                  f"(checksum {float(out.astype(np.float64).sum()):.10g})")


if __name__ == "__main__":
    main()
