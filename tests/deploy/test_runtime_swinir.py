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


def _paths() -> list[str]:
    from binsr.deploy import available_paths

    return available_paths()


@pytest.mark.parametrize("recipe", ["scales", "bibert"])
def test_swinir_body_is_bit_exact_on_every_path(tmp_path, recipe: str) -> None:
    """With the FP ops in float64 (``fp64``) and SCALES' gated linears in one order, the packed body's
    output (``deep``: conv_after_body plus the head features) equals PyTorch's bit for bit, on every
    path; only the float32 tail conv may differ by an ulp."""
    model = _swinir(recipe, 2, window=4, seed=3)
    export_packed(model, tmp_path / "m.bsr")
    x = torch.rand(1, 3, 13, 18, generator=torch.Generator().manual_seed(9))
    cap = {}
    model.body.register_forward_hook(lambda m, i, o: cap.__setitem__("body", o))
    model.conv_first.register_forward_hook(lambda m, i, o: cap.__setitem__("feat", o))
    with torch.no_grad():
        model(x)
    want = (cap["body"] + cap["feat"])[0].permute(1, 2, 0).numpy()
    for path in _paths():
        keep: dict[str, np.ndarray] = {}
        Runtime(tmp_path / "m.bsr", threads=2, path_isa=path).run_hwc(np.ascontiguousarray(x[0].permute(1, 2, 0).numpy()),
                                                                       keep=keep)
        assert np.array_equal(keep["deep"].reshape(want.shape), want), path


@settings(max_examples=12, deadline=None)
@given(tokens=st.integers(1, 300), channels=st.sampled_from([1, 7, 60, 120]), spread=st.sampled_from([0.3, 1.0, 4.0]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_fp64_layer_norm_gelu_and_token_gate_are_torch_float64_rounded_once(tokens: int, channels: int, spread: float,
                                                                            threads: int, seed: int) -> None:
    """The ``fp64`` LayerNorm, GELU (its erf: scripts/erf_coefficients.py), linear and sigmoid, compiled
    and NumPy, equal binsr.nn's Exact modules / TokenGate in eval, bit for bit."""
    from binsr.deploy import fp
    from binsr.nn import ExactGELU, ExactLayerNorm, TokenGate

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, channels, generator=gen) * spread
    norm, gate = ExactLayerNorm(channels).eval(), TokenGate(channels).eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=gen)
        norm.bias.normal_(0, 0.1, generator=gen)
        want_norm, want_gelu, want_gate = norm(x).numpy(), ExactGELU().eval()(x).numpy(), gate(x).numpy()[:, 0]
    xn, w, b = x.numpy(), norm.weight.detach().numpy(), norm.bias.detach().numpy()
    gw, gb = gate.fc.weight.detach().numpy().T.copy(), gate.fc.bias.detach().numpy()
    for compiled in (False, True):
        assert np.array_equal(transformer.layer_norm(xn, w, b, norm.eps, threads, compiled, fp64=True), want_norm)
        assert np.array_equal(transformer.gelu(xn, threads, compiled, fp64=True), want_gelu)
        logits = fp.linear(xn, gw, gb, fp64=True, threads=threads, compiled=compiled)
        assert np.array_equal(fp.sigmoid(logits[:, 0], fp64=True), want_gate)


def test_fp64_gelu_over_its_whole_range() -> None:
    """Both erf pieces and the tails: 1.2 M float32 inputs from -12 to 12, and the special values."""
    x = torch.cat([torch.linspace(-12, 12, 1_200_001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38])])
    want = torch.nn.functional.gelu(x.double()).float().numpy()
    for threads in (1, 2):
        got = transformer.gelu(x.numpy(), threads, True, fp64=True)
        assert np.array_equal(got, want) or (got != want).mean() < 1e-6  # an ulp of erf near a tie, at most


