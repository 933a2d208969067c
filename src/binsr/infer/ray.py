"""``binsr upscale --ray``: the serial run's per-file work on Ray actors, on one machine or a cluster.

Ray (Moritz et al., OSDI 2018) gives what batch inference across machines needs: actors that keep
a loaded model, scheduling over nodes, restarts and retries. One actor per worker reserves
``threads`` CPUs and loads the packed ``.bsr`` once: its bytes travel through Ray's object store,
so workers import no torch and need no copy of the model file. Each task is a pair of paths
(source, target), never decoded pixels (Ray's image reader drops 16 bits, ICC profiles and alpha),
and runs :func:`binsr.cli.upscale.upscale_file`, the serial run's own code: the same outputs, the
same failure lines, the same no-replacing rule and atomic writes. Inputs and the output folder
must therefore be on a file system every node sees, at the same path.

A worker of several threads has two files in flight: one is upscaled while the other is encoded
and written (libdeflate, zlib and Pillow release the GIL) on its other reserved CPUs, as in the
serial run. A worker of one thread has one: it holds no CPU for a second thread, and on two
cores two such workers took 7.47-7.52 s for 24 Set14 HR images with one in flight against
7.82-8.19 s with two (``benchmarks/upscale_ray.py``, AMD EPYC Zen 4). Each worker loads the model
before it reports ready, so the images' time counts images only, as in the serial run. Files are
handed out largest first (:func:`largest_first`), so the run does not end on one worker's large
image. A killed actor is restarted and its files are run again (``max_restarts`` /
``max_task_retries``); its temporary file is removed by the next write of that name
(:func:`binsr.files.remove_stale_temps`), so no partial output is left. An output found when a file starts (those that existed before the run are
refused by the driver) was published by a killed attempt just before it died, or made by another
writer meanwhile: it is taken as this file's output only when a fresh upscale gives the same bytes,
refused otherwise.
"""

from __future__ import annotations

import argparse
import filecmp
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from binsr.cli.upscale import FileOptions, Tally, distinct_targets, failure_line, refuse_existing, upscale_file
from binsr.errors import BinsrError, UsageError
from binsr.files import remove_stale_temps
from binsr.infer import Upscaler, default_threads, load_upscaler

__all__ = ["LOCAL", "upscale_on_ray", "packed_bytes", "largest_first"]

#: ``--ray`` without an address: start a Ray on this machine (Ray's own name for it)
LOCAL = "local"
#: restarts of a killed worker, and runs of a file whose worker was killed
RETRIES = 3


def in_flight(threads: int) -> int:
    """Files in flight per worker: two (one upscaled while the previous one is written) when the
    worker holds CPUs for the writer too, else one."""
    return 2 if threads > 1 else 1


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'binsr[ray]'") from None
    return ray


def packed_bytes(up: Upscaler, model: Any) -> bytes:
    """The packed ``.bsr`` of the loaded engine model ``up`` (``model`` as given to
    :func:`binsr.infer.load_upscaler`): the file itself, the zoo's export, or a fresh export."""
    from binsr.pretrained import packed_file

    if up.backend != "engine":
        raise UsageError(up.notice or "--ray runs the packed engine: drop --backend torch")
    if up.module is None:
        if isinstance(model, str) and model.lower().endswith(".bsr"):
            return Path(model).read_bytes()
        return Path(packed_file(up.name)).read_bytes()
    from binsr.deploy import export_packed

    with tempfile.TemporaryDirectory(prefix="binsr-ray-") as tmp:
        export_packed(up.module, Path(tmp) / "model.bsr")
        return (Path(tmp) / "model.bsr").read_bytes()


