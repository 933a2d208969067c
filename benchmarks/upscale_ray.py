"""``binsr upscale`` on a folder: the serial run (1 and 2 threads) against ``--ray`` workers, in one run.

Issue 19's measurement: a folder of ``--images`` Set14-sized images (Set14's HR images, repeated;
``--pattern '*_LR.png'`` for its small x4 LR images), upscaled by the default x4 zoo model with
``--png-level 1``. One local Ray is started
before the timings (``ray start`` is paid once per cluster, not per folder). Two times per run:
the whole call (model load; for ``--ray`` also starting its workers, a new process each), and the
images' own, from the command's summary line (for ``--ray``, after its workers are ready). The
serial run is timed twice: as it runs (its PNG writer thread free to use a second core) and
pinned to one core, the CPU one Ray worker gets. The variants alternate round by round and each one's median
wall-clock time is kept, so a busy moment costs every variant alike. Every variant's outputs are
checked byte-identical to the serial run's before any ratio is printed::

    .venv/bin/python benchmarks/upscale_ray.py --workers 2 --threads 1 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import ray

from binsr.cli import main
from binsr.cpu import cpu_name
from binsr.data.paths import data_root
from binsr.files import write_output


#: the serial run with its PNG writer thread on the same core: one core's worth of CPU
ONE_CORE = "serial, 1 thread, one core"


def _folder(src: Path, pattern: str, n: int, dest: Path) -> Path:
    """``n`` images: the images of ``src`` matching ``pattern`` in turn, copied under new names."""
    lr = sorted(src.glob(pattern))
    if not lr:
        raise SystemExit(f"no {pattern} images in {src}")
    dest.mkdir()
    for i in range(n):
        shutil.copyfile(lr[i % len(lr)], dest / f"{i:03d}_{lr[i % len(lr)].name}")
    return dest


@contextlib.contextmanager
def _one_core(pin: bool):
    """Pin this thread, and the threads it starts (the serial run's PNG writer), to one core."""
    cores = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def _time(argv: list[str], pin: bool = False) -> tuple[float, float]:
    """(seconds of the whole call, seconds of the images as its summary line says: for ``--ray``
    after its workers are ready); ``pin``: the whole call on one core."""
    summary = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(summary), _one_core(pin):
        rc = main(["upscale", *argv, "--quiet", "--png-level", "1"])
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"binsr upscale {' '.join(argv)} exited {rc}")
    return seconds, float(re.search(r" in ([0-9.]+) s", summary.getvalue()).group(1))


def _same(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()) or any(
            (a / n).read_bytes() != (b / n).read_bytes() for n in names):
        raise SystemExit(f"outputs differ: {a} vs {b}")


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per Ray worker")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--source", type=Path, help="folder of the images (default: Set14's x4 folder)")
    ap.add_argument("--pattern", default="*_HR.png", help="which of its images (default: *_HR.png)")
    ap.add_argument("--json", help="write the numbers here too")
    args = ap.parse_args()
    source = args.source or data_root() / "benchmark" / "Set14" / "image_SRF_4"
    variants = {
        "serial, 1 thread": ["--threads", "1"],
        ONE_CORE: ["--threads", "1"],
        "serial, 2 threads": ["--threads", "2"],
        f"ray, {args.workers} workers x {args.threads} thread": ["--ray", "--workers", str(args.workers),
                                                                 "--threads", str(args.threads)],
    }
    ray.init(address="local", num_cpus=args.workers * args.threads, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="binsr-bench-ray-") as tmp:
        inputs = _folder(source, args.pattern, args.images, Path(tmp) / "in")
        for r in range(args.rounds):
            for i, (name, extra) in enumerate(variants.items()):
                out = Path(tmp) / f"out{r}-{i}"
                times[name].append(_time([str(inputs), "-o", str(out), *extra], pin=name == ONE_CORE))
                _same(Path(tmp) / "out0-0", out)
    ray.shutdown()
    print(f"{args.images} images ({source}/{args.pattern}), zoo x4 model, {cpu_name()}; median of {args.rounds} rounds; "
          "outputs byte-identical across variants")
    print("call: the whole command (model load, Ray workers' start); images: from the first file to the last")
    print(f"'{ONE_CORE}': the serial run pinned to one core with its PNG writer (otherwise the writer "
          "encodes on a second core while the next image is upscaled)")
    print(f"{'variant':30} {'call s':>7} {'images s':>9} {'images/s':>9} {'vs serial 1 thread (call, images)':>34}")
    medians = {name: [statistics.median(t[k] for t in ts) for k in (0, 1)] for name, ts in times.items()}
    base = medians["serial, 1 thread"]
    rows = []
    for name, (call, work) in medians.items():
        rows.append({"variant": name, "call_s": call, "images_s": work, "images_per_s": args.images / work,
                     "speedup_call": base[0] / call, "speedup_images": base[1] / work})
        print(f"{name:30} {call:7.2f} {work:9.2f} {args.images / work:9.2f} "
              f"{base[0] / call:23.2f}x {base[1] / work:8.2f}x")
    if args.json:
        write_output(args.json, json.dumps({"cpu": cpu_name(), "images": args.images, "pattern": args.pattern,
                                            "rounds": args.rounds,
                                            "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main_()
