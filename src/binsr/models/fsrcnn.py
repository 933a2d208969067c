"""FSRCNN (Dong et al., ECCV 2016) with injected binarization.

Paper: "Accelerating the Super-Resolution Convolutional Neural Network", arXiv:1608.00367.
FSRCNN(d=56, s=12, m=4): feature extraction 5x5, shrinking 1x1, m mapping 3x3 convs, expanding
1x1, all with PReLU, and a 9x9 transposed conv of stride ``scale``. Works on RGB (the paper uses Y
only). Binary recipes binarize the m mapping convs; PReLU stays after each (FP, per channel).
"""

from __future__ import annotations

import torch
from torch import nn

from binsr.models._common import check_scale, get_recipe
from binsr.models._registry import register_model

__all__ = ["FSRCNN"]


class FSRCNN(nn.Module):
    """FSRCNN.

    Args:
        scale (int): 2, 3 or 4.
        recipe (str): binarization recipe for the mapping convs. Default: ``"fp"``.
        d (int): feature width. Default: 56.
        s (int): shrunk width. Default: 12.
        m (int): number of mapping layers. Default: 4.
    """

    def __init__(self, scale: int = 4, recipe: str = "fp", d: int = 56, s: int = 12, m: int = 4,
                 recipe_kwargs: dict | None = None) -> None:
        super().__init__()
        check_scale(scale, (2, 3, 4))
        rec = get_recipe(recipe, recipe_kwargs)
        layers: list[nn.Module] = [nn.Conv2d(3, d, 5, 1, 2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [rec.conv(s, s, 3), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.body(x))


@register_model
def fsrcnn(scale: int = 4, recipe: str = "fp", **kwargs) -> FSRCNN:
    """FSRCNN(56, 12, 4)."""
    return FSRCNN(scale=scale, recipe=recipe, **kwargs)
