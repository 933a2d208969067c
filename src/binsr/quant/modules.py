"""Quantizer modules: forward binarizes, backward is the estimator, parameters live here.

Every quantizer is a :class:`Quantizer` with ``precision`` (1, or 32 for ``identity``) and
``binarize(x) -> (signs, scale)``: ``signs`` is exactly +-1 (carrying the estimator's gradient)
and ``scale`` is ``None`` or a tensor broadcastable against ``signs``; ``forward(x)`` returns
``signs * scale``. ``BinaryConv2d`` uses ``binarize`` to convolve the signs and apply the scale
after the convolution (docs/CONVENTIONS.md); the bit-packed engine uses ``export``.

Activation binarizers (``ste``, ``clipped_ste``, ``approx_sign``, ``ede``, ``rsign``,
``scales_act``) export ``ActivationExport(threshold, scale)``: bit = ``x - threshold >= 0``.
Weight binarizers (``sign``, ``xnor``, ``libra_pb``, ``scaled_sign``) export ``WeightExport(signs,
scale, shift)`` per output channel. Only ``ede`` has a schedule (``set_progress``); composite
quantizers hold their estimator as the submodule ``estimator``, which
:func:`binsr.nn.set_progress` reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from binsr.quant import functional as QF
from binsr.quant._get import get, register

__all__ = [
    "Quantizer",
    "ActivationExport",
    "WeightExport",
    "Identity",
    "ActivationQuantizer",
    "SignEstimator",
    "SignSTE",
    "ClippedSTE",
    "ApproxSign",
    "EDE",
    "RSign",
    "ScalesAct",
    "WeightQuantizer",
    "WeightSign",
    "XNORWeight",
    "LibraPB",
    "ScaledSign",
]

Estimator = Any  # a name, a config dict or a SignEstimator instance (see binsr.quant.get)


@dataclass(frozen=True)
class ActivationExport:
    """Inference parameters of an activation binarizer: bit = ``x - threshold >= 0``.

    Attributes:
        threshold: per-channel threshold, shape (C,), or ``None`` (threshold 0).
        scale: layer-wise scale (0-dim), or ``None`` (1): it multiplies the conv output.
    """

    threshold: torch.Tensor | None
    scale: torch.Tensor | None


@dataclass(frozen=True)
class WeightExport:
    """Inference parameters of a binarized weight of shape (O, I/groups, kh, kw).

    Attributes:
        signs: the +-1 weights as ``torch.int8`` (bit = ``signs > 0``).
        scale: per-output-channel float32 scale, shape (O,), or ``None`` (1).
        shift: per-output-channel int32 exponent with ``scale == 2**shift`` (Libra-PB's bit
            shift), or ``None`` when the scale is not a power of two.
    """

    signs: torch.Tensor
    scale: torch.Tensor | None
    shift: torch.Tensor | None


class Quantizer(nn.Module):
    """Base class: ``binarize(x) -> (signs, scale)``; ``forward(x) = signs * scale``.

    Attributes:
        precision: 1 for binary quantizers, 32 for the identity (Larq's metadata).
        per_channel: True when the constructor needs ``channels`` (see ``binsr.quant.get``).
        name: the registered name (set by ``register``).
    """

    precision: int = 1
    per_channel: bool = False
    name: str = ""

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signs, scale = self.binarize(x)
        return signs if scale is None else signs * scale

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a dict that ``binsr.quant.get`` rebuilds this quantizer from."""
        return {"type": self.name}


def _estimator(identifier: Estimator) -> SignEstimator:
    """Build the sign estimator a composite quantizer delegates to, refusing anything else."""
    est = get(identifier)
    if not isinstance(est, SignEstimator):
        raise ValueError(f"estimator must be one of ste, clipped_ste, approx_sign, ede; got {identifier!r}")
    return est


@register("identity")
class Identity(Quantizer):
    """Full precision: ``q(x) = x``, ``dq/dx = 1``; what ``get(None)`` returns."""

    precision = 32

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None


class ActivationQuantizer(Quantizer):
    """An activation binarizer; ``export()`` gives its inference threshold and scale."""

    def export(self) -> ActivationExport:
        raise NotImplementedError


class SignEstimator(ActivationQuantizer):
    """A parameter-free activation binarizer: ``q(x) = sign(x)`` with an estimator backward."""

    def export(self) -> ActivationExport:
        """No threshold, no scale."""
        return ActivationExport(threshold=None, scale=None)


@register("ste")
class SignSTE(SignEstimator):
    """Sign with the identity straight-through estimator.

    Forward ``q(x) = sign(x)`` (``sign(0) = +1``); backward ``dq/dx = 1``.
    Bengio et al. 2013, "Estimating or Propagating Gradients Through Stochastic Neurons",
    arXiv:1308.3432. This is the binarizer of a plain BNN (``bnn`` recipe).
    """

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return QF.sign_ste(x), None


@register("clipped_ste")
class ClippedSTE(SignEstimator):
    """Sign with the clipped straight-through estimator.

    Forward ``q(x) = sign(x)``; backward ``dq/dx = 1[|x| <= clip_value]``.
    Hubara/Courbariaux et al. 2016, "Binarized Neural Networks", arXiv:1602.02830, Sec. 1.3.

    Args:
        clip_value: half-width of the window that passes gradient. Default 1.
    """

    def __init__(self, clip_value: float = 1.0) -> None:
        super().__init__()
        self.clip_value = float(clip_value)

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return QF.sign_clipped_ste(x, self.clip_value), None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "clip_value": self.clip_value}

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value}"


