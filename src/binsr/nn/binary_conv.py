"""``BinaryConv2d``: ``nn.Conv2d`` plus an activation and a weight quantizer (Larq ``QuantConv2D``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from binsr import quant
from binsr.quant import ActivationExport, ActivationQuantizer, WeightExport, WeightQuantizer

__all__ = ["BinaryConv2d", "BinaryConvExport", "same_padding", "set_binary_dtype"]


def same_padding(kernel_size: int, dilation: int = 1, stride: int = 1) -> int | str:
    """Padding that keeps the spatial size at stride 1: ``dilation*(kernel_size-1)//2`` when that
    is symmetric, else ``"same"`` (PyTorch's rule: the extra row/column goes bottom/right).

    Raises:
        ValueError: an even receptive field (``dilation*(kernel_size-1)`` odd) with ``stride > 1``,
            which PyTorch's ``"same"`` does not support either.
    """
    total = dilation * (kernel_size - 1)
    if total % 2 == 0:
        return total // 2
    if stride != 1:
        raise ValueError(f"kernel_size={kernel_size}, dilation={dilation} needs asymmetric padding, only at stride 1")
    return "same"


@dataclass(frozen=True)
class BinaryConvExport:
    """What the bit-packed engine needs from a ``BinaryConv2d`` with 1-bit input and weights.

    ``y[n, o] = popcount_dot(pad(bits(x - act.threshold), +1), weight.signs[o]) * (act.scale *
    weight.scale[o]) + bias[o]``: the input bits padded with +1 (bit 1) by ``padding`` =
    (left, right, top, bottom), the integer +-1 dot product ``2 * popcount(xnor) - n``, then one
    float32 multiply by the product of the two scales (missing scales are 1), then the bias.
    """

    weight: WeightExport
    act: ActivationExport
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int


class BinaryConv2d(nn.Conv2d):
    """2-D convolution with binarized input and/or weights, binsr's padding convention.

    With both quantizers ``None`` it is exactly ``nn.Conv2d``. With a weight quantizer only, the
    FP input is convolved (zero padding) with the signs and multiplied by the weight scale.
    With an activation quantizer (docs/CONVENTIONS.md):

    ``y = conv(pad(s_x, +1), s_w; padding=0) * (a * alpha_o) + bias``

    where ``(s_x, a) = act_quant.binarize(x)`` (``a`` a layer-wise scale or 1),
    ``(s_w, alpha) = weight_quant.binarize(W)`` (``alpha_o`` per output channel or 1), and ``pad``
    pads the binarized map with the value +1 (``sign(0)``) by this layer's ``padding`` (an int, a
    pair, ``"valid"``, or ``"same"`` at stride 1 with the extra row/column at the bottom/right).
    The convolution of +-1 values is an exact integer, so the engine's XNOR-popcount agrees bit for
    bit; a scaled input ``a * s_x`` behaves as if padded with ``+a``. Backward: the estimators of
    the two quantizers, composed by autograd.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``nn.Conv2d`` (``bias`` defaults to False).
        act_quant: activation quantizer (name, config dict, ``Quantizer`` or ``None`` for FP);
            per-channel quantizers get ``channels=in_channels``. Its scale must be one value.
        weight_quant: weight quantizer (name, config dict, ``Quantizer`` or ``None``);
            per-channel quantizers get ``channels=out_channels`` and their parameters are
            initialised from the initial weight (``WeightQuantizer.reset_parameters``).

    ``binary_dtype`` (:func:`set_binary_dtype`; default None = the input's dtype): the dtype the
    +-1 operands of a binary-by-binary conv are cast to, e.g. ``torch.bfloat16`` for training on
    CPUs with AVX-512 BF16 or AMX. The operands are exact in it and oneDNN accumulates in float32;
    the sums are rounded to bfloat16 on output, exactly for ``|sum| <= 256`` and to 8 significant
    bits above (a 3x3 x 64 conv sums 576 terms).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        act_quant: Any = None,
        weight_quant: Any = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.act_quant = quant.get(act_quant, channels=in_channels)
        self.weight_quant = quant.get(weight_quant, channels=out_channels)
        if self.act_quant.precision == 1 and not isinstance(self.act_quant, ActivationQuantizer):
            raise ValueError(f"act_quant must be an activation binarizer, got {self.act_quant.name!r}")
        if self.weight_quant.precision == 1 and not isinstance(self.weight_quant, WeightQuantizer):
            raise ValueError(f"weight_quant must be a weight binarizer (sign, xnor, libra_pb, scaled_sign), "
                             f"got {self.weight_quant.name!r}")
        if isinstance(self.weight_quant, WeightQuantizer):
            self.weight_quant.reset_parameters(self.weight)
        self.binary_dtype: torch.dtype | None = None  # set_binary_dtype


    @property
    def binary_padding(self) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` border of +1 added to the binarized input."""
        if isinstance(self.padding, str):
            if self.padding == "valid":
                return (0, 0, 0, 0)
            pads: list[int] = []
            for k, d in zip(reversed(self.kernel_size), reversed(self.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)  # type: ignore[return-value]
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def _output_scale(self, a_scale: torch.Tensor | None, w_scale: torch.Tensor | None) -> torch.Tensor | None:
        scale = None if w_scale is None else w_scale.reshape(1, -1, 1, 1)
        if a_scale is not None:
            if a_scale.numel() != 1:
                raise ValueError("BinaryConv2d needs a layer-wise (single-valued) activation scale")
            a = a_scale.reshape(1, 1, 1, 1)
            scale = a if scale is None else a * scale
        return scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, w_scale = self.weight_quant.binarize(self.weight)
        if self.act_quant.precision == 1:
            signs, a_scale = self.act_quant.binarize(x)
            dt = self.binary_dtype if self.weight_quant.precision == 1 else None
            if dt is not None:  # +-1 operands are exact in bfloat16; the sums accumulate in float32
                signs, w = signs.to(dt), w.to(dt)
            padded = F.pad(signs, self.binary_padding, value=1.0)
            y = F.conv2d(padded, w, None, self.stride, 0, self.dilation, self.groups).to(x.dtype)
        else:
            a_scale = None
            if w_scale is None:
                return self._conv_forward(self.act_quant(x), w, self.bias)
            y = self._conv_forward(self.act_quant(x), w, None)
        scale = self._output_scale(a_scale, w_scale)
        if scale is not None:
            y = y * scale
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    @torch.no_grad()
    def export(self) -> BinaryConvExport:
        """Signs, scales, thresholds and geometry for the bit-packed engine (1-bit input and weights only)."""
        if self.act_quant.precision != 1 or self.weight_quant.precision != 1:
            raise ValueError("export() needs a binary activation quantizer and a binary weight quantizer")
        return BinaryConvExport(
            weight=self.weight_quant.export(self.weight),
            act=self.act_quant.export(),
            bias=None if self.bias is None else self.bias.detach().clone(),
            stride=tuple(self.stride),  # type: ignore[arg-type]
            padding=self.binary_padding,
            dilation=tuple(self.dilation),  # type: ignore[arg-type]
            groups=self.groups,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act_quant={self.act_quant.name}, weight_quant={self.weight_quant.name}"


def set_binary_dtype(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Set ``binary_dtype`` of every :class:`BinaryConv2d` and :class:`~binsr.nn.BinaryLinear` in
    ``model`` (None: compute in the input's dtype)."""
    for m in model.modules():
        if hasattr(m, "binary_dtype"):
            m.binary_dtype = dtype
