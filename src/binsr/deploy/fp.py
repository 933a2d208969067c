"""Full-precision parts of the runtime in NumPy (NHWC float32): convs as tiled im2col + sgemm
(``np.matmul``, OpenBLAS), PixelShuffle, LeakyReLU, sigmoid gates and bilinear upsampling."""

from __future__ import annotations

import ctypes
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from binsr.deploy.engine import _engine, check_buffer

__all__ = ["set_blas_threads", "conv2d", "winograd_weights", "conv3x3_winograd", "conv3x3_direct", "output_shape",
           "conv_output_shape", "leaky_relu", "sigmoid", "linear", "spatial_gate", "channel_sums", "channel_gate",
           "bilinear_add"]

_TILE_BYTES = 2 << 20  # im2col patch matrix per tile (fits L2 with the weights)


_pools: dict[int, ThreadPoolExecutor] = {}


def _run_parallel(fn: Callable[[int], None], items: range, threads: int) -> None:
    """``fn(i)`` for every item, on ``threads`` threads (the BLAS and the compiled transforms
    release the GIL); the runtime keeps BLAS itself single-threaded so nothing spins idle."""
    if threads <= 1 or len(items) <= 1:
        for i in items:
            fn(i)
        return
    pool = _pools.get(threads) or _pools.setdefault(threads, ThreadPoolExecutor(threads))
    for f in [pool.submit(fn, i) for i in items]:
        f.result()


def set_blas_threads(n: int) -> bool:
    """Set the thread count of the OpenBLAS that NumPy loaded (best effort; False if not found)."""
    with open("/proc/self/maps") as f:
        libs = {m.group(0) for m in re.finditer(r"/\S*openblas\S*\.so\S*", f.read())}
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False


def leaky_relu(x: np.ndarray, slope: float) -> np.ndarray:
    """In-place ``x if x >= 0 else slope * x`` for ``0 <= slope <= 1``."""
    return np.maximum(x, x * np.float32(slope), out=x)


def sigmoid(x: np.ndarray, fp64: bool = False) -> np.ndarray:
    """The logistic function, in place; ``fp64``: computed in float64 and rounded once, into a new
    array (the ``fp64`` flag of a ``sigmoid`` op, ``binsr.nn.exact``)."""
    if fp64:
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1
    return np.reciprocal(x, out=x)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray, fp64: bool = False, threads: int = 1,
           compiled: bool = True) -> np.ndarray:
    """``x @ w + b`` over the last axis of a channel-last map, ``w`` (in, out); ``fp64``: summed in
    float64 and rounded once (the ``fp64`` flag of a ``linear`` op, ``binsr.nn.exact``), by
    ``_engine.linear_fp64`` when ``compiled`` and built."""
    if fp64 and compiled and _engine is not None:
        return _engine.linear_fp64(x, w, b, threads)
    flat = x.reshape(-1, x.shape[-1])
    y = flat.astype(np.float64) @ w.astype(np.float64) + b if fp64 else flat @ w + b
    return y.astype(np.float32, copy=False).reshape(*x.shape[:-1], -1)


