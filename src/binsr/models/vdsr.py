"""VDSR (Kim et al., CVPR 2016) with injected binarization.

Paper: "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", arXiv:1511.04587.
The input is the LR image upscaled by MATLAB-compatible bicubic (``binsr.data.imresize``, as the
paper's MATLAB pre-processing); 20 3x3 convs of 64 channels; global residual. Binary recipes
binarize the 18 middle convs (the SRBNAS paper's VDSR-BNN); first and last stay FP. Works on RGB.
"""

from __future__ import annotations

import torch
from torch import nn

from binsr.models._common import check_scale, get_recipe
from binsr.models._registry import register_model

__all__ = ["VDSR"]


class VDSR(nn.Module):
    """VDSR.

    Args:
        scale (int): 2, 3 or 4 (any integer works; the net itself is scale-free).
        recipe (str): binarization recipe. Default: ``"fp"``.
        num_feat (int): width. Default: 64.
        depth (int): total number of convs. Default: 20.
    """

    def __init__(self, scale: int = 4, recipe: str = "fp", num_feat: int = 64, depth: int = 20,
                 recipe_kwargs: dict | None = None) -> None:
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4))
        rec = get_recipe(recipe, recipe_kwargs)
        layers: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [rec.conv(num_feat, num_feat, 3), rec.act()]
        layers.append(nn.Conv2d(num_feat, 3, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from binsr.data import imresize

        up = imresize(x, scale=self.scale)
        return up + self.body(up)


@register_model
def vdsr(scale: int = 4, recipe: str = "fp", **kwargs) -> VDSR:
    """VDSR: 20 convs x 64 channels on the bicubic-upscaled input."""
    return VDSR(scale=scale, recipe=recipe, **kwargs)
