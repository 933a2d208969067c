"""Full-precision layers that feed binarized ones, computed at inference in float64 and rounded once.

A binary layer reads the sign of its float input, so an ulp of difference in that input can flip a
sign, and the flip spreads through every layer after it. A float32 sum depends on its order (by an
ulp, often), and oneDNN and the packed engine sum in different orders. In float64 a sum of float32
products is off by far less than a float32 ulp, so rounded once it gives the same float32 in any
order: PyTorch's eval forward and any engine then agree bit for bit (``docs/CONVENTIONS.md``,
``benchmarks/gates_fp64.py``; without this, SCALES' zoo model matched the engine on 92-99% of
Set5's uint8 values). Training is untouched: there the layers run in the input's dtype (and under
autocast) as every other layer does; so is a graph being exported (ONNX), which other runtimes
run in their own float32 order anyway. SwinIR's FP parts (LayerNorm, GELU, the window attention,
the SCALES token gates) follow the same rule.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExactConv2d", "ExactGELU", "ExactLayerNorm", "ExactLinear", "fp64_at_inference"]


def fp64_at_inference(module: nn.Module, x: torch.Tensor, fn: Callable[..., torch.Tensor],
                      *params: torch.Tensor | None) -> torch.Tensor:
    """``fn(x, *params)``: as it is while ``module`` trains or is exported, else in float64 with
    autocast off (``params`` too; ``None`` passes through), rounded once to ``x.dtype``."""
    if module.training or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return fn(x, *params)
    off = torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) else nullcontext()
    with off:
        return fn(x.double(), *(None if p is None else p.double() for p in params)).to(x.dtype)


class ExactConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose eval forward sums in float64 and rounds once (the module docstring says
    why): the head conv whose features the binary body binarizes. The packed engine computes it the
    same way (the ``fp64`` flag of a ``conv`` op, docs/PACKED_FORMAT.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp64_at_inference(self, x, self._conv_forward, self.weight, self.bias)


class ExactLinear(nn.Linear):
    """``nn.Linear`` whose eval forward sums in float64 and rounds once: SCALES' token gate in
    SwinIR (``binsr.nn.TokenGate``; the ``fp64`` flag of a ``linear`` op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp64_at_inference(self, x, F.linear, self.weight, self.bias)


class ExactLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose eval forward runs in float64 and rounds once: SwinIR's norms, whose
    outputs the binary linears binarize (the ``fp64`` flag of a ``layernorm`` op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp64_at_inference(self, x, self._norm, self.weight, self.bias)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class ExactGELU(nn.GELU):
    """``nn.GELU`` whose eval forward runs in float64 and rounds once (the ``fp64`` flag of a
    ``gelu`` op): SwinIR's MLP activation, which the second MLP linear binarizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp64_at_inference(self, x, super().forward)
