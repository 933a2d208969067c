"""Light full-precision gates computed from the FP activation (SCALES re-scaling, LT-attn).

Outside training a gate is computed in float64 and rounded once, as :mod:`binsr.nn.exact` says why:
the gates multiply binary conv outputs inside the body, so the packed engine's gates must equal
PyTorch's bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from binsr.nn.binary_conv import same_padding
from binsr.nn.exact import fp64_at_inference

__all__ = ["ChannelGate", "SpatialGate"]


class ChannelGate(nn.Module):
    """Channel gate ``g = sigmoid(Conv1d_k(GAP(x)))``, shape (N, C_out, 1, 1).

    The Conv1d (1 -> 1 channel, kernel ``k``, zero padding ``k // 2``, no bias) slides over the
    C_in pooled channel values (ECA, Wang et al. 2020, arXiv:1910.03151). SCALES' channel-wise
    re-scaling (arXiv:2303.12270, Sec. IV-C, Eq. (5), ``k = 5``) multiplies it into the binary
    conv output. When ``out_channels`` differs from the input's C_in, the C_in gate values are
    resized to ``out_channels`` by nearest interpolation (binsr's choice; the paper only has
    C_in = C_out). Backward: autograd.

    Args:
        kernel_size: odd Conv1d kernel size. Default 5 (SCALES).
        out_channels: channels of the gated tensor; ``None`` = same as the input.
    """

    def __init__(self, kernel_size: int = 5, out_channels: int | None = None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ChannelGate needs an odd kernel_size, got {kernel_size}")
        self.out_channels = out_channels
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = fp64_at_inference(self, x, self._gate, self.conv.weight, self.conv.bias)
        return gate.transpose(1, 2).unsqueeze(-1)  # (N, C_out, 1, 1)

    def _gate(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3)).unsqueeze(1)  # (N, 1, C_in)
        gate = F.conv1d(pooled, weight, bias, padding=self.conv.padding)
        if self.out_channels is not None and self.out_channels != gate.shape[-1]:
            gate = F.interpolate(gate, size=self.out_channels, mode="nearest")
        return torch.sigmoid(gate)


class SpatialGate(nn.Module):
    """Spatial gate ``g = sigmoid(Conv2d_{C_in -> 1}(x))``, shape (N, 1, H', W').

    SCALES' spatial re-scaling (arXiv:2303.12270, Sec. IV-B, Eq. (4)): an FP conv on the
    activation before binarization and a sigmoid, broadcast-multiplied into the binary conv
    output. The paper copy loses the kernel size; binsr gives the gate the binary conv's kernel
    size, stride and dilation (with its same-size padding) so its output always matches the conv's
    spatial size. Backward: autograd.

    Args:
        in_channels: C_in.
        kernel_size: kernel size. Default 3.
        stride: stride. Default 1.
        dilation: dilation. Default 1.
    """

    def __init__(self, in_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        padding = same_padding(kernel_size, dilation, stride)
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, stride, padding, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp64_at_inference(self, x, self._gate, self.conv.weight, self.conv.bias)

    def _gate(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.dtype != torch.float64:
            return torch.sigmoid(self.conv._conv_forward(x, weight, bias))
        conv = self.conv
        return torch.sigmoid(_taps_conv(x, weight, bias, conv.stride[0], conv.padding[0], conv.dilation[0]))


def _taps_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int,
               dilation: int) -> torch.Tensor:
    """``F.conv2d`` to one output channel as a per-pixel product over channels (one matmul: every
    tap's map) and a sum of the k*k shifted tap maps: the same float64 sums in another order, 12x
    faster than PyTorch's float64 conv (which has no oneDNN kernel: 94 vs 7.8 ms for 64 channels
    at 128x128 on one Zen 4 core)."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    taps = (x.permute(0, 2, 3, 1) @ weight[0].reshape(c, k * k)).permute(0, 3, 1, 2)  # (N, k*k, H, W)
    taps = F.pad(taps, (padding,) * 4)
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    out = x.new_zeros(n, 1, ho, wo)
    if bias is not None:
        out += bias.view(1, 1, 1, 1)
    for t in range(k * k):
        y0, x0 = (t // k) * dilation, (t % k) * dilation
        out += taps[:, t:t + 1, y0:y0 + (ho - 1) * stride + 1:stride, x0:x0 + (wo - 1) * stride + 1:stride]
    return out
