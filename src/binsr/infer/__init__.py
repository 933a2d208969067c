"""Upscale your own pictures: model loading, both backends, tiled inference, every image kind.

``binsr upscale`` (:mod:`binsr.cli.upscale`) and ``binsr.upscale`` (:func:`upscale`) share this
module. A model is loaded once as an :class:`Upscaler` (:func:`load_upscaler`), then every image
goes through :func:`upscale_array`:

* **Colour** (RGB) goes through the model as float32 [0, 1] (8-bit values / 255, 16-bit values /
  65535) and is rounded back to the input's bit depth (MATLAB ``im2uint8`` rounding).
* **Gray** images stay gray: the gray value is replicated to R = G = B, the model runs on that,
  and the output is made gray again by the **mean of the three channels** (as
  :func:`binsr.evaluation.upscale_image` does; not the Y of YCbCr).
* **Alpha** is not seen by the model: it is upscaled separately with MATLAB bicubic
  (:func:`binsr.data.imresize`) and reattached.

Tiling: the image is cut into a grid of *cores* of at most ``tile`` LR pixels (sizes evened
out). Each tile is read with ``overlap`` extra LR pixels of context on every side; of its output,
the core plus ``overlap // 2`` pixels on each side is used, and neighbouring tiles are
cross-faded linearly over those ``overlap`` shared pixels (weights sum to 1). A used pixel is thus
at least ``overlap - overlap // 2`` LR pixels from a tile edge that is not an image edge, so the
tiled output equals the untiled one (up to float rounding) whenever that distance covers the
model's receptive radius (``srresnet_lite`` with B blocks: 2B + 2 LR pixels). The output is
preallocated at the input's dtype and filled tile by tile; only two bands of float rows (the
seams still waiting for their second tile row) are kept, so memory is the output plus O(tile) per thread.

Threads: an engine :class:`Upscaler` of N threads runs up to N tiles at once, each on a one-thread
lane (:meth:`Upscaler.map`), so memory holds up to N tiles' activations; an image of one tile runs
on all N threads (each residual body's rows cut into N parts, ``csrc/chain.cpp``).
"""

from __future__ import annotations

import math
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from binsr.errors import BinsrError, UsageError, finite_output
from binsr.pretrained import PREFIX, packed_file

__all__ = ["Upscaler", "load_upscaler", "open_packed", "upscale", "upscale_array", "check_tiling", "default_threads",
           "self_ensemble", "with_self_ensemble", "BACKENDS"]

BACKENDS = ("engine", "torch")
#: tile input starts are aligned to this many LR pixels (Winograd/row tiles of the engine line up
#: with those of an untiled run)
_ALIGN = 8
#: context (LR pixels) read around a tile when resizing alpha with bicubic (4 taps)
_ALPHA_CONTEXT = 4
#: smallest tile (LR pixels): below it a tile is mostly context
_MIN_TILE = 8


