"""binsr.nn.exact: float64-at-inference layers give one float32 whatever the sum order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from binsr.nn import ChannelGate, ExactConv2d, SpatialGate


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([3, 16, 64]), st.integers(0, 2**31 - 1))
def test_exact_conv_is_the_float64_conv_rounded_once(channels: int, seed: int) -> None:
    """Eval: the float64 conv (bias included) rounded once, so permuting the input channels (another
    sum order) gives the same floats; training: the plain float32 conv."""
    gen = torch.Generator().manual_seed(seed)
    conv = ExactConv2d(channels, 8, 3, 1, 1)
    x = torch.randn(2, channels, 9, 7, generator=gen)
    with torch.no_grad():
        want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1).float()
        assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))  # training mode
        conv.eval()
        assert torch.equal(conv(x), want)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(conv(x), want)  # autocast does not reach inside
        perm = torch.randperm(channels, generator=gen)
        conv.weight.copy_(conv.weight[:, perm])
        assert torch.equal(conv(x[:, perm]), want)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_gates_do_not_depend_on_the_sum_order(seed: int) -> None:
    """SCALES' gates at inference: the same float32 gates for channel-permuted inputs and weights
    (in float32 a 64-channel sum order changes them by an ulp often: benchmarks/gates_fp64.py)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 64, 11, 13, generator=gen)
    perm = torch.randperm(64, generator=gen)
    spatial, channel = SpatialGate(64).eval(), ChannelGate(5).eval()
    with torch.no_grad():
        s, c = spatial(x), channel(x)
        spatial.conv.weight.copy_(spatial.conv.weight[:, perm])
        assert torch.equal(spatial(x[:, perm]), s)
        flipped = x.flip(2, 3)  # the average in another order; the Conv1d sees the same pooled values
        assert torch.equal(channel(flipped), c)
        assert s.dtype == c.dtype == torch.float32 and c.shape == (1, 64, 1, 1)
