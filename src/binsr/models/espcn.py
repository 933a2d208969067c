"""ESPCN (Shi et al., CVPR 2016) with injected binarization.

Paper: "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", arXiv:1609.05158. Layers (f1=5, f2=3, f3=3; 64, 32 channels;
tanh), sub-pixel output; works on RGB. Binary recipes binarize the middle conv (64 -> 32) only.
"""

from __future__ import annotations

import torch
from torch import nn

from binsr.models._common import check_scale, get_recipe
from binsr.models._registry import register_model

__all__ = ["ESPCN"]


class ESPCN(nn.Module):
    """ESPCN.

    Args:
        scale (int): 2, 3 or 4.
        recipe (str): binarization recipe for the middle conv. Default: ``"fp"``.
        num_feat (tuple): widths of the two hidden layers. Default: (64, 32).
    """

    def __init__(self, scale: int = 4, recipe: str = "fp", num_feat: tuple[int, int] = (64, 32),
                 recipe_kwargs: dict | None = None) -> None:
        super().__init__()
        check_scale(scale, (2, 3, 4))
        rec = get_recipe(recipe, recipe_kwargs)
        c1, c2 = num_feat
        self.body = nn.Sequential(
            nn.Conv2d(3, c1, 5, 1, 2), nn.Tanh(),
            rec.conv(c1, c2, 3), nn.Tanh(),
            nn.Conv2d(c2, 3 * scale * scale, 3, 1, 1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model
def espcn(scale: int = 4, recipe: str = "fp", **kwargs) -> ESPCN:
    """ESPCN: 5x5/64 -> 3x3/32 -> 3x3 sub-pixel."""
    return ESPCN(scale=scale, recipe=recipe, **kwargs)
