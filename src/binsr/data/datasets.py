"""SR datasets: benchmark sets, folders of HR images, and random training patches.

Evaluation sets yield :class:`SRPair` (``uint8`` NumPy images, ``HWC`` RGB or ``HW`` gray). LR
images are made from the HR image with MATLAB-compatible :func:`~binsr.data.resize.imresize`
(``lr_source="matlab"``), which is how the published tables were made; the benchmark sets also
ship their own LR files (``lr_source="shipped"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from binsr.data.io import IMAGE_EXTENSIONS, read_image
from binsr.data.paths import data_root as find_data_root
from binsr.data.resize import imresize, modcrop
from binsr.errors import BinsrError, UsageError

__all__ = ["SRPair", "BenchmarkSet", "ImageFolder", "TrainPatches", "LR_SOURCES", "DEFAULT_TRAIN_SETS"]

log = logging.getLogger(__name__)

LR_SOURCES = ("matlab", "shipped")
#: training folders under ``<data root>/train/`` (the classic "291" set)
DEFAULT_TRAIN_SETS = ("T91", "BSD200")


@dataclass(frozen=True)
class SRPair:
    """One evaluation image: ``name`` (file stem of the HR image), ``lr`` and ``hr`` (uint8)."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _read_uint8(path: Path) -> np.ndarray:
    img = read_image(path)
    if img.dtype != np.uint8:
        raise BinsrError(f"{path}: {img.dtype} images are not supported here (8-bit only)")
    return img


