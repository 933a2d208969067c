"""Write ``gpu_data/``: the training data a lent GPU machine needs, small enough to travel.

The device tool copies the working tree (64 MiB in all; the tracked files take about 22 MB), and
``../shared`` does not travel. T91 and BSD200 are re-encoded as lossless WebP (the same pixels,
checked; about 2/3 of the PNG bytes) and Set5's HR images of the scales asked are copied, so that
``binsr train --data-root gpu_data`` finds ``train/<set>`` and ``benchmark/Set5/image_SRF_<s>``::

    .venv/bin/python scripts/gpu_data.py --scales 4        # then carry gpu_data (ignored by git)
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from binsr.data.paths import data_root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="T91,BSD200")
    ap.add_argument("--scales", default="4", help="Set5 HR images of these scales (comma list)")
    ap.add_argument("--out", type=Path, default=Path("gpu_data"))
    ap.add_argument("--data-root")
    args = ap.parse_args()
    root = data_root(args.data_root)
    total = 0
    for name in args.sets.split(","):
        dst = args.out / "train" / name
        dst.mkdir(parents=True, exist_ok=True)
        for src in sorted((root / "train" / name).iterdir()):
            img = Image.open(src)
            img.load()
            out = dst / (src.stem + ".webp")
            img.save(out, "WEBP", lossless=True, quality=100, method=4)
            with Image.open(out) as back:
                if not np.array_equal(np.asarray(back.convert(img.mode)), np.asarray(img)):
                    raise SystemExit(f"{src}: lossless WebP changed the pixels")
            total += out.stat().st_size
    for s in args.scales.split(","):
        dst = args.out / "benchmark" / "Set5" / f"image_SRF_{s}"
        dst.mkdir(parents=True, exist_ok=True)
        for src in sorted((root / "benchmark" / "Set5" / f"image_SRF_{s}").glob("*_HR.png")):
            shutil.copy2(src, dst / src.name)
            total += src.stat().st_size
    print(f"{args.out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