class UpscaleWorker:
    """A Ray actor: the model loaded by :meth:`ready` (again by a restarted worker's first file),
    then :meth:`run` per file (:func:`in_flight` at a time, one upscaling)."""

    def __init__(self, name: str, threads: int, opts: FileOptions, debug: bool, self_ensemble: bool = False) -> None:
        self.name, self.threads, self.opts, self.debug = name, threads, opts, debug
        self.self_ensemble = self_ensemble
        self.up: Upscaler | None = None
        self.engine = threading.Lock()  # a Runtime runs one call at a time

    def _load(self, packed: list) -> None:
        """Load the packed model from its object-store reference (nested in a list, so that a task,
        not the actor's constructor, holds it: a restarted worker fetches it again)."""
        import ray

        with tempfile.TemporaryDirectory(prefix="binsr-ray-") as tmp:
            path = Path(tmp) / "model.bsr"
            path.write_bytes(ray.get(packed[0]))
            # the engine reads it into memory
            self.up = load_upscaler(path, None, "engine", self.threads, self.self_ensemble)
        self.up.name = self.name

    def ready(self, packed: list) -> str:
        """Load the model; the Ray node this worker runs on."""
        import ray

        self._loaded(packed)
        return ray.get_runtime_context().get_node_id()

    def _loaded(self, packed: list) -> None:
        """Load the model unless it is (a restarted worker's first file loads it again)."""
        with self.engine:
            if self.up is None:
                self._load(packed)

    def run(self, packed: list, src: str, target: str) -> tuple[str | None, list[str], str | None]:
        """Upscale ``src`` to ``target``: (failure line or None, notes, traceback text with --debug)."""
        source, out = Path(src), Path(target)
        try:
            self._loaded(packed)
            if self._published_before(source, out):
                return None, [], None
            with self.engine:
                write = upscale_file(self.up, source, out, self.opts)
            return None, write(), None
        except Exception as exc:  # one bad file never stops the others
            text = "".join(traceback.format_exception(exc)) if self.debug else None
            return failure_line(source, exc), [], text

    def _published_before(self, src: Path, target: Path) -> bool:
        """Is ``target``, found at the start of a file, the output a killed attempt of this file
        published (the same bytes as a fresh upscale)? The driver refused the outputs that existed
        before the run, so any other one is a racing writer's, refused as the serial run does."""
        if self.opts.overwrite or not target.exists():
            return False
        with tempfile.TemporaryDirectory(prefix="binsr-ray-") as tmp:
            check = Path(tmp) / target.name
            with self.engine:
                write = upscale_file(self.up, src, check, replace(self.opts, overwrite=True))
            write()
            if not filecmp.cmp(check, target, shallow=False):
                return False
        remove_stale_temps(target)  # killed after publishing, the attempt had not removed its temporary
        return True


def largest_first(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """``jobs`` by decreasing source file size, the longest-processing-time-first order (Graham
    1969): the last files handed out are the small ones, so no worker is left finishing a large
    image while the others idle. A file that cannot be read sorts last (its worker reports it)."""
    def size(job: tuple[Path, Path]) -> int:
        try:
            return job[0].stat().st_size
        except OSError:
            return -1

    return sorted(jobs, key=size, reverse=True)


def _connect(ray: Any, address: str, workers: int | None, threads: int) -> tuple[int, bool]:
    """Start or join Ray (a Ray this process already runs, as the tests' and the benchmark's, is
    used as it is); (workers, whether this call started it). Workers default to the CPUs Ray has
    divided by ``threads``; more than fit is a :class:`UsageError` (they would wait forever)."""
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address == LOCAL:  # options of a new Ray only: a running cluster has its own
            kwargs.update(include_dashboard=False, num_cpus=max(default_threads(), (workers or 1) * threads))
        on_term = signal.getsignal(signal.SIGTERM)
        try:
            with warnings.catch_warnings():  # Ray's own timeout warning repeats the error below
                warnings.simplefilter("ignore")
                ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"cannot reach the Ray cluster at {address}: {' '.join(str(exc).split())}") from None
        finally:
            if threading.current_thread() is threading.main_thread() and on_term is not None:
                signal.signal(signal.SIGTERM, on_term)  # Ray's handler would end the driver at once
    cpus = int(ray.cluster_resources().get("CPU", 0))
    fit = cpus // threads
    if workers is None:
        workers = max(1, fit)
    if workers > fit:
        if started:
            ray.shutdown()
        raise UsageError(f"--workers {workers} x --threads {threads} needs {workers * threads} CPUs; "
                         f"the Ray cluster has {cpus}")
    return workers, started


