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

Recipe overrides (``get_recipe(name, **kwargs)``) are the unit's keyword arguments, e.g.
``act_quant``/``weight_quant`` (names or config dicts) for every binary recipe, ``alignment`` for
``bbcu``, ``spatial``/``channel`` for ``scales``, ``estimator``/``attention`` for ``lt_attn``. The seed
preprint's estimator study is ``get_recipe("lt_attn", estimator=e, attention=a)`` for ``e`` in
(ste, clipped_ste, approx_sign, ede) and ``a`` in (none, channel): names only, no code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from torch import nn

from binsr.nn.binary_conv import same_padding
from binsr.nn.blocks import BBCUConv, E2FIFConv, IRNetConv, LTAttnConv, ScalesConv, same_binary_conv

__all__ = ["Recipe", "get_recipe", "recipe_names", "fp_conv"]

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
    """

    name: str
    description: str
    unit: Callable[..., nn.Module]
    activation: Callable[[], nn.Module]
    binary_upsampler: bool = False
    options: dict[str, Any] = field(default_factory=dict)

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
        "BBCU (arXiv:2210.00405): RSign, XNOR binary conv, RPReLU, FP residual aligned by k=130, no BN; "
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
}


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
    allowed = [p for p in inspect.signature(unit).parameters if p not in _GEOMETRY]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"recipe {name!r} does not take {unknown}; it takes {allowed}")
    shared = sorted(key for key, value in kwargs.items() if isinstance(value, nn.Module))
    if shared:
        raise ValueError(f"recipe overrides {shared} are module instances; pass names or config dicts")
    options = {**defaults, **kwargs}
    return Recipe(
        name=name,
        description=description,
        unit=partial(unit, **options) if options else unit,
        activation=activation,
        options=options,
    )
