"""BinaryLinear, ScalesLinear, TokenGate, the recipes' linear units and their profile counts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from binsr.errors import UsageError
from binsr.models.complexity import is_binary, profile
from binsr.nn import BinaryLinear, ScalesLinear, TokenGate, get_recipe, linear_recipe_names, recipe_names


def test_fp_binary_linear_is_nn_linear():
    torch.manual_seed(0)
    m = BinaryLinear(6, 5)
    ref = nn.Linear(6, 5)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 6)
    assert torch.equal(m(x), ref(x)) and not is_binary(m)


@pytest.mark.parametrize(
    ("act", "wq"), [("ste", "xnor"), ("clipped_ste", "sign"), ("scales_act", "xnor"), ("rsign", "xnor")]
)
def test_binary_linear_is_the_scaled_sign_product(act, wq):
    torch.manual_seed(0)
    m = BinaryLinear(6, 4, act_quant=act, weight_quant=wq)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("act_quant"):
                p.uniform_(0.2, 0.8)  # thresholds and the layer scale away from their init
    x = torch.randn(3, 5, 6)
    thr = getattr(m.act_quant, "threshold", torch.zeros(1)).reshape(-1)
    a = getattr(m.act_quant, "scale", torch.ones(1)).reshape(())
    signs = torch.where(x - thr >= 0, 1.0, -1.0)  # channels are the last dim of the tokens
    w = m.weight
    alpha = w.abs().mean(1) if wq == "xnor" else torch.ones(4)
    expected = F.linear(signs, torch.where(w >= 0, 1.0, -1.0)) * (a * alpha) + m.bias
    assert torch.allclose(m(x), expected, atol=1e-6)
    s, scale = m.binarize_input(x)
    assert set(s.unique().tolist()) <= {-1.0, 1.0} and s.shape == x.shape
    assert is_binary(m)


def test_binary_linear_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = ScalesLinear(8, 6)
    x = torch.randn(4, 7, 8, requires_grad=True)
    out = m(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_scales_linear_token_gate():
    torch.manual_seed(0)
    m = ScalesLinear(8, 6)
    x = torch.randn(2, 5, 8)
    gate = m.spatial(x)
    assert gate.shape == (2, 5, 1) and ((gate > 0) & (gate < 1)).all()
    assert torch.allclose(m(x), m.linear(x) * gate)
    assert ScalesLinear(8, 6, spatial=False).spatial is None
    assert isinstance(TokenGate(8).fc, nn.Linear)


def test_scales_linear_rounds_as_the_packed_engine():
    """``y_nb * g + bias * g``, each product rounded, then the sum (the bconv epilogue's gate_bias);
    at inference the token gate's linear and sigmoid are each float64 rounded once."""
    torch.manual_seed(1)
    m = ScalesLinear(8, 6).eval()
    with torch.no_grad():
        m.linear.bias.normal_()
        x = torch.randn(3, 5, 8)
        fc = m.spatial.fc
        gate = torch.sigmoid(F.linear(x.double(), fc.weight.double(), fc.bias.double()).float().double()).float()
        assert torch.equal(m.spatial(x), gate)
        bias, m.linear.bias = m.linear.bias, None
        y_nb = m.linear(x)
        m.linear.bias = bias
        assert torch.equal(m(x), y_nb * gate + bias * gate)


def test_recipe_linears():
    kinds = {n: get_recipe(n).linear(8, 4) for n in linear_recipe_names()}
    assert type(kinds["fp"]) is nn.Linear
    assert kinds["bibert"].act_quant.name == "clipped_ste" and kinds["bibert"].weight_quant.name == "xnor"
    assert kinds["bnn"].act_quant.name == "ste"
    for n in ("scales", "scales_lsf", "scales_noss", "scales_nocs"):
        assert isinstance(kinds[n], ScalesLinear) and kinds[n].linear.act_quant.name == "scales_act"
        assert (kinds[n].spatial is not None) == (n in ("scales", "scales_nocs"))
    assert get_recipe("scales", spatial=False).linear(4, 4).spatial is None
    assert get_recipe("bibert", act_quant="ste").linear(4, 4).act_quant.name == "ste"
    for n in sorted(set(recipe_names()) - set(linear_recipe_names())):
        assert not get_recipe(n).supports_linear
        with pytest.raises(UsageError, match="no binary linear"):
            get_recipe(n).linear(4, 4)


class _Tokens(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.flatten(2).transpose(1, 2))


def test_profile_counts_binary_linears_as_bops():
    h, w = 5, 6
    model = _Tokens(BinaryLinear(3, 8, act_quant="ste", weight_quant="xnor"), ScalesLinear(8, 4), nn.Linear(4, 2))
    prof = profile(model, (h, w))
    tokens = h * w
    assert prof.binary_params == 3 * 8 + 8 * 4
    assert prof.bops == tokens * (3 * 8 + 8 * 4)
    assert prof.flops == tokens * (8 * 1 + 4 * 2)  # the token gate's FP linear and the FP linear
    assert prof.binary_params + prof.fp_params == sum(p.numel() for p in model.parameters())