@settings(max_examples=10, deadline=None)
@given(heads=st.sampled_from([1, 2, 6]), window=st.sampled_from([2, 4, 8]), rows=st.integers(1, 3),
       cols=st.integers(1, 3), shifted=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_fp64_window_attention_is_torch_float64_rounded_once(heads: int, window: int, rows: int, cols: int,
                                                             shifted: bool, threads: int, seed: int) -> None:
    """The ``fp64`` window attention, compiled and NumPy, equals ``WindowAttention``'s eval products and
    softmax (float64, rounded once) bit for bit, shifted windows and their mask included."""
    from binsr.models.swinir import WindowAttention, window_partition, window_reverse
    from binsr.nn import fp64_at_inference, get_recipe

    gen = torch.Generator().manual_seed(seed)
    h, w, n, d = rows * window, cols * window, window * window, 5
    attn = WindowAttention(heads * d, window, heads, get_recipe("fp")).eval()
    shift = window // 2 if shifted and window > 1 else 0
    qkv = torch.randn(h, w, 3 * heads * d, generator=gen)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 1, generator=gen)
        bias = attn.relative_position_bias_table[attn.relative_position_index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        t = torch.roll(qkv[None], (-shift, -shift), (1, 2)) if shift else qkv[None]
        mask = shifted_window_mask(h, w, window, shift) if shift else None
        out = window_reverse(fp64_at_inference(attn, window_partition(t, window), attn._attend, bias, mask), window, h, w)
        want = (torch.roll(out, (shift, shift), (1, 2)) if shift else out)[0].numpy()
    idx = transformer.relative_position_index(window)
    bias_t = np.ascontiguousarray(attn.relative_position_bias_table.detach().numpy()[idx].transpose(2, 1, 0))
    for compiled in (False, True):
        got = transformer.window_attention(qkv.numpy(), heads, window, shift, bias_t, attn.scale, threads, compiled,
                                           fp64=True)
        assert np.array_equal(got, want), compiled


def test_engine_erf_coefficients_are_the_scripts() -> None:
    """The erf coefficients in engine.cpp are what scripts/erf_coefficients.py computes (mpmath)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    printed = subprocess.run([sys.executable, str(root / "scripts" / "erf_coefficients.py")], capture_output=True,
                             text=True, check=True).stdout
    source = (root / "src" / "binsr" / "deploy" / "csrc" / "engine.cpp").read_text()
    arrays = re.findall(r"static constexpr double kErf\w+\[\d+\] = \{[^}]*\};", printed)
    assert len(arrays) == 2 and all(a in source for a in arrays)


def test_assert_body_exact_takes_a_swinir(assert_body_exact) -> None:
    assert_body_exact(_swinir("scales", 3, window=4, seed=4))


@settings(max_examples=15, deadline=None)
@given(pre=st.sampled_from([0, 1, 2]), fp64=st.booleans(), tokens=st.integers(1, 150),
       channels=st.sampled_from([1, 7, 24, 60, 65, 130]), with_thr=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**31 - 1))
def test_pack_gate_equals_the_separate_ops(pre: int, fp64: bool, tokens: int, channels: int, with_thr: bool,
                                           threads: int, seed: int) -> None:
    """``_engine.pack_gate`` (a LayerNorm or GELU, then sign bits and the fp64 token-gate logit, one
    pass over blocks of tokens) gives the bits and logits of the separate compiled ops."""
    from binsr.deploy import fp
    from binsr.deploy.engine import _engine

    if _engine is None:
        pytest.skip("the compiled engine is not built (no C++ compiler at install time)")
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(tokens, channels)) * 2).astype(np.float32)
    w, b = rng.normal(size=channels).astype(np.float32), rng.normal(size=channels).astype(np.float32)
    thr = rng.normal(size=channels).astype(np.float32) * 0.3 if with_thr else None
    gw, gb = rng.normal(size=(channels, 1)).astype(np.float32), rng.normal(size=1).astype(np.float32)
    y = {0: x, 1: transformer.layer_norm(x, w, b, 1e-5, 1, True, fp64), 2: transformer.gelu(x, 1, True, fp64)}[pre]
    bits, logits = _engine.pack_gate(x, thr, gw, gb, threads, pre, w if pre == 1 else None, b if pre == 1 else None,
                                     1e-5, fp64)
    assert np.array_equal(bits, _engine.pack_signs(y, thr, 1))
    assert np.array_equal(logits, fp.linear(y, gw, gb, fp64=True))


def test_token_fusion_runs_and_changes_no_bit(tmp_path) -> None:
    """The runtime fuses each LayerNorm / GELU with the sign packing and token gate that read it
    (and the attention output's packing with its gate); the output equals the op-by-op run's
    (``keep`` turns every fusion off, to hand out the intermediate maps)."""
    model = _swinir("scales", 2, window=4, seed=5)
    export_packed(model, tmp_path / "m.bsr")
    rt = Runtime(tmp_path / "m.bsr", threads=2)
    if not rt._fusions:
        pytest.skip("no compiled engine here: the NumPy path runs op by op")
    assert {pre for _, pre in rt._fusions.values()} == {None, "layernorm", "gelu"}
    x = np.random.default_rng(2).random((13, 18, 3), dtype=np.float32)
    rt(np.ascontiguousarray(x.transpose(2, 0, 1))[None], profile=True)
    assert {"layernorm+pack+gate", "gelu+pack+gate", "pack+gate"} <= set(rt.timings)
    assert np.array_equal(rt.run_hwc(x), rt.run_hwc(x, keep={}))
