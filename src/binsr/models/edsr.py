"""EDSR-baseline (Lim et al., CVPRW 2017) with injected binarization.

Paper: "Enhanced Deep Residual Networks for Single Image Super-Resolution", arXiv:1707.02921.
Ref code: sanghyun-son/EDSR-PyTorch ``src/model/edsr.py``; BasicSR ``edsr_arch.py``.
Baseline size: 16 residual blocks, 64 channels, res_scale 1, mean shift with the DIV2K RGB mean.
Binary recipes binarize the body residual blocks only (E2FIF's EDSR); head, the conv after the
body, the upsampler and the tail stay full precision.
"""

from __future__ import annotations

import torch
from torch import nn

from binsr.models._common import ResidualBlock, Upsampler, check_scale, get_recipe
from binsr.models._registry import register_model
from binsr.nn.exact import ExactConv2d

__all__ = ["EDSR"]


class EDSR(nn.Module):
    """EDSR.

    Args:
        scale (int): 2, 3 or 4.
        recipe (str): binarization recipe. Default: ``"fp"``.
        num_feat (int): width. Default: 64.
        num_block (int): residual blocks. Default: 16.
        res_scale (float): residual scaling of the blocks' outer path (see ``SRResNet``). Default: 1.
        block (str): ``"published"`` or ``"outer_skip"`` (``binsr.models._common.ResidualBlock``).
        rgb_mean (tuple): subtracted before the head and added back at the end (DIV2K mean).
    """

    def __init__(
        self,
        scale: int = 4,
        recipe: str = "fp",
        num_feat: int = 64,
        num_block: int = 16,
        res_scale: float = 1.0,
        rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040),
        recipe_kwargs: dict | None = None,
        block: str = "published",
    ) -> None:
        super().__init__()
        check_scale(scale, (2, 3, 4))
        rec = get_recipe(recipe, recipe_kwargs)
        self.block = block
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1))
        self.conv_first = ExactConv2d(3, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlock(num_feat, rec, res_scale=res_scale, block=block) for _ in range(num_block)))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsampler(scale, num_feat, rec)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(x - self.mean)
        x = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(x)) + self.mean


@register_model
def edsr_baseline(scale: int = 4, recipe: str = "fp", **kwargs) -> EDSR:
    """EDSR-baseline: 16 blocks x 64 channels."""
    return EDSR(scale=scale, recipe=recipe, **kwargs)
