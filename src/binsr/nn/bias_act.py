"""ReActNet's learnable shifts: ``LearnableBias`` and ``RPReLU``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LearnableBias", "RPReLU"]


class LearnableBias(nn.Module):
    """Per-channel learnable shift: ``y = x + b_c`` (``dy/dx = 1``, ``dy/db_c = 1``), ``b = 0`` at init.

    Liu et al. 2020, "ReActNet", arXiv:2003.03488 (the ``LearnableBias`` of the official code).

    Args:
        channels: number of channels C (dim 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class RPReLU(nn.Module):
    """ReAct-PReLU: ``y = PReLU_beta(x - gamma_c) + zeta_c``, all per channel and learnable.

    ``PReLU_beta(u) = u`` for ``u >= 0`` and ``beta_c u`` otherwise; ``gamma = zeta = 0`` and
    ``beta = 0.25`` at init. Liu et al. 2020, "ReActNet", arXiv:2003.03488, section "Generalized activation functions";
    BBCU (arXiv:2210.00405) puts it after each binary conv. As in the official code, the shifts
    are ``LearnableBias`` modules (``shift_in`` adds ``-gamma``).

    Args:
        channels: number of channels C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))
