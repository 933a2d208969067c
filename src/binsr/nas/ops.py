"""The SRBNAS search space (Su et al., Biomimetics 2024, Table 1): binary ops, no BN, no pooling.

Every conv op is :class:`binsr.nn.SRBNASOp` (binary group conv, Libra-PB weights, EDE
activations, +1 padding, 'same' size; dilated convs use dilation 2) followed by a constant
power-of-two output scale ``2^-round(log2 sqrt(n))``, ``n`` the conv's fan-in. The paper removes
BN from the ops and says nothing about their output range; without the scale a binary conv's
output grows like ``sqrt(n)`` (about 14 for a 7x7 conv on 4 channels per group), which would
dwarf the ``skip_connect`` candidate and the FP shortcuts. Being a power of two it is a bit
shift at inference, like Libra-PB's own scale (eq. 16). ``none`` (the DARTS zero op) is not in
Table 1; a search may add it through ``supernet.ops`` and the derivation never picks it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from binsr.nn import SRBNASOp

__all__ = ["OPS", "CONV_OPS", "PRIMITIVES", "ConvFactory", "PowerOfTwoScale", "srbnas_conv", "make_op"]

#: Table 1, in the paper's order
PRIMITIVES = ("dil_conv_3x3", "conv_3x3", "dil_conv_5x5", "conv_5x5", "conv_7x7", "skip_connect")

#: conv ops: name -> (kernel size, dilation)
CONV_OPS = {"dil_conv_3x3": (3, 2), "conv_3x3": (3, 1), "dil_conv_5x5": (5, 2), "conv_5x5": (5, 1), "conv_7x7": (7, 1)}

#: every op name a genotype or a search may use
OPS = (*CONV_OPS, "skip_connect", "none")

#: ``(in_ch, out_ch, kernel_size, dilation, groups) -> module`` at stride 1, same size
ConvFactory = Callable[[int, int, int, int, int], nn.Module]


class PowerOfTwoScale(nn.Module):
    """``y = x * 2^-shift`` with the constant ``shift = round(log2 sqrt(fan_in))``."""

    def __init__(self, fan_in: int) -> None:
        super().__init__()
        self.shift = round(0.5 * math.log2(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 ** -self.shift

    def extra_repr(self) -> str:
        return f"shift={self.shift}"


def srbnas_conv(in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """The SRBNAS binary conv: :class:`SRBNASOp` then :class:`PowerOfTwoScale` (module docstring)."""
    return nn.Sequential(SRBNASOp(in_ch, out_ch, kernel_size, dilation=dilation, groups=groups),
                         PowerOfTwoScale(kernel_size * kernel_size * in_ch // groups))


class Zero(nn.Module):
    """The DARTS ``none`` op: all zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int, groups: int, conv: ConvFactory = srbnas_conv) -> nn.Module:
    """Op ``name`` (``channels -> channels``); conv ops are built by ``conv``."""
    if name in CONV_OPS:
        k, d = CONV_OPS[name]
        return conv(channels, channels, k, d, groups)
    if name == "skip_connect":
        return nn.Identity()
    if name == "none":
        return Zero()
    raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}")
