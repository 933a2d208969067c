"""Binary conv engine: integer dots equal a NumPy ±1 reference conv (+1 padding) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import reference_conv
from hypothesis import given, settings
from hypothesis import strategies as st

from binsr.deploy import engine
from binsr.deploy.bitpack import pack_bits, pack_weights, unpack_bits, unpack_weights
from binsr.deploy.engine import BinaryConv

PATHS = engine.available_paths()
COMPILED = [p for p in PATHS if p != "numpy"]


@st.composite
def conv_cases(draw):
    k = draw(st.integers(1, 7))
    dilation = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    cin = groups * draw(st.sampled_from([1, 5, 16, 21, 32, 64, 70]))
    cout = groups * draw(st.integers(1, 20))
    span = dilation * (k - 1)
    padding = draw(st.sampled_from([span // 2, 0, span]))
    lo = max(1, span + 1 - 2 * padding)
    h = draw(st.integers(lo, lo + 8))
    w = draw(st.integers(lo, lo + 10))
    seed = draw(st.integers(0, 2**31 - 1))
    return k, dilation, padding, groups, cin, cout, h, w, seed


def _signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], np.float32), shape)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**31 - 1))
def test_pack_roundtrip(channels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 3, channels)).astype(np.float32)
    x[0, 0, 0] = 0.0  # sign(0) = +1
    p = pack_bits(x)
    assert p.dtype == np.uint64 and p.shape == (2, 3, -(-channels // 64))
    np.testing.assert_array_equal(unpack_bits(p, channels), np.where(x >= 0, 1.0, -1.0))
    if channels % 64:  # padding bits are 1
        assert (p[..., -1] >> np.uint64(channels % 64) == ~np.uint64(0) >> np.uint64(channels % 64)).all()
    w = rng.normal(size=(4, channels, 3, 3))
    np.testing.assert_array_equal(unpack_weights(pack_weights(w), channels), np.where(w >= 0, 1.0, -1.0))


@settings(max_examples=80, deadline=None)
@given(conv_cases())
def test_dots_equal_reference_on_every_path(case) -> None:
    k, dilation, padding, groups, cin, cout, h, w, seed = case
    rng = np.random.default_rng(seed)
    x = _signs(rng, (2, h, w, cin))
    wt = _signs(rng, (cout, cin // groups, k, k))
    ref = reference_conv(x, wt, dilation, padding, groups)
    conv = BinaryConv(pack_weights(wt), cin, k, dilation, padding, groups)
    xb = pack_bits(x)
    for path in PATHS:
        for threads in (1, 2):
            res = conv(xb, path=path, threads=threads, out_int=True, out_float=False, pack=True)
            assert res.path == path
            np.testing.assert_array_equal(res.dots, ref, err_msg=f"{path} threads={threads}")
            np.testing.assert_array_equal(res.bits, pack_bits(ref.astype(np.float32)))
    if "avx512" in PATHS:  # the VPOPCNTDQ kernel, which "avx512" bypasses where AMX-INT8 is there
        for threads in (1, 2):
            _, dots, _ = conv._layer.run(xb, "avx512-vpopcnt", threads, out_float=False, out_int=True)
            np.testing.assert_array_equal(dots, ref, err_msg=f"avx512-vpopcnt threads={threads}")


@pytest.mark.parametrize("path", COMPILED + (["avx512-vpopcnt"] if "avx512" in PATHS else []) or ["numpy"])
def test_realistic_layer_64_channels(path: str) -> None:
    rng = np.random.default_rng(1)
    x = _signs(rng, (1, 13, 37, 64))
    for k, d, g in [(3, 1, 1), (5, 1, 1), (7, 1, 1), (3, 2, 1), (3, 1, 4)]:
        wt = _signs(rng, (64, 64 // g, k, k))
        conv = BinaryConv(pack_weights(wt), 64, k, d, None, g)
        ref = reference_conv(x, wt, d, d * (k - 1) // 2, g)
        if path == "avx512-vpopcnt":
            np.testing.assert_array_equal(conv._layer.run(pack_bits(x), path, 1, out_int=True)[1], ref)
        else:
            np.testing.assert_array_equal(conv(pack_bits(x), path=path, out_int=True).dots, ref)


def test_gate_bias_needs_pix() -> None:
    """The epilogue's values are checked against the reference formula in test_engine_epilogue.py."""
    rng = np.random.default_rng(0)
    conv = BinaryConv(pack_weights(_signs(rng, (8, 40, 3, 3))), 40, 3)
    with pytest.raises(ValueError, match="gate_bias needs pix"):
        conv(pack_bits(_signs(rng, (1, 4, 5, 40))), gate_bias=np.ones(8, np.float32))


