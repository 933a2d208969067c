"""binsr.quant modules and get(): lookup, metadata, closed-form gradients, Libra-PB, export."""

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from binsr import quant as Q
from binsr.nn import set_progress

ACT = ["ste", "clipped_ste", "approx_sign", "ede", "rsign", "scales_act"]
WEIGHT = ["sign", "xnor", "libra_pb", "scaled_sign"]
C = 4


def _x(seed: int = 0, shape=(3, C, 5, 6)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5
    x[0, 0, 0, :3] = 0.0  # exact zeros must binarize to +1
    return x


def test_names_cover_the_library():
    assert Q.names() == sorted(["identity", *ACT, *WEIGHT])


@pytest.mark.parametrize("name", sorted(set(Q.names())))
def test_get_round_trips_by_name_dict_and_module(name):
    q = Q.get(name, channels=C)
    assert type(q) is Q.get({"type": name}, channels=C).__class__
    rebuilt = Q.get(q.get_config(), channels=C)
    assert type(rebuilt) is type(q) and rebuilt.get_config() == q.get_config()
    assert Q.get(q) is q
    assert q.name == name and q.precision == (32 if name == "identity" else 1)


def test_get_none_is_full_precision_identity():
    q = Q.get(None)
    x = _x()
    assert isinstance(q, Q.Identity) and q.precision == 32 and q(x) is x


def test_get_kwargs_and_dict_precedence():
    assert Q.get("clipped_ste", clip_value=2.0).clip_value == 2.0
    assert Q.get({"type": "clipped_ste", "clip_value": 3.0}, clip_value=2.0).clip_value == 3.0
    r = Q.get({"type": "rsign", "estimator": {"type": "ede", "t_min": 0.01}}, channels=7)
    assert r.threshold.shape == (1, 7, 1, 1) and r.estimator.t_min == 0.01


@pytest.mark.parametrize(
    ("identifier", "kwargs", "match"),
    [
        ("nope", {}, "valid names: approx_sign, clipped_ste"),
        (42, {}, "cannot build"),
        (torch.nn.ReLU(), {}, "cannot build"),
        ({"estimator": "ste"}, {}, "'type'"),
        ("rsign", {}, "channels="),
        ("ste", {"bogus": 1}, "bad arguments"),
        (Q.SignSTE(), {"clip_value": 1.0}, "existing quantizer"),
        ({"type": "rsign", "estimator": "xnor"}, {"channels": 2}, "estimator must be"),
    ],
)
def test_get_rejects(identifier, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Q.get(identifier, **kwargs)


@pytest.mark.parametrize("name", ACT + WEIGHT)
def test_forward_is_signs_times_scale_and_signs_are_pm1(name):
    q = Q.get(name, channels=C)
    x = _x(1) if name in ACT else torch.randn(C, 6, 3, 3)
    signs, scale = q.binarize(x)
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    expected = signs if scale is None else signs * scale
    assert torch.equal(q(x), expected)
    if name in ACT and name not in ("rsign", "scales_act"):  # thresholds start at 0
        assert torch.equal(signs, torch.where(x >= 0, 1.0, -1.0))


def test_rsign_gradients_match_formula():
    q = Q.RSign(C, estimator="approx_sign")
    with torch.no_grad():
        q.threshold.copy_(torch.linspace(-0.5, 0.5, C).view(1, C, 1, 1))
    x = _x(2).requires_grad_()
    g = torch.randn_like(x)
    out = q(x)
    (out * g).sum().backward()
    u = (x - q.threshold).detach()
    e = (2 - 2 * u.abs()).clamp_min(0)
    assert torch.equal(out, torch.where(u >= 0, 1.0, -1.0))
    torch.testing.assert_close(x.grad, g * e)
    torch.testing.assert_close(q.threshold.grad, -(g * e).sum(dim=(0, 2, 3), keepdim=True))


def test_scales_act_gradients_match_eqs_2_3():
    q = Q.ScalesAct(C, scale_init=0.7)
    with torch.no_grad():
        q.threshold.copy_(torch.linspace(-0.3, 0.6, C).view(1, C, 1, 1))
    x = _x(3).requires_grad_()
    g = torch.randn_like(x)
    (q(x) * g).sum().backward()
    u = (x - q.threshold).detach()
    s = torch.where(u >= 0, 1.0, -1.0)
    inside = (2 - 2 * u.abs()).clamp_min(0)  # Bi-Real Net's ApproxSign, the estimator SCALES cites ([17])
    torch.testing.assert_close(q.scale.grad, (g * s).sum().reshape(1))  # Eq. (2)
    torch.testing.assert_close(q.threshold.grad, -(0.7 * g * inside).sum(dim=(0, 2, 3), keepdim=True))  # Eq. (3)
    torch.testing.assert_close(x.grad, 0.7 * g * inside)
    signs, scale = q.binarize(x)
    assert scale.numel() == 1 and set(signs.unique().tolist()) <= {-1.0, 1.0}


def test_xnor_scale_and_gradient():
    w = (torch.randn(5, 3, 3, 3) * 0.8).requires_grad_()
    q = Q.XNORWeight()
    signs, scale = q.binarize(w)
    torch.testing.assert_close(scale.flatten(), w.detach().abs().mean(dim=(1, 2, 3)))
    assert not scale.requires_grad  # treated as a constant, as ReActNet/BBCU
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    torch.testing.assert_close(w.grad, g * scale * (w.detach().abs() <= 1).float())


@given(st.integers(1, 6), st.integers(1, 4), st.sampled_from([1, 3]), st.floats(0.05, 3.0), st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_scaled_sign_is_pm_alpha_per_filter_with_a_learnable_alpha(out_ch, in_ch, k, spread, seed):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(out_ch, in_ch, k, k, generator=g) * spread).requires_grad_()
    q = Q.ScaledSign(out_ch)
    q.reset_parameters(w)
    torch.testing.assert_close(q.scale.detach(), w.detach().abs().flatten(1).mean(1))  # XNOR-Net's alpha* at init
    with torch.no_grad():
        q.scale.mul_(torch.linspace(0.5, 2.0, out_ch))  # learnt away from mean |W|
    wb = q(w)
    alpha = q.scale.detach().view(-1, 1, 1, 1)
    assert torch.equal(wb.detach().abs(), alpha.expand_as(wb))  # exactly +-alpha_o in filter o
    assert torch.equal(wb.detach(), torch.where(w.detach() >= 0, alpha, -alpha))
    up = torch.randn(wb.shape, generator=g)
    (wb * up).sum().backward()
    signs = torch.where(w.detach() >= 0, 1.0, -1.0)
    torch.testing.assert_close(q.scale.grad, (up * signs).sum(dim=(1, 2, 3)))  # dW_b/dalpha_o = sign(W)
    torch.testing.assert_close(w.grad, up * alpha * (w.detach().abs() <= 1).float())  # alpha_o * clipped STE


def test_scaled_sign_estimator_and_channel_checks():
    w = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 2.0]]).view(1, 5, 1, 1).requires_grad_()
    q = Q.get({"type": "scaled_sign", "estimator": "ste"}, channels=1)
    q.reset_parameters(w)
    q(w).sum().backward()
    torch.testing.assert_close(w.grad.flatten(), torch.full((5,), 1.0))  # alpha = mean |W| = 1, identity STE
    assert torch.equal(q.binarize(w)[0].flatten(), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))  # sign(0) = +1
    with pytest.raises(ValueError, match="2 output channels"):
        Q.ScaledSign(3).reset_parameters(torch.randn(2, 4, 3, 3))


