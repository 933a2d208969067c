"""Sub-pixel (PixelShuffle) upsampler, full precision or binary."""

from __future__ import annotations

from torch import nn

from binsr.nn.recipes import Recipe, get_recipe

__all__ = ["PixelShuffleUpsampler"]


class PixelShuffleUpsampler(nn.Sequential):
    """Upsample features by ``scale`` with conv + PixelShuffle stages (ESPCN, arXiv:1609.05158).

    x2 and x3: one stage ``conv3x3(C -> s^2 C)``, ``PixelShuffle(s)``; x4: two x2 stages. Shape
    (N, C, H, W) -> (N, C, sH, sW). Full precision: ``nn.Conv2d`` with zero padding and bias.
    Binary: each conv is ``recipe.conv(C, s^2 C, 3)`` (a ``BinaryConv2d`` unit; a unit's FP skip
    repeats each channel s^2 times, which after the shuffle is nearest upsampling, as BBCU's
    ``BinaryUpConv2d``); with no recipe, the ``bnn`` recipe's plain ``BinaryConv2d``. A recipe is
    only used when ``binary`` is True, so a backbone can pass
    ``binary=recipe.binary_upsampler, recipe=recipe``.

    Args:
        scale: 2, 3 or 4.
        channels: C.
        binary: binarize the convs. Default False.
        recipe: recipe giving the binary conv units. Default ``None``.
    """

    def __init__(self, scale: int, channels: int, binary: bool = False, recipe: Recipe | None = None) -> None:
        factors = {2: [2], 3: [3], 4: [2, 2]}.get(scale)
        if factors is None:
            raise ValueError(f"PixelShuffleUpsampler supports scales 2, 3 and 4, got {scale}")
        unit = (recipe or get_recipe("bnn")).conv if binary else None
        layers: list[nn.Module] = []
        for f in factors:
            if unit is None:
                layers.append(nn.Conv2d(channels, f * f * channels, 3, 1, 1))
            else:
                layers.append(unit(channels, f * f * channels, 3))
            layers.append(nn.PixelShuffle(f))
        super().__init__(*layers)
        self.scale, self.binary = scale, binary
