"""Tiles side by side on one-thread lanes vs one tile at a time on all threads (``binsr.infer``):
``upscale_array`` on one picture, alternating, best of --rounds, in one process.

    .venv/bin/python benchmarks/upscale_lanes.py [--model zoo:srresnet_lite_e2fif_x4] [--size 1280x720] [--threads 2]

Rows: 1 thread; N threads with lanes turned off (one tile at a time, its residual body's rows cut into one part
per thread, ``csrc/chain.cpp``); N threads on N lanes (the default). The picture is the shipped sample, resized; the outputs
must be equal (lanes change the schedule, not the arithmetic).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

import numpy as np
from PIL import Image

from binsr.infer import load_upscaler, upscale_array


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zoo:srresnet_lite_e2fif_x4")
    ap.add_argument("--size", default="1280x720", help="LR picture WxH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with resources.as_file(resources.files("binsr.assets") / "sample_hr.png") as path:
        img = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC))
    serial = load_upscaler(args.model, threads=args.threads)
    serial.lane = None  # every tile on the runtime of N threads
    ups = {"1 thread": load_upscaler(args.model, threads=1), f"{args.threads} threads, one tile at a time": serial,
           f"{args.threads} threads, {args.threads} lanes": load_upscaler(args.model, threads=args.threads)}
    best: dict[str, float] = {}
    outs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, up in ups.items():
            t0 = time.perf_counter()
            outs[name] = upscale_array(up, img, tile=args.tile)
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t0)
    first = next(iter(outs.values()))
    assert all(np.array_equal(o, first) for o in outs.values()), "outputs differ"
    base = best["1 thread"]
    print(f"{args.model}, {w}x{h} LR, tile {args.tile}, best of {args.rounds} (outputs equal):")
    for name, t in best.items():
        print(f"  {name}: {t:.2f} s ({base / t:.2f}x one thread)")


if __name__ == "__main__":
    main()
