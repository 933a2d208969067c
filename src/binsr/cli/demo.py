"""``binsr demo``: bicubic on Set5 x4 (when the data is there) and on the shipped sample image.

The sample (``binsr/assets/sample_hr.png``, see the README there) is downscaled x4 with MATLAB
``imresize``, upscaled again, and written as a side-by-side PNG ``[SR | HR]``. Swapping bicubic
for a trained model means passing a module to :func:`run_demo` (or any upscale callable to
:func:`sample_comparison`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from binsr.errors import UsageError

SCALE = 4
DEFAULT_OUT = Path("outputs")
_GAP = 4  # white pixels between the panels


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="bicubic x4 on Set5 and on a shipped sample image",
        description="Evaluate bicubic x4 on Set5 (if the data root exists) and write a side-by-side "
        "PNG [bicubic SR | HR] of the shipped sample image.",
    )
    p.add_argument(
        "--out",
        type=Path,
        help=f"output folder (default: {DEFAULT_OUT}/, where the demo replaces its own earlier output; "
        "in a folder given here an existing file is replaced only with --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--data-root", metavar="DIR", help="data folder (default: $BINSR_DATA, else ../shared/data)")
    p.set_defaults(func=run)


def sample_comparison(upscale: Callable[[np.ndarray, int], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Run ``upscale(lr, scale) -> uint8 SR`` on the shipped sample at x4.

    Returns the side-by-side ``[SR | HR]`` uint8 image and the sample's PSNR (dB) and SSIM.
    """
    from binsr.data import imresize, read_image
    from binsr.metrics import psnr_y, ssim_y

    with resources.as_file(resources.files("binsr") / "assets" / "sample_hr.png") as path:
        hr = read_image(path)
    sr = upscale(imresize(hr, 1 / SCALE), SCALE)
    gap = np.full((hr.shape[0], _GAP, 3), 255, np.uint8)
    return np.concatenate([sr, gap, hr], axis=1), psnr_y(sr, hr, SCALE), ssim_y(sr, hr, SCALE)


def run_demo(model, out_dir: Path, overwrite: bool, data_root: str | None = None) -> Path:
    """Evaluate ``model`` (``"bicubic"`` or an ``nn.Module``) on Set5 x4 if the data is found,
    then write ``<out_dir>/sample_x4_<name>.png``; prints what it does and returns that path."""
    import torch

    from binsr.data import write_image
    from binsr.evaluation import evaluate, upscale_image

    name = model if isinstance(model, str) else type(model).__name__
    target = out_dir / f"sample_x{SCALE}_{name}.png"
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass --overwrite to replace it")
    try:
        r = evaluate(model, "Set5", SCALE, data_root=data_root)
        print(f"{name} on Set5 x{SCALE}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} ({r['n_images']} images)")
    except UsageError as exc:
        print(f"skipping Set5: {exc}")
    if not isinstance(model, str):
        model.eval()
    with torch.no_grad():
        panel, psnr, ssim = sample_comparison(lambda lr, s: upscale_image(model, lr, s))
    path = write_image(target, panel, overwrite=overwrite)
    print(f"{name} on the sample image x{SCALE}: PSNR {psnr:.2f} dB, SSIM {ssim:.4f}")
    print(f"wrote {path}  [left: {name} SR | right: HR]")
    return path


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else DEFAULT_OUT
    run_demo("bicubic", out, overwrite=args.overwrite or args.out is None, data_root=args.data_root)
    return 0
