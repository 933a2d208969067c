"""SCALES' spatial gate (64 -> 1 3x3 conv and sigmoid in float64, ``binsr.deploy.fp.spatial_gate``)
on each compiled path here, side by side: nanoseconds per output pixel, median of wall-clock calls,
on a map that stays in the L2 (8 rows) and on a whole 320x180 map (14.7 MB), 1 thread. Each
path's output is first checked against the NumPy reference, bit for bit.

    taskset -c 0 .venv/bin/python benchmarks/gate_paths.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from binsr.deploy import available_paths, fp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the paths, alternating")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    paths = [p for p in available_paths() if p != "numpy"]
    for _ in range(args.rounds):
        for h in (8, 180):
            x = rng.standard_normal((h, 320, 64)).astype(np.float32)
            w = (rng.standard_normal((576, 1)) * 0.05).astype(np.float32)
            b = np.array([0.1], np.float32)
            want = fp.spatial_gate(x, w, b, 1, 1, compiled=False)
            out = np.empty((h, 320), np.float32)
            row = []
            for path in paths:
                fp.spatial_gate(x, w, b, 1, 1, out=out, path=path)
                if not np.array_equal(out, want):
                    raise SystemExit(f"path {path} differs from the NumPy reference")
                times = []
                for _ in range(max(5, 3000 // h)):
                    t0 = time.perf_counter()
                    fp.spatial_gate(x, w, b, 1, 1, out=out, path=path)
                    times.append(time.perf_counter() - t0)
                row.append(f"{path} {np.median(times) * 1e9 / (h * 320):.1f}")
            print(f"{h}x320x64: " + ", ".join(row) + " ns per pixel")


if __name__ == "__main__":
    main()
