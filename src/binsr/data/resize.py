"""MATLAB-compatible bicubic ``imresize`` for NumPy images and batched torch tensors.

Reproduces MATLAB's ``imresize(A, scale, 'bicubic')`` (Image Processing Toolbox, ``imresize.m``
and its ``contributions``/``cubic`` helpers): the Keys cubic kernel with ``a = -0.5``, the kernel
widened by ``1/scale`` when downscaling (antialiasing), symmetric boundary handling by index
mirroring, output size ``ceil(in * scale)``, and the dimension with the smaller scale resized
first. For ``uint8`` input MATLAB's ``imresizemex`` returns ``uint8`` after *each* 1-D pass
(rounded half away from zero and saturated), and so does :func:`imresize`.

The weights and mirrored indices of each 1-D pass are precomputed and cached. NumPy gathers the
taps and sums them in MATLAB's order; torch multiplies by the equivalent dense ``(out, in)``
matrix, so it is batched, fast on GPU and differentiable.
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, overload

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["imresize", "modcrop", "contributions", "resize_matrix"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (MATLAB ``imresize>cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=256)
def contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``imresize>contributions`` for the bicubic kernel: ``(weights, indices)``.

    Both are ``(out_len, taps)``, cached and read-only: output pixel ``i`` is
    ``sum_p weights[i, p] * input[indices[i, p]]``, with 0-based mirrored ``indices``. Taps whose
    weight is zero for every output are dropped, as MATLAB does.
    """
    kernel_width = 4.0
    if scale < 1:  # antialiasing: widen the kernel by 1/scale
        kernel_width /= scale

        def h(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)

    else:
        h = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)  # MATLAB 1-based output coordinates
    u = x / scale + 0.5 * (1 - 1 / scale)  # where output pixel x maps in the input
    left = np.floor(u - kernel_width / 2)
    ind = left[:, None] + np.arange(math.ceil(kernel_width) + 2)[None, :]  # 1-based input indices
    weights = h(u[:, None] - ind)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    weights, indices = np.ascontiguousarray(weights[:, keep]), np.ascontiguousarray(indices[:, keep])
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """The dense ``(out_len, in_len)`` float64 matrix of one MATLAB bicubic 1-D resize by
    ``scale`` (cached, read-only): ``resized = matrix @ signal`` along that dimension."""
    weights, indices = contributions(in_len, out_len, scale)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), weights.shape[1]), indices.ravel()), weights.ravel())
    mat.setflags(write=False)
    return mat


def _plan(
    in_hw: tuple[int, int], scale: float | None, output_shape: tuple[int, int] | None
) -> tuple[tuple[float, float], tuple[int, int], list[int]]:
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out = (math.ceil(in_hw[0] * scale), math.ceil(in_hw[1] * scale))
    else:
        out = (int(output_shape[0]), int(output_shape[1]))
        if min(out) < 1:
            raise ValueError(f"imresize: output_shape must be positive, got {output_shape}")
        scales = (out[0] / in_hw[0], out[1] / in_hw[1])
    order = [int(i) for i in np.argsort(scales, kind="stable")]  # smaller scale first
    return scales, out, order


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8 conversion: saturate, round half away from zero (in place)."""
    np.clip(x, 0, 255, out=x)
    x += 0.5
    return x.astype(np.uint8)  # truncation is floor for non-negative values


_Shape = tuple[int, int]


@overload
def imresize(img: np.ndarray, scale: float | None = ..., output_shape: _Shape | None = ...) -> np.ndarray: ...
@overload
def imresize(img: torch.Tensor, scale: float | None = ..., output_shape: _Shape | None = ...) -> torch.Tensor: ...


def imresize(img, scale=None, output_shape=None):
    """Resize like MATLAB ``imresize(img, scale, 'bicubic')`` (antialiased when downscaling).

    Args:
        img: NumPy ``HW`` or ``HWC`` array, or torch tensor ``(N, C, H, W)`` (or ``(C, H, W)``).
            ``uint8`` arrays give ``uint8`` (rounded and saturated after each 1-D pass, as
            MATLAB does); float arrays are resized in float64 and keep their dtype. Tensors
            must be floating point; the result keeps dtype/device and is differentiable.
        scale: resize factor, e.g. ``1/4`` to downscale; output size is ``ceil(in * scale)``.
        output_shape: ``(H, W)`` of the output instead of ``scale``.

    Returns:
        The resized image, same type and layout as ``img``.
    """
    torch = sys.modules.get("torch")  # an input can only be a tensor once torch is loaded
    if torch is not None and isinstance(img, torch.Tensor):
        return _imresize_torch(img, scale, output_shape)
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or 0 in arr.shape[:2]:
        raise ValueError(f"imresize: expected a non-empty HW or HWC array, got shape {arr.shape}")
    is_uint8 = arr.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"imresize: expected uint8 or float array, got {arr.dtype}")
    scales, out, order = _plan(arr.shape[:2], scale, output_shape)
    result = arr
    for dim in order:
        weights, indices = contributions(result.shape[dim], out[dim], scales[dim])
        src = result.astype(np.float64, copy=False)
        shape = [1] * src.ndim
        shape[dim] = len(weights)
        resized = weights[:, 0].reshape(shape) * np.take(src, indices[:, 0], axis=dim)
        for p in range(1, weights.shape[1]):  # sum over the taps in MATLAB's order (imresizemex)
            resized += weights[:, p].reshape(shape) * np.take(src, indices[:, p], axis=dim)
        result = _round_uint8(resized) if is_uint8 else resized
    return result if is_uint8 else result.astype(arr.dtype, copy=False)


def _imresize_torch(
    x: torch.Tensor, scale: float | None, output_shape: tuple[int, int] | None
) -> torch.Tensor:
    import torch

    if x.ndim not in (3, 4) or not x.is_floating_point():
        raise TypeError(f"imresize: expected a float (N,C,H,W) or (C,H,W) tensor, got {x.dtype} {tuple(x.shape)}")
    scales, out, order = _plan((x.shape[-2], x.shape[-1]), scale, output_shape)
    for dim in order:
        mat = _torch_matrix(x.shape[-2 + dim], out[dim], scales[dim], x.dtype, x.device)
        x = torch.matmul(mat, x) if dim == 0 else torch.matmul(x, mat.T)
    return x


@lru_cache(maxsize=256)
def _torch_matrix(in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    import torch

    with torch.inference_mode(False):  # a cached inference tensor could not be used with autograd later
        return torch.tensor(resize_matrix(in_len, out_len, scale), dtype=dtype, device=device)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right of an ``HW``/``HWC`` image so H and W are multiples of ``scale``
    (the ``modcrop.m`` used by SRCNN and later SR benchmarks)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