def test_weight_sign_is_unscaled_identity_ste():
    w = torch.randn(4, 2, 3, 3, requires_grad=True)
    q = Q.WeightSign()
    assert q.binarize(w)[1] is None
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    torch.testing.assert_close(w.grad, g)


@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.sampled_from([1, 3, 5]),
    st.floats(0.01, 100.0),
    st.floats(-5.0, 5.0),
    st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_libra_pb_balance_and_power_of_two_scale(out_ch, in_ch, k, spread, offset, seed):
    assume(in_ch * k * k >= 2)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_ch, in_ch, k, k, generator=g, dtype=torch.float64) * spread + offset
    q = Q.LibraPB()
    balanced = q.balance(w).flatten(1)
    torch.testing.assert_close(balanced.mean(1), torch.zeros(out_ch, dtype=w.dtype), atol=1e-9, rtol=0)
    torch.testing.assert_close(balanced.std(1), torch.ones(out_ch, dtype=w.dtype))
    signs, scale = q.binarize(w)
    shift = q.shift(w)
    mantissa, exponent = torch.frexp(scale.flatten())
    assert torch.all(mantissa == 0.5)  # an exact power of two
    assert torch.equal(scale.flatten(), torch.ldexp(torch.ones_like(scale.flatten()), shift))
    assert torch.equal(shift, torch.round(torch.log2(q.balance(w).abs().flatten(1).mean(1))).long())
    assert torch.equal(signs, torch.where(q.balance(w) >= 0, 1.0, -1.0).to(w.dtype))


