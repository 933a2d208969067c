"""SRBNAS regularisers (eqs. 4-7): values, and the zero gradients of the terms as written."""

import pytest
import torch

from binsr.nas.regularizers import alpha_regularizer, beta_regularizer, ramp


def _alphas(seed: int = 0) -> torch.Tensor:
    return torch.randn(14, 6, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def test_alpha_regularizer_value_matches_eq4():
    a = _alphas()
    p = torch.softmax(a, -1)
    expected = -(0.8 * p.abs().sum() + 0.2 * (p ** 2).sum())
    torch.testing.assert_close(alpha_regularizer(a, mu=0.8, rho=0.2), expected)


def test_l1_over_softmax_is_constant_with_zero_gradient():
    a = _alphas()
    r = alpha_regularizer(a, mu=1.0, rho=0.0)
    assert r.item() == pytest.approx(-14.0, abs=1e-5)  # sum_o p_o = 1 on each of the 14 edges
    (g,) = torch.autograd.grad(r, a)
    assert g.abs().max().item() < 1e-6
    other = alpha_regularizer(10 * _alphas(1), mu=1.0, rho=0.0)
    assert other.item() == pytest.approx(r.item(), abs=1e-5)


def test_l2_term_sharpens_the_op_distribution():
    a = _alphas()
    (g,) = torch.autograd.grad(alpha_regularizer(a, mu=0.8, rho=0.2), a)
    assert g.abs().max().item() > 1e-3
    with torch.no_grad():
        stepped = a - 1.0 * g  # one descent step on R(alpha)
    assert (torch.softmax(stepped, -1).max(-1).values > torch.softmax(a, -1).max(-1).values).all()


def test_raw_l1_is_a_penalty_on_alpha():
    a = _alphas()
    (g,) = torch.autograd.grad(alpha_regularizer(a, mu=0.5, rho=0.0, l1_on="raw"), a)
    torch.testing.assert_close(g, 0.5 * torch.sign(a.detach()))
    with pytest.raises(ValueError):
        alpha_regularizer(a, 0.5, 0.5, l1_on="l2")


def test_beta_regularizer_value_matches_eq7():
    s = [torch.tensor([0.2, 0.7]), torch.tensor([0.1, 0.3, 0.9])]
    expected = (-(0.25 ** 2 + 0.25 ** 2) + 0.8 * (0.9 - 2) ** 2
                - ((0.1 - 13 / 30) ** 2 + (0.3 - 13 / 30) ** 2 + (0.9 - 13 / 30) ** 2) + 0.8 * (1.3 - 2) ** 2)
    assert beta_regularizer(s, gamma=0.8).item() == pytest.approx(expected, rel=1e-6)


def test_sum_to_two_term_is_constant_under_softmax_edge_weights():
    betas = torch.randn(5, generator=torch.Generator().manual_seed(0)).requires_grad_()
    gamma_only = beta_regularizer([torch.softmax(betas[:2], 0), torch.softmax(betas[2:], 0)], 1.0) - \
        beta_regularizer([torch.softmax(betas[:2], 0), torch.softmax(betas[2:], 0)], 0.0)
    (g,) = torch.autograd.grad(gamma_only, betas)
    assert gamma_only.item() == pytest.approx(2.0) and g.abs().max().item() < 1e-6
    sig = beta_regularizer([torch.sigmoid(betas)], 1.0)
    (g,) = torch.autograd.grad(sig, betas)
    assert g.abs().max().item() > 1e-3


def test_variance_term_pushes_edges_apart():
    betas = torch.tensor([0.1, 0.0, -0.1], requires_grad=True)
    (g,) = torch.autograd.grad(beta_regularizer([torch.softmax(betas, 0)], 0.0), betas)
    assert g[0] < 0 < g[2]  # descent raises the strongest edge and lowers the weakest


def test_linear_ramp_eq6():
    assert [ramp(e, 4) for e in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
