"""Packed engine vs PyTorch eval forward on a benchmark set: the share of equal uint8 values and the
largest difference (the Deployment issue's bar: >= 99.9% equal, never more than 1 apart).

    .venv/bin/python benchmarks/exactness.py --model zoo:srresnet_lite_e2fif_x4
    .venv/bin/python benchmarks/exactness.py --model srresnet_lite16 --fp16-weights --weights W

(W: e.g. ``runs/srresnet_lite16_e2fif_x4/best.safetensors`` from ``configs/zoo/srresnet_lite16_e2fif_x4.yaml``.)

``--fp64`` adds, per image, PyTorch float32 against PyTorch float64 of the same weights: how far the
float32 forward is itself defined (SCALES' gated bodies: see docs/CONVENTIONS.md).

LR images: MATLAB-bicubic downscaling of the set's HR images (as ``binsr eval``).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch

from binsr.data import imresize, read_image
from binsr.data.paths import data_root
from binsr.deploy import Runtime, export_packed, round_fp16_
from binsr.models import build_for_eval


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registry name or zoo:<name>")
    p.add_argument("--weights", help="weights file (registry models)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--dataset", default="Set5")
    p.add_argument("--fp16-weights", action="store_true", help="round the FP conv weights to float16 first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", help="benchmark data root (else $BINSR_DATA, else ../shared/data)")
    p.add_argument("--fp64", action="store_true", help="also compare PyTorch float32 with float64")
    args = p.parse_args()
    model = build_for_eval(args.model, args.scale, None, args.weights, default_recipe="e2fif")
    if args.fp16_weights:
        round_fp16_(model)
    model64 = copy.deepcopy(model).double() if args.fp64 else None
    with tempfile.TemporaryDirectory() as tmp:
        packed = Path(tmp) / "m.bsr"
        export_packed(model, packed, fp16=args.fp16_weights)
        rt = Runtime(packed, threads=args.threads)
        s = args.scale
        folder = data_root(args.data_root) / "benchmark" / args.dataset / f"image_SRF_{s}"
        equal = total = worst = 0
        for f in sorted(folder.glob("*_HR.png")):
            hr = read_image(f)
            hr = np.repeat(hr[..., None], 3, axis=2) if hr.ndim == 2 else hr  # a gray image as RGB, as binsr eval
            lr = imresize(hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s], 1 / s)
            x = (lr.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
            with torch.no_grad():
                ref = _uint8(model(torch.from_numpy(x)).numpy())
            diff = np.abs(_uint8(rt(x)) - ref)
            line = f"{f.name}: {100 * (diff == 0).mean():.4f}% equal, max diff {diff.max():.0f}"
            if model64 is not None:
                with torch.no_grad():
                    d64 = np.abs(_uint8(model64(torch.from_numpy(x).double()).numpy()) - ref)
                line += f"; PyTorch float64 vs float32: {100 * (d64 == 0).mean():.4f}% equal, max diff {d64.max():.0f}"
            print(line)
            equal, total, worst = equal + int((diff == 0).sum()), total + diff.size, max(worst, float(diff.max()))
    print(f"{args.model} on {args.dataset} x{s}{' (fp16 weights)' if args.fp16_weights else ''}: "
          f"{100 * equal / total:.4f}% of {total} uint8 values equal, max difference {worst:.0f}")


if __name__ == "__main__":
    main()
