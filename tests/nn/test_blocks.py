"""Conv units, recipes, gates, ReActNet shifts, the upsampler and set_progress."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from binsr.nn import (
    BBCUConv,
    BinaryConv2d,
    ChannelGate,
    E2FIFConv,
    FPSkip,
    IRNetConv,
    LearnableBias,
    LTAttnConv,
    PixelShuffleUpsampler,
    Recipe,
    RPReLU,
    ScalesConv,
    SpatialGate,
    SRBNASOp,
    WeightOnlyConv,
    get_recipe,
    recipe_names,
    set_progress,
)
from binsr.quant import RSign

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # fp recipe, even kernels

UNITS = [E2FIFConv, BBCUConv, ScalesConv, IRNetConv, SRBNASOp, LTAttnConv, WeightOnlyConv]
PUBLISHED = ["fp", "bnn", "e2fif", "bbcu", "scales", "scales_lsf", "scales_noss", "scales_nocs", "irnet", "lt_attn",
             "bibert", "weight_only"]


def _binary_convs(module: nn.Module) -> list[BinaryConv2d]:
    return [m for m in module.modules() if isinstance(m, BinaryConv2d)]


def test_recipe_names():
    assert recipe_names() == sorted(PUBLISHED)


@given(
    st.sampled_from(UNITS),
    st.integers(1, 7),
    st.integers(1, 3),
    st.sampled_from([(4, 4), (4, 8), (8, 4), (4, 12), (6, 4), (4, 6)]),
    st.sampled_from([1, 2]),
    st.integers(1, 9),
    st.integers(1, 9),
)
@settings(max_examples=30, deadline=None)
def test_units_are_shape_preserving(unit, k, dil, channels, groups, h, w):
    in_ch, out_ch = channels
    if unit in (IRNetConv, SRBNASOp) and in_ch // groups * k * k < 2:
        k = 3  # Libra-PB needs two weights per output channel
    m = unit(in_ch, out_ch, k, dilation=dil, groups=groups)
    y = m(torch.randn(2, in_ch, h, w))
    assert y.shape == (2, out_ch, h, w) and torch.isfinite(y).all()
    assert len(_binary_convs(m)) == 1


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize(("k", "h"), [(3, 7), (5, 8), (1, 6)])
def test_units_with_stride_two(unit, k, h):
    m = unit(4, 8, k, stride=2)
    assert m(torch.randn(1, 4, h, h + 1)).shape == (1, 8, (h + 1) // 2, (h + 2) // 2)


@pytest.mark.parametrize("name", PUBLISHED)
@pytest.mark.parametrize(("in_ch", "out_ch", "k"), [(8, 8, 3), (8, 8, 1), (8, 16, 5), (16, 8, 3)])
def test_recipe_conv_units_are_shape_preserving(name, in_ch, out_ch, k):
    r = get_recipe(name)
    assert isinstance(r, Recipe) and r.name == name and r.binary_upsampler is False and r.description
    unit = r.conv(in_ch, out_ch, k)
    assert unit(torch.randn(2, in_ch, 6, 5)).shape == (2, out_ch, 6, 5)
    assert isinstance(r.act(), nn.Module) and r.act() is not r.act()
    binary = [m for m in unit.modules() if getattr(getattr(m, "weight_quant", None), "precision", 32) == 1]
    assert len(binary) == (0 if name == "fp" else 1)


def test_recipe_activations():
    kinds = {n: type(get_recipe(n).act()) for n in PUBLISHED}
    assert kinds["fp"] is nn.ReLU and kinds["e2fif"] is nn.LeakyReLU and kinds["scales"] is nn.LeakyReLU
    assert all(kinds[n] is nn.Identity for n in ("bnn", "bbcu", "irnet", "lt_attn", "bibert"))
    assert kinds["weight_only"] is nn.PReLU  # SRResNet's block (Ledig et al. 2017), as Ma et al. 2019 binarize it


def test_recipe_overrides_and_errors():
    r = get_recipe("bnn", act_quant="approx_sign", weight_quant={"type": "xnor", "estimator": "ste"})
    conv = r.conv(4, 4, 3)
    assert conv.act_quant.name == "approx_sign" and conv.weight_quant.estimator.name == "ste"
    assert get_recipe("bbcu", alignment=1.0).conv(4, 4, 3).alignment == 1.0
    with pytest.raises(ValueError, match="valid recipes"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="does not take"):
        get_recipe("e2fif", estimator="ede")
    with pytest.raises(ValueError, match="module instances"):
        get_recipe("bbcu", act_quant=RSign(4))


def test_weight_only_unit_convolves_fp_activations_with_pm_alpha_weights():
    """Ma et al. 2019: ``BN(x (*) alpha_o sign(W))``, the FP input untouched, no skip of its own."""
    torch.manual_seed(0)
    r = get_recipe("weight_only")
    unit = r.conv(8, 6, 3)
    assert isinstance(unit, WeightOnlyConv) and not r.unit_skip and "cannot run it" in r.description
    conv = unit.conv
    assert conv.act_quant.precision == 32 and conv.weight_quant.name == "scaled_sign" and conv.bias is None
    alpha = conv.weight_quant.scale.detach()
    torch.testing.assert_close(alpha, conv.weight.detach().abs().mean(dim=(1, 2, 3)))  # init: mean |W_o|
    wb = conv.weight_quant(conv.weight).detach()
    assert torch.equal(wb.abs(), alpha.view(-1, 1, 1, 1).expand_as(wb))  # exactly +-alpha_o in filter o
    seen = []
    conv.act_quant.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
    x = torch.randn(2, 8, 5, 7) * 3
    unit.eval()
    with torch.no_grad():
        unit.bn.running_mean.uniform_(-1, 1)
        unit.bn.running_var.uniform_(0.5, 2.0)
        y = unit(x)
    assert seen[0][0] is x and seen[0][1] is x  # the activation reaches the conv as it is
    torch.testing.assert_close(y, unit.bn(F.conv2d(x, wb, padding=1)))  # zero padding of the FP input


def test_weight_only_gradients_are_alpha_times_clipped_ste_and_sign_for_alpha():
    torch.manual_seed(1)
    conv = WeightOnlyConv(4, 6, 3).conv
    with torch.no_grad():
        conv.weight[0, 0] = torch.tensor([[-1.5, -1.0, -0.2], [0.0, 0.3, 1.0], [1.2, 2.0, -3.0]])  # some |W| > 1
    x, g = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
    (conv(x) * g).sum().backward()
    wb = conv.weight_quant(conv.weight).detach().requires_grad_()
    (F.conv2d(x, wb, padding=1) * g).sum().backward()  # dL/dW_b
    alpha = conv.weight_quant.scale.detach().view(-1, 1, 1, 1)
    w = conv.weight.detach()
    torch.testing.assert_close(conv.weight.grad, alpha * (w.abs() <= 1).float() * wb.grad)
    torch.testing.assert_close(conv.weight_quant.scale.grad, (wb.grad * torch.where(w >= 0, 1.0, -1.0)).sum((1, 2, 3)))
    assert conv.weight_quant.scale.requires_grad and conv.weight_quant.scale.grad.abs().min() > 0


def test_weight_only_bn_absorbs_alpha_in_training_mode():
    """The docstring's caveat: BN right after the conv cancels a per-filter factor up to its eps."""
    torch.manual_seed(2)
    unit = WeightOnlyConv(8, 8, 3)
    x = torch.randn(4, 8, 6, 6)
    y = unit(x)
    with torch.no_grad():
        unit.conv.weight_quant.scale.mul_(torch.linspace(0.5, 3.0, 8))
    torch.testing.assert_close(unit(x), y, rtol=1e-3, atol=1e-3)


