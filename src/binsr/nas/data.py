"""Search data: HR training images split by image into a weight split and a held-out arch split.

Each image is mod-cropped and downscaled once with MATLAB-bicubic ``imresize`` (uint8, as the
benchmark LR images are made); a batch is random aligned LR/HR crops with random flips and
transposes, drawn from a seeded ``torch.Generator`` whose state goes into the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from binsr.data.io import read_image
from binsr.data.paths import data_root
from binsr.data.resize import imresize, modcrop
from binsr.errors import UsageError

__all__ = ["PatchSampler", "split_images"]

_EXTS = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"}


def split_images(root: str | None, train_sets: list[str], arch_fraction: float, seed: int,
                 max_images: int = 0) -> tuple[list[Path], list[Path]]:
    """``(weight_paths, arch_paths)``: the images of ``train_sets`` under ``data_root(root)/train``,
    shuffled with ``seed`` and split so that ``arch_fraction`` of them are held out."""
    base = data_root(root) / "train"
    paths: list[Path] = []
    for name in train_sets:
        folder = base / name
        if not folder.is_dir():
            raise UsageError(f"training set folder not found: {folder}")
        paths += sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTS)
    if max_images:
        paths = paths[:max_images]
    if len(paths) < 2:
        raise UsageError(f"need at least 2 training images to split, found {len(paths)} in {', '.join(train_sets)}")
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    n_arch = min(max(1, round(arch_fraction * len(paths))), len(paths) - 1)
    return [paths[i] for i in order[n_arch:]], [paths[i] for i in order[:n_arch]]


class PatchSampler:
    """Random LR/HR patch pairs (float32 in [0, 1], NCHW) from a list of HR images."""

    def __init__(self, paths: list[Path], scale: int, patch_size: int) -> None:
        self.scale, self.patch = scale, patch_size
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for path in paths:
            hr = read_image(path)
            if hr.ndim == 2:
                hr = np.repeat(hr[..., None], 3, axis=2)
            hr = modcrop(hr[..., :3].astype(np.uint8), scale)
            if min(hr.shape[:2]) < patch_size:
                continue
            lr = imresize(hr, 1.0 / scale)
            self.pairs.append((torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1),
                               torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)))
        if not self.pairs:
            raise UsageError(f"no training image is at least {patch_size} px on each side")

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(lr, hr)`` of shapes (B, 3, p/s, p/s) and (B, 3, p, p)."""
        s, lp = self.scale, self.patch // self.scale
        lrs, hrs = [], []
        for _ in range(batch_size):
            lr, hr = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=generator))]
            y = int(torch.randint(lr.shape[1] - lp + 1, (1,), generator=generator))
            x = int(torch.randint(lr.shape[2] - lp + 1, (1,), generator=generator))
            a, b = lr[:, y:y + lp, x:x + lp], hr[:, y * s:(y + lp) * s, x * s:(x + lp) * s]
            flip_h, flip_v, transpose = torch.randint(2, (3,), generator=generator).tolist()
            if flip_h:
                a, b = a.flip(2), b.flip(2)
            if flip_v:
                a, b = a.flip(1), b.flip(1)
            if transpose:
                a, b = a.transpose(1, 2), b.transpose(1, 2)
            lrs.append(a)
            hrs.append(b)
        return torch.stack(lrs).float().div_(255.0), torch.stack(hrs).float().div_(255.0)
