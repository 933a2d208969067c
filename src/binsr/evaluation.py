"""Evaluate an SR model (or bicubic) on a dataset with the published protocol.

The one library entry point for PSNR/SSIM over a dataset: ``binsr eval`` and the trainer's
validation both call :func:`evaluate`; the per-image metrics come from :mod:`binsr.metrics`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from binsr.data.datasets import BenchmarkSet, ImageFolder
from binsr.data.resize import imresize
from binsr.deploy.runtime import Runtime
from binsr.errors import BinsrError, UsageError
from binsr.metrics import psnr_y, ssim_y, to_uint8

__all__ = ["evaluate", "upscale_image", "open_dataset"]


def open_dataset(
    dataset: str | os.PathLike | BenchmarkSet | ImageFolder,
    scale: int,
    lr_source: str = "matlab",
    data_root: str | os.PathLike | None = None,
) -> BenchmarkSet | ImageFolder:
    """A benchmark set by name (``"Set5"``), or a folder of HR images given as a path (a
    :class:`~pathlib.Path`, or a string containing ``/``); dataset objects pass through."""
    if isinstance(dataset, (BenchmarkSet, ImageFolder)):
        if dataset.scale != scale:
            raise UsageError(f"dataset {dataset.name} is built for x{dataset.scale}, not x{scale}")
        return dataset
    if isinstance(dataset, os.PathLike) or "/" in dataset or os.sep in dataset:
        if lr_source != "matlab":
            raise UsageError("a folder of HR images has no shipped LR images; use lr_source='matlab'")
        return ImageFolder(Path(dataset), scale)
    return BenchmarkSet(dataset, scale, root=data_root, lr_source=lr_source)


def upscale_image(model: str | nn.Module | Runtime, lr: np.ndarray, scale: int,
                  self_ensemble: bool = False) -> np.ndarray:
    """Upscale one ``uint8`` LR image (``HWC`` RGB or ``HW`` gray) to a ``uint8`` SR image.

    ``model="bicubic"`` uses MATLAB :func:`~binsr.data.resize.imresize`. A module gets RGB [0, 1]
    ``1x3xhxw`` on its own device, a packed model (:class:`binsr.deploy.Runtime`) RGB [0, 1]
    ``hxwx3`` float32; a gray image is fed as R = G = B and the output is collapsed back to gray by
    the channel mean. ``self_ensemble``: the mean of the 8 flipped and turned inputs' outputs
    before rounding (:func:`binsr.infer.self_ensemble`). The caller sets eval mode and ``no_grad``.
    """
    if isinstance(model, str):
        if model != "bicubic":
            raise UsageError(f"unknown model {model!r}: pass 'bicubic' or an nn.Module")
        if self_ensemble:
            raise UsageError("self-ensemble applies to trained models, not to bicubic")
        return imresize(lr, scale)
    if isinstance(model, Runtime) and model.scale != scale:
        raise UsageError(f"the packed model is an x{model.scale} model, not x{scale}")
    if self_ensemble:
        from binsr.infer import self_ensemble as ensemble

        return to_uint8(ensemble(lambda x: _sr_float(model, x, scale))(lr))
    return to_uint8(_sr_float(model, lr, scale))


def _sr_float(model: nn.Module | Runtime, lr: np.ndarray, scale: int) -> np.ndarray:
    """:func:`upscale_image`'s output before rounding: ``HWC`` (``HW`` for gray), float32 from the
    engine, float64 from a module (its float output read as :func:`~binsr.metrics.to_uint8` reads it)."""
    gray = lr.ndim == 2
    if isinstance(model, Runtime):
        x = lr.astype(np.float32) / np.float32(255)
        out = model.run_hwc(np.ascontiguousarray(np.repeat(x[..., None], 3, axis=2) if gray else x))
        return out.mean(axis=2, dtype=np.float32) if gray else out
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.from_numpy(np.ascontiguousarray(lr)).to(device, dtype).div_(255.0)
    x = x.expand(3, *lr.shape) if gray else x.permute(2, 0, 1)
    out = model(x.unsqueeze(0))
    expected = (1, 3, lr.shape[0] * scale, lr.shape[1] * scale)
    if tuple(out.shape) != expected:
        raise BinsrError(f"model output has shape {tuple(out.shape)}, expected {expected}; is it an x{scale} model?")
    out = (out.mean(dim=1, keepdim=True) if gray else out)[0].detach().to("cpu", torch.float64).permute(1, 2, 0)
    return out[..., 0].numpy() if gray else out.numpy()


def evaluate(
    model: str | nn.Module,
    dataset: str | os.PathLike | BenchmarkSet | ImageFolder,
    scale: int,
    lr_source: str = "matlab",
    data_root: str | os.PathLike | None = None,
    per_image: bool = False,
    self_ensemble: bool = False,
) -> dict[str, Any]:
    """Mean PSNR/SSIM (dB / [0, 1]) of ``model`` on ``dataset`` at ``scale``.

    Protocol (see :mod:`binsr.metrics.psnr_ssim`): LR = MATLAB ``imresize(HR, 1/scale)`` by default
    (``lr_source="shipped"`` uses the set's LR files), SR rounded to ``uint8``, ``scale`` pixels
    cropped on each border, Y of ``rgb2ycbcr``; per-image values are averaged over the set.

    Gray images: bicubic resizes the gray image. A model, which is RGB-only, gets the gray image
    as R = G = B; its output is made gray by the channel mean and compared on gray values
    directly, as the MATLAB scripts behind the published tables compare gray images.

    Args:
        model: ``"bicubic"``, an ``nn.Module`` mapping RGB [0, 1] NCHW LR to SR (one image at a
            time under ``torch.no_grad`` in eval mode; its training mode is restored) or a packed
            model (:class:`binsr.deploy.Runtime`: the 1-bit engine's own output is measured).
        dataset: benchmark set name, folder path or dataset object (see :func:`open_dataset`).
        scale: SR factor; also the border cropped before the metrics.
        lr_source: ``"matlab"`` or ``"shipped"`` (benchmark sets only).
        data_root: data root (see :func:`binsr.data.paths.data_root`).
        per_image: add ``per_image``: a list of ``{"name", "psnr", "ssim"}``.
        self_ensemble: each image upscaled as the mean of its 8 flips and quarter turns'
            outputs (EDSR's "+"; :func:`upscale_image`); ``"self_ensemble": True`` in the result.

    Returns:
        ``{"model", "dataset", "scale", "lr_source", "psnr", "ssim", "n_images", "seconds"}``
        (+ ``"per_image"``). ``model`` is ``"bicubic"`` or the module's class name.
    """
    data = open_dataset(dataset, scale, lr_source, data_root)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    start = time.perf_counter()
    rows = []
    try:
        with torch.no_grad():
            for pair in data:
                if min(pair.hr.shape[:2]) <= 2 * scale:  # PSNR / SSIM of no pixels: a NaN mean
                    h, w = pair.hr.shape[:2]
                    raise BinsrError(f"{data.name} image {pair.name} is {w}x{h} (cut to a multiple of {scale}): "
                                     f"nothing is left once {scale} border pixels are cropped")
                sr = upscale_image(model, pair.lr, scale, self_ensemble)
                rows.append({"name": pair.name, "psnr": psnr_y(sr, pair.hr, scale), "ssim": ssim_y(sr, pair.hr, scale)})
    finally:
        if was_training:
            model.train()
    result: dict[str, Any] = {
        "model": model if isinstance(model, str) else type(model).__name__,  # Runtime for a packed model
        "dataset": data.name,
        "scale": int(scale),
        "lr_source": data.lr_source,
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "n_images": len(rows),
        "seconds": time.perf_counter() - start,
    }
    if self_ensemble:
        result["self_ensemble"] = True
    if per_image:
        result["per_image"] = rows
    return result
