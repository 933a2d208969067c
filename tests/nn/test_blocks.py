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


# --- independent references for the unit formulas (plain torch ops, nothing from binsr) ---


def _sgn(t: torch.Tensor) -> torch.Tensor:
    """binsr's tie rule (src/binsr/quant/functional.py, docs/CONVENTIONS.md): +1 where t >= 0, -1 below;
    sign(0) = sign(-0.0) = +1, never 0 (torch.sign would give 0)."""
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))


def _binconv(x: torch.Tensor, w_b: torch.Tensor, pad: int, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """sign(x) padded with +1 (= sign(0), docs/CONVENTIONS.md), then a valid conv with the binary weights."""
    return F.conv2d(F.pad(_sgn(x), (pad,) * 4, value=1.0), w_b, dilation=dilation, groups=groups)


def _libra_pb(w: torch.Tensor) -> torch.Tensor:
    """IR-Net's Libra-PB (LibraPB docstring's reading): per output channel o, W_std = (W - mean) / std with
    the UNBIASED std (torch.std, as IR-Net's code), Q = sign(W_std) * 2^round(log2(mean |W_std|)),
    round = half to even."""
    flat = w.flatten(1)
    n = flat.shape[1]
    c = flat - flat.sum(1, keepdim=True) / n
    w_std = c / ((c * c).sum(1, keepdim=True) / (n - 1)).sqrt()
    s = torch.round(torch.log2(w_std.abs().sum(1, keepdim=True) / n))
    return (_sgn(w_std) * 2.0**s).view_as(w)


def _xnor(w: torch.Tensor) -> torch.Tensor:
    """XNOR-Net weights: mean |W_o| * sign(W) per output channel."""
    return w.abs().mean(dim=(1, 2, 3), keepdim=True) * _sgn(w)


def _bn_eval(y: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """(y - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel."""
    v = lambda t: t.detach().view(1, -1, 1, 1)  # noqa: E731
    return (y - v(bn.running_mean)) / (v(bn.running_var) + bn.eps).sqrt() * v(bn.weight) + v(bn.bias)


def _bn_train(y: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Training-mode BN: the batch mean and the biased batch variance over (N, H, W)."""
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    v = lambda t: t.detach().view(1, -1, 1, 1)  # noqa: E731
    return (y - mean) / (var + bn.eps).sqrt() * v(bn.weight) + v(bn.bias)


def _perturb_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-2.0, 2.0)
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)


def _x_with_ties(*shape: int) -> torch.Tensor:
    """Random input with exact zeros and negative zeros, where the tie rule decides the sign."""
    x = torch.randn(*shape)
    x.view(-1)[::7] = 0.0
    x.view(-1)[3::11] = -0.0
    return x


def _set_tie_channel(w: torch.Tensor) -> None:
    """Make output channel 0 integer-valued with mean exactly 0 and some entries equal to it, so that
    W_std has exact zeros there (Libra-PB must map them to +1)."""
    n = w[0].numel()
    vals = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]).repeat(n // 5 + 1)[:n]
    vals[-1] -= vals.sum()  # mean exactly 0
    w[0] = vals.view_as(w[0])


def test_tie_rule_is_sign_zero_plus_one():
    from binsr.quant.functional import sign

    x = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    assert torch.equal(sign(x), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(sign(x), _sgn(x))


def test_e2fif_unit_formula():
    """E2FIF: y = BN(sign(x) (*) sign(W)) + x; sign weights without a scale, +1 padding; BN eval and train."""
    torch.manual_seed(10)
    m = E2FIFConv(4, 4, 3)
    _perturb_bn(m.bn)
    assert m.conv.act_quant.name == "approx_sign" and m.conv.weight_quant.name == "sign"
    x = _x_with_ties(2, 4, 5, 6)
    with torch.no_grad():
        m.conv.weight.view(-1)[::5] = 0.0  # sign(W) = +1 there too
        w_b = _sgn(m.conv.weight)
        m.eval()
        torch.testing.assert_close(m(x), _bn_eval(_binconv(x, w_b, 1), m.bn) + x)
        m.train()
        torch.testing.assert_close(m(x), _bn_train(_binconv(x, w_b, 1), m.bn) + x)


def test_irnet_unit_formula():
    """IR-Net: y = BN(sign(x) (*) LibraPB(W)) + x: sign activations (EDE is backward only), Libra-PB weights
    with the 2^round(log2 mean|W_std|) scale per output channel, BN (eval: running stats; train: batch
    stats), FP skip; at every EDE progress the forward is the same."""
    torch.manual_seed(11)
    m = IRNetConv(6, 6, 3)
    _perturb_bn(m.bn)
    x = _x_with_ties(2, 6, 5, 7)
    with torch.no_grad():
        m.conv.weight.mul_(torch.linspace(0.05, 5.0, 6).view(-1, 1, 1, 1)).add_(0.3)
        _set_tie_channel(m.conv.weight)
        m.conv.weight[1].mul_(0.01)[0, 0, 0] = 5.0  # heavy-tailed channels: mean |W_std| well below 1,
        m.conv.weight[2].mul_(0.01)[0, 0, :] = 3.0  # so their power-of-two scales are 2^-2 and 2^-1
        # the std reading: mean |W_std| = 0.7043 with the unbiased std (shift round(-0.506) = -1), 0.7109 with
        # the biased one (round(-0.492) = 0); zeros at the mean, where sign(W_std) = sign(0) = +1
        odd = torch.tensor([1.0] * 13 + [-1.0] * 13 + [0.4, -0.4] + [0.0] * 26)
        m.conv.weight[3] = odd[torch.randperm(54)].view(6, 3, 3)
        w_b = _libra_pb(m.conv.weight)
        assert w_b.abs().amax(dim=(1, 2, 3)).tolist() == [1.0, 0.25, 0.5, 0.5, 1.0, 1.0]
        for p in (0.0, 0.7):
            set_progress(m, p)
            m.eval()
            torch.testing.assert_close(m(x), _bn_eval(_binconv(x, w_b, 1), m.bn) + x)
            m.train()
            torch.testing.assert_close(m(x), _bn_train(_binconv(x, w_b, 1), m.bn) + x)
    # 6 -> 3 channels, dilation 2: the FP skip averages channel pairs (FPSkip)
    m = IRNetConv(6, 3, 3, dilation=2).eval()
    _perturb_bn(m.bn)
    with torch.no_grad():
        expect = _bn_eval(_binconv(x, _libra_pb(m.conv.weight), 2, dilation=2), m.bn) + x.view(2, 3, 2, 5, 7).mean(2)
        torch.testing.assert_close(m(x), expect)


@pytest.mark.parametrize("p", [0.0, 0.5, 0.8])
def test_irnet_unit_input_gradient_is_ede_times_the_binary_conv_transpose_plus_the_skip(p):
    """dL/dx = g + k t (1 - tanh^2(t x)) * dL/dsign(x), with t = 10^(-1 + 2p), k = max(1/t, 1) reaching the
    unit through set_progress (EDE's kernel itself is covered in tests/quant)."""
    torch.manual_seed(12)
    m = IRNetConv(4, 4, 3).eval()
    _perturb_bn(m.bn)
    set_progress(m, p)
    t = 10.0 ** (-1.0 + 2.0 * p)
    k = max(1.0 / t, 1.0)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    g = torch.randn(2, 4, 5, 5)
    (m(x) * g).sum().backward()
    s = _sgn(x.detach()).requires_grad_()
    w_b = _libra_pb(m.conv.weight.detach())
    (_bn_eval(F.conv2d(F.pad(s, (1,) * 4, value=1.0), w_b), m.bn) * g).sum().backward()
    xd = x.detach()
    torch.testing.assert_close(x.grad, g + k * t * (1 - torch.tanh(t * xd) ** 2) * s.grad)


@pytest.mark.parametrize(("in_ch", "out_ch", "k", "dilation", "groups", "shift"), [  # shift: round(log2 sqrt(fan-in))
    (4, 4, 3, 1, 1, 3), (8, 8, 3, 2, 2, 3), (8, 8, 5, 2, 4, 3), (4, 8, 7, 1, 2, 3), (8, 4, 5, 1, 1, 4),
])
def test_srbnas_op_formula(in_ch, out_ch, k, dilation, groups, shift):
    """SRBNAS op: y = sign(x) (*)_{groups, dilation} LibraPB(W), +1 padding, same size; no BN, no bias, no
    skip; the cell's conv (srbnas_conv) multiplies it by 2^-round(log2 sqrt(k^2 in/groups))."""
    from binsr.nas.ops import srbnas_conv

    torch.manual_seed(13)
    op = SRBNASOp(in_ch, out_ch, k, dilation=dilation, groups=groups)
    x = _x_with_ties(2, in_ch, 9, 8)
    with torch.no_grad():
        op.weight.mul_(torch.linspace(0.1, 4.0, out_ch).view(-1, 1, 1, 1))
        _set_tie_channel(op.weight)
        op.weight[-1].mul_(0.01).view(-1)[0] = 5.0  # one outlier: mean |W_std| about 2 / sqrt(n), scale < 1
        w_b = _libra_pb(op.weight)
        assert w_b[-1].abs().max() < 1 == w_b[0].abs().max()
        expect = _binconv(x, w_b, dilation * (k - 1) // 2, dilation, groups)
        for p in (0.0, 1.0):
            set_progress(op, p)
            torch.testing.assert_close(op(x), expect)
        seq = srbnas_conv(in_ch, out_ch, k, dilation, groups)  # fan-ins 36, 36, 50, 98, 200
        torch.testing.assert_close(
            seq(x), _binconv(x, _libra_pb(seq[0].weight), dilation * (k - 1) // 2, dilation, groups) / 2**shift
        )


def _gate_reference(m: LTAttnConv, x: torch.Tensor) -> torch.Tensor:
    """The attention factor of LTAttnConv, written out: C = sigmoid(sum_j w_j GAP(x)_{c + j - r}) (ECA
    Conv1d over channels, zero padded, no bias) and S = sigmoid(b + sum conv3x3_{C -> 1}(x)) (zero padded)."""
    n, c = x.shape[:2]
    if m.attention == "none":
        return torch.ones(1, 1, 1, 1)
    w1 = m.channel.conv.weight.detach().flatten()
    r = w1.numel() // 2
    pooled = F.pad(x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3]), (r, r))
    gate = torch.sigmoid(sum(w1[j] * pooled[:, j:j + c] for j in range(w1.numel()))).view(n, c, 1, 1)
    if m.attention == "channel_spatial":
        sp = m.spatial.conv
        gate = gate * torch.sigmoid(F.conv2d(F.pad(x, (1,) * 4), sp.weight.detach(), sp.bias.detach()))
    return gate


@pytest.mark.parametrize("attention", ["none", "channel", "channel_spatial"])
def test_lt_attn_unit_formula(attention):
    """LT-attn: a = x . C(x) [. S(x)], y = RPReLU(sign(a - b_c) (*) mean|W_o| sign(W)) + x (+1 padding),
    RPReLU(v) = PReLU_beta(v - gamma) + zeta."""
    torch.manual_seed(14)
    m = LTAttnConv(8, 8, 3, attention=attention)
    x = _x_with_ties(2, 8, 6, 5)  # x = 0 gives a = 0: a tie where b_c = 0
    with torch.no_grad():
        m.conv.act_quant.threshold.uniform_(-0.5, 0.5)
        m.conv.act_quant.threshold[:, :3] = 0.0
        m.act.shift_in.bias.uniform_(-0.3, 0.3)
        m.act.prelu.weight.uniform_(0.05, 0.6)
        m.act.shift_out.bias.uniform_(-0.3, 0.3)
        for gate in (m.channel, m.spatial):
            if gate is not None:
                for prm in gate.parameters():
                    prm.uniform_(-1.0, 1.0)
        a = x * _gate_reference(m, x)
        thr = m.conv.act_quant.threshold.view(1, 8, 1, 1)
        v = _binconv(a - thr, _xnor(m.conv.weight), 1)
        u = v + m.act.shift_in.bias  # shift_in adds -gamma
        beta = m.act.prelu.weight.view(1, 8, 1, 1)
        expect = torch.where(u >= 0, u, beta * u) + m.act.shift_out.bias + x
        torch.testing.assert_close(m(x), expect)


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
