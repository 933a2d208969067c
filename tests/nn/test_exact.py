"""binsr.nn.exact: float64-at-inference layers give one float32 whatever the sum order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from binsr.nn import ChannelGate, ExactConv2d, SpatialGate, fp64_at_inference


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


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([1, 60, 120]), st.integers(0, 2**31 - 1))
def test_exact_layer_norm_and_gelu_are_float64_rounded_once(channels: int, seed: int) -> None:
    """SwinIR's LayerNorm and GELU: in eval the float64 result rounded once (autocast does not reach
    inside); in training the plain float32 modules'."""
    from binsr.nn import ExactGELU, ExactLayerNorm

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 17, channels, generator=gen) * 2
    norm, act = ExactLayerNorm(channels), ExactGELU()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=gen)
        norm.bias.uniform_(-0.2, 0.2, generator=gen)
        plain = F.layer_norm(x, (channels,), norm.weight, norm.bias, norm.eps)
        assert torch.equal(norm(x), plain) and torch.equal(act(x), F.gelu(x))  # training mode
        norm.eval(), act.eval()
        want_norm = F.layer_norm(x.double(), (channels,), norm.weight.double(), norm.bias.double(), norm.eps).float()
        for ctx in (torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16)):
            with ctx:
                assert torch.equal(norm(x), want_norm)
                assert torch.equal(act(x), F.gelu(x.double()).float())


def test_fp64_at_inference_passes_none_parameters_through() -> None:
    seen = []
    module = torch.nn.Identity().eval()
    out = fp64_at_inference(module, torch.ones(2), lambda x, a, b: seen.append((x.dtype, a.dtype, b)) or x * a,
                            torch.full((2,), 3.0), None)
    assert seen == [(torch.float64, torch.float64, None)] and out.dtype == torch.float32 and out.tolist() == [3.0, 3.0]