def test_scales_ablation_rows():
    parts = {n: get_recipe(n).conv(8, 8, 3) for n in ("scales", "scales_lsf", "scales_noss", "scales_nocs")}
    on = {n: (m.spatial is not None, m.channel is not None) for n, m in parts.items()}
    assert on == {
        "scales": (True, True), "scales_lsf": (False, False), "scales_noss": (False, True), "scales_nocs": (True, False)
    }
    assert all(m.conv.act_quant.name == "scales_act" and m.conv.weight_quant.name == "xnor" for m in parts.values())


@pytest.mark.parametrize("estimator", ["ste", "clipped_ste", "approx_sign", "ede"])
@pytest.mark.parametrize("attention", ["none", "channel", "channel_spatial"])
def test_lt_attn_estimator_study_from_names(estimator, attention):
    unit = get_recipe("lt_attn", estimator=estimator, attention=attention).conv(8, 8, 3)
    assert unit.conv.act_quant.name == "rsign" and unit.conv.act_quant.estimator.name == estimator
    assert (unit.channel is None) == (attention == "none")
    assert (unit.spatial is None) == (attention != "channel_spatial")
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    unit(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="attention"):
        LTAttnConv(4, 4, 3, attention="both")


def _all_blocks() -> list[nn.Module]:
    blocks: list[nn.Module] = [unit(6, 6, 3) for unit in UNITS]
    blocks += [ScalesConv(6, 12, 3), LTAttnConv(6, 6, 3, attention="channel_spatial", estimator="ede")]
    blocks += [RPReLU(6), LearnableBias(6), ChannelGate(5), SpatialGate(6, 3), PixelShuffleUpsampler(2, 6, True)]
    blocks += [get_recipe(n).conv(6, 6, 3) for n in PUBLISHED]
    return blocks


