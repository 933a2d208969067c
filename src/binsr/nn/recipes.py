"""A binarization method is a recipe: which conv unit replaces a body conv and which activation stays.

``get_recipe("e2fif")`` returns a :class:`Recipe`; a backbone calls ``recipe.conv(in_ch, out_ch,
kernel_size)`` for every body conv and ``recipe.act()`` for the activation it keeps between body
convs. Every published recipe keeps the head, the tail and the upsampler full precision
(``binary_upsampler=False``), as E2FIF, BBCU and SCALES do ("the head and tail modules are not
binarized", SCALES Sec. V-A).

Activations kept between body convs (``act()``), read from the papers' SR code:

* ``fp``: ``nn.ReLU`` (EDSR/MSRResNet residual blocks).
* ``bnn``, ``irnet``: ``nn.Identity``: ``sign`` is the non-linearity. Note that ``ReLU`` before a
  binary conv is degenerate under ``sign(0) = +1`` (every input binarizes to +1). IR-Net's
  classification code uses ``hardtanh``, which would clip SR features to [-1, 1].
* ``e2fif``: ``LeakyReLU(0.1)`` (E2FIF ``edsr_e2fif.py`` ``ResBlock``: ``conv1 + x``, act, ``conv2 + out``).
* ``scales*``: ``LeakyReLU(0.1)``: SCALES starts its ablation from SRResNet-E2FIF (Table V) and
  releases no code; binsr keeps E2FIF's activation.
* ``bbcu``, ``lt_attn``: ``nn.Identity``: BBCU's ``BinaryBlock`` chains two units with nothing in
  between; RPReLU sits inside each unit.
* ``weight_only``: ``nn.PReLU`` (one slope): Ma et al. 2019 binarize SRResNet's convs only, and
  SRResNet's block is ``conv, BN, PReLU, conv, BN`` (Ledig et al. 2017); the unit is ``conv, BN``
  with FP activations (see :class:`~binsr.nn.blocks.WeightOnlyConv` for the reading).

Recipe overrides (``get_recipe(name, **kwargs)``) are the unit's keyword arguments, e.g.
``act_quant``/``weight_quant`` (names or config dicts) for every binary recipe (``weight_quant``
only for ``weight_only``, whose activations stay FP), ``alignment`` for
``bbcu``, ``spatial``/``channel`` for ``scales``, ``estimator``/``attention`` for ``lt_attn``. The seed
preprint's estimator study is ``get_recipe("lt_attn", estimator=e, attention=a)`` for ``e`` in
(ste, clipped_ste, approx_sign, ede) and ``a`` in (none, channel): names only, no code.

Transformer linears (``recipe.linear(in_f, out_f)``: SwinIR's qkv, projection and MLP layers;
LayerNorm, softmax and the attention products stay FP), from :mod:`binsr.nn.binary_linear`:

* ``fp``: ``nn.Linear``.
* ``bnn``: ``BinaryLinear`` with sign activations (identity STE) and XNOR weights.
* ``bibert``: ``BinaryLinear`` with BiBERT's binarizers (clipped-STE sign activations, sign weights
  times the mean absolute weight per output row): SCALES' Transformer baseline (Table IV, "we
  build the baseline model leveraging the binarization method proposed in BiBERT"). BiBERT's
  Bi-Attention (binarized attention weights) and its distillation are not part of it: the
  attention products stay FP. Its conv unit (the convs of a Transformer body, or a CNN body) is
  the plain binary conv with the same binarizers, no skip.
* ``scales``, ``scales_nocs``: ``ScalesLinear`` (layer-wise scale + channel-wise threshold, XNOR
  weights, token-wise re-scaling by an FP linear + sigmoid, no channel re-scaling: SCALES Sec.
  III-B, LN removes the channel-to-channel variation); ``scales_lsf``, ``scales_noss``: the same
  without the token-wise re-scaling.
* ``e2fif``, ``bbcu``, ``irnet``, ``lt_attn``, ``weight_only``: no linear (their papers binarize
  CNNs only; their BN/RPReLU/skip units have no token form): ``recipe.linear`` raises
  ``UsageError``.

Overrides go to the conv unit and to the linear unit, each getting the keywords it takes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from torch import nn

from binsr.errors import UsageError
from binsr.nn.binary_conv import same_padding
from binsr.nn.binary_linear import ScalesLinear, binary_linear, fp_linear
from binsr.nn.blocks import (
    BBCUConv,
    E2FIFConv,
    IRNetConv,
    LTAttnConv,
    ScalesConv,
    WeightOnlyConv,
    _SkipUnit,
    same_binary_conv,
)

__all__ = ["Recipe", "get_recipe", "recipe_names", "linear_recipe_names", "fp_conv"]

_GEOMETRY = ("in_ch", "out_ch", "kernel_size", "stride", "dilation", "groups")


def fp_conv(
    in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1, bias: bool = True
) -> nn.Conv2d:
    """A full-precision ``nn.Conv2d`` with same-size zero padding (the ``fp`` recipe's unit)."""
    padding = same_padding(kernel_size, dilation, stride)
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias)


