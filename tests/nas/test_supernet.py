"""PC-DARTS pieces: channel shuffle, the partial-channel mixed op, the supernet's shapes."""

import pytest
import torch

from binsr.nas.ops import PRIMITIVES, PowerOfTwoScale, make_op
from binsr.nas.supernet import MixedOp, Supernet, channel_shuffle, num_edges
from binsr.nn import SRBNASOp, set_progress


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert channel_shuffle(torch.rand(2, 16, 3, 5), 8).shape == (2, 16, 3, 5)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_fused_mixed_op_equals_the_sum_of_its_ops(groups):
    torch.manual_seed(0)
    op = MixedOp(32, [*PRIMITIVES, "none"], groups, k=4)
    set_progress(op, 0.6)  # EDE in its second stage: a non-trivial backward
    x = torch.randn(2, 32, 9, 11, requires_grad=True)
    w = torch.softmax(torch.randn(7), 0).requires_grad_()
    y = op(x, w)
    ref = channel_shuffle(torch.cat([sum(wi * o(x[:, :8]) for wi, o in zip(w, op.ops)), x[:, 8:]], 1), 4)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    params = [x, w, op.ops[0][0].weight, op.ops[4][0].weight]
    for a, b in zip(torch.autograd.grad((y * g).sum(), params), torch.autograd.grad((ref * g).sum(), params)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mixed_op_searches_only_one_kth_of_the_channels():
    op = MixedOp(64, list(PRIMITIVES), 2, k=8)
    assert all(m[0].in_channels == 8 for m in op.ops if isinstance(m, torch.nn.Sequential))
    x = torch.randn(2, 64, 6, 6)
    y = op(x, torch.full((6,), 1 / 6))
    assert y.shape == x.shape
    bypass = channel_shuffle(torch.cat([torch.zeros(2, 8, 6, 6), x[:, 8:]], 1), 8)
    kept = bypass != 0
    assert kept.float().mean().item() == pytest.approx(7 / 8)
    assert torch.equal(y[kept], bypass[kept])  # 7/8 of the channels pass unchanged, shuffled


def test_ops_are_binary_group_convs_with_power_of_two_scale():
    op = make_op("dil_conv_5x5", 16, 4)
    conv, scale = op
    assert isinstance(conv, SRBNASOp) and conv.groups == 4 and conv.dilation == (2, 2)
    assert conv.act_quant.precision == 1 and conv.weight_quant.precision == 1
    assert isinstance(scale, PowerOfTwoScale) and scale.shift == 3  # fan-in 5*5*4 = 100 -> 2^-3
    assert op(torch.randn(1, 16, 7, 7)).shape == (1, 16, 7, 7)


def test_supernet_shapes_and_edge_normalisation():
    torch.manual_seed(0)
    net = Supernet(scale=3, num_cells=2, num_feat=16, steps=3, groups=2, partial_k=4)
    assert num_edges(4) == 14 and net.alphas.shape == (num_edges(3), 6) and net.betas.shape == (9,)
    s = net.edge_weights()
    assert [len(v) for v in s] == [2, 3, 4]
    assert all(v.sum().item() == pytest.approx(1.0) for v in s)
    y = net(torch.rand(2, 3, 8, 10))
    assert y.shape == (2, 3, 24, 30)
    y.mean().backward()
    assert net.alphas.grad.abs().sum() > 0 and net.betas.grad.abs().sum() > 0
    arch = {id(p) for p in net.arch_parameters()}
    assert not arch & {id(p) for p in net.weight_parameters()}
    assert len(arch) + len(net.weight_parameters()) == len(list(net.parameters()))


def test_sigmoid_edge_weights_are_independent():
    net = Supernet(scale=2, num_cells=1, num_feat=8, steps=2, groups=1, partial_k=2, beta_norm="sigmoid")
    with torch.no_grad():
        net.betas.zero_()
    assert all(torch.allclose(v, torch.full_like(v, 0.5)) for v in net.edge_weights())


def test_search_cell_batches_edges_without_changing_the_result():
    torch.manual_seed(1)
    net = Supernet(scale=2, num_cells=1, num_feat=16, steps=3, groups=2, partial_k=4)
    cell = net.net.body[0]
    s0, s1 = torch.randn(2, 16, 6, 7), torch.randn(2, 16, 6, 7)
    w, s = torch.softmax(net.alphas, -1), net.edge_weights()
    states, e = [s0, s1], 0
    for j in range(3):  # the DARTS order: node by node, edge by edge
        states.append(sum(s[j][i] * cell.edges[e + i](h, w[e + i]) for i, h in enumerate(states)))
        e += j + 2
    torch.testing.assert_close(cell(s0, s1, w, s), cell.output(s1, states[2:]), atol=1e-5, rtol=1e-5)


def test_shrink_keeps_the_strongest_ops_and_drops_the_rest_from_mixture_and_derivation():
    """``Supernet.shrink`` (P-DARTS): per edge the ``keep`` ops of largest alpha stay; a dropped op
    gets probability 0 in the forward, no gradient, no weight in R(alpha), and is never derived."""
    from binsr.nas.regularizers import alpha_regularizer

    torch.manual_seed(0)
    net = Supernet(2, num_cells=1, num_feat=16, steps=2, partial_k=4)
    with torch.no_grad():
        net.alphas.copy_(torch.randn_like(net.alphas))
    order = net.alphas.detach().argsort(dim=-1, descending=True)
    net.shrink(3)
    assert net.op_mask.sum(1).tolist() == [3] * net.alphas.shape[0]
    assert all(net.op_mask[e, order[e, :3]].all() for e in range(net.alphas.shape[0]))
    net.shrink(1)
    assert torch.equal(net.op_mask.float().argmax(1), order[:, 0])
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    assert (net.alphas.grad[~net.op_mask] == 0).all()
    reg = alpha_regularizer(net.alphas, 0.5, 0.5, "raw", net.op_mask)
    (g,) = torch.autograd.grad(reg, net.alphas)
    assert (g[~net.op_mask] == 0).all()
    geno = net.genotype()
    kept = {net.ops[i] for i in order[:, 0].tolist()}
    assert {op for node in geno.nodes for op, _ in node} <= kept
