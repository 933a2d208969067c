"""SRBNAS macro-architecture and the discrete cell (Su et al., Biomimetics 2024, Sec. 5, Figure 2).

Network: full-precision 3x3 head conv -> N cells at LR resolution (no reduction cells) -> FP tail
(3x3 conv to ``3 * scale^2`` channels, PixelShuffle). Our reading of the "hierarchical basic
architecture" with "two full-precision shortcuts" that carry image information across stages
(Figure 2 is not reproduced in the text we have):

* shortcut 1 (feature stage): the head features are added to the output of the last cell;
* shortcut 2 (image stage): the LR image, upsampled bilinearly, is added to the tail output.

Both are parameter-free FP additions. A cell (DARTS) reads the outputs of the two previous cells
(the head features for the first cell); node ``j`` sums its incoming edges; the nodes are
concatenated and fused to ``num_feat`` channels by a binary 1x1 conv, plus a FP residual from
the previous cell's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from binsr.nas.genotype import Genotype
from binsr.nas.ops import ConvFactory, make_op, srbnas_conv
from binsr.nn.exact import ExactConv2d

__all__ = ["SRBNASBackbone", "Cell"]


class CellBase(nn.Module):
    """The part every cell shares: ``fuse`` (binary 1x1 over the concatenated nodes) + residual."""

    def __init__(self, num_feat: int, steps: int, conv: ConvFactory) -> None:
        super().__init__()
        self.steps = steps
        self.fuse = conv(steps * num_feat, num_feat, 1, 1, 1)

    def output(self, s1: torch.Tensor, nodes: list[torch.Tensor]) -> torch.Tensor:
        return s1 + self.fuse(torch.cat(nodes, dim=1))


class Cell(CellBase):
    """A discrete cell built from a :class:`Genotype`, every op on the full ``num_feat`` channels and
    every conv (ops and ``fuse``) from ``conv`` (default: the SRBNAS binary conv)."""

    def __init__(self, genotype: Genotype, num_feat: int, groups: int, conv: ConvFactory = srbnas_conv) -> None:
        super().__init__(num_feat, genotype.steps, conv)
        self.sources = [[src for _, src in node] for node in genotype.nodes]
        self.ops = nn.ModuleList(nn.ModuleList(make_op(op, num_feat, groups, conv) for op, _ in node)
                                 for node in genotype.nodes)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        for ops, sources in zip(self.ops, self.sources):
            states.append(sum(op(states[src]) for op, src in zip(ops, sources)))
        return self.output(s1, states[2:])


class SRBNASBackbone(nn.Module):
    """Head, cells (``body``), tail and the two FP shortcuts; ``forward(x, *cell_args)`` passes ``cell_args``
    to every cell (the supernet's alpha/beta weights)."""

    def __init__(self, cells: list[nn.Module], num_feat: int, scale: int, num_in_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.head = ExactConv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.ModuleList(cells)  # "body": the binarized part (binsr.models.profile totals("body."))
        self.tail = nn.Sequential(nn.Conv2d(num_feat, num_in_ch * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor, *cell_args: object) -> torch.Tensor:
        feat = self.head(x)
        s0 = s1 = feat
        for cell in self.body:
            s0, s1 = s1, cell(s0, s1, *cell_args)
        out = self.tail(s1 + feat)  # shortcut 1
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)  # shortcut 2