class _PairSet(Sequence):
    """A list of HR files with a rule for the LR image; subclasses fill ``_hr`` and ``_lr_of``."""

    name: str
    scale: int
    _hr: list[Path]

    def __len__(self) -> int:
        return len(self._hr)

    def __getitem__(self, index: int) -> SRPair:  # type: ignore[override]
        path = self._hr[index]
        hr = _read_uint8(path)
        if min(hr.shape[:2]) < self.scale:  # cut to a multiple of the scale, nothing would be left
            raise BinsrError(f"{path} is {hr.shape[1]}x{hr.shape[0]}, smaller than one LR pixel at x{self.scale}")
        lr, hr = self._lr_of(path, hr)
        return SRPair(path.stem, lr, hr)

    def __iter__(self) -> Iterator[SRPair]:
        """Every pair in order. (Sequence's own iteration stops at the first IndexError, so an
        IndexError raised while reading one image would silently end the set there.)"""
        for index in range(len(self)):
            yield self[index]

    def _lr_of(self, path: Path, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hr = modcrop(hr, self.scale)
        return imresize(hr, 1 / self.scale), hr


class BenchmarkSet(_PairSet):
    """A benchmark set in the SelfExSR layout (Huang et al., CVPR 2015).

    ``<root>/benchmark/<name>/image_SRF_<s>/img_<nnn>_SRF_<s>_{HR,LR}.png``. ``lr_source``:
    ``"matlab"`` (default; LR = ``imresize(HR, 1/s)``, as the published tables were made) or
    ``"shipped"`` (the LR files of the set; their size must be HR / s).

    Raises:
        UsageError: unknown set, missing scale folder or bad ``lr_source``.
    """

    def __init__(self, name: str, scale: int, root: str | os.PathLike | None = None, lr_source: str = "matlab"):
        if lr_source not in LR_SOURCES:
            raise UsageError(f"unknown LR source {lr_source!r}; choose one of {', '.join(LR_SOURCES)}")
        bench = find_data_root(root) / "benchmark"
        sets = sorted(p.name for p in bench.iterdir() if p.is_dir()) if bench.is_dir() else []
        match = [s for s in sets if s == name] or [s for s in sets if s.lower() == name.lower()]
        if not match:
            raise UsageError(f"unknown dataset {name!r} in {bench} (available: {', '.join(sets) or 'none'})")
        folder = bench / match[0] / f"image_SRF_{scale}"
        if not folder.is_dir():
            scales = sorted(p.name.removeprefix("image_SRF_") for p in folder.parent.glob("image_SRF_*"))
            available = ", ".join(scales) or "none"
            raise UsageError(f"{match[0]} has no x{scale} folder {folder} (available scales: {available})")
        self.name, self.scale, self.lr_source = match[0], int(scale), lr_source
        self._hr = sorted(folder.glob(f"img_*_SRF_{scale}_HR.png"))
        if not self._hr:
            raise UsageError(f"no HR images (img_*_SRF_{scale}_HR.png) in {folder}")

    def _lr_of(self, path: Path, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.lr_source == "matlab":
            return super()._lr_of(path, hr)
        lr_path = path.with_name(path.name.replace("_HR.png", "_LR.png"))
        lr = _read_uint8(lr_path)
        if lr.ndim != hr.ndim or lr.shape[0] * self.scale != hr.shape[0] or lr.shape[1] * self.scale != hr.shape[1]:
            raise BinsrError(f"{lr_path} has shape {lr.shape}, which is not {path.name} {hr.shape} / {self.scale}")
        return lr, hr


class ImageFolder(_PairSet):
    """Any folder of HR images (sorted by name); HR is mod-cropped, LR = ``imresize(HR, 1/s)``."""

    def __init__(self, folder: str | os.PathLike, scale: int):
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"dataset folder {folder} does not exist")
        self.name, self.scale, self.lr_source = folder.name, int(scale), "matlab"
        self._hr = _image_files(folder)
        if not self._hr:
            raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")


class TrainPatches(Dataset):
    """Random HR/LR training patches, reproducible from ``(seed, epoch, index)``.

    Sample ``index`` takes image ``index % n_images``, a random ``patch_size`` HR crop, one of the
    8 flips/90-degree rotations (if ``augment``), and makes the LR patch with MATLAB
    ``imresize(crop, 1/scale)`` on ``uint8`` (as stored LR images are). The random draws come
    from ``numpy.random.default_rng([seed, epoch, index])``, so a resumed run that restores the
    epoch and the sampler order sees the same batches. ``set_epoch`` changes the patches; a
    DataLoader with ``persistent_workers`` keeps its own copies, so there pass indices that grow
    across epochs instead (any ``index >= 0`` is valid). Images are decoded once, at construction,
    and kept in memory; gray images are repeated to RGB. Images smaller than the patch are skipped.

    ``sampling`` picks where a crop comes from. ``uniform``: image ``index % n_images``, crop
    uniform in it (every image equally often, whatever its size). ``area`` and ``texture`` cut
    every image into ``patch_size`` tiles and draw a tile per sample, each with weight 1 (``area``:
    images in proportion to their size) or with its texture (``texture``: the tile's mean absolute
    luma gradient plus a tenth of the set's mean, so flat sky still appears, less often); the crop
    is then uniform within ``patch_size // 2`` of the tile. An epoch stays ``n_images`` samples.

    Returns ``(lr, hr)``: float32 tensors ``CHW`` in [0, 1], of size ``patch_size / scale`` and
    ``patch_size``.

    Args:
        root_dirs: folders of HR images; default ``<data root>/train/{T91,BSD200}``.
        scale: SR factor; must divide ``patch_size``.
        patch_size: HR patch side in pixels.
        length: samples per epoch; default the number of images.
        augment: random flips and rotations.
        seed: base seed.
        data_root: data root for the default folders (see :func:`binsr.data.paths.data_root`).
        sampling: ``uniform``, ``area`` or ``texture`` (above). Default uniform.
    """

    SAMPLING = ("uniform", "area", "texture")

    def __init__(
        self,
        root_dirs: Sequence[str | os.PathLike] | None = None,
        scale: int = 4,
        patch_size: int = 96,
        *,
        length: int | None = None,
        augment: bool = True,
        seed: int = 0,
        data_root: str | os.PathLike | None = None,
        sampling: str = "uniform",
    ):
        if sampling not in self.SAMPLING:
            raise UsageError(f"unknown sampling {sampling!r}; valid: {', '.join(self.SAMPLING)}")
        if patch_size % scale:
            raise UsageError(f"patch size {patch_size} is not a multiple of scale {scale}")
        if root_dirs is None:
            train = find_data_root(data_root) / "train"
            root_dirs = [train / name for name in DEFAULT_TRAIN_SETS]
        paths: list[Path] = []
        for folder in map(Path, root_dirs):
            if not folder.is_dir():
                raise UsageError(f"training folder {folder} does not exist")
            paths += _image_files(folder)
        self.scale, self.patch_size, self.augment, self.seed = int(scale), int(patch_size), augment, seed
        self.epoch = 0
        self.images: list[np.ndarray] = []
        for path in paths:
            img = _read_uint8(path)
            if min(img.shape[:2]) < patch_size:
                log.warning("skipping %s: smaller than the %d px patch", path, patch_size)
                continue
            self.images.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img)
        if not self.images:
            raise UsageError(f"no training images of at least {patch_size} px in {', '.join(map(str, root_dirs))}")
        self.length = len(self.images) if length is None else int(length)
        self.sampling = sampling
        self._tiles, self._cum_weight = self._tile_table() if sampling != "uniform" else (None, None)

    def _tile_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image, top, left)`` of every ``patch_size`` tile and the cumulative tile weights."""
        p, tiles, weights = self.patch_size, [], []
        for i, img in enumerate(self.images):
            y = img.astype(np.float32) @ np.array([65.481, 128.553, 24.966], np.float32) / 255.0  # BT.601 luma
            grad = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
            for top in range(0, img.shape[0] - p + 1, p):
                for left in range(0, img.shape[1] - p + 1, p):
                    tiles.append((i, top, left))
                    weights.append(float(grad[top : top + p - 1, left : left + p - 1].mean()))
        w = np.asarray(weights, np.float64)
        w = np.ones_like(w) if self.sampling == "area" else w + 0.1 * w.mean()
        return np.asarray(tiles, np.int64), np.cumsum(w)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream (see the class docstring for DataLoader workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            raise IndexError(f"TrainPatches index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        p = self.patch_size
        if self._tiles is None:
            img = self.images[index % len(self.images)]
            top = int(rng.integers(0, img.shape[0] - p + 1))
            left = int(rng.integers(0, img.shape[1] - p + 1))
        else:
            tile = int(np.searchsorted(self._cum_weight, rng.random() * self._cum_weight[-1], side="right"))
            i, t0, l0 = (int(v) for v in self._tiles[min(tile, len(self._tiles) - 1)])
            img = self.images[i]
            top = int(np.clip(t0 + rng.integers(-(p // 2), p // 2 + 1), 0, img.shape[0] - p))
            left = int(np.clip(l0 + rng.integers(-(p // 2), p // 2 + 1), 0, img.shape[1] - p))
        hr = img[top : top + p, left : left + p]
        if self.augment:
            k = int(rng.integers(8))  # the 8 symmetries of the square
            hr = np.rot90(hr, k % 4)
            hr = hr[:, ::-1] if k >= 4 else hr
        hr = np.ascontiguousarray(hr)
        return _to_tensor(imresize(hr, 1 / self.scale)), _to_tensor(hr)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
