"""Binary convolution on packed activations: the compiled kernels (AVX-512 / AVX2 / NEON / portable
C++, one source file per ISA in ``csrc/``), or a NumPy path when the extension was not built.

On CPUs with AMX-INT8 (Sapphire Rapids and later) the "avx512" path computes the same exact dots
as an int8 tile GEMM (input bits as 0/1 bytes, weights as +-1); set ``BINSR_AMX=0`` to run the
VPOPCNTDQ kernel instead (``_engine.cpu_features()["amx"]`` tells which one runs).

Float outputs larger than a quarter of the core's L3 are written with non-temporal stores (the
next layer could not read them from the L3 anyway); ``BINSR_STREAM_MIN_BYTES`` sets another limit
in bytes, read once per process (``benchmarks/stream_threshold.py`` measures where it pays).

``dot = C_in_per_group * k * k - 2 * popcount(x ^ w)`` (exact int32), input padded with +1 (all-ones
words), stride 1. A fused epilogue turns dots into the next tensor, in this order::

    v = ((dot * scale[o]) * pix[p]) * chan[o] + bias[o]   (one fused multiply-add without pix, chan)
    v = v + pix[p] * gate_bias[o]                         (SCALES' gated linear bias; product rounded first)
    v = v + residual_0[p, o] + ...                        (up to 3 residuals)
    v = PReLU_slope(v - act_shift[o]) + act_bias[o]      (RPReLU; before the residuals if act_first)
    v = v / div                                           (BBCU's residual alignment, after an act_first RPReLU)

with ``post_scale`` (EDSR's residual scaling, in PyTorch's order ``x + unit(t) * r``) the sum
after the first ``post_after`` residuals is multiplied by it before the others are added.
    -> float32 NHWC and/or the sign bits of (v >= thr[o]), packed (see :mod:`bitpack`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from binsr.deploy.bitpack import pack_bits, unpack_bits, unpack_weights, words

try:
    from binsr.deploy import _engine
except ImportError:  # no compiler at install time: NumPy path only
    _engine = None

__all__ = ["available_paths", "isa", "kernel", "resolve_path", "aligned_empty", "BinaryConv", "ConvOutput"]


def available_paths() -> list[str]:
    """Paths this process can run, slowest first ("numpy" is the pure-NumPy fallback)."""
    if _engine is None:
        return ["numpy"]
    feats = _engine.cpu_features()
    return ["numpy", "portable"] + [p for p in ("neon", "avx2", "avx512") if feats.get(p)]


def isa() -> str:
    """The path ``path="auto"`` runs on this CPU: "avx512", "avx2", "neon" (aarch64), "portable" or "numpy"."""
    return available_paths()[-1]


def kernel(path: str = "auto") -> str:
    """The kernel a path runs here, for reports: "avx512" becomes "avx512-amx" (int8 tiles) or
    "avx512-vpopcnt" (as the compiled dispatch picks, see the module doc)."""
    path = resolve_path(path)
    if path != "avx512":
        return path
    amx = _engine.cpu_features()["amx"] and os.environ.get("BINSR_AMX") != "0"
    return "avx512-amx" if amx else "avx512-vpopcnt"


def resolve_path(path: str = "auto") -> str:
    """Check a requested path against this CPU and build; "auto" picks the fastest."""
    if path == "auto":
        return isa()
    if path not in available_paths():
        raise RuntimeError(f"path {path!r} not available here (available: {available_paths()})")
    return path


class ConvOutput(NamedTuple):
    out: np.ndarray | None  # float32 (N, Ho, Wo, Cout)
    dots: np.ndarray | None  # int32 (N, Ho, Wo, Cout)
    bits: np.ndarray | None  # uint64 (N, Ho, Wo, ceil(Cout / 64))
    path: str


def _rprelu(v: np.ndarray, shift: np.ndarray, slope: np.ndarray, bias: np.ndarray) -> np.ndarray:
    u = v - shift
    return np.where(u > 0, u, u * slope) + bias


def aligned_empty(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array on a 64-byte boundary, for output buffers: NumPy's
    own are 16-byte aligned, so every 64-byte vector store of a pixel's 16 channels would straddle
    two cache lines (the engine allocates its fresh outputs aligned)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + 64, np.uint8)
    off = -raw.ctypes.data % 64
    return raw[off:off + n].view(dt).reshape(shape)


def check_buffer(buf: np.ndarray, shape: tuple[int, ...], dtype: type, name: str = "out") -> np.ndarray:
    """``buf`` when it can take an output of this shape and dtype (C-contiguous, writable), else
    ValueError (the compiled kernels check their buffers the same way)."""
    if buf.shape != tuple(shape) or buf.dtype != dtype or not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError(f"{name} must be a writable C-contiguous {np.dtype(dtype)} array of shape {tuple(shape)}, "
                         f"got {buf.dtype} {buf.shape}")
    return buf


def _into(buf: np.ndarray | None, value: np.ndarray | None, name: str) -> np.ndarray | None:
    """``value`` written into the caller's buffer ``buf``, if one is given."""
    if buf is None or value is None:
        return value
    np.copyto(check_buffer(buf, value.shape, value.dtype, name), value)
    return buf


def _vec(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, dtype=np.float32)


