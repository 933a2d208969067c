"""Full-precision Transformer parts of the runtime in NumPy, on (H, W, C) float32 token maps:
LayerNorm, exact GELU, SwinIR's shifted-window attention, window padding and per-channel affines.

A token-wise linear is a 1x1 conv on the token map, so the binary qkv / projection / MLP linears
of a binary SwinIR run on the bit-packed conv kernels (:class:`binsr.deploy.engine.BinaryConv`);
this module holds what stays FP (``binsr.models.swinir`` module docstring).
"""

from __future__ import annotations

import math

import numpy as np

from binsr.deploy.engine import _engine

__all__ = ["layer_norm", "gelu", "window_attention", "relative_position_index", "pad_to_multiple", "affine"]


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, threads: int = 1,
               compiled: bool = True, fp64: bool = False) -> np.ndarray:
    """LayerNorm over the last axis (``nn.LayerNorm``: biased variance, ``eps`` inside the root);
    ``compiled``: one C++ pass per token (``_engine.layer_norm``, sums in double) where built;
    ``fp64``: the whole norm in float64, rounded once (``binsr.nn.ExactLayerNorm``)."""
    if compiled and _engine is not None:
        return _engine.layer_norm(x, weight, bias, eps, threads, fp64)
    if fp64:
        x64 = x.astype(np.float64)
        y64 = x64 - x64.mean(axis=-1, keepdims=True)
        y64 /= np.sqrt(np.mean(np.square(y64), axis=-1, keepdims=True) + eps)
        return (y64 * weight + bias).astype(np.float32)
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float32)
    y = x - mean
    var = np.mean(np.square(y), axis=-1, keepdims=True, dtype=np.float32)
    y *= 1.0 / np.sqrt(var + np.float32(eps))
    y *= weight
    y += bias
    return y


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float32 to about 1e-7 absolute (Abramowitz & Stegun 7.1.26); NumPy has none."""
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x).astype(np.float32)


_erf64 = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray, threads: int = 1, compiled: bool = True, fp64: bool = False) -> np.ndarray:
    """``nn.GELU()`` (the exact form ``x / 2 * (1 + erf(x / sqrt 2))``); ``compiled``: the C++
    loop (``_engine.gelu``, same formula) where built, else NumPy; ``fp64``: in float64 (the
    libm's ``erf``; element by element in NumPy), rounded once (``binsr.nn.ExactGELU``)."""
    if compiled and _engine is not None:
        return _engine.gelu(x, threads, fp64)
    if fp64:
        x64 = x.astype(np.float64)
        return (x64 * 0.5 * (1.0 + _erf64(x64 * 2 ** -0.5))).astype(np.float32)
    return (np.float32(0.5) * x * (1.0 + _erf(x * np.float32(2 ** -0.5)))).astype(np.float32)


def relative_position_index(window: int) -> np.ndarray:
    """(N, N) index into the ``(2 ws - 1)^2`` bias table (``WindowAttention``'s buffer)."""
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([ys.ravel(), xs.ravel()])
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def _windows(x: np.ndarray, ws: int) -> np.ndarray:
    """(H, W, C) -> (nW, ws*ws, C), windows in row-major order (``window_partition``)."""
    h, w, c = x.shape
    return x.reshape(h // ws, ws, w // ws, ws, c).transpose(0, 2, 1, 3, 4).reshape(-1, ws * ws, c)


def _unwindows(x: np.ndarray, ws: int, h: int, w: int) -> np.ndarray:
    c = x.shape[-1]
    return x.reshape(h // ws, w // ws, ws, ws, c).transpose(0, 2, 1, 3, 4).reshape(h, w, c)


def _shift_mask(h: int, w: int, ws: int, shift: int) -> np.ndarray:
    """(nW, N, N) additive mask of the shifted windows: 0 within a region, -100 across
    (``binsr.models.swinir.shifted_window_mask``)."""
    label = np.zeros((h, w, 1), np.float32)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for r, (hs, wsl) in enumerate((a, b) for a in cuts for b in cuts):
        label[hs, wsl] = r
    win = _windows(label, ws)[..., 0]
    return np.where(win[:, None, :] != win[:, :, None], np.float32(-100.0), np.float32(0.0))


def window_attention(qkv: np.ndarray, heads: int, window: int, shift: int, bias_t: np.ndarray, scale: float,
                     threads: int = 1, compiled: bool = True, fp64: bool = False) -> np.ndarray:
    """SwinIR's (S)W-MSA before its output projection, on the ``qkv`` token map.

    ``qkv``: (H, W, 3C) with channels ordered (q|k|v, head, d) as ``WindowAttention.qkv``;
    ``bias_t``: (heads, N, N) relative position bias, key-major (``bias_t[h, j, i]`` is the bias
    of query ``i`` and key ``j``). The map is rolled by ``-shift``, split into windows,
    ``softmax(q k^T * scale + bias + mask) v`` per window and head, merged and rolled back:
    (H, W, C). Rolling the token map before the (token-wise) qkv linear or after it is the same,
    as is rolling back before the projection. ``compiled``: the fused C++ kernel
    (``_engine.window_attention``, threads over windows) where built, else NumPy. ``fp64``: from
    the float32 ``qkv`` on, all in float64, rounded once (``binsr.models.swinir.WindowAttention``).
    """
    if compiled and _engine is not None:
        return _engine.window_attention(qkv, heads, window, shift, bias_t, scale, threads, fp64)
    h, w, c3 = qkv.shape
    c, d = c3 // 3, c3 // 3 // heads
    dt = np.float64 if fp64 else np.float32
    if shift:
        qkv = np.roll(qkv, (-shift, -shift), axis=(0, 1))
    win = _windows(qkv, window).astype(dt)  # nW, N, 3C
    nw, n = win.shape[:2]
    win = win.reshape(nw, n, 3, heads, d).transpose(2, 0, 3, 1, 4)  # 3, nW, heads, N, d
    q, k, v = win[0] * dt(scale), win[1], win[2]
    attn = q @ k.transpose(0, 1, 3, 2)  # nW, heads, N, N
    attn += bias_t.transpose(0, 2, 1)[None]
    if shift:
        attn += _shift_mask(h, w, window, shift)[:, None]
    attn -= attn.max(axis=-1, keepdims=True)
    np.exp(attn, out=attn)
    attn /= attn.sum(axis=-1, keepdims=True)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(nw, n, c).astype(np.float32, copy=False)
    out = _unwindows(out, window, h, w)
    return np.roll(out, (shift, shift), axis=(0, 1)) if shift else np.ascontiguousarray(out)


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """Pad (H, W, C) bottom/right to multiples of ``multiple``: reflect, or replicate where the
    image is too small to reflect (``SwinIR.pad``)."""
    h, w = x.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode=mode)


def affine(x: np.ndarray, mul: np.ndarray, add: np.ndarray) -> np.ndarray:
    """``x * mul + add`` per channel (last axis)."""
    return (x * mul + add).astype(np.float32)