def test_libra_pb_gradient_is_ede_through_the_standardization():
    q = Q.LibraPB()
    set_progress(q, 0.3)
    t, k = q.estimator.t, q.estimator.k
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    w_ref = w.detach().clone().requires_grad_()
    scale = q.binarize(w_ref)[1].detach()
    surrogate = k * torch.tanh(t * q.balance(w_ref)) * scale  # d/dx = k t (1 - tanh^2(t x))
    (surrogate * g).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)


def test_libra_pb_needs_two_weights_per_channel():
    with pytest.raises(ValueError, match="at least 2"):
        Q.LibraPB().binarize(torch.randn(3, 1, 1, 1))


def test_weight_export_for_deployment():
    w = torch.randn(6, 2, 3, 3)
    for name in WEIGHT:
        q = Q.get(name, channels=6)
        exp = q.export(w)
        assert exp.signs.dtype == torch.int8 and exp.signs.shape == w.shape
        assert set(exp.signs.unique().tolist()) <= {-1, 1}
        signs, scale = q.binarize(w)
        assert torch.equal(exp.signs.float(), signs)
        if name == "sign":
            assert exp.scale is None and exp.shift is None
        else:
            assert exp.scale.shape == (6,) and exp.scale.dtype == torch.float32
            torch.testing.assert_close(exp.scale, scale.flatten())
        if name == "libra_pb":
            assert exp.shift.dtype == torch.int32
            assert torch.equal(exp.scale, torch.ldexp(torch.ones(6), exp.shift))


def test_activation_export_for_deployment():
    assert Q.ApproxSign().export() == Q.ActivationExport(None, None)
    r = Q.RSign(C)
    assert r.export().threshold.shape == (C,) and r.export().scale is None
    s = Q.ScalesAct(C, scale_init=0.25)
    exp = s.export()
    assert exp.threshold.shape == (C,) and exp.scale.shape == () and float(exp.scale) == 0.25
    x = _x(5)
    bits = (x - exp.threshold.view(1, C, 1, 1)) >= 0  # the engine's bit rule
    assert torch.equal(s.binarize(x)[0], bits.float() * 2 - 1)


def test_ede_set_progress_and_nested_schedules():
    e = Q.EDE()
    assert (e.t, e.k) == pytest.approx((0.1, 10.0))
    e.set_progress(1.0)
    assert (e.t, e.k) == pytest.approx((10.0, 1.0))
    nested = [Q.RSign(C, estimator="ede"), Q.LibraPB(), Q.ScalesAct(C, estimator="ede")]
    for q in nested:
        assert set_progress(q, 0.5) == 1
        assert q.estimator.t == pytest.approx(1.0)
    with pytest.raises(ValueError):
        e.set_progress(2.0)


@pytest.mark.parametrize("name", ACT + WEIGHT)
def test_every_learnable_parameter_gets_a_finite_nonzero_gradient(name):
    q = Q.get(name, channels=C)
    x = (_x(6) if name in ACT else torch.randn(C, 5, 3, 3)).requires_grad_()
    (q(x) * torch.randn_like(x)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in q.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
