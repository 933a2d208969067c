"""Where streaming a binary conv's float output starts to pay: three chained 3x3 64 -> 64 layers,
each reading the previous one's float map as its residual, with every map written by ordinary
stores (``BINSR_STREAM_MIN_BYTES`` above any map), by non-temporal stores (0), and by the engine's
rule (a quarter of the L3, unset), at several map sizes; each setting in its own process (the
engine reads the variable once), alternating, timed by the calling thread's CPU time, 1 thread::

    taskset -c 0 .venv/bin/python benchmarks/stream_threshold.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SIZES = [(60, 96), (90, 160), (120, 200), (135, 240), (180, 320)]
SETTINGS = {"ordinary": str(1 << 62), "streamed": "0", "rule": None}


def one(h: int, w: int, repeat: int = 15) -> float:
    """Median CPU time (ms) of the three chained layers at h x w."""
    import numpy as np

    from binsr.deploy import BinaryConv, pack_bits, pack_weights
    from binsr.deploy.engine import aligned_empty

    rng = np.random.default_rng(0)
    signs = np.array([-1.0, 1.0], np.float32)
    xb = pack_bits(rng.choice(signs, (1, h, w, 64)))
    c1, c2 = (BinaryConv(pack_weights(rng.choice(signs, (64, 64, 3, 3))), 64, 3, 1, None, 1) for _ in range(2))
    first = c1(xb, pack=True)
    o1, o2 = aligned_empty(first.out.shape), aligned_empty(first.out.shape)
    b1, b2 = aligned_empty(first.bits.shape, np.uint64), aligned_empty(first.bits.shape, np.uint64)

    def run() -> None:
        c1(xb, pack=True, out=o1, bits_out=b1)
        c2(b1, pack=True, out=o2, bits_out=b2, residual=(o1,))
        c1(b2, pack=True, out=o1, bits_out=b1, residual=(o2,))

    times = []
    for _ in range(repeat):
        run()
        t0 = time.thread_time()
        run()
        times.append(time.thread_time() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # a child process: one size
    args = ap.parse_args()
    if args.one:
        print(f"{one(*args.one):.3f}")
        return
    print(f"{'map':>16} " + " ".join(f"{s:>10}" for s in SETTINGS) + "   (ms, median CPU time of 15, 1 thread)")
    for h, w in SIZES:
        ms: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for name, value in SETTINGS.items():
                env = {k: v for k, v in os.environ.items() if k != "BINSR_STREAM_MIN_BYTES"}
                if value is not None:
                    env["BINSR_STREAM_MIN_BYTES"] = value
                out = subprocess.run([sys.executable, __file__, "--one", str(h), str(w)], env=env,
                                     capture_output=True, text=True, check=True)
                ms[name].append(float(out.stdout))
        mb = h * w * 64 * 4 / 1e6
        print(f"{h}x{w} {mb:5.1f} MB " + " ".join(f"{min(v):10.2f}" for v in ms.values()))


if __name__ == "__main__":
    main()
