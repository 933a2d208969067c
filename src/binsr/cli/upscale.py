"""``binsr upscale``: upscale your own pictures (files, folders, globs) with a binsr model."""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

    from binsr.infer import Upscaler

HELP = """\
Upscale images with a binary SR model. INPUT: image files, folders (their images; subfolders with
--recursive) or glob patterns. Outputs go to OUTDIR as <stem><suffix>.<ext>; an existing output is
never replaced without --overwrite (the name is claimed atomically, so two runs racing for one name
never both succeed), and every file is written to a temporary name and renamed. Gray stays gray
(model on R=G=B, channel mean back), alpha is upscaled with bicubic and kept, 16-bit PNG/TIFF stay
16-bit, EXIF orientation is applied and the ICC profile kept. GIF: the first frame (written as PNG
with --ext same). A bad file is reported in one line and skipped; files a folder holds that are not
read are named. --ray spreads the files over Ray workers (this machine or a cluster) with the same
outputs and messages. Exit code: 0 all done, 1 some failed, 2 usage error.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("upscale", help="upscale your own images", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", "--outdir", dest="outdir", required=True, metavar="OUTDIR",
                   help="output folder (created)")
    p.add_argument("--model", help="zoo:<name>, a binsr weights .safetensors file or a packed .bsr "
                                   "(default: the zoo model for --scale)")
    p.add_argument("--scale", type=int, help="upscaling factor (default: the model's; 4 for the default model)")
    p.add_argument("--tile", type=int, default=256, help="tile size in input pixels, 0 = whole image (default 256)")
    p.add_argument("--tile-overlap", type=int, default=16,
                   help="context in input pixels read around each tile; seams are cross-faded over it (default 16)")
    p.add_argument("--suffix", help="added to the output file name (default: _x<scale>)")
    p.add_argument("--ext", default="png", choices=["png", "jpg", "webp", "same"],
                   help="output format (default png; 'same' keeps the input's)")
    p.add_argument("--png-level", type=int, default=1, choices=range(10), metavar="0-9",
                   help="zlib level of PNG outputs, lossless at every level (default 1, as OpenCV's imwrite: "
                        "about 3x faster to write than 6, files about 13%% larger)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--threads", type=int, help="CPU threads (default: all this process may use)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the model's outputs over the 8 flips and quarter turns of each tile (8x the work)")
    p.add_argument("--backend", default="engine", choices=["engine", "torch"],
                   help="engine: packed 1-bit runtime (default; falls back to torch if the model cannot be "
                        "exported); torch: PyTorch forward")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--recursive", action="store_true", help="descend into subfolders (and ** in globs)")
    p.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="skip inputs with more pixels, the decompression-bomb guard (default 50,000,000)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray workers (pip install 'binsr[ray]'): without ADDRESS a Ray on this machine, "
                        "with it (auto, ray://HOST:10001) an existing cluster; inputs and OUTDIR on a file system "
                        "every node sees. Put it after the INPUTs")
    p.add_argument("--workers", type=int, help="Ray workers, each with --threads threads (default 1) "
                                               "(default: the cluster's CPUs / --threads)")
    p.set_defaults(func=run)


def _skip_reason(path: Path, out_resolved: Path) -> str | None:
    """Why a file in an INPUT folder is not read (``None``: it is read)."""
    from binsr.data.io import READ_EXTENSIONS

    if path.name.startswith("."):
        return "hidden"
    if path.is_dir():
        return "a folder: pass --recursive"
    if path.suffix.lower() not in READ_EXTENSIONS:
        return "not an image extension"
    if out_resolved in path.resolve().parents:
        return "inside the output folder"
    return None


def collect_inputs(inputs: list[str], recursive: bool, outdir: Path) -> tuple[list[tuple[Path, Path]], list[str],
                                                                                 dict[Path, list[str]]]:
    """``[(file, name relative to its INPUT folder)]``, the INPUTs that matched nothing, and for each
    INPUT folder the files it holds that are not read (``"name (reason)"``).

    Folders give their image files (by extension), files are taken as given (a file that is not
    an image is then reported when read), globs give every file they match. An INPUT folder that
    is OUTDIR is a :class:`UsageError`: its outputs would be read as inputs by the next run."""
    from binsr.errors import UsageError

    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    skipped: dict[Path, list[str]] = {}
    seen: set[Path] = set()
    out_resolved = outdir.resolve()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, rel))

    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            if path.resolve() == out_resolved:
                raise UsageError(f"the output folder {outdir} is the input folder {spec}: choose another -o "
                                 "(outputs would be read as inputs next time)")
            entries = sorted(path.rglob("*") if recursive else path.glob("*"))
            for f in entries:
                if recursive and f.is_dir():
                    continue
                reason = _skip_reason(f, out_resolved)
                if reason is None:
                    add(f, f.relative_to(path))
                elif not any(part.startswith(".") for part in f.relative_to(path).parts[:-1]):
                    skipped.setdefault(path, []).append(f"{f.relative_to(path)} ({reason})")
        elif path.exists() or path.is_symlink():
            add(path, Path(path.name))
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=recursive))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                missing.append(spec)
            for f in files:
                add(f, Path(f.name))
        else:
            missing.append(spec)
    return found, missing, skipped


def _check_suffix(suffix: str) -> None:
    """``--suffix`` stays inside the file name: no path separators, no ``..``, no NUL."""
    from binsr.errors import UsageError

    seps = {"/", "\\", os.sep, os.altsep or "/"}
    if any(c in suffix for c in seps) or ".." in suffix or "\0" in suffix:
        raise UsageError(f"--suffix {suffix!r} must be part of a file name (no path separators, '..' or NUL)")


def _output_ext(src: Path, ext: str) -> str:
    from binsr.data.io import IMAGE_EXTENSIONS

    if ext == "same":
        same = src.suffix.lower()
        return same if same in IMAGE_EXTENSIONS else ".png"  # GIF (256 colours) is not written
    return "." + ext


def _fit_format(arr, ext: str, notes: list[str]):
    """Adapt the upscaled array to what the output format can store (notes say what changed)."""
    import numpy as np

    tiff16 = ext in (".tif", ".tiff") and not (arr.ndim == 3 and arr.shape[2] == 2)
    if arr.dtype == np.uint16 and not (ext == ".png" or tiff16):
        notes.append(f"{ext} holds 8 bits per sample here: reduced from 16")
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if ext in (".jpg", ".jpeg", ".bmp") and arr.ndim == 3 and arr.shape[2] in (2, 4):
        notes.append(f"{ext} has no alpha channel: alpha dropped")
        arr = arr[..., 0] if arr.shape[2] == 2 else np.ascontiguousarray(arr[..., :3])
    return arr


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends the run as Ctrl-C does: temporary files are removed on the way out."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from binsr.errors import UsageError
    from binsr.infer import check_tiling

    check_tiling(args.tile or None, args.tile_overlap)
    if args.max_pixels < 1:
        raise UsageError("--max-pixels must be positive")
    if args.ray is None and args.workers is not None:
        raise UsageError("--workers needs --ray")
    if args.ray is not None and (args.backend != "engine" or (args.workers is not None and args.workers < 1)):
        raise UsageError("--ray runs the packed engine (not --backend torch) on at least one --workers")
    if args.suffix is not None:
        _check_suffix(args.suffix)
    outdir = Path(args.outdir)
    in_the_way = next(p for p in (outdir, *outdir.parents) if p.exists())  # made later, by the first write
    if not in_the_way.is_dir():  # a file there or above: one usage line, not a failure per image
        raise UsageError(f"output folder {outdir} cannot be created: {in_the_way} is not a folder")
    files, missing, skipped = collect_inputs(args.inputs, args.recursive, outdir)
    for folder, names in skipped.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(f"binsr upscale: note: not read from {folder}: {shown}", file=sys.stderr)
    if not files and not missing:
        raise UsageError(f"no images found in {' '.join(args.inputs)}")

    from binsr.infer import load_upscaler

    up = load_upscaler(args.model, args.scale, args.backend, 1 if args.ray and not args.threads else args.threads,
                       args.self_ensemble)
    if up.notice:
        print(f"binsr upscale: note: {up.notice}", file=sys.stderr)
    suffix = f"_x{up.scale}" if args.suffix is None else args.suffix
    jobs = [(src, outdir / rel.parent / f"{rel.stem}{suffix}{_output_ext(src, args.ext)}") for src, rel in files]
    sources = {src.resolve(): src for src, _ in files}
    for src, target in jobs:
        if target.resolve() in sources:
            raise UsageError(f"output {target} would replace the input {sources[target.resolve()]}; "
                             "choose another --suffix, --ext or -o")
    if args.ray is not None:
        from binsr.infer.ray import upscale_on_ray as runner
    else:
        runner = _upscale_all
    if threading.current_thread() is not threading.main_thread():
        return runner(args, up, jobs, missing, outdir)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return runner(args, up, jobs, missing, outdir)
    finally:
        signal.signal(signal.SIGTERM, previous)


def refuse_existing(target: Path, overwrite: bool) -> None:
    """An existing output is not replaced without ``--overwrite`` (checked before the work, to save it;
    the write itself claims the name, :func:`binsr.files.atomic_write`)."""
    from binsr.errors import BinsrError

    if target.exists() and not overwrite:
        raise BinsrError(f"output {target} exists (pass --overwrite to replace it)")


@dataclass(frozen=True)
class FileOptions:
    """The options :func:`upscale_file` needs: plain values, so that they travel to Ray workers."""

    tile: int | None
    tile_overlap: int
    max_pixels: int
    overwrite: bool
    png_level: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FileOptions:
        return cls(args.tile or None, args.tile_overlap, args.max_pixels, args.overwrite, args.png_level)


def upscale_file(up: Upscaler, src: Path, target: Path, opts: FileOptions,
                 tiles: tqdm | None = None) -> Callable[[], list[str]]:
    """The per-file work of ``binsr upscale``, the same in the serial run and on Ray workers
    (:mod:`binsr.infer.ray`): refuse an existing ``target``, read ``src``, upscale it and fit it to
    ``target``'s format. Returns ``write()``, which writes ``target`` atomically (never replacing it
    without ``opts.overwrite``) and returns the notes on what changed; the caller may run it in
    another thread while the next file is upscaled. ``tiles``: a tqdm bar, reset per file, that
    counts its tiles."""
    from binsr.data.io import read_image_info, write_image
    from binsr.infer import n_tiles, upscale_array

    refuse_existing(target, opts.overwrite)
    pixels, alpha, info = read_image_info(src, max_pixels=opts.max_pixels)
    if tiles is not None:
        tiles.reset(total=n_tiles(pixels.shape, opts.tile))
        tiles.set_description_str(src.name, refresh=False)
    out = upscale_array(up, pixels, alpha, opts.tile, opts.tile_overlap,
                        progress=None if tiles is None else tiles.update)
    del pixels, alpha
    notes: list[str] = list(info["notes"])
    out = _fit_format(out, target.suffix.lower(), notes)
    icc = info.get("icc_profile")

    def write() -> list[str]:
        write_image(target, out, overwrite=opts.overwrite, icc_profile=icc, png_level=opts.png_level)
        return notes

    return write


def failure_line(src: Path, exc: BaseException) -> str:
    """The one line ``binsr upscale`` prints for a file that failed, naming the file."""
    from binsr.errors import BinsrError

    if isinstance(exc, MemoryError):
        reason = f"{src}: out of memory (try a smaller --tile)"
    else:
        reason = str(exc) if isinstance(exc, BinsrError) else f"{src}: {type(exc).__name__}: {exc}"
        if isinstance(exc, BinsrError) and str(src) not in reason:
            reason = f"{src}: {reason}"
    return " ".join(reason.split())


def distinct_targets(jobs: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """``jobs`` without those whose target another job writes (each with its failure line)."""
    planned: dict[Path, Path] = {}
    kept, dropped = [], []
    for src, target in jobs:
        key = target.resolve()
        if key in planned:
            dropped.append((src, f"output {target} would also be written from {planned[key]}; rename one of them"))
        else:
            planned[key] = src
            kept.append((src, target))
    return kept, dropped


class Tally:
    """A run's per-file results: the progress bar over files, one line per failure and per note,
    the summary line (with images/s) and the exit code."""

    def __init__(self, total: int, quiet: bool, missing: list[str]) -> None:
        from tqdm import tqdm

        self.failures: list[str] = []
        self.done = 0
        for spec in missing:
            self.failed(f"{spec}: no such file or folder", count=False)
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, desc="images", unit="img", disable=quiet, position=0, file=sys.stderr)

    def failed(self, line: str, count: bool = True) -> None:
        from tqdm import tqdm

        self.failures.append(line)
        tqdm.write(f"binsr upscale: failed: {line}", file=sys.stderr)
        if count:
            self.bar.update(1)

    def written(self, target: Path, notes: list[str]) -> None:
        from tqdm import tqdm

        for note in notes:
            tqdm.write(f"binsr upscale: note: {target.name}: {note}", file=sys.stderr)
        self.done += 1
        self.bar.update(1)

    def finish(self, up: Upscaler, outdir: Path, how: str = "") -> int:
        """Print the summary line; the exit code (1 when any file failed)."""
        self.bar.close()
        seconds = time.perf_counter() - self.start
        rate = f", {self.done / seconds:.3f} images/s" if self.done and seconds > 0 else ""
        print(f"upscaled {self.done} image{'s' * (self.done != 1)} x{up.scale} in {seconds:.2f} s{rate} "
              f"({up.backend} backend, {up.name}{how}); {len(self.failures)} failed"
              + (f" -> {outdir}" if self.done else ""))
        return 1 if self.failures else 0


def _upscale_all(args: argparse.Namespace, up, jobs: list[tuple[Path, Path]], missing: list[str], outdir: Path) -> int:
    """Upscale and write every ``(source, target)``; one line per failure; the exit code."""
    from tqdm import tqdm

    tally = Tally(len(jobs), args.quiet, missing)
    jobs, dropped = distinct_targets(jobs)
    for src, line in dropped:
        tally.failed(line)
    opts = FileOptions.from_args(args)

    def fail(src: Path, exc: BaseException) -> None:
        if getattr(args, "debug", False) and not isinstance(exc, MemoryError):
            traceback.print_exception(exc)
        tally.failed(failure_line(src, exc))

    def finish(job: tuple[Future, Path, Path] | None) -> None:
        """Wait for an image's write; count it or report it."""
        if job is None:
            return
        future, src, target = job
        try:
            notes = future.result()
        except Exception as exc:  # one bad file never stops the others
            fail(src, exc)
        else:
            tally.written(target, notes)

    tiles = tqdm(desc="tiles", unit="tile", leave=False, disable=args.quiet, position=1, file=sys.stderr)
    # each image is encoded and written (libdeflate, zlib and Pillow release the GIL) while the next
    # one is upscaled; one write in flight at a time, so memory holds at most two outputs
    writing: tuple[Future, Path, Path] | None = None
    with ThreadPoolExecutor(max_workers=1) as writer:
        for src, target in jobs:
            try:
                write = upscale_file(up, src, target, opts, tiles)
            except Exception as exc:  # one bad file never stops the others
                fail(src, exc)
                continue
            finish(writing)
            writing = (writer.submit(write), src, target)
            del write
        finish(writing)
    tiles.close()
    return tally.finish(up, outdir)
