"""One independent reference for the binary conv engine, written from the formulas alone (no engine
code): the ±1 conv by direct loops over taps, and the fused epilogue as plain float32 NumPy in the
order ``binsr.deploy.engine``'s module doc gives. Every path (portable, AVX2, AVX-512, AMX, NEON
under qemu, and the NumPy fallback) is compared with it, bit for bit, not with another path."""

from __future__ import annotations

import numpy as np

f32, f64 = np.float32, np.float64


def reference_conv(x: np.ndarray, w: np.ndarray, dilation: int, padding: int, groups: int) -> np.ndarray:
    """±1 NHWC x, OIHW w: int64 dots of the conv of x padded with +1 (direct loops over taps)."""
    n, h, wd, c = x.shape
    o, cpi, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)), constant_values=1).astype(np.int64)
    ho, wo = h + 2 * padding - dilation * (k - 1), wd + 2 * padding - dilation * (k - 1)
    out = np.zeros((n, ho, wo, o), np.int64)
    cpo = o // groups
    for g in range(groups):
        for ky in range(k):
            for kx in range(k):
                a = xp[:, ky * dilation:ky * dilation + ho, kx * dilation:kx * dilation + wo, g * cpi:(g + 1) * cpi]
                wt = w[g * cpo:(g + 1) * cpo, :, ky, kx].astype(np.int64)
                out[..., g * cpo:(g + 1) * cpo] += np.einsum("nhwc,oc->nhwo", a, wt)
    return out


def fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c rounded once to float32 (C's fmaf, PyTorch's folded-BN kernel). The float32 product
    is exact in float64; TwoSum gives the float64 sum's error, which decides the one case where
    rounding that sum to float32 could differ from rounding the exact value: the sum on a midpoint
    between two float32 numbers."""
    p = a.astype(f64) * b.astype(f64)
    c = np.asarray(c, f64)
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)
    r = s.astype(f32)
    lo = np.where(r.astype(f64) <= s, r, np.nextafter(r, f32(-np.inf)))
    hi = np.nextafter(lo, f32(np.inf))
    mid = (lo.astype(f64) + hi.astype(f64)) / 2
    return np.where((s == mid) & (err != 0), np.where(err > 0, hi, lo), r)


def _rprelu(v: np.ndarray, shift: np.ndarray, slope: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """RPReLU (ReActNet eq. 3): PReLU(v - shift) + bias, PReLU as torch's kernel: u > 0 ? u : slope * u."""
    u = v - shift
    return np.where(u > 0, u, u * slope) + bias


def pack_signs(v: np.ndarray, thr: np.ndarray | None) -> np.ndarray:
    """Bits of v >= thr (or >= 0) per channel, 64 to a little-endian uint64 word, 1 past the last channel."""
    b = v >= (f32(0) if thr is None else thr)
    c = b.shape[-1]
    b = np.concatenate([b, np.ones(b.shape[:-1] + (-c % 64,), bool)], axis=-1)
    words = np.packbits(b.reshape(b.shape[:-1] + (-1, 64)), axis=-1, bitorder="little")
    return words.view("<u8")[..., 0]


def reference_epilogue(dots: np.ndarray, *, scale=None, bias=None, pix=None, chan=None, act=None, act_first=False,
                       residual=(), gate_bias=None, div=1.0, post_scale=1.0, post_after=0,
                       thr=None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 output, packed sign bits) of integer dots (N, H, W, C) through the fused epilogue:
    v = dot * scale * pix * chan + bias (each product rounded; one rounding, d * s + b, without pix
    and chan: folded BN); + pix * gate_bias (product rounded); RPReLU here when act_first; v / div;
    v * post_scale once the first post_after residuals are in, each residual added; RPReLU here
    otherwise; bits of v >= thr. pix: (N, H, W); chan: (N, C)."""
    v = dots.astype(f32)
    if scale is not None and bias is not None and pix is None and chan is None:
        v = fma_f32(v, scale, bias)
    else:
        if scale is not None:
            v = v * scale
        if pix is not None:
            v = v * pix[..., None]
        if chan is not None:
            v = v * chan[:, None, None, :]
        if bias is not None:
            v = v + bias
    if gate_bias is not None:
        v = v + pix[..., None] * gate_bias
    if act is not None and act_first:
        v = _rprelu(v, *act)
    if div != 1.0:
        v = v / f32(div)
    for r in range(4):
        if r == post_after and post_scale != 1.0:
            v = v * f32(post_scale)
        if r < len(residual):
            v = v + residual[r]
    if act is not None and not act_first:
        v = _rprelu(v, *act)
    return v.astype(f32), pack_signs(v, thr)
