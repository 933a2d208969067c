"""Exponential moving average of a model's weights (evaluated and saved in place of the raw weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after each update; integer buffers are copied.

    Args:
        model (nn.Module): the trained model (unwrapped from DDP); a frozen copy is kept.
        decay (float): in [0, 1), e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        for name, ema in self.module.state_dict().items():
            value = current[name].detach()
            if ema.is_floating_point():
                ema.lerp_(value, 1.0 - self.decay)
            else:
                ema.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