class BinaryConv:
    """A binary conv layer with packed weights ``(Cout, k, k, words)`` (see :func:`pack_weights`)."""

    def __init__(self, weights: np.ndarray, in_channels: int, kernel_size: int, dilation: int = 1,
                 padding: int | None = None, groups: int = 1) -> None:
        self.weights = np.ascontiguousarray(weights, dtype=np.uint64)
        self.cout = self.weights.shape[0]
        self.cin, self.k, self.dilation, self.groups = in_channels, kernel_size, dilation, groups
        self.padding = dilation * (kernel_size - 1) // 2 if padding is None else padding
        self.words = words(in_channels)
        self._layer = None
        if _engine is not None:
            self._layer = _engine.BinaryConv(self.weights, in_channels, kernel_size, dilation,
                                             self.padding, groups)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(Ho, Wo) of an (H, W) input (stride 1)."""
        grow = 2 * self.padding - self.dilation * (self.k - 1)
        return size[0] + grow, size[1] + grow

    def __call__(self, x: np.ndarray, *, path: str = "auto", threads: int = 1,
                 scale: np.ndarray | None = None, bias: np.ndarray | None = None,
                 gate_bias: np.ndarray | None = None, pix: np.ndarray | None = None,
                 chan: np.ndarray | None = None, act: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 act_first: bool = False,
                 residual: tuple[np.ndarray, ...] = (), out_float: bool = True, out_int: bool = False,
                 pack: bool = False, thr: np.ndarray | None = None, div: float = 1.0, post_scale: float = 1.0,
                 post_after: int = 0, out: np.ndarray | None = None,
                 bits_out: np.ndarray | None = None) -> ConvOutput:
        """Run on packed ``x`` (N, H, W, ceil(Cin / 64)); ``act`` = (shift, slope, bias).

        ``out`` / ``bits_out``: C-contiguous float32 / uint64 arrays of the output's shape to write
        the float map / the packed bits into (a runtime reusing its activation memory: a fresh
        map costs a page fault per 4 KiB on its first write, about as long as the layer itself).
        ``pix``: a spatial gate per output pixel, (N, Ho, Wo); ``chan``: a channel gate per image,
        (N, Cout) (SCALES' re-scaling, multiplied in this order after the scale).
        """
        path = resolve_path(path)
        x = np.ascontiguousarray(x, dtype=np.uint64)
        shift, slope, abias = act if act is not None else (None, None, None)
        if not 0 <= post_after <= len(residual):
            raise ValueError(f"post_after {post_after} is not in 0..{len(residual)} (the residuals)")
        if gate_bias is not None and pix is None:
            raise ValueError("gate_bias needs pix (the gate it is multiplied by)")
        args = dict(scale=_vec(scale), bias=_vec(bias), gate_bias=_vec(gate_bias), pix=_vec(pix), chan=_vec(chan),
                    act_shift=_vec(shift), act_slope=_vec(slope), act_bias=_vec(abias), act_first=act_first,
                    res=[_vec(r) for r in residual],
                    out_float=out_float, out_int=out_int, pack=pack, thr=_vec(thr), div=float(div),
                    post_scale=float(post_scale), post_after=int(post_after))
        if path == "numpy":
            v, dots, bits = self._numpy(x, **args)
            return ConvOutput(_into(out, v, "out"), dots, _into(bits_out, bits, "bits_out"), path)
        return ConvOutput(*self._layer.run(x, path, threads, out=out, bits_out=bits_out, **args), path)

    def _numpy(self, x: np.ndarray, *, scale, bias, gate_bias, pix, chan, act_shift, act_slope, act_bias, act_first,
               res, out_float, out_int, pack, thr, div, post_scale, post_after):
        n, h, w, _ = x.shape
        p, d, k, g = self.padding, self.dilation, self.k, self.groups
        xs = np.pad(unpack_bits(x, self.cin), ((0, 0), (p, p), (p, p), (0, 0)), constant_values=1.0)
        ws = unpack_weights(self.weights, self.cin // g)
        ho, wo = h + 2 * p - d * (k - 1), w + 2 * p - d * (k - 1)
        cpi, cpo = self.cin // g, self.cout // g
        acc = np.zeros((n, ho, wo, self.cout), np.float32)  # exact: integers below 2**24
        for gi in range(g):
            for ky in range(k):
                for kx in range(k):
                    a = xs[:, ky * d:ky * d + ho, kx * d:kx * d + wo, gi * cpi:(gi + 1) * cpi]
                    acc[..., gi * cpo:(gi + 1) * cpo] += a @ ws[gi * cpo:(gi + 1) * cpo, :, ky, kx].T
        dots = acc.astype(np.int32)
        if scale is not None and bias is not None and pix is None and chan is None:  # one FMA, exact in float64
            v = (dots * scale.astype(np.float64) + bias).astype(np.float32)
        else:
            v = dots.astype(np.float32)
            if scale is not None:
                v *= scale
            if pix is not None:
                v *= pix.reshape(n, ho, wo, 1)
            if chan is not None:
                v *= chan.reshape(n, 1, 1, self.cout)
            if bias is not None:
                v += bias
        if gate_bias is not None:
            v += pix.reshape(n, ho, wo, 1) * gate_bias  # the float32 product, then the sum
        if act_slope is not None and act_first:
            v = _rprelu(v, act_shift, act_slope, act_bias)
        if div != 1.0:
            v = v / np.float32(div)
        for i, r in enumerate(res):
            if i == post_after and post_scale != 1.0:
                v *= np.float32(post_scale)
            v += r.reshape(v.shape)
        if post_after == len(res) and post_scale != 1.0:
            v *= np.float32(post_scale)
        if act_slope is not None and not act_first:
            v = _rprelu(v, act_shift, act_slope, act_bias)
        bits = pack_bits(np.where(v >= (0 if thr is None else thr), 1.0, -1.0)) if pack else None
        return (v if out_float else None), (dots if out_int else None), bits
