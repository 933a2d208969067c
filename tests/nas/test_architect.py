"""The alpha/beta step: first order, second order (weights restored), regularisers in eq. 8."""

import pytest
import torch

from binsr.nas.architect import Architect
from binsr.nas.supernet import Supernet


def _setup(order: str, **reg):
    torch.manual_seed(0)
    net = Supernet(scale=2, num_cells=1, num_feat=8, steps=2, groups=1, partial_k=2)
    kw = dict(lambda_alpha=1.5, mu=0.8, rho=0.2, l1_on="softmax", lambda_beta=1.5, gamma=0.8)
    kw.update(reg)
    arch = Architect(net, 6e-4, (0.5, 0.999), 0.0, order=order, **kw)
    g = torch.Generator().manual_seed(1)
    batch = lambda: (torch.rand(2, 3, 6, 6, generator=g), torch.rand(2, 3, 12, 12, generator=g))  # noqa: E731
    return net, arch, batch(), batch()


def test_first_order_step_moves_only_the_architecture():
    net, arch, (lr_v, hr_v), _ = _setup("first")
    weights = [p.detach().clone() for p in net.weight_parameters()]
    alphas = net.alphas.detach().clone()
    loss = arch.step(lr_v, hr_v, ramp=0.5)
    assert loss.total == pytest.approx(loss.task + 0.5 * (1.5 * loss.reg_alpha + 1.5 * loss.reg_beta))
    assert not torch.equal(alphas, net.alphas)
    assert all(torch.equal(a, b) for a, b in zip(weights, net.weight_parameters()))


def test_second_order_restores_weights_and_differs_from_first_order():
    grads = {}
    for order in ("first", "second"):
        net, arch, (lr_v, hr_v), train = _setup(order)
        weights = [p.detach().clone() for p in net.weight_parameters()]
        arch.step(lr_v, hr_v, ramp=0.0, train_batch=train, xi=1e-2)
        assert all(torch.equal(a, b) for a, b in zip(weights, net.weight_parameters()))
        grads[order] = net.alphas.grad.clone()
        assert torch.isfinite(grads[order]).all()
    assert not torch.allclose(grads["first"], grads["second"])


def test_ramp_zero_leaves_the_task_gradient_only():
    net, arch, (lr_v, hr_v), _ = _setup("first", rho=5.0)
    arch.step(lr_v, hr_v, ramp=0.0)
    g0 = net.alphas.grad.clone()
    net2, arch2, _, _ = _setup("first", rho=0.0)
    arch2.step(lr_v, hr_v, ramp=1.0)  # rho = 0 and the softmax L1 term has no gradient
    torch.testing.assert_close(net2.alphas.grad, g0)
