"""The SRBNAS supernet: DARTS cells with PC-DARTS partial channels and edge normalisation.

Mixed op (SRBNAS eq. 3; PC-DARTS, Xu et al. ICLR 2020, eq. 2): on edge ``(i, j)`` only the first
``C / k`` channels go through ``sum_o softmax(alpha_ij)_o * o(x)``; the rest bypass, and the result
is channel-shuffled with ``k`` groups so another slice is searched on the next edge. Node ``j`` is
``sum_i s_ij * f_ij(x_i)`` with ``s_j = softmax(beta_j)`` over its inputs (PC-DARTS eq. 3), or
``sigmoid(beta_ij)`` (config ``beta_norm``). One alpha/beta set is shared by all cells (DARTS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from binsr.nas.genotype import Genotype, derive_genotype
from binsr.nas.network import CellBase, SRBNASBackbone
from binsr.nas.ops import CONV_OPS, PRIMITIVES, make_op, srbnas_conv

__all__ = ["MixedOp", "SearchCell", "Supernet", "channel_shuffle", "mixed_edges", "num_edges"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (N, g*c, H, W) viewed as (g, c), transposed, flattened."""
    n, ch, h, w = x.shape
    return x.view(n, groups, ch // groups, h, w).transpose(1, 2).reshape(n, ch, h, w)


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` nodes: node ``j`` has ``j + 2`` inputs."""
    return sum(j + 2 for j in range(steps))


class MixedOp(nn.Module):
    """PC-DARTS mixed op over ``ops`` on ``channels // k`` of ``channels`` channels.

    Every conv op binarizes the same input with the same EDE schedule, and a conv is linear in
    its kernel, so ``sum_o w_o * conv_o(sign(x))`` is computed as one conv of ``sign(x)`` with
    ``sum_o w_o * K_o``: ``K_o`` is op ``o``'s Libra-PB kernel times its scales, its groups spread
    block-diagonally and its dilation spread out, centred in the largest footprint; the +1
    padding of that footprint only meets zero weights beyond an op's own padding. The value and
    the gradients are those of running the ops one by one (``tests/nas``).
    """

    def __init__(self, channels: int, ops: list[str], groups: int, k: int) -> None:
        super().__init__()
        self.k, self.groups, self.names = k, groups, list(ops)
        c = channels // k
        self.ops = nn.ModuleList(make_op(name, c, groups) for name in ops)
        self.footprint = max((d * (ks - 1) + 1 for name, (ks, d) in CONV_OPS.items() if name in ops), default=0)
        group = torch.arange(c) // (c // groups)
        self.register_buffer("group_mask", (group[:, None] == group[None, :]).float()[:, :, None, None],
                             persistent=False)

    def _kernel(self, op: nn.Module) -> torch.Tensor:
        """Op ``op``'s effective dense kernel (c, c, F, F), F the footprint."""
        conv, out_scale = op
        signs, w_scale = conv.weight_quant.binarize(conv.weight)
        w = signs * (2.0 ** -out_scale.shift) if w_scale is None else signs * (w_scale * 2.0 ** -out_scale.shift)
        dense = w.repeat(1, self.groups, 1, 1) * self.group_mask
        d, size = conv.dilation[0], conv.kernel_size[0]
        if d > 1:
            spread = dense.new_zeros(*dense.shape[:2], d * (size - 1) + 1, d * (size - 1) + 1)
            spread[:, :, ::d, ::d] = dense
            dense = spread
        p = (self.footprint - dense.shape[-1]) // 2
        return F.pad(dense, (p, p, p, p))

    def mixture(self, weights: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(sum_o w_o K_o over the conv ops, w_skip)``, each ``None`` when absent."""
        kernel, skip = None, None
        for w, name, op in zip(weights, self.names, self.ops):
            if name in CONV_OPS:
                kw = w * self._kernel(op)
                kernel = kw if kernel is None else kernel + kw
            elif name == "skip_connect":
                skip = w
        return kernel, skip

    def act_quant(self) -> nn.Module | None:
        """The activation binarizer of the conv ops (all EDE on one schedule), or ``None``."""
        return next((op[0].act_quant for name, op in zip(self.names, self.ops) if name in CONV_OPS), None)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return mixed_edges(x, [self], [weights])[0]


def mixed_edges(x: torch.Tensor, edges: list[MixedOp], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """The outputs of mixed ops (same ops and ``k``) that read the same input ``x``.

    They share the input slice and its binarization, so their convs run as one conv whose output
    channels are the edges' kernels stacked (on a CPU several times faster than one conv each).
    """
    k, c = edges[0].k, x.shape[1] // edges[0].k
    xa, xb = x[:, :c], x[:, c:]
    kernels, skips = zip(*(e.mixture(w) for e, w in zip(edges, weights)))
    ya = [torch.zeros_like(xa) if s is None else s * xa for s in skips]
    convs = [i for i, kernel in enumerate(kernels) if kernel is not None]
    if convs:
        signs, _ = edges[convs[0]].act_quant().binarize(xa)  # EDE: no activation scale
        p = edges[0].footprint // 2
        y = F.conv2d(F.pad(signs, (p, p, p, p), value=1.0), torch.cat([kernels[i] for i in convs]))
        for i, part in zip(convs, y.split(c, dim=1)):
            ya[i] = ya[i] + part
    return [channel_shuffle(torch.cat([a, xb], dim=1), k) for a in ya]


class SearchCell(CellBase):
    """A cell whose every edge is a :class:`MixedOp`; the edges leaving one state run together."""

    def __init__(self, num_feat: int, steps: int, ops: list[str], groups: int, k: int) -> None:
        super().__init__(num_feat, steps, srbnas_conv)
        self.edges = nn.ModuleList(MixedOp(num_feat, ops, groups, k) for _ in range(num_edges(steps)))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, op_weights: torch.Tensor,
                edge_weights: list[torch.Tensor]) -> torch.Tensor:
        states, nodes = [s0, s1], [0.0] * self.steps
        for i in range(self.steps + 1):  # state i feeds nodes i-1 .. steps-1
            targets = range(max(0, i - 1), self.steps)
            idx = [j * (j + 3) // 2 + i for j in targets]  # edge (i -> j); node j has j + 2 inputs
            outs = mixed_edges(states[i], [self.edges[e] for e in idx], [op_weights[e] for e in idx])
            for j, y in zip(targets, outs):
                nodes[j] = nodes[j] + edge_weights[j][i] * y
            if i >= 1:
                states.append(nodes[i - 1])  # node i-1 has all its inputs
        return self.output(s1, states[2:])


class Supernet(nn.Module):
    """SRBNAS supernet with architecture parameters ``alphas`` (edges, ops) and ``betas`` (edges,).

    Args:
        scale (int): upscaling factor.
        num_cells (int): cells (3: light, 8: large). Default: 3.
        num_feat (int): width. Default: 64.
        steps (int): intermediate nodes per cell. Default: 4.
        ops (list[str]): search space (``binsr.nas.ops.OPS`` names). Default: Table 1.
        groups (int): group count of the binary group convs. Default: 2.
        partial_k (int): PC-DARTS channel sampling 1/k. Default: 8.
        beta_norm (str): ``"softmax"`` (PC-DARTS) or ``"sigmoid"``. Default: ``"softmax"``.
    """

    def __init__(self, scale: int, num_cells: int = 3, num_feat: int = 64, steps: int = 4,
                 ops: list[str] | None = None, groups: int = 2, partial_k: int = 8,
                 beta_norm: str = "softmax") -> None:
        super().__init__()
        self.ops = list(ops or PRIMITIVES)
        self.steps, self.groups, self.beta_norm = steps, groups, beta_norm
        cells = [SearchCell(num_feat, steps, self.ops, groups, partial_k) for _ in range(num_cells)]
        self.net = SRBNASBackbone(cells, num_feat, scale)
        self.alphas = nn.Parameter(1e-3 * torch.randn(num_edges(steps), len(self.ops)))
        self.betas = nn.Parameter(1e-3 * torch.randn(num_edges(steps)))
        self.register_buffer("op_mask", torch.ones(num_edges(steps), len(self.ops), dtype=torch.bool))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def edge_weights(self, betas: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``s_ij`` per node ``j`` (a tensor over its ``j + 2`` inputs), of the current betas or of
        ``betas`` (e.g. a logged copy)."""
        betas = self.betas if betas is None else betas
        out, start = [], 0
        for j in range(self.steps):
            b = betas[start:start + j + 2]
            out.append(torch.softmax(b, dim=0) if self.beta_norm == "softmax" else torch.sigmoid(b))
            start += j + 2
        return out

    def op_logits(self, alphas: torch.Tensor | None = None) -> torch.Tensor:
        """The alphas (or ``alphas``) with the ops dropped by :meth:`shrink` at ``-inf``."""
        alphas = self.alphas if alphas is None else alphas
        return alphas.masked_fill(~self.op_mask, float("-inf"))

    def shrink(self, keep: int) -> None:
        """Progressive search-space shrinking (P-DARTS, Chen et al. ICCV 2019, Sec. 3.2): on every
        edge, keep the ``keep`` ops of largest alpha among those still in, drop the rest from the
        mixture (probability 0 from here on) and from the derivation."""
        with torch.no_grad():
            logits = self.op_logits()
            top = logits.topk(min(keep, logits.shape[1]), dim=-1).indices
            self.op_mask &= torch.zeros_like(self.op_mask).scatter_(1, top, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, torch.softmax(self.op_logits(), dim=-1), self.edge_weights())

    def genotype(self) -> Genotype:
        """The discrete cell (two strongest edges per node, strongest op per edge)."""
        return derive_genotype(self.op_logits(), self.edge_weights(), self.ops, self.groups)