@register("approx_sign")
class ApproxSign(SignEstimator):
    """Sign with Bi-Real Net's piecewise-quadratic estimator (``ApproxSign``).

    Forward ``q(x) = sign(x)``; backward ``dq/dx = 2 - 2|x|`` for ``|x| < 1``, else 0 (the
    derivative of ``2x + x^2 sign(-x)`` clipped to [-1, 1]). Liu et al. 2018, "Bi-Real Net",
    arXiv:1808.00278 (ApproxSign). E2FIF's ``Q_A`` and BBCU's ``BinaryActivation`` use it.
    """

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return QF.approx_sign(x), None


@register("ede")
class EDE(SignEstimator):
    """Sign with IR-Net's Error Decay Estimator, scheduled by training progress.

    Forward ``q(x) = sign(x)``; backward ``dq/dx = k t (1 - tanh^2(t x))`` with
    ``t = 10^(log10 t_min + (log10 t_max - log10 t_min) p)`` and ``k = max(1/t, 1)``, ``p`` the
    fraction of training done (``set_progress``). Stage 1 (``t < 1``): the peak stays ``k t = 1``
    and the curve is nearly flat, keeping updates alive like an identity STE; stage 2 (``t >= 1``):
    ``k = 1`` and the curve sharpens toward the derivative of ``sign`` (SRBNAS Sec. 5).
    Qin et al. 2020, "Forward and Backward Information Retention for Accurate Binary Neural
    Networks" (IR-Net), arXiv:1909.10788, section "Error Decay Estimator".

    Args:
        t_min: ``t`` at ``p = 0``. Default 0.1 (IR-Net paper).
        t_max: ``t`` at ``p = 1``. Default 10.
        progress: initial ``p``. Default 0.
    """

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0, progress: float = 0.0) -> None:
        super().__init__()
        if not 0.0 < t_min <= t_max:
            raise ValueError(f"need 0 < t_min <= t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)
        # (t, k) also as a non-persistent buffer, updated in place: the forward reads no Python
        # number that moves, so a torch.compile'd training step is not recompiled each step
        self.register_buffer("tk", torch.zeros(2), persistent=False)
        self.set_progress(progress)

    def set_progress(self, p: float) -> None:
        """Move the schedule to training progress ``p`` in [0, 1]."""
        self.t, self.k = QF.ede_schedule(p, self.t_min, self.t_max)
        self.progress = float(p)
        with torch.no_grad():
            self.tk.copy_(torch.tensor([self.t, self.k]))

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        tk = self.tk.to(x.dtype)
        return QF.ede_sign(x, tk[0], tk[1]), None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "t_min": self.t_min, "t_max": self.t_max, "progress": self.progress}

    def extra_repr(self) -> str:
        return f"t_min={self.t_min}, t_max={self.t_max}, progress={self.progress:.4g}, t={self.t:.4g}, k={self.k:.4g}"


