"""Binary SwinIR through the packed export and the torch-free runtime vs the PyTorch eval forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from binsr.deploy import Runtime, export_packed, transformer
from binsr.errors import BinsrError
from binsr.models import create
from binsr.models.swinir import shifted_window_mask


def _swinir(recipe: str, scale: int, window: int = 4, seed: int = 0) -> torch.nn.Module:
    """A small random SwinIR (2 RSTB x 2 layers: regular and shifted windows) with non-zero
    thresholds, biases and gates, so every part of the graph matters."""
    torch.manual_seed(seed)
    model = create("swinir_light", scale=scale, recipe=recipe, embed_dim=24, depths=(2, 2), num_heads=(2, 3),
                   window_size=window).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "threshold" in name or name.endswith("bias"):
                p.normal_(0, 0.05)
    return model


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.int16)


@settings(max_examples=8, deadline=None)
@given(recipe=st.sampled_from(["scales", "bibert", "bnn"]), scale=st.sampled_from([2, 3, 4]),
       h=st.integers(3, 21), w=st.integers(3, 21), window=st.sampled_from([4, 8]))
def test_swinir_runtime_matches_torch(tmp_path_factory, recipe: str, scale: int, h: int, w: int, window: int) -> None:
    model = _swinir(recipe, scale, window)
    path = tmp_path_factory.mktemp("swin") / "m.bsr"
    export_packed(model, path)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 31 + w))
    with torch.no_grad():
        ref = _uint8(model(x).numpy())
    out = _uint8(Runtime(path, threads=2)(x.numpy()))
    assert out.shape == ref.shape == (1, 3, h * scale, w * scale)
    diff = np.abs(out - ref)
    # a tiny image has fewer than 1000 values: allow one rounding tie that float order flips
    assert diff.max() <= 1 and (diff != 0).sum() <= max(1, 0.001 * diff.size)


@pytest.mark.parametrize("recipe", ["scales", "bibert"])
def test_swinir_runtime_matches_torch_on_999_permille(tmp_path, recipe: str) -> None:
    model = _swinir(recipe, 4, window=8)
    export_packed(model, tmp_path / "m.bsr")
    x = torch.rand(1, 3, 37, 51, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = _uint8(model(x).numpy())
    diff = np.abs(_uint8(Runtime(tmp_path / "m.bsr", threads=2)(x.numpy())) - ref)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


def test_fp_swinir_is_refused(tmp_path) -> None:
    with pytest.raises(BinsrError, match="not a binary linear"):
        export_packed(_swinir("fp", 4), tmp_path / "m.bsr")


def test_shift_mask_and_gelu_match_torch() -> None:
    mask = transformer._shift_mask(16, 24, 8, 4)
    assert np.array_equal(mask, shifted_window_mask(16, 24, 8, 4).numpy())
    x = torch.linspace(-6, 6, 300_001)  # long enough for two threads
    ref = torch.nn.functional.gelu(x).numpy()
    for compiled in (False, True):
        for threads in (1, 2):
            assert np.abs(transformer.gelu(x.numpy(), threads, compiled) - ref).max() < 2e-6


@settings(max_examples=10, deadline=None)
@given(heads=st.sampled_from([1, 2, 3]), window=st.sampled_from([2, 4, 8]), rows=st.integers(1, 3),
       cols=st.integers(1, 3), shifted=st.booleans(), threads=st.sampled_from([1, 2]))
def test_compiled_window_attention_matches_numpy(heads: int, window: int, rows: int, cols: int, shifted: bool,
                                                 threads: int) -> None:
    rng = np.random.default_rng(window * 7 + rows * 3 + cols)
    d, n = 4, window * window
    qkv = rng.normal(size=(rows * window, cols * window, 3 * heads * d)).astype(np.float32)
    bias_t = rng.normal(size=(heads, n, n)).astype(np.float32)
    shift = window // 2 if shifted else 0
    ref = transformer.window_attention(qkv, heads, window, shift, bias_t, 0.5, compiled=False)
    out = transformer.window_attention(qkv, heads, window, shift, bias_t, 0.5, threads=threads)
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-5


@settings(max_examples=10, deadline=None)
@given(channels=st.integers(1, 200), pixels=st.integers(1, 300), threads=st.sampled_from([1, 2]),
       with_thr=st.booleans())
def test_compiled_pack_and_layer_norm_match_numpy(channels: int, pixels: int, threads: int, with_thr: bool) -> None:
    from binsr.deploy import pack_bits
    from binsr.deploy.engine import _engine

    rng = np.random.default_rng(channels * 1000 + pixels)
    x = rng.normal(size=(pixels, channels)).astype(np.float32)
    x[0, 0] = 0.0  # sign of 0 is +1
    thr = rng.normal(size=channels).astype(np.float32) * 0.3 if with_thr else None
    ref = pack_bits(x if thr is None else x - thr)
    assert np.array_equal(_engine.pack_signs(x, thr, threads), ref)
    w, b = rng.normal(size=channels).astype(np.float32), rng.normal(size=channels).astype(np.float32)
    expect = torch.nn.functional.layer_norm(torch.from_numpy(x), (channels,), torch.from_numpy(w),
                                            torch.from_numpy(b), 1e-5).numpy()
    for compiled in (False, True):
        assert np.abs(transformer.layer_norm(x, w, b, 1e-5, threads, compiled) - expect).max() < 1e-4
