"""Whole zoo models on the portable and AVX2 kernels (not only the fastest path) against the
PyTorch eval forward: >= 99.9% of uint8 values equal, none more than 1 apart."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest
import torch

from binsr.data import imresize, read_image
from binsr.deploy import Runtime, available_paths
from binsr.models import load_zoo, zoo_card, zoo_names
from binsr.pretrained import packed_file


@pytest.mark.parametrize("path", ["portable", "avx2"])
@pytest.mark.parametrize("name", [n for n in zoo_names() if packed_file(n) is not None])  # FP activations: no .bsr
def test_zoo_model_on_a_path_matches_torch(name: str, path: str) -> None:
    if path not in available_paths():
        pytest.skip(f"the {path} kernel cannot run here (paths: {available_paths()})")
    scale = zoo_card(f"zoo:{name}")["scale"]
    hr = read_image(files("binsr.assets") / "sample_hr.png")[: 40 * scale, : 56 * scale]
    x = (imresize(hr, 1 / scale).astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
    with torch.no_grad():
        ref = np.clip(np.round(load_zoo(f"zoo:{name}").eval()(torch.from_numpy(x)).numpy() * 255), 0, 255)
    runtime = Runtime(packed_file(name), threads=2, path_isa=path)
    assert runtime.path == path
    out = np.clip(np.round(runtime(x) * 255), 0, 255)
    diff = np.abs(out - ref)
    assert out.shape == ref.shape and diff.max() <= 1 and (diff == 0).mean() >= 0.999
