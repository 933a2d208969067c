"""FP parts of the runtime: Winograd and im2col convs agree with torch, into fresh or given buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from binsr.deploy import fp
from binsr.deploy.engine import _engine, available_paths

COMPILED = [p for p in available_paths() if p != "numpy"]


def _torch_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, leaky: float | None, shuffle: int) -> np.ndarray:
    y = F.conv2d(torch.from_numpy(x.transpose(2, 0, 1))[None], torch.from_numpy(w), torch.from_numpy(b), padding=1)
    if leaky is not None:
        y = F.leaky_relu(y, leaky)
    return F.pixel_shuffle(y, shuffle)[0].permute(1, 2, 0).numpy()


@example(21, 5, 64, (80, 1), None, 21)  # a Winograd case within its rounding, outside a per-output 1e-4
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 23), st.integers(1, 41), st.sampled_from([3, 8, 16, 20, 64]),
       st.sampled_from([(1, 1), (3, 1), (12, 1), (64, 1), (80, 1), (48, 2), (27, 3)]),
       st.sampled_from([None, 0.1]), st.integers(0, 2**31 - 1))
def test_convs_match_torch_into_given_buffers(h: int, w: int, c: int, oc_shuffle: tuple[int, int],
                                              leaky: float | None, seed: int) -> None:
    """Odd sizes (partial 4x4 Winograd tiles), PixelShuffle, LeakyReLU, the head's 3 channels and
    output channels past a 64-block (direct loops), one output of many channels (SCALES' spatial
    gate: the dot-product loops, channels past their 16 lanes too); the same buffer twice."""
    cout, r = oc_shuffle
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    wt = rng.normal(size=(cout, c, 3, 3)).astype(np.float32) * 0.2
    b = rng.normal(size=cout).astype(np.float32)
    want = _torch_conv(x, wt, b, leaky, r)
    w2 = np.ascontiguousarray(wt.transpose(2, 3, 1, 0).reshape(9 * c, cout))
    out = np.full(fp.output_shape(h, w, cout, r), np.nan, np.float32)
    for _ in range(2):
        got = fp.conv2d(x, w2, b, 1, 1, leaky, r, threads=2, out=out)
        assert got is out
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    if r == 1:
        for _ in range(2):
            out[...] = np.nan
            assert fp.conv3x3_direct(x, w2, b, leaky, threads=2, out=out) is out
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    if _engine is not None:
        u = fp.winograd_weights(w2, c)
        # Winograd's transforms round on the scale of the whole tile's sums, not of each output: an
        # output near 0 among outputs of size 5 is off by ~1e-4 (h=21, w=5, c=64, 80 outputs, seed 21)
        atol = 1e-4 * max(1.0, float(np.abs(want).max()))
        for _ in range(2):
            out[...] = np.nan
            assert fp.conv3x3_winograd(x, u, b, leaky, r, threads=2, out=out) is out
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=atol)


def test_wrong_buffer_is_refused() -> None:
    x = np.zeros((5, 6, 8), np.float32)
    with pytest.raises(ValueError, match="out must be"):
        fp.conv2d(x, np.zeros((72, 4), np.float32), None, 1, out=np.zeros((5, 6, 3), np.float32))


@pytest.mark.skipif(_engine is None, reason="the compiled engine is not built")
@pytest.mark.parametrize("c", [20, 64])
def test_few_output_conv_values_do_not_depend_on_the_pixel_blocking(c: int) -> None:
    """The dot-product loops take 4 pixels at a time inside the map and 1 at its borders; a pixel's
    value is the same either way (bit for bit): column 1 of a 6-wide map is in a block of 4, of a
    5-wide map (the same columns 0-2 around it) computed alone."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 6, c)).astype(np.float32)
    w = rng.normal(size=(9 * c, 1)).astype(np.float32)
    b = rng.normal(size=1).astype(np.float32)
    wide, narrow = fp.conv3x3_direct(x, w, b, 0.1), fp.conv3x3_direct(x[:, :5], w, b, 0.1)
    assert np.array_equal(wide[:, :4], narrow[:, :4])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 13), st.integers(1, 29), st.sampled_from([1, 3, 64]), st.sampled_from([2, 3, 4]),
       st.integers(0, 2**31 - 1))
