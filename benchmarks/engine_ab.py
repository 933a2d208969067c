"""A/B of two engine builds on one packed file, end to end: each round runs one process per build,
alternating, and prints the median of its calls (ms). A build is a source tree with its engine
built in place, so a commit is measured as committed:

    git archive COMMIT | tar -x -C /tmp/a && (cd /tmp/a && python setup.py build_ext --inplace)
    taskset -c 0 .venv/bin/python benchmarks/engine_ab.py /tmp/a/src /tmp/b/src --rounds 4

Default file: the zoo's srresnet_lite16_e2fif_x4 packed file (x4, 320x180 LR), 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_RUN = r"""
import sys, time
import numpy as np
from binsr.deploy import Runtime
from binsr.pretrained import packed_file
name, calls, threads, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rt = Runtime(packed_file(name), threads=threads)
x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
rt(x)
times = []
for _ in range(calls):
    t0 = time.perf_counter()
    rt(x)
    times.append(time.perf_counter() - t0)
print(float(np.median(times)) * 1e3)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="src folder of build A (holds binsr/ with its _engine built)")
    p.add_argument("b", help="src folder of build B")
    p.add_argument("--model", default="srresnet_lite16_e2fif_x4", help="zoo entry whose packed file runs")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--calls", type=int, default=5, help="timed calls per process, median kept")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", default="320x180", help="LR size WxH")
    args = p.parse_args()
    w, h = args.size.split("x")
    result: dict[str, list[float]] = {args.a: [], args.b: []}
    for _ in range(args.rounds):
        for src in (args.a, args.b):
            env = {**os.environ, "PYTHONPATH": src}
            out = subprocess.run([sys.executable, "-c", _RUN, args.model, str(args.calls), str(args.threads), w, h],
                                 env=env, capture_output=True, text=True, check=True)
            result[src].append(round(float(out.stdout.split()[-1]), 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
