"""``binsr.upscale``: the Python API behind ``binsr upscale`` (arrays, PIL images, paths)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import binsr
from binsr.errors import UsageError
from binsr.infer import load_upscaler, upscale_array

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def model():
    from binsr.models import create

    torch.manual_seed(0)
    return create("srresnet_lite", scale=2, recipe="e2fif", num_feat=8, num_block=1).eval()


def test_import_binsr_stays_light():
    code = "import sys, binsr; print('torch' in sys.modules, 'numpy' in sys.modules, callable(binsr.upscale))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]


@pytest.mark.parametrize("backend", ["engine", "torch"])
def test_arrays_keep_layout_and_dtype(model, backend):
    rgb = RNG.integers(0, 256, (14, 18, 3), dtype=np.uint8)
    up = load_upscaler(model, backend=backend, threads=1)
    assert up.backend == backend and up.scale == 2
    cases = {
        "rgb": (rgb, (28, 36, 3)),
        "gray": (rgb[..., 0], (28, 36)),
        "rgba": (np.dstack([rgb, rgb[..., :1]]), (28, 36, 4)),
        "la": (np.dstack([rgb[..., 0], rgb[..., 1]]), (28, 36, 2)),
        "rgb16": (rgb.astype(np.uint16) * 257, (28, 36, 3)),
    }
    for name, (img, shape) in cases.items():
        out = binsr.upscale(img, model=up, tile=8, tile_overlap=4)
        assert out.shape == shape and out.dtype == img.dtype, name
    f = binsr.upscale(rgb / 255.0, model=up, tile=None)
    assert f.dtype == np.float32 and f.shape == (28, 36, 3)
    # gray = channel mean of the model's output on R = G = B (float in, float out: unclipped)
    gray = rgb[..., 0] / 255.0
    g = binsr.upscale(gray, model=up, tile=None)
    rep = binsr.upscale(np.repeat(gray[..., None], 3, axis=2), model=up, tile=None)
    assert g.shape == (28, 36) and np.abs(g - rep.mean(axis=2)).max() < 1e-5


def test_paths_and_pil_images_match_arrays(model, tmp_path):
    rgb = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    up = load_upscaler(model, backend="torch")
    ref = binsr.upscale(rgb, model=up)
    np.testing.assert_array_equal(binsr.upscale(tmp_path / "a.png", model=up), ref)
    np.testing.assert_array_equal(binsr.upscale(Image.open(tmp_path / "a.png"), model=up), ref)
    with pytest.raises(UsageError, match="not x3"):
        binsr.upscale(rgb, model=model, scale=3)
    with pytest.raises(UsageError, match="backend"):
        binsr.upscale(rgb, model=model, backend="gpu")


def test_tiles_cover_odd_sizes_and_seams_blend(model):
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    up = load_upscaler(model, backend="engine", threads=1)
    full = upscale_array(up, img, tile=None)
    for tile, overlap in [(8, 10), (16, 10), (20, 12), (36, 9)]:
        tiled = upscale_array(up, img, tile=tile, overlap=overlap)
        assert np.abs(tiled.astype(int) - full).max() <= 1, (tile, overlap)