@register("rsign")
class RSign(ActivationQuantizer):
    """ReAct-Sign: sign with a learnable per-channel threshold.

    Forward ``q(x) = sign(x - b_c)``; backward ``dq/dx = e(x - b_c)`` and
    ``dq/db_c = -e(x - b_c)``, ``e`` the estimator's pseudo-derivative (default ``approx_sign``,
    as ReActNet's and BBCU's ``BinaryActivation``). Liu et al. 2020, "ReActNet", arXiv:2003.03488,
    section "Generalized activation functions"; BBCU (Xia et al. 2022, arXiv:2210.00405) uses it as "RSign".
    The official code adds a ``LearnableBias`` (``sign(x + b)``); binsr subtracts, as the paper
    writes it, so ``threshold`` is the exported threshold with no sign flip.

    Args:
        channels: number of channels C (dim 1 of the input).
        estimator: sign estimator (name, config or module). Default ``"approx_sign"``.
    """

    per_channel = True

    def __init__(self, channels: int, estimator: Estimator = "approx_sign") -> None:
        super().__init__()
        self.channels = int(channels)
        self.threshold = nn.Parameter(torch.zeros(1, self.channels, 1, 1))
        self.estimator = _estimator(estimator)

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.estimator.binarize(x - self.threshold)[0], None

    def export(self) -> ActivationExport:
        return ActivationExport(threshold=self.threshold.detach().flatten().clone(), scale=None)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels, "estimator": self.estimator.get_config()}


@register("scales_act")
class ScalesAct(ActivationQuantizer):
    """SCALES activation binarizer: channel-wise learnable threshold, layer-wise learnable scale.

    Forward ``x_b = alpha * sign(x - beta_c)`` (SCALES Eq. (1)); with the sign estimator ``e(u)``
    the backward is ``dx_b/dalpha = sign(x - beta_c)`` (Eq. (2)), ``dx_b/dbeta_c = -alpha
    e(x - beta_c)`` (Eq. (3)) and ``dx_b/dx = alpha e(x - beta_c)``.
    ``binarize`` returns ``(sign(x - beta), alpha)`` separately so that ``BinaryConv2d`` convolves
    the +1-padded signs and multiplies the output by ``alpha`` (docs/CONVENTIONS.md).
    Wei et al., "SCALES: Boost Binary Neural Network for Image Super-Resolution with Efficient
    Scalings", arXiv:2303.12270, Sec. IV-A.

    Reading: the equations are missing from the paper copy in ``shared/papers/scales.md``; the
    text says ``beta`` is channel-wise, ``alpha`` layer-wise and both are trained "with the help of
    the straight through estimator (STE) [17]", which gives the forms above (the estimator applied
    to ``sign`` alone; ``alpha`` outside). [17] is Bi-Real Net, whose estimator is ApproxSign
    (``e(u) = max(2 - 2|u|, 0)``), so that is the default (issue 20; it was the clipped STE
    ``1[|u| <= 1]`` before). SCALES releases no code.

    Args:
        channels: number of channels C.
        estimator: sign estimator applied to ``x - beta``. Default ``"approx_sign"`` (Bi-Real Net).
        scale_init: initial ``alpha``. Default 1.
    """

    per_channel = True

    def __init__(self, channels: int, estimator: Estimator = "approx_sign", scale_init: float = 1.0) -> None:
        super().__init__()
        self.channels = int(channels)
        self.scale_init = float(scale_init)
        self.threshold = nn.Parameter(torch.zeros(1, self.channels, 1, 1))
        self.scale = nn.Parameter(torch.full((1,), self.scale_init))
        self.estimator = _estimator(estimator)

    def binarize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.estimator.binarize(x - self.threshold)[0], self.scale

    def export(self) -> ActivationExport:
        return ActivationExport(
            threshold=self.threshold.detach().flatten().clone(), scale=self.scale.detach().reshape(()).clone()
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "channels": self.channels,
            "estimator": self.estimator.get_config(),
            "scale_init": self.scale_init,
        }


