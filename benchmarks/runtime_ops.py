"""One packed model's end-to-end time on the engine and its split per op kind (``Runtime(profile=True)``),
timed by the calling thread's CPU time (a core shared with a training counts only this thread);
median of 5 calls on a random 320x180 LR image, 1 thread. Builds side by side: run it once per
build, alternating, with ``PYTHONPATH`` at a copy of the package that holds the other build's
extension::

    taskset -c 0 .venv/bin/python benchmarks/runtime_ops.py FILE.bsr [FILE.bsr ...]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from binsr.deploy import Runtime


def main() -> None:
    x = np.random.default_rng(0).random((1, 3, 180, 320), dtype=np.float32)
    for path in sys.argv[1:]:
        rt = Runtime(path, threads=1)
        rt(x)
        times = []
        for _ in range(5):
            t0 = time.thread_time()
            rt(x, profile=True)
            times.append(time.thread_time() - t0)
        split = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in sorted(rt.timings.items(), key=lambda kv: -kv[1])[:6])
        print(f"{path}: {statistics.median(times) * 1e3:.1f} ms (last call: {split} ms)")


if __name__ == "__main__":
    main()
