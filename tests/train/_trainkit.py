"""Test kit for binsr.train: a tiny model, synthetic training images, a stand-in evaluator.

Also a script, so that tests can run training in a subprocess (to ``kill -9`` it, or under
``torchrun``)::

    python tests/train/_trainkit.py CONFIG OUT [--resume] [--stall-after N] [--dump DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from binsr.train import load_config, save_weights, train

SET = "Syn"  # the synthetic training folder under <root>/train/


class Probe(nn.Module):
    """Records the training progress the trainer hands to quantizers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def set_progress(self, p: float) -> None:
        self.seen.append(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TinySR(nn.Module):
    """conv-relu-dropout-conv-PixelShuffle; dropout makes the loss depend on the model's RNG."""

    def __init__(self, scale: int = 2, feat: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, feat, 3, padding=1)
        self.probe = Probe()
        self.drop = nn.Dropout(0.1)
        self.tail = nn.Conv2d(feat, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.signature = {"model": "tiny", "recipe": "fp", "scale": scale, "kwargs": {"feat": feat}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.drop(torch.relu(self.probe(self.head(x))))))


def make_images(root: Path, n: int = 6, size: int = 40, seed: int = 0) -> Path:
    """``n`` smooth random RGB PNGs in ``root/train/Syn`` and a benchmark set ``Syn2``; returns ``root``."""
    folder = root / "train" / SET
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        f = rng.uniform(1, 4, size=(3, 2))
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy) + i) for c in range(3)], -1)
        img += rng.normal(0, 0.03, img.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    make_benchmark(root)
    return root


def make_benchmark(root: Path, name: str = "Syn2", scales=(2, 4), n: int = 2, size: int = 24) -> None:
    """A benchmark set ``root/benchmark/<name>`` in the SelfExSR layout (HR images only)."""
    rng = np.random.default_rng(1)
    for s in scales:
        folder = root / "benchmark" / name / f"image_SRF_{s}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / f"img_{i + 1:03d}_SRF_{s}_HR.png")


def evaluate(model: nn.Module, dataset: str, scale: int) -> dict[str, float]:
    """Stand-in for binsr.evaluation.evaluate: PSNR of a fixed upscaling task, SSIM = 1 - MSE."""
    gen = torch.Generator().manual_seed(123)
    hr = torch.rand(1, 3, 8 * scale, 8 * scale, generator=gen)
    lr = nn.functional.avg_pool2d(hr, scale)
    device = next(model.parameters()).device
    mse = float(((model(lr.to(device)).clamp(0, 1).cpu() - hr) ** 2).mean())
    return {"psnr": 10 * np.log10(1 / max(mse, 1e-10)), "ssim": 1 - mse}


def raw_config(root: Path, **sections) -> dict:
    """A small config dict for TinySR on the synthetic images under ``root``."""
    cfg = {
        "name": "tiny",
        "scale": 2,
        "seed": 7,
        "data": {"data_root": str(root), "train_sets": [SET], "patch_size": 16, "batch_size": 2, "num_workers": 0},
        "train": {"steps": 8, "lr": 1e-2, "warmup": 2, "checkpoint_every": 4, "ema": 0.9, "grad_clip": 1.0},
        "val": {"every": 4, "dataset": "Set5"},
        "log": {"every": 1, "tensorboard": False, "progress": False},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


class _Stall(torch.utils.data.Dataset):
    """Blocks (as if hung) once ``after`` items have been fetched: the test then kills the process."""

    def __init__(self, dataset, after: int) -> None:
        self.dataset, self.after, self.fetched = dataset, after, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.fetched += 1
        if self.fetched > self.after:
            time.sleep(600)
        return self.dataset[index]


class _Record(torch.utils.data.Dataset):
    """Appends every index it serves to a file (one per rank)."""

    def __init__(self, dataset, path: Path) -> None:
        self.dataset, self.path = dataset, path

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with open(self.path, "a") as fh:
            fh.write(f"{index}\n")
        return self.dataset[index]


def main(argv: list[str] | None = None) -> int:
    from binsr.data import TrainPatches

    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stall-after", type=int, help="hang after this many training items")
    p.add_argument("--dump", help="write each rank's final weights and served indices here")
    p.add_argument("--stop-after", type=float, help="train's stop_after (seconds)")
    args = p.parse_args(argv)
    cfg = load_config(args.config, check_names=False)
    torch.manual_seed(cfg.seed)
    model = TinySR(cfg.scale)
    root = Path(cfg.data.data_root)
    data = TrainPatches([root / "train" / SET], scale=cfg.scale, patch_size=cfg.data.patch_size, seed=cfg.seed)
    rank = int(os.environ.get("RANK", "0"))
    if args.stall_after is not None:
        data = _Stall(data, args.stall_after)
    if args.dump:
        data = _Record(data, Path(args.dump) / f"indices{rank}.txt")
    result = train(cfg, args.out, resume=args.resume, model=model, dataset=data, evaluate=evaluate, device="cpu",
                   stop_after=args.stop_after)
    if args.dump:
        save_weights(Path(args.dump) / f"rank{rank}.safetensors", model)
        if result:
            (Path(args.dump) / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