def _emit(out: np.ndarray, y0: int, y1: int, t: np.ndarray, bias: np.ndarray | None, leaky: float | None,
          shuffle: int) -> None:
    """Bias, LeakyReLU and PixelShuffle of output rows ``y0:y1`` (``t``: (rows, W, O)) into ``out``;
    a float64 ``t`` is rounded to float32 after the bias, before the LeakyReLU."""
    if bias is not None:
        t += bias
    t = t.astype(np.float32, copy=False)
    if leaky is not None:
        leaky_relu(t, leaky)
    r = shuffle
    if r == 1:
        out[y0:y1] = t
    else:  # channel c*r*r + i*r + j -> pixel (y*r + i, x*r + j), channel c
        rows, w, c = t.shape
        out.reshape(-1, r, w, r, c // (r * r))[y0:y1] = t.reshape(rows, w, -1, r, r).transpose(0, 3, 1, 4, 2)


def output_shape(h: int, w: int, cout: int, shuffle: int) -> tuple[int, int, int]:
    """(H, W, C) of a stride-1 same-size conv to ``cout`` channels followed by PixelShuffle(shuffle)."""
    return h * shuffle, w * shuffle, cout // (shuffle * shuffle)


def _geometry(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], padding: int,
              dilation: int) -> tuple[int, int, int]:
    """(span, Ho, Wo) of a stride-1 conv of an (H, W, C) map with (k*k*C, O) weights."""
    h, w, c = x_shape
    span = dilation * (int(round((weight_shape[0] // c) ** 0.5)) - 1)
    return span, h + 2 * padding - span, w + 2 * padding - span


def conv_output_shape(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], padding: int, dilation: int,
                      shuffle: int) -> tuple[int, int, int]:
    """(H, W, C) of :func:`conv2d`'s output."""
    _, ho, wo = _geometry(x_shape, weight_shape, padding, dilation)
    return output_shape(ho, wo, weight_shape[1], shuffle)


def _output(shape: tuple[int, int, int], out: np.ndarray | None) -> np.ndarray:
    """``out`` (a caller's buffer of this shape, reused: no page faults), else a new array."""
    return np.empty(shape, np.float32) if out is None else check_buffer(out, shape, np.float32)


_scratch = threading.local()


def _scratch_array(slot: str, shape: tuple[int, ...]) -> np.ndarray:
    """This thread's reusable float32 work array ``slot`` of ``shape`` (the Winograd strips)."""
    arr = getattr(_scratch, slot, None)
    if arr is None or arr.shape != shape:
        arr = np.empty(shape, np.float32)
        setattr(_scratch, slot, arr)
    return arr


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, padding: int = 0,
           dilation: int = 1, leaky: float | None = None, shuffle: int = 1, threads: int = 1,
           out: np.ndarray | None = None, fp64: bool = False) -> np.ndarray:
    """Zero-padded stride-1 conv of ``x`` (H, W, C) with ``weight`` (k*k*C, O) in (ky, kx, c) row
    order (im2col + sgemm); optional LeakyReLU and PixelShuffle(``shuffle``) fused per row tile;
    written into ``out`` when given. ``fp64``: summed in float64 (dgemm), rounded once before the
    LeakyReLU (:class:`binsr.nn.ExactConv2d`)."""
    if fp64:
        x, weight = x.astype(np.float64), weight.astype(np.float64)
    kkc, cout = weight.shape
    span, ho, wo = _geometry(x.shape, weight.shape, padding, dilation)
    xp = np.pad(x, ((padding, padding), (padding, padding), (0, 0))) if padding else x
    win = sliding_window_view(xp, (span + 1, span + 1), axis=(0, 1))[..., ::dilation, ::dilation]
    win = win.transpose(0, 1, 3, 4, 2)  # (ho, wo, ky, kx, c)
    out = _output(output_shape(ho, wo, cout, shuffle), out)
    rows = max(1, _TILE_BYTES // max(1, wo * kkc * x.itemsize))

    def tile(y0: int) -> None:
        y1 = min(ho, y0 + rows)
        t = np.matmul(win[y0:y1].reshape((y1 - y0) * wo, kkc), weight).reshape(y1 - y0, wo, cout)
        _emit(out, y0, y1, t, bias, leaky, shuffle)

    _run_parallel(tile, range(0, ho, rows), threads)
    return out


_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)


def winograd_weights(weight: np.ndarray, channels: int) -> np.ndarray | None:
    """3x3 weights (9*C, O) in (ky, kx, c) row order as G g G^T (36, C, O) for Winograd F(4x4, 3x3)
    (Lavin & Gray 2016), or None when the compiled transforms are missing."""
    if _engine is None:
        return None
    g = weight.astype(np.float64).reshape(3, 3, channels, -1)
    u = np.einsum("ai,ijco,bj->abco", _G, g, _G)
    return np.ascontiguousarray(u.reshape(36, channels, -1), dtype=np.float32)


def conv3x3_winograd(x: np.ndarray, u: np.ndarray, bias: np.ndarray | None = None, leaky: float | None = None,
                     shuffle: int = 1, threads: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`conv2d` for a 3x3 kernel, padding 1, dilation 1: compiled tile transforms, 36 sgemms
    (on per-thread strip buffers reused from strip to strip)."""
    h, w, c = x.shape
    cout = u.shape[2]
    nth, ntw = -(-h // 4), -(-w // 4)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = _output(output_shape(h, w, cout, shuffle), out)
    strip = max(1, _TILE_BYTES // max(1, ntw * 36 * max(c, cout) * 4))

    def rows(r0: int) -> None:
        r1 = min(nth, r0 + strip)
        tiles = (r1 - r0) * ntw
        v = _engine.wino_in(x, r0, r1, _scratch_array("v", (36, tiles, c)))
        m = np.matmul(v, u, out=_scratch_array("m", (36, tiles, cout)))
        _engine.wino_out(m, out, r0, r1, h, w, bias, -1.0 if leaky is None else leaky, shuffle)

    _run_parallel(rows, range(0, nth, strip), threads)
    return out


def conv3x3_direct(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, leaky: float | None = None,
                   threads: int = 1, out: np.ndarray | None = None, fp64: bool = False) -> np.ndarray:
    """:func:`conv2d` for a 3x3 kernel, padding 1, dilation 1, no shuffle, as direct compiled loops:
    for few input channels (the head conv's 3), where im2col + sgemm has K = 27."""
    h, w, _ = x.shape
    out = _output(output_shape(h, w, weight.shape[1], 1), out)
    if _engine is None:
        return conv2d(x, weight, bias, 1, 1, leaky, 1, threads, out=out, fp64=fp64)
    _engine.conv3x3_direct(np.ascontiguousarray(x, dtype=np.float32), weight, out, bias,
                           -1.0 if leaky is None else leaky, threads, fp64)
    return out


def spatial_gate(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, padding: int, dilation: int,
                 threads: int = 1, out: np.ndarray | None = None, compiled: bool = True,
                 path: str = "auto", sums: np.ndarray | None = None) -> np.ndarray:
    """SCALES' spatial gate ``sigmoid(conv(x) + b)``, one output channel, (H', W') float32: summed and
    squashed in float64 and rounded once, as :class:`binsr.nn.SpatialGate` does at inference (so
    any sum order gives the same float32). ``weight``: (k*k*C, 1). Compiled direct loops for a 3x3
    with padding 1 (unless ``compiled`` is False): the AVX-512 kernel where ``path`` is "auto" or
    "avx512" and the CPU has it, else the portable loops; otherwise this NumPy reference, one
    float64 matrix-vector product per tap. ``sums``: a (C,) float64 array that receives the
    per-channel sums of ``x`` for :func:`channel_gate` of the same map (the AVX-512 kernel sums the
    values as it reads them)."""
    span, ho, wo = _geometry(x.shape, weight.shape, padding, dilation)
    out = _output((ho, wo, 1), None if out is None else out[..., None])[..., 0]
    c = x.shape[2]
    if compiled and _engine is not None and weight.shape[0] == 9 * c and padding == 1 and dilation == 1:
        _engine.spatial_gate3x3(np.ascontiguousarray(x, dtype=np.float32), weight[:, 0], bias, out, threads, path,
                                sums)
        return out
    if sums is not None:
        sums[...] = channel_sums(x, compiled, threads)
    xp = np.pad(x.astype(np.float64), ((padding, padding), (padding, padding), (0, 0)))
    k = span // dilation + 1
    w = weight[:, 0].astype(np.float64).reshape(k, k, c)
    z = np.full((ho, wo), 0.0 if bias is None else float(bias[0]))
    for ky in range(k):
        for kx in range(k):
            z += xp[ky * dilation:ky * dilation + ho, kx * dilation:kx * dilation + wo] @ w[ky, kx]
    with np.errstate(over="ignore"):  # exp(-z) = inf for z < -709: the gate is 0, as in torch
        out[...] = 1 / (1 + np.exp(-z))
    return out


def channel_sums(x: np.ndarray, compiled: bool = True, threads: int = 1) -> np.ndarray:
    """Per-channel sums of an (H, W, C) float32 map in float64 (C,): compiled loops (unless
    ``compiled`` is False), else NumPy's float64 reduction; the same float32 means in any order."""
    if compiled and _engine is not None:
        return _engine.channel_sums(np.ascontiguousarray(x, dtype=np.float32), threads)
    return np.add.reduce(x.reshape(-1, x.shape[-1]), axis=0, dtype=np.float64)


def channel_gate(x: np.ndarray, weight: np.ndarray, out_channels: int, compiled: bool = True,
                 threads: int = 1, sums: np.ndarray | None = None) -> np.ndarray:
    """``sigmoid(Conv1d_k(GAP(x)))`` (zero padding k//2, no bias), nearest-resized to ``out_channels``:
    in float64, rounded once to float32, as :class:`binsr.nn.ChannelGate` does at inference. The
    sums: ``sums`` where given (from :func:`spatial_gate` of the same map), else
    :func:`channel_sums`."""
    total = channel_sums(x, compiled, threads) if sums is None else sums
    pooled = total / (x.shape[0] * x.shape[1])
    k = weight.shape[0]
    g = np.convolve(np.pad(pooled, k // 2), weight[::-1].astype(np.float64), mode="valid")
    if g.shape[0] != out_channels:
        g = g[(np.arange(out_channels) * g.shape[0]) // out_channels]
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-g))).astype(np.float32)


def _bilinear_axis(n_in: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of an upsampling axis as PyTorch's ``align_corners=False``:
    ``max((1 / scale) * (d + 0.5) - 0.5, 0)`` in float32."""
    src = np.maximum(np.float32(1 / np.float32(scale)) * (np.arange(n_in * scale, dtype=np.float32) + np.float32(0.5))
                     - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, lam


def bilinear_add(x: np.ndarray, y: np.ndarray, scale: int, threads: int = 1, compiled: bool = True) -> np.ndarray:
    """``y += `` bilinear upsampling of ``x`` (H, W, C) by an integer factor, ``align_corners=False``
    (PyTorch), in its order: ``hl0 * (l0 * a + l1 * b) + hl1 * (l0 * c + l1 * d)``; returns ``y``.
    The compiled form and NumPy's give the same bits."""
    if compiled and _engine is not None:
        _engine.bilinear_add(np.ascontiguousarray(x, dtype=np.float32), y, scale, threads)
        return y
    h, w, _ = x.shape
    y0, y1, ly = _bilinear_axis(h, scale)
    x0, x1, lx = _bilinear_axis(w, scale)
    rows = (1 - lx)[None, :, None] * x[:, x0] + lx[None, :, None] * x[:, x1]  # each input row along x
    y += (1 - ly)[:, None, None] * rows[y0] + ly[:, None, None] * rows[y1]
    return y