@dataclass(frozen=True)
class Recipe:
    """How a binarization method builds the body of an SR backbone.

    Attributes:
        name: recipe name (``recipe_names()``).
        description: the method, its paper and which layers stay full precision.
        unit: factory ``(in_ch, out_ch, kernel_size, stride, dilation, groups) -> nn.Module``.
        activation: factory of the activation kept between body convs.
        binary_upsampler: whether the upsampler convs are binarized too (False for every
            published recipe).
        options: the overrides this recipe was built with.
        linear_unit: factory ``(in_features, out_features, bias) -> nn.Module`` of the Transformer
            linears, or ``None`` when the method has none (``linear`` raises ``UsageError``).
        unit_skip: whether the conv unit carries its own FP skip (E2FIF, BBCU, SCALES, IR-Net,
            LT-attn); the published residual block of such a recipe has no outer identity path
            (``binsr.models._common.ResidualBlock``).
    """

    name: str
    description: str
    unit: Callable[..., nn.Module]
    activation: Callable[[], nn.Module]
    binary_upsampler: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    linear_unit: Callable[..., nn.Module] | None = None
    unit_skip: bool = False

    @property
    def supports_linear(self) -> bool:
        """True when the recipe can build Transformer linears (:meth:`linear`)."""
        return self.linear_unit is not None

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        """The unit replacing one Transformer linear: (..., in_features) -> (..., out_features).

        Raises:
            UsageError: the recipe has no linear unit (see :func:`linear_recipe_names`).
        """
        if self.linear_unit is None:
            raise UsageError(
                f"recipe {self.name!r} has no binary linear layer for Transformer models; "
                f"use one of {', '.join(linear_recipe_names())}"
            )
        return self.linear_unit(in_features, out_features, bias=bias)

    def conv(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> nn.Module:
        """The conv unit replacing one body conv: (N, in_ch, H, W) -> (N, out_ch, H, W) at stride 1."""
        return self.unit(in_ch, out_ch, kernel_size, stride=stride, dilation=dilation, groups=groups)

    def act(self) -> nn.Module:
        """A fresh instance of the activation kept between body convs."""
        return self.activation()


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.1)


_HEAD_TAIL_FP = "Head conv, tail convs and upsampler stay full precision."

# name -> (unit factory, default overrides, activation factory, description)
_RECIPES: dict[str, tuple[Callable[..., nn.Module], dict[str, Any], Callable[[], nn.Module], str]] = {
    "fp": (fp_conv, {}, nn.ReLU, "Full-precision conv with zero padding and bias; ReLU between convs."),
    "bnn": (
        same_binary_conv,
        {},
        nn.Identity,
        "Plain BNN: sign activations (identity STE), XNOR weights, binary conv with +1 padding, no skip, "
        f"no BN. {_HEAD_TAIL_FP}",
    ),
    "e2fif": (
        E2FIFConv,
        {},
        _leaky_relu,
        "E2FIF (arXiv:2207.06893): binary conv (ApproxSign activations, sign weights) + BN + FP skip over "
        f"every binary conv; BN and skip are FP. {_HEAD_TAIL_FP}",
    ),
    "bbcu": (
        BBCUConv,
        {},
        nn.Identity,
        "BBCU (arXiv:2210.00405): RSign, XNOR binary conv, RPReLU, FP residual aligned by k=130*C/64, no BN; "
        f"RSign thresholds, RPReLU and skip are FP. {_HEAD_TAIL_FP}",
    ),
    "scales": (
        ScalesConv,
        {},
        _leaky_relu,
        "SCALES (arXiv:2303.12270): layer-wise scaled, channel-thresholded activations, XNOR weights, "
        f"spatial + channel re-scaling (FP gates) and FP skip, no BN. {_HEAD_TAIL_FP}",
    ),
    "scales_lsf": (
        ScalesConv,
        {"spatial": False, "channel": False},
        _leaky_relu,
        f"SCALES Table V row 'LSF': layer-wise scaling factor only, no re-scaling; FP skip. {_HEAD_TAIL_FP}",
    ),
    "scales_noss": (
        ScalesConv,
        {"spatial": False},
        _leaky_relu,
        f"SCALES Table V row 'LSF + chl. re-scale': no spatial re-scaling; FP skip. {_HEAD_TAIL_FP}",
    ),
    "scales_nocs": (
        ScalesConv,
        {"channel": False},
        _leaky_relu,
        f"SCALES Table V row 'LSF + spatial re-scale': no channel re-scaling; FP skip. {_HEAD_TAIL_FP}",
    ),
    "bibert": (
        partial(same_binary_conv, act_quant="clipped_ste"),
        {},
        nn.Identity,
        "BiBERT-style baseline (arXiv:2203.06390, SCALES Table IV): plain sign binarization, clipped-STE "
        "activations and XNOR (mean |W| per output) weights in every body linear and conv, no skip, no BN; "
        "LayerNorm, softmax, attention products (no Bi-Attention), biases and gates are FP. "
        f"{_HEAD_TAIL_FP}",
    ),
    "irnet": (
        IRNetConv,
        {},
        nn.Identity,
        "IR-Net (arXiv:1909.10788): Libra-PB weights (power-of-two scale), EDE activations, BN + FP skip "
        f"per binary conv; EDE follows binsr.nn.set_progress. {_HEAD_TAIL_FP}",
    ),
    "lt_attn": (
        LTAttnConv,
        {},
        nn.Identity,
        "Seed preprint LT-attn: FP channel attention re-weights the input, RSign with a selectable "
        f"estimator, XNOR binary conv, RPReLU, FP skip. {_HEAD_TAIL_FP}",
    ),
    "weight_only": (
        WeightOnlyConv,
        {},
        nn.PReLU,
        "Ma et al. 2019 (arXiv:1812.06378; SRBNAS tables' SRResNet-BNN / VDSR-BNN): binary weights only, "
        "sign(W) times a learnable per-filter scale (init mean |W|, clipped STE), FP activations, BN after "
        "each conv, PReLU between convs, the block's outer skip (SRResNet's block); BN, PReLU and scales are "
        f"FP. {_HEAD_TAIL_FP} The packed engine cannot run it (FP activations).",
    ),
}