@pytest.mark.parametrize("block", _all_blocks(), ids=lambda b: type(b).__name__)
def test_every_learnable_parameter_gets_a_finite_nonzero_gradient(block):
    torch.manual_seed(0)
    x = torch.randn(4, 6, 7, 7)
    out = block(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fp_skip_channel_handling():
    x = torch.randn(2, 3, 4, 5)
    up = FPSkip(3, 12)(x)
    assert torch.equal(F.pixel_shuffle(up, 2), F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(FPSkip(12, 3)(up), x)
    assert FPSkip(3, 3, stride=2)(x).shape == (2, 3, 2, 3)
    assert not FPSkip.supported(4, 6)
    with pytest.raises(ValueError):
        FPSkip(4, 6)
    assert E2FIFConv(4, 6, 3).skip is None


def test_e2fif_unit_formula():
    m = E2FIFConv(4, 4, 3).eval()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(m(x), m.bn(m.conv(x)) + x)
    assert m.conv.act_quant.name == "approx_sign" and m.conv.weight_quant.name == "sign"


def test_bbcu_unit_aligns_the_residual():
    torch.manual_seed(3)
    m = BBCUConv(4, 4, 3)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(m(x), m.act(m.conv(x)) / (130.0 * 4 / 64) + x)  # k = 130 n / 64
    assert BBCUConv(64, 64, 3).alignment == 130.0 and BBCUConv(96, 96, 3).alignment == 195.0
    assert m.conv.act_quant.name == "rsign" and m.conv.act_quant.estimator.name == "approx_sign"
    assert m.conv.weight_quant.name == "xnor" and not any(isinstance(c, nn.BatchNorm2d) for c in m.modules())


def test_scales_unit_formula():
    torch.manual_seed(4)
    m = ScalesConv(4, 8, 3)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(m(x), m.conv(x) * m.spatial(x) * m.channel(x) + FPSkip(4, 8)(x))
    assert m.channel(x).shape == (2, 8, 1, 1) and m.spatial(x).shape == (2, 1, 5, 5)


def test_irnet_and_srbnas_quantizers():
    for m in (IRNetConv(4, 4, 3).conv, SRBNASOp(4, 8, 5, dilation=2, groups=2)):
        assert m.act_quant.name == "ede" and m.weight_quant.name == "libra_pb"
    op = SRBNASOp(8, 8, 7, groups=4)
    assert op(torch.randn(1, 8, 9, 9)).shape == (1, 8, 9, 9) and op.groups == 4
    assert not any(isinstance(c, nn.BatchNorm2d) for c in op.modules())


def test_rprelu_and_learnable_bias_formulas():
    r = RPReLU(3)
    with torch.no_grad():
        r.shift_in.bias.copy_(torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1))
        r.shift_out.bias.fill_(0.5)
    x = torch.randn(2, 3, 4, 4)
    u = x + r.shift_in.bias
    torch.testing.assert_close(r(x), torch.where(u >= 0, u, 0.25 * u) + 0.5)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("binary", [False, True])
def test_pixel_shuffle_upsampler(scale, binary):
    up = PixelShuffleUpsampler(scale, 8, binary=binary, recipe=get_recipe("bbcu") if binary else None)
    assert up(torch.randn(1, 8, 5, 6)).shape == (1, 8, 5 * scale, 6 * scale)
    assert len(_binary_convs(up)) == ((2 if scale == 4 else 1) if binary else 0)
    assert len(_binary_convs(PixelShuffleUpsampler(scale, 8, binary=False, recipe=get_recipe("e2fif")))) == 0
    with pytest.raises(ValueError):
        PixelShuffleUpsampler(5, 8)


def test_set_progress_reaches_every_ede():
    model = nn.Sequential(get_recipe("irnet").conv(4, 4, 3), get_recipe("lt_attn", estimator="ede").conv(4, 4, 3))
    assert set_progress(model, 0.5) == 3  # act EDE + Libra-PB's EDE + RSign's EDE
    assert all(m.t == pytest.approx(1.0) for m in model.modules() if hasattr(m, "set_progress"))
    assert set_progress(nn.Conv2d(1, 1, 1), 0.5) == 0
    with pytest.raises(ValueError):
        set_progress(model, 1.5)
