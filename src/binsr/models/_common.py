"""Pieces shared by the backbones: the recipe-built residual block and the PixelShuffle upsampler."""

from __future__ import annotations

import math
from typing import Callable

from torch import nn

from binsr.errors import UsageError
from binsr.nn.recipes import Recipe
from binsr.nn.recipes import get_recipe as _get_recipe


def get_recipe(name: str, recipe_kwargs: dict | None = None) -> Recipe:
    """The recipe object for ``name`` (with optional overrides)."""
    return _get_recipe(name, **(recipe_kwargs or {}))


def zero_last_conv(module: nn.Module) -> None:
    """Zero the weight and bias of the last ``nn.Conv2d`` in ``module`` (a tail): a model that adds
    an upsampled copy of its input to the tail's output then starts as that upsampling."""
    last = [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


def check_scale(scale: int, allowed: tuple[int, ...]) -> int:
    """Return ``scale`` if the architecture supports it, else raise a one-line UsageError."""
    if scale not in allowed:
        raise UsageError(f"scale x{scale} is not supported by this model (supported: {', '.join(f'x{s}' for s in allowed)})")
    return scale


BLOCKS = ("published", "outer_skip")


class ResidualBlock(nn.Module):
    """Two body convs and the activation between them, each from the recipe.

    ``block="published"`` is each method's own block (issue 20; the authors' code):

    * recipes whose unit has no skip of its own (``fp``, ``bnn``, ``bibert``, ``weight_only``)
      keep the outer identity path of BasicSR's ``ResidualBlockNoBN`` (EDSR/MSRResNet):
      ``x + conv2(act(conv1(x))) * res_scale``; with ``weight_only``'s units (conv + BN) and
      PReLU that is SRResNet's own block (Ledig et al. 2017), as Ma et al. 2019 binarize it;
    * recipes whose unit carries an FP skip (``e2fif``, ``bbcu``, ``irnet``, ``scales*``,
      ``lt_attn``) chain the two units with nothing around them: ``conv2(act(conv1(x)))``, i.e.
      E2FIF's ``out = BN(c1(x)) + x; act; BN(c2(out)) + out`` (pppLang/E2FIF
      ``model/edsr_e2fif.py`` ``ResBlock``), BBCU's ``BinaryBlock`` (``res += x`` commented out,
      Zj-BinXia/BBCU ``bbcul_arch.py``), IR-Net's ``BasicBlock_1w1a`` (a shortcut per conv, none
      around the block). ``res_scale`` has no branch to scale there and must be 1.

    ``block="outer_skip"`` is binsr's earlier form, kept for the weights trained with it (the
    zoo up to issue 20): the outer path as well as the units' skips, ``x + conv2(act(conv1(x)))
    * res_scale`` for every recipe. At initialisation each block then returns about
    ``(1 + res_scale) x`` (E2FIF, 16 blocks at res_scale 1: body std / head std 1.9e5, against 20
    for the published block). Which trains better depends on the recipe (``benchmarks/README.md``,
    the A/B of issue 20): ``outer_skip`` at res_scale 0.2 for E2FIF (+0.14 dB Set5 at 3000 steps)
    and IR-Net (16 x 64 at x4: Set5 30.20 against 28.42 at step 4000), the published block for
    BBCU (+0.22 dB).
    """

    def __init__(self, num_feat: int, recipe: Recipe, kernel_size: int = 3, res_scale: float = 1.0,
                 block: str = "published") -> None:
        super().__init__()
        if block not in BLOCKS:
            raise UsageError(f"unknown block {block!r}; valid: {', '.join(BLOCKS)}")
        self.outer_skip = block == "outer_skip" or not recipe.unit_skip
        if not self.outer_skip and res_scale != 1.0:
            raise UsageError(f"res_scale {res_scale}: recipe {recipe.name!r}'s published block has no outer path "
                             "to scale (its units carry the skips); use res_scale 1 or block 'outer_skip'")
        self.conv1 = recipe.conv(num_feat, num_feat, kernel_size)
        self.act = recipe.act()
        self.conv2 = recipe.conv(num_feat, num_feat, kernel_size)
        self.res_scale = res_scale

    def forward(self, x):
        y = self.conv2(self.act(self.conv1(x)))
        return x + y * self.res_scale if self.outer_skip else y


class Upsampler(nn.Sequential):
    """PixelShuffle upsampler: (conv 3x3 to 4C, shuffle 2) per factor 2, or (conv to 9C, shuffle 3).

    The convs are full precision unless ``recipe.binary_upsampler``; ``act`` (a factory) is
    applied after each shuffle when given (MSRResNet uses LeakyReLU, EDSR none).
    """

    def __init__(self, scale: int, num_feat: int, recipe: Recipe, act: Callable[[], nn.Module] | None = None) -> None:
        if scale in (2, 3):
            factors = [scale]
        elif scale & (scale - 1) == 0:
            factors = [2] * int(math.log2(scale))
        else:
            raise UsageError(f"scale x{scale} is not supported by the PixelShuffle upsampler")
        layers: list[nn.Module] = []
        for f in factors:
            if recipe.binary_upsampler:
                layers.append(recipe.conv(num_feat, f * f * num_feat, 3))
            else:
                layers.append(nn.Conv2d(num_feat, f * f * num_feat, 3, 1, 1))
            layers.append(nn.PixelShuffle(f))
            if act is not None:
                layers.append(act())
        super().__init__(*layers)
