"""``binsr demo``: the shipped x4 binary model (or bicubic) on Set5 and on a shipped sample image.

The default model is the package's zoo x4 model (``binsr zoo``); ``--model bicubic`` or any
``zoo:<name>`` can be chosen. The sample (``binsr/assets/demo_hr.png``, 192x192, see the README
there) is downscaled x4 with MATLAB ``imresize``, upscaled again, and written as a side-by-side
PNG ``[bicubic | binsr | original]`` (``[bicubic | original]`` for bicubic), each panel labelled
with its name and PSNR (Y channel, border 4, as the benchmark tables) in Pillow's default font.
Nothing needs ``../shared``: Set5 is evaluated only when the data root is found.
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
_LABEL = 22  # height of the label strip above the panels


def default_model() -> str:
    """``zoo:<name>`` of the default x4 model (:func:`binsr.pretrained.default_model`), else ``"bicubic"``."""
    from binsr.pretrained import default_model as zoo_default

    return zoo_default(SCALE) or "bicubic"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the shipped x4 binary model on Set5 and on a shipped sample image",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--model", help="zoo:<name> (x4) or bicubic (default: the zoo x4 model)")
    p.add_argument(
        "--out",
        type=Path,
        help=f"output folder (default: {DEFAULT_OUT}/, where the demo replaces its own earlier output; "
        "in a folder given here an existing file is replaced only with --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--data-root", metavar="DIR", help="data folder (default: $BINSR_DATA, else ../shared/data)")
    p.set_defaults(func=run)


def _labelled(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """The panels side by side, ``_GAP`` white pixels apart, each under its label (black on white)."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = panels[0].shape[:2]
    canvas = Image.new("RGB", (len(panels) * (w + _GAP) - _GAP, h + _LABEL), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for i, (img, label) in enumerate(zip(panels, labels)):
        x = i * (w + _GAP)
        canvas.paste(Image.fromarray(img), (x, _LABEL))
        draw.text((x + w // 2, _LABEL // 2), label, fill="black", font=font, anchor="mm")
    return np.asarray(canvas)


def sample_comparison(upscalers: dict[str, Callable[[np.ndarray, int], np.ndarray]]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Run each ``name: upscale(lr, scale) -> uint8 SR`` on the shipped sample at x4.

    Returns the labelled side-by-side ``[SR_1 | ... | SR_n | original]`` uint8 image (each SR
    panel titled ``name  PSNR dB``) and each SR's PSNR (dB) and SSIM.
    """
    from binsr.data import imresize, read_image
    from binsr.metrics import psnr_y, ssim_y

    with resources.as_file(resources.files("binsr") / "assets" / "demo_hr.png") as path:
        hr = read_image(path)
    lr = imresize(hr, 1 / SCALE)
    srs = [up(lr, SCALE) for up in upscalers.values()]
    scores = [(psnr_y(sr, hr, SCALE), ssim_y(sr, hr, SCALE)) for sr in srs]
    labels = [f"{name}  {psnr:.2f} dB" for name, (psnr, _) in zip(upscalers, scores)] + ["original"]
    return _labelled(srs + [hr], labels), scores


def run_demo(name: str, out_dir: Path, overwrite: bool, data_root: str | None = None) -> Path:
    """Evaluate ``name`` (``"bicubic"`` or ``zoo:<name>``) on Set5 x4 if the data is found, then
    write ``<out_dir>/sample_x4_<name>.png``; prints what it does and returns that path."""
    import torch

    from binsr.data import write_image
    from binsr.evaluation import evaluate, upscale_image
    from binsr.models import build_for_eval

    model = "bicubic" if name == "bicubic" else build_for_eval(name, SCALE)
    target = out_dir / f"sample_x{SCALE}_{name.removeprefix('zoo:')}.png"
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass --overwrite to replace it")
    try:
        r = evaluate(model, "Set5", SCALE, data_root=data_root)
        print(f"{name} on Set5 x{SCALE}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} ({r['n_images']} images)")
    except UsageError as exc:
        print(f"skipping Set5: {exc}")
    runs = {"bicubic": "bicubic"} if name == "bicubic" else {"bicubic": "bicubic", "binsr": model}
    with torch.no_grad():
        panel, scores = sample_comparison({n: lambda lr, s, m=m: upscale_image(m, lr, s) for n, m in runs.items()})
    path = write_image(target, panel, overwrite=overwrite)
    for n, (psnr, ssim) in zip(runs, scores):
        print(f"{name if n == 'binsr' else n} on the sample image x{SCALE}: PSNR {psnr:.2f} dB, SSIM {ssim:.4f}")
    print(f"wrote {path}  [{' | '.join(runs)} | original]")
    return path


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else DEFAULT_OUT
    run_demo(args.model or default_model(), out, overwrite=args.overwrite or args.out is None, data_root=args.data_root)
    return 0