# name -> (linear unit factory, default overrides); recipes missing here have no linear
_LINEARS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "fp": (fp_linear, {}),
    "bnn": (binary_linear, {}),
    "bibert": (partial(binary_linear, act_quant="clipped_ste"), {}),
    "scales": (ScalesLinear, {}),
    "scales_lsf": (ScalesLinear, {"spatial": False}),
    "scales_noss": (ScalesLinear, {"spatial": False}),
    "scales_nocs": (ScalesLinear, {}),
}

_LINEAR_GEOMETRY = ("in_features", "out_features", "bias")


def _keywords(factory: Callable[..., nn.Module], geometry: tuple[str, ...]) -> list[str]:
    return [p for p in inspect.signature(factory).parameters if p not in geometry]


def linear_recipe_names() -> list[str]:
    """Sorted names of the recipes with a Transformer linear (``Recipe.linear``)."""
    return sorted(_LINEARS)


def recipe_names() -> list[str]:
    """Sorted names accepted by :func:`get_recipe`."""
    return sorted(_RECIPES)


def get_recipe(name: str, **kwargs: Any) -> Recipe:
    """Build recipe ``name`` with optional overrides of its unit's keyword arguments.

    Args:
        name: one of :func:`recipe_names`.
        **kwargs: unit keyword arguments (not the geometry), e.g. ``act_quant="ede"``,
            ``weight_quant={"type": "xnor", "estimator": "ste"}``, ``estimator="ede"``.

    Raises:
        ValueError: unknown name or an override the unit does not take (both messages list the
            valid choices), or a module instance as an override (every unit would share it and
            its parameters; pass a name or a config dict).
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(recipe_names())}")
    unit, defaults, activation, description = _RECIPES[name]
    allowed = _keywords(unit, _GEOMETRY)
    linear, linear_defaults = _LINEARS.get(name, (None, {}))
    linear_allowed = _keywords(linear, _LINEAR_GEOMETRY) if linear is not None else []
    allowed += [p for p in linear_allowed if p not in allowed]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"recipe {name!r} does not take {unknown}; it takes {allowed}")
    shared = sorted(key for key, value in kwargs.items() if isinstance(value, nn.Module))
    if shared:
        raise ValueError(f"recipe overrides {shared} are module instances; pass names or config dicts")
    options = {**defaults, **kwargs}
    unit_options = {k: v for k, v in options.items() if k in _keywords(unit, _GEOMETRY)}
    if linear is not None:
        linear_options = {k: v for k, v in {**linear_defaults, **kwargs}.items() if k in linear_allowed}
        linear = partial(linear, **linear_options) if linear_options else linear
    return Recipe(
        name=name,
        description=description,
        unit=partial(unit, **unit_options) if unit_options else unit,
        activation=activation,
        options=options,
        linear_unit=linear,
        unit_skip=isinstance(unit, type) and issubclass(unit, _SkipUnit),
    )