def _start_workers(ray: Any, args: argparse.Namespace, up: Upscaler, packed: bytes, n_files: int, threads: int,
                   opts: FileOptions) -> tuple[list[Any], Any, bool, float, int]:
    """Start or join Ray, put the packed model in its object store and wait for the workers (at
    most one per file) to load it: (actors, the model's reference, whether Ray was started here,
    seconds until they were ready, the number of nodes they run on)."""
    clock = time.perf_counter()
    workers, started = _connect(ray, args.ray, args.workers, threads)
    actor = ray.remote(num_cpus=threads, max_restarts=RETRIES, max_task_retries=RETRIES,
                       max_concurrency=in_flight(threads))(UpscaleWorker)
    debug = getattr(args, "debug", False)
    actors = [actor.remote(up.name, threads, opts, debug, args.self_ensemble) for _ in range(min(workers, n_files))]
    try:
        model = ray.put(packed)
        nodes = ray.get([worker.ready.remote([model]) for worker in actors])
    except BaseException:
        _stop(ray, actors, started)
        raise
    return actors, model, started, time.perf_counter() - clock, len(set(nodes))


def _stop(ray: Any, actors: list[Any], started: bool, unfinished: Iterable[Path] = ()) -> None:
    """End the workers: a Ray started here is shut down (its processes with it), and the
    temporaries its killed writers left beside ``unfinished`` outputs are removed, as the serial
    run removes its own on Ctrl-C; on a cluster the workers are killed and the next write of
    such a name removes them (:func:`binsr.files.remove_stale_temps`)."""
    if not started:
        for worker in actors:
            ray.kill(worker)
        return
    ray.shutdown()
    for target in unfinished:
        remove_stale_temps(target)


def upscale_on_ray(args: argparse.Namespace, up: Upscaler, jobs: list[tuple[Path, Path]], missing: list[str],
                   outdir: Path) -> int:
    """``binsr upscale --ray``: every ``(source, target)`` on Ray workers; one line per failure; the
    exit code (as the serial run's)."""
    ray = _import_ray()
    packed = packed_bytes(up, args.model)
    threads = args.threads or 1
    opts = FileOptions.from_args(args)
    todo, refused = distinct_targets(jobs)
    for src, target in list(todo):
        try:
            refuse_existing(target, opts.overwrite)  # before the run, so a file found later is a retry's
        except BinsrError as exc:
            todo.remove((src, target))
            refused.append((src, failure_line(src, exc)))
    actors, model, started, ready, nodes = (_start_workers(ray, args, up, packed, len(todo), threads, opts) if todo
                                            else ([], None, False, 0.0, 0))
    tally = Tally(len(jobs), args.quiet, missing)  # images/s of the workers, after Ray's start-up
    for _, line in refused:
        tally.failed(line)
    queue = iter(largest_first(todo))
    pending: dict[Any, tuple[Any, Path, Path]] = {}

    def feed(worker: Any) -> None:
        job = next(queue, None)
        if job is not None:
            pending[worker.run.remote([model], str(job[0]), str(job[1]))] = (worker, *job)

    try:
        for worker in actors:
            for _ in range(in_flight(threads)):
                feed(worker)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            worker, src, target = pending.pop(ref)
            try:
                line, notes, text = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker is gone for good: not fed again
                tally.failed(f"{src}: its Ray worker failed {RETRIES + 1} times: {' '.join(str(exc).split())[:300]}")
                if not pending:
                    for src, _ in queue:
                        tally.failed(f"{src}: no Ray worker left")
                continue
            if text:
                print(text, end="", file=sys.stderr)
            if line is None:
                tally.written(target, notes)
            else:
                tally.failed(line)
            feed(worker)
    finally:
        _stop(ray, actors, started, [target for _, _, target in pending.values()])
    how = f", {len(actors)} Ray worker{'s' * (len(actors) != 1)} x {threads} thread{'s' * (threads != 1)}"
    if actors:
        how += f" on {nodes} node{'s' * (nodes != 1)}, ready after {ready:.1f} s"
    return tally.finish(up, outdir, how)