def default_threads() -> int:
    """CPUs this process may run on (``taskset`` respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _HeapGuard:
    """Give freed heap memory back to the system when the process has grown by ``budget`` bytes
    since the last time (glibc ``malloc_trim``; a no-op elsewhere).

    Tile after tile, glibc keeps the freed activations of earlier tiles in a fragmented heap: a
    4000x3000 input at x4 (549 MiB output, packed engine, 2 threads) peaked at about 1.3 GB RSS;
    with this guard (64 MB) at 1,041 MiB in the same time. A fixed 1 MB mmap threshold
    (``mallopt``) gets 947 MiB but re-faults every tile's activations and took 30-60% longer, so it
    is not used."""

    def __init__(self, budget: int = 64 << 20) -> None:
        self.budget, self.mark = budget, None
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            self._page = os.sysconf("SC_PAGE_SIZE")
        except (OSError, AttributeError, ValueError):  # pragma: no cover - not glibc
            self._trim = None

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def release_if_grown(self) -> None:
        if self._trim is None:
            return
        rss = self._rss()
        if self.mark is None or rss < self.mark:
            self.mark = rss
        elif rss - self.mark > self.budget:
            self._trim(0)
            self.mark = self._rss()


_heap = _HeapGuard()


@dataclass
class Upscaler:
    """A loaded model: ``forward`` maps float32 ``HWC`` RGB [0, 1] (h, w, 3) to (s*h, s*w, 3)."""

    forward: Callable[[np.ndarray], np.ndarray]
    scale: int
    backend: str
    name: str
    #: one line explaining a fallback from the engine to torch (or None)
    notice: str | None = None
    module: Any = field(default=None, repr=False)
    #: engine on several threads: makes a one-thread ``forward`` of the same model (a lane), and
    #: how many lanes may run at once (:meth:`map`)
    lane: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = field(default=None, repr=False)
    lanes: int = 1
    _free: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, init=False, repr=False)
    _made: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._checked(x, self.forward(x))

    def map(self, make: Callable[[int], np.ndarray], n: int) -> Iterator[np.ndarray]:
        """``self(make(k))`` for k = 0 .. n - 1, in order. With lanes (engine, several threads) and
        several inputs, up to ``lanes`` inputs run at once, each on a one-thread lane with its own
        depth-first chains, instead of one input at a time on all threads (which split each chain's
        rows into parts, one per thread, and meet at the seams). Lanes are made on first use, in the caller's thread, and kept;
        calls from several Python threads share them. ``make`` runs in the caller's thread."""
        width = min(self.lanes, n) if self.lane is not None else 1
        if width < 2:
            for k in range(n):
                yield self(make(k))
            return

        with self._lock:  # lanes are cheap to make (no file read); one that fails is not counted
            while self._made < width:
                self._free.put(self.lane())
                self._made += 1

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            f = self._free.get()
            try:
                return x, f(x)
            finally:
                self._free.put(f)

        pool = ThreadPoolExecutor(width, thread_name_prefix="binsr-lane")
        try:
            pending = deque(pool.submit(run, make(k)) for k in range(width))
            for k in range(width, n + width):
                x, out = pending.popleft().result()
                if k < n:
                    pending.append(pool.submit(run, make(k)))
                yield self._checked(x, out)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _checked(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        _heap.release_if_grown()
        h, w = x.shape[:2]
        if out.shape != (h * self.scale, w * self.scale, 3):
            raise BinsrError(f"model {self.name} gave shape {out.shape} for a {h}x{w} input; "
                             f"expected ({h * self.scale}, {w * self.scale}, 3): is it an x{self.scale} model?")
        return out


def self_ensemble(forward: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``forward`` averaged over the 8 flips and quarter turns of its input's first two axes, each
    output turned back first: the x8 geometric self-ensemble (Timofte et al. 2016, "Seven ways to
    improve example-based SR"; Lim et al. 2017, EDSR, whose "+" rows it gives). 8 times the work;
    the average is float64 (``HW`` or ``HWC`` in, as ``forward`` takes them)."""

    def run(x: np.ndarray) -> np.ndarray:
        total = None
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(x, k)
                y = forward(np.ascontiguousarray(t[:, ::-1] if flip else t))
                y = np.rot90(y[:, ::-1] if flip else y, -k)
                total = y.astype(np.float64) if total is None else total + y
        return total / 8

    return run


def with_self_ensemble(up: Upscaler) -> Upscaler:
    """``up`` with its forward (and its lanes') wrapped in :func:`self_ensemble`."""
    lane = up.lane
    return replace(up, forward=self_ensemble(up.forward),
                   lane=(lambda: self_ensemble(lane())) if lane is not None else None)


# ----------------------------------------------------------------------------------- loading


def _default_zoo_model(scale: int) -> str:
    from binsr.pretrained import default_model, zoo_names

    name = default_model(scale)
    if name is None:
        raise UsageError(f"no zoo model for x{scale} (zoo: {', '.join(zoo_names()) or 'empty'}); "
                         "pass --model FILE (.safetensors weights or a packed .bsr)")
    return name


def open_packed(path: str | os.PathLike, threads: int | None = None) -> Any:
    """A packed ``.bsr`` model on the engine (:class:`binsr.deploy.Runtime`; ``threads`` default:
    all this process may use); :class:`UsageError` when the file is missing."""
    from binsr.deploy import Runtime

    if not Path(path).is_file():
        raise UsageError(f"packed model not found: {path}")
    return Runtime(path, threads=threads or default_threads())


def _packed_upscaler(path: str | Path, name: str, scale: int | None, threads: int | None) -> Upscaler:
    rt = open_packed(path, threads)
    return _engine_upscaler(rt, name, _check_scale(name, rt.scale, scale))


def _engine_upscaler(rt: Any, name: str, scale: int, module: Any = None) -> Upscaler:
    """An engine Upscaler: with several threads, tiles run side by side on one-thread lanes
    (:meth:`binsr.deploy.Runtime.lane`)."""
    lane = (lambda: _engine_forward(rt.lane())) if rt.threads > 1 else None
    return Upscaler(_engine_forward(rt), scale, "engine", name, module=module, lane=lane, lanes=rt.threads)


def _check_scale(name: str, own: int, scale: int | None) -> int:
    if scale is not None and int(scale) != int(own):
        raise UsageError(f"{name} is an x{own} model, not x{scale}; drop --scale or pass --scale {own}")
    return int(own)


def _torch_module(model: Any, scale: int | None) -> tuple[Any, str, int]:
    """(nn.Module in eval mode, display name, scale) for a zoo name, weights file or module."""
    from torch import nn

    if isinstance(model, nn.Module):
        own = getattr(model, "scale", None)
        return model.eval(), type(model).__name__, int(own) if own is not None else int(scale or 4)
    from binsr.models import PREFIX, from_weights, load_zoo, zoo_card

    if model.startswith(PREFIX):
        card = zoo_card(model)
        return load_zoo(model), model, _check_scale(model, card["scale"], scale)
    from binsr.train.checkpoint import read_signature

    path = Path(model)
    if not path.is_file():
        raise UsageError(f"model {model!r} is neither a zoo name (zoo:<name>, see binsr zoo) nor a file")
    sig = read_signature(path)
    own = _check_scale(path.name, sig["scale"], scale)
    return from_weights(path), path.name, own


def _torch_forward(module: Any, name: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
            return finite_output(module(t)[0].permute(1, 2, 0).float().cpu().numpy(), name)

    return forward


def _engine_forward(runtime: Any) -> Callable[[np.ndarray], np.ndarray]:
    def forward(x: np.ndarray) -> np.ndarray:
        return runtime(np.ascontiguousarray(x.transpose(2, 0, 1))[None])[0].transpose(1, 2, 0)

    return forward


def load_upscaler(model: Any = None, scale: int | None = None, backend: str = "engine",
                  threads: int | None = None, self_ensemble: bool = False) -> Upscaler:
    """Load a model for :func:`upscale_array`.

    Args:
        model: ``None`` (the zoo model whose card has ``scale``, default x4), ``"zoo:<name>"``, a
            binsr weights file (``.safetensors``, rebuilt from its signature), a packed ``.bsr``
            file (engine only), an ``nn.Module`` or an :class:`Upscaler` (returned as is).
        scale: the upscaling factor; must be the model's own (``UsageError`` otherwise).
        backend: ``"engine"`` (export to a packed file in a temporary folder and run
            :class:`binsr.deploy.Runtime`; falls back to torch, with :attr:`Upscaler.notice`
            set, when the architecture cannot be exported) or ``"torch"``.
        threads: CPU threads (engine kernels / ``torch.set_num_threads``); default: all CPUs
            this process may use for the engine, torch's own setting for torch.
        self_ensemble: average over the 8 flips and quarter turns (:func:`with_self_ensemble`;
            8 times the work).
    """
    up = _load_upscaler(model, scale, backend, threads)
    return with_self_ensemble(up) if self_ensemble else up


def _load_upscaler(model: Any, scale: int | None, backend: str, threads: int | None) -> Upscaler:
    if isinstance(model, Upscaler):
        _check_scale(model.name, model.scale, scale)
        return model
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1")
    if model is None:
        model = _default_zoo_model(int(scale or 4))
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str) and model.lower().endswith(".bsr"):
        if backend != "engine":
            raise UsageError(f"{model} is a packed model: it runs with --backend engine only")
        return _packed_upscaler(model, Path(model).name, scale, threads)
    if isinstance(model, str) and model.startswith(PREFIX) and backend == "engine":
        packed = packed_file(model)  # the zoo's own export: no torch to load
        if packed is not None:
            return _packed_upscaler(packed, model, scale, threads)
    module, name, own = _torch_module(model, scale)
    if scale is not None:
        _check_scale(name, own, scale)
    notice = None
    if backend == "engine":
        from binsr.deploy import Runtime, export_packed

        try:
            with tempfile.TemporaryDirectory(prefix="binsr-upscale-") as tmp:
                packed = Path(tmp) / "model.bsr"
                export_packed(module, packed)
                rt = Runtime(packed, threads=threads or default_threads())  # tensors are read into memory
            return _engine_upscaler(rt, name, own, module)
        except BinsrError as exc:
            notice = f"the packed engine cannot run {name} ({exc}); using the PyTorch backend"
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return Upscaler(_torch_forward(module, name), own, "torch", name, notice, module)


# ----------------------------------------------------------------------------------- tiling


def _cores(n: int, tile: int | None) -> list[int]:
    """Boundaries of ``ceil(n / tile)`` cores of (almost) equal size covering ``[0, n)``."""
    if not tile or n <= tile:
        return [0, n]
    k = math.ceil(n / tile)
    return [round(i * n / k) for i in range(k + 1)]


class _Span(NamedTuple):
    """Tile ``i`` along one axis (LR pixels): its core ``[c0, c1)``, the range ``[u0, u1)`` whose
    output it contributes (the core plus ``band`` past each inner seam), the input it reads
    ``[i0, i1)`` (``overlap`` of context, start aligned) and the HR blending weights over
    ``[u0*s, u1*s)``: 1 inside, a linear ramp over the ``2*band*s`` HR pixels on each inner seam."""

    c0: int
    c1: int
    u0: int
    u1: int
    i0: int
    i1: int
    first: bool
    last: bool
    weights: np.ndarray


def _span(cores: list[int], i: int, band: int, overlap: int, size: int, s: int) -> _Span:
    c0, c1 = cores[i], cores[i + 1]
    first, last = i == 0, i == len(cores) - 2
    u0, u1 = (c0 if first else c0 - band), (c1 if last else c1 + band)
    w = np.ones((u1 - u0) * s, np.float32)
    n = 2 * band * s
    if n:
        ramp = (np.arange(n, dtype=np.float32) + 0.5) / n
        if not first:
            w[(c0 - band - u0) * s : (c0 - band - u0) * s + n] = ramp
        if not last:
            w[(c1 - band - u0) * s : (c1 - band - u0) * s + n] = 1 - ramp
    return _Span(c0, c1, u0, u1, max(0, (c0 - overlap) // _ALIGN * _ALIGN), min(size, c1 + overlap), first, last, w)


def _to_float(block: np.ndarray, peak: float) -> np.ndarray:
    x = block.astype(np.float32)
    if peak != 1.0:
        x /= np.float32(peak)
    return x


def _quantize(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8 or dtype == np.uint16:
        peak = 255.0 if dtype == np.uint8 else 65535.0
        y = np.clip(x * np.float32(peak), 0, peak)
        y += 0.5
        return np.floor(y, out=y).astype(dtype)
    return x.astype(dtype)


def _resize_alpha(alpha: np.ndarray, s: int) -> np.ndarray:
    from binsr.data import imresize

    if alpha.dtype == np.uint8:
        return imresize(alpha, s)
    if alpha.dtype == np.uint16:
        up = imresize(alpha.astype(np.float64), s)
        return np.floor(np.clip(up, 0, 65535) + 0.5).astype(np.uint16)
    return np.clip(imresize(alpha.astype(np.float64), s), 0, 1).astype(np.float32)


def check_tiling(tile: int | None, overlap: int) -> None:
    """:class:`UsageError` for a tile size or overlap :func:`upscale_array` cannot run (checked once,
    before any image, by ``binsr upscale``)."""
    if tile is not None and tile < 0 or overlap < 0:
        raise UsageError("--tile and --tile-overlap must not be negative")
    if tile and tile < _MIN_TILE:
        raise UsageError(f"--tile must be at least {_MIN_TILE} pixels (or 0 for no tiling)")


def upscale_array(up: Upscaler, pixels: np.ndarray, alpha: np.ndarray | None = None, tile: int | None = 256,
                  overlap: int = 16, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Upscale ``HW`` gray or ``HWC`` RGB (``uint8``, ``uint16`` or float in [0, 1]) and an optional
    ``HW`` alpha plane of the same dtype, tile by tile (see the module docstring).

    Returns ``(s*H, s*W)`` gray, ``(s*H, s*W, 2)`` gray + alpha, ``(s*H, s*W, 3)`` RGB or
    ``(s*H, s*W, 4)`` RGBA, in the input's dtype (float: computed in float32, returned in the
    input's float dtype, not clipped).
    ``tile=None`` or 0 runs the whole image at once. ``progress(n)`` is called after each tile with ``n=1``.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise BinsrError(f"expected an HW gray or HWC RGB image, got shape {pixels.shape}")
    dtype = pixels.dtype
    if dtype not in (np.uint8, np.uint16) and not np.issubdtype(dtype, np.floating):
        raise BinsrError(f"expected uint8, uint16 or float pixels, got {dtype}")
    check_tiling(tile, overlap)
    peak = 255.0 if dtype == np.uint8 else 65535.0 if dtype == np.uint16 else 1.0
    gray = pixels.ndim == 2
    H, W = pixels.shape[:2]
    if H == 0 or W == 0:
        raise BinsrError("empty image")
    if alpha is not None and alpha.shape != (H, W):
        raise BinsrError(f"alpha plane {alpha.shape} does not match the image {H}x{W}")
    s = up.scale
    colour = 1 if gray else 3
    out_dtype = dtype  # the model runs in float32; float64 (or float16) input comes back as such
    out = np.empty((H * s, W * s, colour + (alpha is not None)), out_dtype)
    ys, xs = _cores(H, tile), _cores(W, tile)
    ny, nx = len(ys) - 1, len(xs) - 1
    by = min(overlap // 2, min(np.diff(ys)) // 2) if ny > 1 else 0
    bx = min(overlap // 2, min(np.diff(xs)) // 2) if nx > 1 else 0
    band_h, band_w = 2 * by * s, 2 * bx * s
    rys = [_span(ys, i, by, overlap, H, s) for i in range(ny)]
    rxs = [_span(xs, j, bx, overlap, W, s) for j in range(nx)]

    def tile(k: int) -> np.ndarray:  # the model's input for tile k, row by row
        ry, rx = rys[k // nx], rxs[k % nx]
        x = _to_float(pixels[ry.i0 : ry.i1, rx.i0 : rx.i1], peak)
        return np.repeat(x[..., None], 3, axis=2) if gray else x

    with closing(up.map(tile, ny * nx)) as results:  # the tiles' outputs, in row order
        prev_band: np.ndarray | None = None  # HR rows around seam ys[i], waiting for tile row i
        for ry in rys:
            top = 0 if ry.first else band_h
            bot = 0 if ry.last else band_h
            cur_band = None if ry.last else np.zeros((band_h, W * s, colour), np.float32)
            carry: np.ndarray | None = None  # HR columns around seam xs[j], waiting for tile j
            for rx in rxs:
                res = next(results)
                res = res[(ry.u0 - ry.i0) * s : (ry.u1 - ry.i0) * s, (rx.u0 - rx.i0) * s : (rx.u1 - rx.i0) * s]
                res = res.mean(axis=2, keepdims=True, dtype=np.float32) if gray else res.astype(np.float32, copy=True)
                res *= ry.weights[:, None, None]
                res *= rx.weights[None, :, None]
                if carry is not None:
                    res[:, :band_w] += carry
                keep = res.shape[1] - (0 if rx.last else band_w)
                carry = None if rx.last else res[:, keep:].copy()
                done = res[:, :keep]
                c0, c1 = rx.u0 * s, rx.u0 * s + keep
                if top:
                    prev_band[:, c0:c1] += done[:top]
                out[ry.u0 * s + top : ry.u1 * s - bot, c0:c1, :colour] = _quantize(done[top : done.shape[0] - bot],
                                                                                   out_dtype)
                if bot:
                    cur_band[:, c0:c1] = done[done.shape[0] - bot :]
                if alpha is not None:
                    a0, a1 = max(0, ry.c0 - _ALPHA_CONTEXT), min(H, ry.c1 + _ALPHA_CONTEXT)
                    b0, b1 = max(0, rx.c0 - _ALPHA_CONTEXT), min(W, rx.c1 + _ALPHA_CONTEXT)
                    a = _resize_alpha(alpha[a0:a1, b0:b1], s)
                    out[ry.c0 * s : ry.c1 * s, rx.c0 * s : rx.c1 * s, colour] = a[(ry.c0 - a0) * s : (ry.c1 - a0) * s,
                                                                                  (rx.c0 - b0) * s : (rx.c1 - b0) * s]
                if progress is not None:
                    progress(1)
            if prev_band is not None:
                out[(ry.c0 - by) * s : (ry.c0 + by) * s, :, :colour] = _quantize(prev_band, out_dtype)
            prev_band = cur_band
    return out.reshape(H * s, W * s) if out.shape[2] == 1 else out


def n_tiles(shape: tuple[int, ...], tile: int | None) -> int:
    """Number of tiles :func:`upscale_array` runs for an image of ``shape``."""
    return (len(_cores(shape[0], tile)) - 1) * (len(_cores(shape[1], tile)) - 1)


# ----------------------------------------------------------------------------------- API


def _as_arrays(image: Any, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixels, alpha) of a path, a PIL image or an array (``HW``, ``HWC`` with 1-4 channels)."""
    if isinstance(image, (str, os.PathLike)):
        from binsr.data.io import read_image_info

        arr, alpha, _ = read_image_info(image, max_pixels=max_pixels)
        return arr, alpha
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from binsr.data.io import _from_pil

        return _from_pil(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        return arr[..., :-1] if arr.shape[2] == 4 else arr[..., 0], arr[..., -1]
    return arr, None


def upscale(image_or_path: Any, model: Any = None, scale: int | None = None, tile: int | None = 256,
            tile_overlap: int = 16, backend: str = "engine", threads: int | None = None,
            max_pixels: int | None = None, self_ensemble: bool = False) -> np.ndarray:
    """Upscale one image with a binsr model, as ``binsr upscale`` does; returns a NumPy array.

    Args:
        image_or_path: a file path (any format :func:`binsr.data.read_image` reads; EXIF
            orientation applied), a PIL image, or an array: ``HW`` gray, ``HWC`` with 3 (RGB),
            4 (RGBA) or 2 (gray + alpha) channels, ``uint8``, ``uint16`` or float in [0, 1].
        model, scale, backend, threads, self_ensemble: see :func:`load_upscaler` (pass an
            :class:`Upscaler` from it to reuse one model across calls).
        tile, tile_overlap: tile size and context in LR pixels (``tile=None``: whole image).
        max_pixels: refuse a file with more pixels (decompression bomb guard).

    Returns:
        The ``scale`` times larger image in the input's layout and dtype (gray stays gray, alpha
        stays, 16 bits stay 16 bits, float64 stays float64; float is not clipped to [0, 1]).
    """
    pixels, alpha = _as_arrays(image_or_path, max_pixels)
    up = load_upscaler(model, scale, backend, threads, self_ensemble)
    return upscale_array(up, pixels, alpha, tile, tile_overlap)
