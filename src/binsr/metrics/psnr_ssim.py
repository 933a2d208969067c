"""The SR evaluation protocol, in one place: every PSNR/SSIM binsr reports comes from here.

Protocol of the published SR tables (SRCNN/VDSR/EDSR MATLAB scripts, BasicSR
``metrics/psnr_ssim.py`` with ``test_y_channel=True``):

1. the SR image is rounded to ``uint8`` first (:func:`to_uint8`);
2. ``crop_border`` (= scale) pixels are removed from every border of SR and HR;
3. colour images are compared on the Y channel of MATLAB ``rgb2ycbcr`` (unrounded, 0..255 scale,
   :func:`to_y_channel`); a gray (``HW``) image is compared on its gray values directly, as the
   MATLAB scripts behind the tables do;
4. PSNR = 10 log10(255^2 / MSE); SSIM as Wang et al. 2004 (``ssim_index.m``): 11x11 Gaussian
   window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, mean over the 'valid' region.

Images are NumPy ``HWC`` RGB or ``HW`` gray, ``uint8``; SR may also be a float array/tensor in
[0, 1] (``CHW`` or ``1CHW`` for tensors), which is rounded to ``uint8`` first.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["to_uint8", "to_y_channel", "crop_border", "psnr_y", "ssim_y"]

_SSIM_K1, _SSIM_K2, _SSIM_L = 0.01, 0.03, 255.0
_SSIM_SIZE, _SSIM_SIGMA = 11, 1.5


def to_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """Round an image to ``uint8`` like MATLAB ``im2uint8`` (saturate, round half away from 0).

    ``uint8`` arrays pass through. Float arrays and tensors are read as [0, 1]; a tensor is
    ``CHW`` or ``1CHW`` and comes back ``HWC`` (``HW`` when it has one channel).
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().to("cpu", torch.float64)
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"to_uint8: expected one image, got batch of {t.shape[0]}")
            t = t[0]
        if t.ndim != 3:
            raise ValueError(f"to_uint8: expected a CHW tensor, got shape {tuple(img.shape)}")
        arr = t.permute(1, 2, 0).numpy()
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
    else:
        arr = np.asarray(img)
        if arr.dtype == np.uint8:
            return arr
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"to_uint8: expected uint8 or float in [0, 1], got {arr.dtype}")
    return np.floor(np.clip(arr * 255.0, 0, 255) + 0.5).astype(np.uint8)


def to_y_channel(img: np.ndarray) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr``, unrounded, on the 0..255 scale (float64).

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for ``uint8`` RGB in 0..255, i.e.
    ``16 + 65.481 r + 128.553 g + 24.966 b`` for RGB in [0, 1]. A gray ``HW`` image is returned
    as its float64 gray values (it is its own "Y", as in the MATLAB scripts).
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError(f"to_y_channel: expected uint8, got {arr.dtype}")
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"to_y_channel: expected HW gray or HWC RGB, got shape {arr.shape}")
    rgb = arr.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side of an ``HW``/``HWC`` image."""
    if border < 0:
        raise ValueError(f"crop_border: border must be >= 0, got {border}")
    return img[border : img.shape[0] - border, border : img.shape[1] - border] if border else img


def _prepare(sr: np.ndarray | torch.Tensor, hr: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    sr8, hr8 = to_uint8(sr), np.asarray(hr)
    if hr8.dtype != np.uint8:
        raise TypeError(f"hr must be uint8, got {hr8.dtype}")
    if sr8.shape != hr8.shape:
        raise ValueError(f"SR shape {sr8.shape} differs from HR shape {hr8.shape}")
    return to_y_channel(crop_border(sr8, border)), to_y_channel(crop_border(hr8, border))


def psnr_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray, crop_border: int) -> float:
    """PSNR in dB on Y (gray as is) after cropping ``crop_border`` pixels; ``inf`` if equal."""
    y_sr, y_hr = _prepare(sr, hr, crop_border)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_1d() -> np.ndarray:
    x = np.arange(_SSIM_SIZE, dtype=np.float64) - (_SSIM_SIZE - 1) / 2
    g = np.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()  # outer(g, g) == MATLAB fspecial('gaussian', 11, 1.5)


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable ``filter2(outer(g, g), img, 'valid')`` over the last two axes."""
    window = np.lib.stride_tricks.sliding_window_view
    rows = window(img, len(g), axis=-2) @ g
    return window(rows, len(g), axis=-1) @ g


def ssim_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray, crop_border: int) -> float:
    """Mean SSIM (Wang et al., IEEE TIP 2004, ``ssim_index.m``) on Y after cropping the border."""
    y_sr, y_hr = _prepare(sr, hr, crop_border)
    if min(y_sr.shape) < _SSIM_SIZE:
        raise ValueError(f"ssim_y: image {y_sr.shape} is smaller than the {_SSIM_SIZE}x{_SSIM_SIZE} window")
    c1, c2 = (_SSIM_K1 * _SSIM_L) ** 2, (_SSIM_K2 * _SSIM_L) ** 2
    stats = np.stack([y_sr, y_hr, y_sr * y_sr, y_hr * y_hr, y_sr * y_hr])
    mu1, mu2, e11, e22, e12 = _filter_valid(stats, _gaussian_1d())
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())
