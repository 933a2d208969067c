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


class ResidualBlock(nn.Module):
    """``x + conv2(act(conv1(x)))`` with both convs and the activation taken from the recipe.

    This is BasicSR's ``ResidualBlockNoBN`` (EDSR/MSRResNet) with the convs injected: the ``fp``
    recipe gives plain 3x3 convs and ReLU; a binary recipe gives its conv unit (e.g. E2FIF's
    binary conv with its full-precision skip) and the activation its paper keeps.
    """

    def __init__(self, num_feat: int, recipe: Recipe, kernel_size: int = 3, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = recipe.conv(num_feat, num_feat, kernel_size)
        self.act = recipe.act()
        self.conv2 = recipe.conv(num_feat, num_feat, kernel_size)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x))) * self.res_scale


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