class WeightQuantizer(Quantizer):
    """A weight binarizer for a conv weight (O, I/groups, kh, kw); statistics per output channel.

    Args:
        estimator: sign estimator for the latent weights (name, config or module).
    """

    def __init__(self, estimator: Estimator) -> None:
        super().__init__()
        self.estimator = _estimator(estimator)

    def shift(self, weight: torch.Tensor) -> torch.Tensor | None:
        """Per-output-channel exponent with ``scale == 2**shift``, or ``None``."""
        return None

    def reset_parameters(self, weight: torch.Tensor) -> None:
        """Initialise the parameters that depend on the latent weight (none by default);
        ``BinaryConv2d`` calls it with its initial weight."""

    @torch.no_grad()
    def export(self, weight: torch.Tensor) -> WeightExport:
        """The +-1 weights as int8 and the per-output-channel scale (and shift) for deployment."""
        signs, scale = self.binarize(weight)
        shift = self.shift(weight)
        return WeightExport(
            signs=signs.to(torch.int8),
            scale=None if scale is None else scale.reshape(-1).float().clone(),
            shift=None if shift is None else shift.to(torch.int32),
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "estimator": self.estimator.get_config()}


@register("sign")
class WeightSign(WeightQuantizer):
    """Plain weight sign, no scale (E2FIF's ``Q_W``).

    Forward ``W_b = sign(W)``; backward ``dW_b/dW = e(W)``, ``e`` the estimator (default ``ste``:
    identity, as E2FIF's ``Q_W.backward`` returns the gradient unchanged). Lang et al., "E2FIF",
    arXiv:2207.06893.

    Args:
        estimator: sign estimator. Default ``"ste"``.
    """

    def __init__(self, estimator: Estimator = "ste") -> None:
        super().__init__(estimator)

    def binarize(self, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.estimator.binarize(weight)[0], None


@register("xnor")
class XNORWeight(WeightQuantizer):
    """XNOR-Net weight binarizer: sign times the per-output-channel mean absolute weight.

    Forward ``W_b = alpha_o sign(W)``, ``alpha_o = ||W_o||_1 / n`` (XNOR-Net Sec. 3.1,
    ``alpha* = mean |W|``). Backward: ``alpha`` is treated as a constant (``.detach()``, as in the
    ``HardBinaryConv`` of ReActNet and BBCU) and ``d sign(W)/dW = e(W)``, ``e`` the estimator
    (default ``clipped_ste``: ``1[|W| <= 1]``, BBCU's ``clamp(W, -1, 1)`` straight-through), so
    ``dL/dW = alpha_o e(W) dL/dW_b``. BBCU's code passes ``dL/dW_b`` without the ``alpha_o`` factor;
    with Adam (scale-free per element) the two differ only through epsilon. Rastegari et al. 2016,
    "XNOR-Net", arXiv:1603.05279; used by BBCU (arXiv:2210.00405) and SCALES (arXiv:2303.12270,
    Sec. IV-A).

    Args:
        estimator: sign estimator. Default ``"clipped_ste"``.
    """

    def __init__(self, estimator: Estimator = "clipped_ste") -> None:
        super().__init__(estimator)

    def binarize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = weight.detach().abs().flatten(1).mean(1).view(-1, *([1] * (weight.dim() - 1)))
        return self.estimator.binarize(weight)[0], scale


@register("libra_pb")
class LibraPB(WeightQuantizer):
    """Libra Parameter Binarization: balanced, standardized weights with a power-of-two scale.

    Forward (per output channel ``o``, SRBNAS Eqs. (14)-(15); IR-Net section "Libra Parameter Binarization"):
    ``W_hat = (W - mean(W_o)) / std(W_o)``, ``W_b = sign(W_hat) * 2^s_o`` with the integer
    ``s_o = round(log2(||W_hat_o||_1 / n))`` (a bit shift at inference, Eq. (16)).
    Backward: ``dW_b/dW_hat = 2^s_o e(W_hat)`` (``e`` default ``ede``, as IR-Net's ``IRConv2d``),
    then through the standardization by autograd (mean and std are not detached, as in IR-Net's
    code); ``s_o`` is a constant (``.detach()``). ``std`` is the unbiased one (``torch.std``, as
    IR-Net's code), so a balanced channel has mean 0 and unbiased std 1; ``round`` is
    ``torch.round`` (half to even, as IR-Net's ``.round()``).
    Su et al. 2024, "Deep Learning and Neural Architecture Search for Optimizing Binary Neural
    Network Image Super Resolution" (SRBNAS), Biomimetics 9(6):369, doi:10.3390/biomimetics9060369;
    Qin et al. 2020, IR-Net, arXiv:1909.10788.

    Args:
        estimator: sign estimator for ``W_hat``. Default ``"ede"``.
        eps: floor on the std and on ``||W_hat||_1 / n`` (a constant channel binarizes to +1
            with a tiny scale instead of NaN). Default 1e-12.
    """

    def __init__(self, estimator: Estimator = "ede", eps: float = 1e-12) -> None:
        super().__init__(estimator)
        self.eps = float(eps)

    def balance(self, weight: torch.Tensor) -> torch.Tensor:
        """``(W - mean) / std`` per output channel (IR-Net's balanced, standardized weight)."""
        flat = weight.flatten(1)
        if flat.shape[1] < 2:
            raise ValueError("Libra-PB needs at least 2 weights per output channel to standardize")
        centered = flat - flat.mean(1, keepdim=True)
        return (centered / centered.std(1, keepdim=True).clamp_min(self.eps)).view_as(weight)

    def _shift(self, balanced: torch.Tensor) -> torch.Tensor:
        mean_abs = balanced.detach().abs().flatten(1).mean(1).clamp_min(self.eps)
        return torch.round(torch.log2(mean_abs)).long()

    def shift(self, weight: torch.Tensor) -> torch.Tensor:
        """``round(log2(mean |W_hat|))`` per output channel, as an int64 tensor of shape (O,)."""
        return self._shift(self.balance(weight))

    def binarize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        balanced = self.balance(weight)
        shift = self._shift(balanced)
        scale = torch.ldexp(torch.ones_like(shift, dtype=weight.dtype), shift)
        return self.estimator.binarize(balanced)[0], scale.view(-1, *([1] * (weight.dim() - 1)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "eps": self.eps}


@register("scaled_sign")
class ScaledSign(WeightQuantizer):
    """Sign weights times a learnable scale per output channel (Ma et al. 2019's binary filters).

    Forward ``W_b = alpha_o sign(W)``; ``alpha_o`` is a parameter ("a learnable weight for each
    binary filter", Ma et al. 2019, abstract), set to XNOR-Net's optimal value
    ``mean |W_o|`` (Rastegari et al. 2016, Sec. 3.1) by :meth:`reset_parameters` (``BinaryConv2d``
    calls it at construction; until then it is 1) and trained by back-propagation from there,
    not recomputed from ``W`` as :class:`XNORWeight` does. Backward: ``dW_b/dalpha_o = sign(W)``
    and ``dW_b/dW = alpha_o e(W)``, ``e`` the estimator (default ``clipped_ste``: ``1[|W| <= 1]``,
    BinaryConnect/BNN's weight STE, arXiv:1602.02830 Sec. 1.3, which the unofficial
    twice154/binary-srgan-pytorch ``bin.py`` also uses). Ma et al., "Efficient Super Resolution
    Using Binarized Neural Network", CVPR Workshops 2019, arXiv:1812.06378.

    Args:
        channels: number of output channels O (dim 0 of the weight).
        estimator: sign estimator for the latent weights. Default ``"clipped_ste"``.
    """

    per_channel = True

    def __init__(self, channels: int, estimator: Estimator = "clipped_ste") -> None:
        super().__init__(estimator)
        self.channels = int(channels)
        self.scale = nn.Parameter(torch.ones(self.channels))

    def reset_parameters(self, weight: torch.Tensor) -> None:
        """``alpha_o = mean |W_o|``, the per-filter mean absolute latent weight.

        Raises:
            ValueError: ``weight`` does not have ``channels`` output channels.
        """
        if weight.shape[0] != self.channels:
            raise ValueError(f"scaled_sign has {self.channels} scales, the weight {weight.shape[0]} output channels")
        with torch.no_grad():
            self.scale.copy_(weight.abs().flatten(1).mean(1))

    def binarize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.estimator.binarize(weight)[0], self.scale.view(-1, *([1] * (weight.dim() - 1)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
