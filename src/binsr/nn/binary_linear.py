"""``BinaryLinear`` (``nn.Linear`` plus quantizers) and the Transformer linear units of the recipes.

A Transformer body (SwinIR) replaces each of its linears (qkv, projection, MLP fc1/fc2) by
``recipe.linear(in_f, out_f)``; LayerNorm, softmax, the attention products ``q k^T`` and
``attn v``, the relative position bias and GELU stay full precision. Channels are the last
dimension of a token tensor (..., C); per-channel quantizer parameters (``rsign``,
``scales_act``: shape (1, C, 1, 1)) are applied by viewing the tokens as (M, C, 1, 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from binsr import quant
from binsr.nn.exact import ExactLinear, fp64_at_inference
from binsr.quant import ActivationQuantizer, WeightQuantizer

__all__ = ["BinaryLinear", "TokenGate", "ScalesLinear", "fp_linear", "binary_linear"]

QuantizerSpec = Any  # name, config dict, Quantizer instance or None (see binsr.quant.get)


class BinaryLinear(nn.Linear):
    """Linear layer with binarized input and/or weights (Larq ``QuantDense``).

    With both quantizers ``None`` it is exactly ``nn.Linear``. Otherwise

    ``y = (s_x @ s_w^T) * (a * alpha_o) + bias``

    where ``(s_x, a) = act_quant.binarize(x)`` (``a`` a layer-wise scale or 1; the sign product
    is an exact integer, the XNOR-popcount of the engine) and ``(s_w, alpha) =
    weight_quant.binarize(W)`` (``alpha_o`` per output feature or 1). With a weight quantizer only,
    the FP input is multiplied by the scaled signs. Backward: the estimators of the two
    quantizers, composed by autograd. ``binsr.models.profile`` counts the weights as binary
    parameters when the weight quantizer is binary, and the MACs as BOPs when both quantizers are
    binary (``is_binary``).

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (``bias`` defaults to True, as
            SwinIR's linears; the bias stays FP).
        act_quant: activation quantizer (name, config dict, ``Quantizer`` or ``None`` for FP);
            per-channel quantizers get ``channels=in_features``. Its scale must be one value.
        weight_quant: weight quantizer (name, config dict, ``Quantizer`` or ``None``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        act_quant: QuantizerSpec = None,
        weight_quant: QuantizerSpec = None,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.act_quant = quant.get(act_quant, channels=in_features)
        self.weight_quant = quant.get(weight_quant)
        if self.act_quant.precision == 1 and not isinstance(self.act_quant, ActivationQuantizer):
            raise ValueError(f"act_quant must be an activation binarizer, got {self.act_quant.name!r}")
        if self.weight_quant.precision == 1 and not isinstance(self.weight_quant, WeightQuantizer):
            raise ValueError(
                f"weight_quant must be a weight binarizer (sign, xnor, libra_pb), got {self.weight_quant.name!r}"
            )
        self.binary_dtype: torch.dtype | None = None  # binsr.nn.set_binary_dtype

    def binarize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(signs, scale)`` of the activation quantizer on tokens (..., C), channels last."""
        signs, scale = self.act_quant.binarize(x.reshape(-1, self.in_features, 1, 1))
        if scale is not None and scale.numel() != 1:
            raise ValueError("BinaryLinear needs a layer-wise (single-valued) activation scale")
        return signs.reshape(x.shape), scale

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """``y`` as the class doc says; with a token ``gate`` (..., 1), ``y_nb * gate + bias * gate``
        (``y_nb`` without the bias; each product rounded, then the sum: the packed engine's order
        for SCALES' gated linears, its ``gate_bias``)."""
        w, w_scale = self.weight_quant.binarize(self.weight)
        a_scale = None
        if self.act_quant.precision == 1:
            inp, a_scale = self.binarize_input(x)
            dt = self.binary_dtype if self.weight_quant.precision == 1 else None
            if dt is not None:  # +-1 operands are exact in bfloat16, as BinaryConv2d's
                inp, w = inp.to(dt), w.to(dt)
        else:
            inp = self.act_quant(x)
            if w_scale is None and gate is None:
                return F.linear(inp, w, self.bias)
        y = F.linear(inp, w).to(x.dtype)
        scale = None if w_scale is None else w_scale.reshape(-1)
        if a_scale is not None:
            scale = a_scale.reshape(()) if scale is None else a_scale.reshape(()) * scale
        if scale is not None:
            y = y * scale
        bias = self.bias
        if gate is not None:
            y = y * gate
            bias = None if bias is None else bias * gate
        if bias is not None:
            y = y + bias
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act_quant={self.act_quant.name}, weight_quant={self.weight_quant.name}"


class TokenGate(nn.Module):
    """Token-wise (spatial) gate ``g = sigmoid(Linear_{C -> 1}(x))``, shape (..., 1).

    SCALES' spatial re-scaling for Transformers (arXiv:2303.12270, Sec. IV-B, Fig. 6b): an FP
    linear layer and a sigmoid on the FP activation before binarization, one value per token,
    broadcast-multiplied into the binary linear output. Backward: autograd.

    Args:
        in_features: C.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.fc = ExactLinear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """At inference the linear and then the sigmoid each run in float64 and round once
        (:mod:`binsr.nn.exact`), as the packed engine's ``linear`` and ``sigmoid`` ops with ``fp64``."""
        return fp64_at_inference(self, self.fc(x), torch.sigmoid)


class ScalesLinear(nn.Module):
    """SCALES binary linear: layer-wise scaled, channel-thresholded activations, XNOR weights, token gate.

    ``y = [alpha * (sign(x - beta_c) @ sign(W)^T) * mean|W_o| + bias] . S(x)`` with ``S`` the
    token-wise re-scaling (:class:`TokenGate`, Eq. (4) with an FP linear, Fig. 6b/8) computed from
    the FP input. No channel-wise re-scaling (Sec. III-B/IV-C: LayerNorm removes the
    channel-to-channel variation in Transformers) and no skip (Sec. IV-C adds one for convolutions
    only). The gate multiplies the whole output including the FP bias (the paper re-scales "the
    output of binary ... linear layer"; it does not say where a bias goes), computed as
    ``y_nb * S + bias * S`` (:meth:`BinaryLinear.forward`'s order, the packed engine's). Backward:
    SCALES Eqs. (2)-(3) for ``alpha``, ``beta`` (``ScalesAct``), autograd for the rest. Wei et al.,
    "SCALES", arXiv:2303.12270, Sec. IV.

    Args:
        in_features, out_features, bias: linear geometry.
        act_quant: activation binarizer. Default ``"scales_act"``.
        weight_quant: weight binarizer. Default ``"xnor"``.
        spatial: use the token-wise re-scaling. Default True (False: Table V's "LSF" row).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        act_quant: QuantizerSpec = "scales_act",
        weight_quant: QuantizerSpec = "xnor",
        spatial: bool = True,
    ) -> None:
        super().__init__()
        self.linear = BinaryLinear(in_features, out_features, bias, act_quant, weight_quant)
        self.spatial = TokenGate(in_features) if spatial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x, None if self.spatial is None else self.spatial(x))


def fp_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A full-precision ``nn.Linear`` (the ``fp`` recipe's linear)."""
    return nn.Linear(in_features, out_features, bias)


def binary_linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    act_quant: QuantizerSpec = "ste",
    weight_quant: QuantizerSpec = "xnor",
) -> BinaryLinear:
    """A plain ``BinaryLinear`` with an FP bias; defaults give a plain BNN linear (``bnn`` recipe).

    The ``bibert`` recipe passes ``act_quant="clipped_ste"``: BiBERT's activation binarizer
    (``sign`` with the gradient clipped to ``|x| <= 1``) and its weight binarizer (``sign(W)``
    times the mean absolute weight of each output row, which is ``xnor``). Qin et al. 2022,
    "BiBERT: Accurate Fully Binarized BERT", arXiv:2203.06390.
    """
    return BinaryLinear(in_features, out_features, bias, act_quant, weight_quant)