def test_bilinear_add_is_one_formula_near_torch(h: int, w: int, c: int, s: int, seed: int) -> None:
    """y += bilinear x s (align_corners=False): the engine (1 and 3 threads) and the NumPy form give
    the same bits, within float32 rounding of torch's F.interpolate."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    y = rng.normal(size=(h * s, w * s, c)).astype(np.float32)
    want = fp.bilinear_add(x, y.copy(), s, compiled=False)
    if _engine is not None:
        for threads in (1, 3):
            assert np.array_equal(fp.bilinear_add(x, y.copy(), s, threads), want), threads
    up = F.interpolate(torch.from_numpy(x.transpose(2, 0, 1))[None], scale_factor=s, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(want, y + up[0].permute(1, 2, 0).numpy(), rtol=0, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 13), st.integers(1, 29), st.sampled_from([1, 5, 20, 64]), st.sampled_from([3, 5]),
       st.integers(0, 2**31 - 1))
def test_channel_gate_matches_torch(h: int, w: int, c: int, k: int, seed: int) -> None:
    """SCALES' channel gate, sigmoid(Conv1d_k(GAP(x))), equals binsr.nn.ChannelGate's at inference bit
    for bit: both in float64, rounded once; also with the sums that the spatial gate of the same map
    returns on every path (the AVX-512 kernel's, summed as it reads the map)."""
    from binsr.nn import ChannelGate

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    gate = ChannelGate(k).eval()
    with torch.no_grad():
        gate.conv.weight.copy_(torch.from_numpy(rng.normal(size=(1, 1, k)).astype(np.float32)))
        want = gate(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0, :, 0, 0].numpy()
    weight = gate.conv.weight[0, 0].detach().numpy()
    assert np.array_equal(fp.channel_gate(x, weight, c), want)
    assert np.array_equal(fp.channel_gate(x, weight, c, threads=3), want)
    assert np.array_equal(fp.channel_gate(x, weight, c, compiled=False), want)
    w3 = rng.normal(size=(9 * c, 1)).astype(np.float32)
    for compiled, path in [(False, "numpy")] + [(True, p) for p in COMPILED]:
        for threads in (1, 3):
            sums = np.empty(c)
            fp.spatial_gate(x, w3, None, 1, 1, threads, compiled=compiled, path=path, sums=sums)
            assert np.array_equal(fp.channel_gate(x, weight, c, sums=sums), want), (path, threads)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 13), st.integers(1, 29), st.sampled_from([1, 7, 16, 20, 64, 80]),
       st.sampled_from([(3, 1), (3, 2), (5, 1)]), st.booleans(), st.integers(0, 2**31 - 1))
def test_spatial_gate_matches_torch(h: int, w: int, c: int, kd: tuple[int, int], bias: bool, seed: int) -> None:
    """SCALES' spatial gate sigmoid(conv(x) + b): the compiled 3x3 loops of every path here (the
    AVX-512 kernel's 8-pixel blocks and edges, the portable loops; double sums in other orders), the
    NumPy reference and binsr.nn.SpatialGate at inference give the same float32s."""
    from binsr.nn import SpatialGate

    k, dil = kd
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    gate = SpatialGate(c, k, dilation=dil).eval()
    with torch.no_grad():
        if not bias:
            gate.conv.bias = None
        want = gate(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0, 0].numpy()
    wt = gate.conv.weight.detach().numpy().transpose(2, 3, 1, 0).reshape(-1, 1).copy()
    b = None if gate.conv.bias is None else gate.conv.bias.detach().numpy()
    pad = gate.conv.padding[0]
    assert np.array_equal(fp.spatial_gate(x, wt, b, pad, dil, compiled=False), want)
    for path in COMPILED:
        assert np.array_equal(fp.spatial_gate(x, wt, b, pad, dil, threads=2, path=path), want), path


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 11), st.integers(1, 13), st.sampled_from([1, 3, 8]), st.sampled_from([1, 8, 70]),
       st.sampled_from([None, 0.1]), st.integers(0, 2**31 - 1))
def test_fp64_conv_is_torch_float64_rounded_once(h: int, w: int, c: int, o: int, leaky: float | None, seed: int) -> None:
    """The head conv with ``fp64`` (binsr.nn.ExactConv2d): the compiled direct loops and the NumPy
    dgemm reference both equal torch's float64 conv rounded once, then the float32 LeakyReLU."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    wt = rng.normal(size=(o, c, 3, 3)).astype(np.float32)
    b = rng.normal(size=o).astype(np.float32)
    want = F.conv2d(torch.from_numpy(x.transpose(2, 0, 1))[None].double(), torch.from_numpy(wt).double(),
                    torch.from_numpy(b).double(), padding=1).float()
    if leaky is not None:
        want = F.leaky_relu(want, leaky)
    want = want[0].permute(1, 2, 0).numpy()
    w2 = wt.transpose(2, 3, 1, 0).reshape(-1, o).copy()
    assert np.array_equal(fp.conv3x3_direct(x, w2, b, leaky, threads=2, fp64=True), want)
    assert np.array_equal(fp.conv2d(x, w2, b, 1, 1, leaky, fp64=True), want)