@pytest.mark.parametrize("path", PATHS)
def test_output_buffers(path: str) -> None:
    """``out`` / ``bits_out`` receive exactly what fresh outputs hold; a wrong buffer is refused."""
    rng = np.random.default_rng(3)
    x = pack_bits(_signs(rng, (1, 19, 70, 64)))
    conv = BinaryConv(pack_weights(_signs(rng, (100, 64, 3, 3))), 64, 3)
    kw = dict(scale=rng.random(100).astype(np.float32), bias=rng.normal(size=100).astype(np.float32),
              pack=True, post_scale=0.5, residual=(rng.normal(size=(1, 19, 70, 100)).astype(np.float32),))
    want = conv(x, path=path, **kw)
    out, bits = np.full_like(want.out, np.nan), np.zeros_like(want.bits)
    got = conv(x, path=path, out=out, bits_out=bits, **kw)
    assert np.shares_memory(got.out, out) and np.shares_memory(got.bits, bits)
    np.testing.assert_array_equal(out, want.out)
    np.testing.assert_array_equal(bits, want.bits)
    with pytest.raises(ValueError):
        conv(x, path=path, out=np.empty((1, 19, 70, 99), np.float32), **kw)
    with pytest.raises(ValueError):
        conv(x, path=path, bits_out=np.empty(want.bits.shape, np.int64), **kw)


@pytest.mark.parametrize("path", COMPILED or ["numpy"])
def test_worker_threads_agree_and_survive_concurrent_callers(path: str) -> None:
    """The persistent workers give the single-thread result for 2-5 threads, over many calls and
    with two Python threads calling at once (the second falls back to its own threads)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    x = pack_bits(_signs(rng, (1, 23, 41, 64)))
    conv = BinaryConv(pack_weights(_signs(rng, (64, 64, 3, 3))), 64, 3)
    want = conv(x, path=path, out_int=True).dots
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda t: conv(x, path=path, threads=t, out_int=True).dots, [2, 3, 4, 5] * 10))
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_paths_and_isa() -> None:
    assert engine.isa() == PATHS[-1] and engine.isa() in ("numpy", "portable", "avx2", "avx512")
    assert engine.resolve_path("auto") == engine.isa()
    if engine._engine is not None:
        assert "portable" in PATHS
    for path in ("avx2", "avx512"):
        if path not in PATHS:
            with pytest.raises(RuntimeError, match="not available"):
                engine.resolve_path(path)
    print(f"deploy paths here: {PATHS}; auto runs {engine.isa()}")


@pytest.mark.skipif("avx512" in PATHS, reason="this CPU runs the AVX-512 path")
def test_avx512_refused_without_vpopcntdq() -> None:
    if engine._engine is None:
        pytest.skip("extension not built")
    conv = engine._engine.BinaryConv(np.zeros((1, 1, 1, 1), np.uint64), 3, 1, 1, 0, 1)
    with pytest.raises(RuntimeError, match="AVX-512"):
        conv.run(np.zeros((1, 2, 2, 1), np.uint64), "avx512")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 3), st.sampled_from([2, 3, 4, 5]), st.sampled_from([16, 32]),
       st.sampled_from([5, 12, 16, 32]), st.integers(0, 2**31 - 1))
def test_grouped_16_32_channel_layers(k: int, dilation: int, groups: int, cpi: int, cpo: int, seed: int) -> None:
    """Groups of 16 / 32 input channels (segment modes), outputs per group a multiple of 8 or not
    (the kernels' partial blocks)."""
    rng = np.random.default_rng(seed)
    span = dilation * (k - 1)
    x = _signs(rng, (1, span + 3, span + 21, groups * cpi))
    wt = _signs(rng, (groups * cpo, cpi, k, k))
    ref = reference_conv(x, wt, dilation, span // 2, groups)
    conv = BinaryConv(pack_weights(wt), groups * cpi, k, dilation, span // 2, groups)
    for path in COMPILED:
        for threads in (1, 2):
            res = conv(pack_bits(x), path=path, threads=threads, out_int=True, pack=True)
            np.testing.assert_array_equal(res.dots, ref, err_msg=f"{path} threads={threads}")
            np.testing.assert_array_equal(res.bits, pack_bits(ref.astype(np.float32)))
            np.testing.assert_array_equal(res.out, ref.astype(np.float32))
    if "avx512" in PATHS:
        for threads in (1, 2):
            _, dots, bits = conv._layer.run(pack_bits(x), "avx512-vpopcnt", threads, out_float=False, out_int=True,
                                            pack=True)
            np.testing.assert_array_equal(dots, ref, err_msg=f"avx512-vpopcnt threads={threads}")
            np.testing.assert_array_equal(bits, pack_bits(ref.astype(np.float32)))


@pytest.mark.parametrize("shape,dtype", [((1, 19, 70, 64), np.float32), ((3, 5, 1), np.uint64), ((7,), np.float32)])
def test_aligned_empty(shape, dtype) -> None:
    a = engine.aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
