"""Shared by the web tests: small pictures of every kind and what ``binsr upscale`` writes for them."""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ICC = b"binsr-web-test-icc" * 4


def smooth(h: int, w: int, channels: int, peak: int, seed: int = 0) -> np.ndarray:
    """A smooth random picture (bilinear-upsampled noise), like a photo rather than white noise."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 2, w // 4 + 2, channels))
    ys, xs = np.linspace(0, small.shape[0] - 1.001, h), np.linspace(0, small.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = small[y0][:, x0] * (1 - fx) + small[y0][:, x0 + 1] * fx
    bottom = small[y0 + 1][:, x0] * (1 - fx) + small[y0 + 1][:, x0 + 1] * fx
    arr = np.round((top * (1 - fy) + bottom * fy) * peak)
    return arr.astype(np.uint16 if peak > 255 else np.uint8)


def png_bytes(kind: str, h: int = 20, w: int = 28) -> bytes:
    """A PNG of ``kind``: rgb (with an ICC profile), rgb16, rgba, gray."""
    from binsr.data.io import write_image

    arr = {"rgb": lambda: smooth(h, w, 3, 255), "rgb16": lambda: smooth(h, w, 3, 65535, 1),
           "rgba": lambda: smooth(h, w, 4, 255, 2), "gray": lambda: smooth(h, w, 1, 255, 3)[..., 0]}[kind]()
    if kind == "rgb16":  # Pillow writes no 16-bit colour PNG: binsr's own encoder does
        with tempfile.TemporaryDirectory() as tmp:
            return write_image(Path(tmp) / "a.png", arr).read_bytes()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", icc_profile=ICC if kind == "rgb" else None)
    return buf.getvalue()


@pytest.fixture(name="png_bytes")
def png_bytes_fixture():
    """:func:`png_bytes`, for the tests."""
    return png_bytes


@pytest.fixture
def cli_output(tmp_path, capsys):
    """``cli_output(data, name, *options)``: the bytes ``binsr upscale`` writes for that file."""
    from binsr.cli import main

    def run(data: bytes, name: str, *options: str) -> bytes:
        src = tmp_path / "in" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        out = tmp_path / "out"
        assert main(["upscale", str(src), "-o", str(out), "--quiet", "--overwrite", *options]) == 0, capsys.readouterr()
        (result,) = out.glob(f"{src.stem}_x*.png")
        data = result.read_bytes()
        result.unlink()
        return data

    return run
