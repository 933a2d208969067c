"""BinaryConv2d: nn.Conv2d equivalence, shapes, +1 padding, integer XNOR-popcount reference."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from binsr import quant as Q
from binsr.nn import BinaryConv2d, same_padding

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # nn.Conv2d reference


@st.composite
def geometry(draw, max_padding: int = 3) -> dict:
    """A random conv geometry: kernel 1..7 (h, w), dilation 1..3, stride 1..3, groups, int/pair/"same"
    padding, odd/even sizes."""
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dil = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    paddings = [st.integers(0, max_padding), st.tuples(st.integers(0, max_padding), st.integers(0, 2))]
    padding = draw(st.one_of(*paddings, st.just("same")) if stride == 1 else st.one_of(*paddings))
    if padding == "same":
        ph, pw = dil * (kh - 1), dil * (kw - 1)
    else:
        ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    h_min, w_min = max(1, dil * (kh - 1) + 1 - 2 * ph), max(1, dil * (kw - 1) + 1 - 2 * pw)
    h, w = draw(st.integers(h_min, h_min + 8)), draw(st.integers(w_min, w_min + 8))
    bias = draw(st.booleans())
    return dict(
        cin=cin, cout=cout, k=(kh, kw), dil=dil, stride=stride, padding=padding, h=h, w=w, groups=groups, bias=bias
    )


def _convs(g, **quant):
    args = (g["cin"], g["cout"], g["k"], g["stride"], g["padding"], g["dil"], g["groups"], g["bias"])
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(*args)
    conv = BinaryConv2d(*args, **quant)
    conv.load_state_dict(ref.state_dict(), strict=False)
    return ref, conv


@given(geometry(), st.integers(1, 2))
@settings(max_examples=25, deadline=None)
def test_equals_nn_conv2d_exactly_without_quantizers(g, n):
    ref, conv = _convs(g)
    x = torch.randn(n, g["cin"], g["h"], g["w"])
    assert torch.equal(conv(x), ref(x))
    assert conv.act_quant.precision == 32 and conv.weight_quant.precision == 32


@given(
    geometry(), st.sampled_from(["ste", "approx_sign", "ede", "rsign", "scales_act"]), st.sampled_from(["sign", "xnor"])
)
@settings(max_examples=30, deadline=None)
def test_binary_shapes_match_nn_conv2d_and_operands_are_pm1(g, act, wq):
    ref, conv = _convs(g, act_quant=act, weight_quant=wq)
    x = torch.randn(2, g["cin"], g["h"], g["w"])
    y = conv(x)
    assert y.shape == ref(x).shape and torch.isfinite(y).all()
    a_signs, a_scale = conv.act_quant.binarize(x)
    w_signs, w_scale = conv.weight_quant.binarize(conv.weight)
    assert set(a_signs.unique().tolist()) <= {-1.0, 1.0} and set(w_signs.unique().tolist()) <= {-1.0, 1.0}
    assert (a_scale is None) == (act != "scales_act")
    assert (w_scale is None) == (wq == "sign")
    if w_scale is not None:
        torch.testing.assert_close(w_scale.flatten(), conv.weight.detach().abs().flatten(1).mean(1))


@given(geometry(), st.sampled_from(["sign", "xnor", "scaled_sign"]))
@settings(max_examples=25, deadline=None)
def test_binary_weights_alone_convolve_the_fp_input_zero_padded(g, wq):
    ref, conv = _convs(g, weight_quant=wq)
    assert conv.act_quant.precision == 32 and conv.weight_quant.precision == 1
    with torch.no_grad():
        ref.weight.copy_(conv.weight_quant(conv.weight))
    x = torch.randn(2, g["cin"], g["h"], g["w"])
    torch.testing.assert_close(conv(x), ref(x))


def test_per_channel_weight_quantizer_starts_from_the_initial_weight():
    conv = BinaryConv2d(3, 5, 3, padding=1, weight_quant="scaled_sign")
    assert conv.weight_quant.channels == 5 and conv.weight_quant.scale.requires_grad
    torch.testing.assert_close(conv.weight_quant.scale.detach(), conv.weight.detach().abs().mean(dim=(1, 2, 3)))
    assert "weight_quant.scale" in dict(conv.named_parameters())


def _xnor_popcount_conv(bits_x, bits_w, stride, pad, dil, groups):
    """Integer reference on bits (1 = +1): out = 2 * popcount(xnor(x, w)) - n, borders padded with bit 1."""
    left, right, top, bottom = pad
    bx = np.pad(bits_x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=True)
    n, _, hp, wp = bx.shape
    o, cg, kh, kw = bits_w.shape
    sh, sw = stride
    ho, wo = (hp - dil * (kh - 1) - 1) // sh + 1, (wp - dil * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    per_group = o // groups
    for oc in range(o):
        xs = bx[:, (oc // per_group) * cg : (oc // per_group + 1) * cg]
        matches = np.zeros((n, ho, wo), dtype=np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dil : i * dil + sh * (ho - 1) + 1 : sh, j * dil : j * dil + sw * (wo - 1) + 1 : sw]
                matches += np.sum(~(patch ^ bits_w[oc, :, i, j][None, :, None, None]), axis=1)
        out[:, oc] = 2 * matches - cg * kh * kw
    return out


@given(geometry(), st.sampled_from(["rsign", "scales_act"]), st.sampled_from(["xnor", "libra_pb", "sign"]))
@settings(max_examples=30, deadline=None)
def test_matches_integer_xnor_popcount_reference_bit_for_bit(g, act, wq):
    if wq == "libra_pb" and g["cin"] // g["groups"] * g["k"][0] * g["k"][1] < 2:
        wq = "xnor"
    _, conv = _convs(g, act_quant=act, weight_quant=wq)
    with torch.no_grad():
        conv.act_quant.threshold.uniform_(-0.5, 0.5)
        if act == "scales_act":
            conv.act_quant.scale.fill_(0.37)
    x = torch.randn(2, g["cin"], g["h"], g["w"])
    x[:, :, 0, 0] = conv.act_quant.threshold.detach()[0, :, 0, 0]  # ties: x - b = 0 -> +1
    exp = conv.export()
    bits_x = (x.numpy() - exp.act.threshold.numpy()[None, :, None, None]) >= 0
    bits_w = exp.weight.signs.numpy() > 0
    counts = _xnor_popcount_conv(bits_x, bits_w, exp.stride, exp.padding, g["dil"], g["groups"])
    expected = counts.astype(np.float32)
    scale = np.ones(g["cout"], np.float32)
    if exp.act.scale is not None:
        scale = scale * exp.act.scale.numpy()
    if exp.weight.scale is not None:
        scale = exp.weight.scale.numpy() if exp.act.scale is None else exp.act.scale.numpy() * exp.weight.scale.numpy()
    expected = expected * scale[None, :, None, None].astype(np.float32)
    if exp.bias is not None:
        expected = expected + exp.bias.numpy()[None, :, None, None]
    np.testing.assert_array_equal(conv(x).detach().numpy(), expected)


def test_border_is_plus_one():
    conv = BinaryConv2d(1, 1, 3, padding=1, act_quant="ste", weight_quant="sign")
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = -torch.ones(1, 1, 4, 4)  # every input bit is -1, the border is +1
    y = conv(x)
    assert y[0, 0, 1, 1] == -9  # interior: nine -1s
    assert y[0, 0, 0, 0] == 5 - 4  # corner: five border +1s, four -1s
    assert y[0, 0, 0, 1] == 3 - 6


def test_layer_scale_behaves_as_if_padded_with_plus_a():
    torch.manual_seed(1)
    conv = BinaryConv2d(2, 3, 3, padding=1, act_quant="scales_act", weight_quant="sign")
    with torch.no_grad():
        conv.act_quant.scale.fill_(0.5)
    x = torch.randn(1, 2, 5, 5)
    scaled = conv.act_quant(x)  # 0.5 * sign(x - beta)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(scaled, (1, 1, 1, 1), value=0.5), conv.weight.sign())
    torch.testing.assert_close(conv(x), ref)


def test_fp_input_with_binary_weights():
    torch.manual_seed(2)
    conv = BinaryConv2d(3, 4, 3, padding=1, bias=True, weight_quant="xnor")
    x = torch.randn(2, 3, 6, 6)
    signs, scale = conv.weight_quant.binarize(conv.weight)
    ref = torch.nn.functional.conv2d(x, signs, None, 1, 1) * scale.view(1, -1, 1, 1) + conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(conv(x), ref)
    with pytest.raises(ValueError, match="export"):
        conv.export()


@pytest.mark.parametrize(("k", "d"), [(2, 1), (4, 1), (6, 1), (2, 3), (3, 1), (7, 2)])
def test_same_padding_keeps_size_and_puts_extra_bottom_right(k, d):
    conv = BinaryConv2d(2, 2, k, padding=same_padding(k, d), dilation=d, act_quant="ste", weight_quant="sign")
    assert conv(torch.randn(1, 2, 9, 8)).shape == (1, 2, 9, 8)
    total = d * (k - 1)
    assert conv.binary_padding == (total // 2, total - total // 2, total // 2, total - total // 2)
    if total % 2:
        with pytest.raises(ValueError, match="stride 1"):
            same_padding(k, d, stride=2)
    else:
        assert same_padding(k, d, stride=2) == total // 2


def test_rejects_misplaced_quantizers_and_channel_scales():
    with pytest.raises(ValueError, match="activation binarizer"):
        BinaryConv2d(2, 2, 3, act_quant="xnor")
    with pytest.raises(ValueError, match="weight binarizer"):
        BinaryConv2d(2, 2, 3, weight_quant="ede")

    class PerChannelScale(Q.SignEstimator):
        def binarize(self, x):
            return Q.functional.sign(x), torch.ones(1, x.shape[1], 1, 1)

    conv = BinaryConv2d(2, 2, 3, act_quant=PerChannelScale())
    with pytest.raises(ValueError, match="layer-wise"):
        conv(torch.randn(1, 2, 4, 4))


def test_per_channel_act_quant_gets_in_channels():
    conv = BinaryConv2d(5, 2, 1, act_quant={"type": "rsign", "estimator": "ede"}, weight_quant="libra_pb")
    assert conv.act_quant.threshold.shape == (1, 5, 1, 1)
    assert "act_quant=rsign" in repr(conv)
