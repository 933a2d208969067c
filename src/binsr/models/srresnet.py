"""SRResNet (Ledig et al., CVPR 2017) in BasicSR's ``MSRResNet`` form, with injected binarization.

Paper: "Photo-Realistic Single Image Super-Resolution Using a GAN", arXiv:1609.04802.
Ref code: XPixelGroup/BasicSR ``basicsr/archs/srresnet_arch.py`` (MSRResNet).

Differences from the paper, as in BasicSR: residual blocks without BN, LeakyReLU(0.1) in the
head/upsampler, a bilinear-upsampled copy of the input added to the output. binsr adds a global
skip from the head features over the body (no parameters), which binary bodies need.
``srresnet`` with recipe ``fp`` has 1,517,571 parameters at x4 (SCALES Table III: 1517K).

Binarization (every binary recipe, as E2FIF/SCALES do: "the head and tail modules are not
binarized"): only the convolutions inside the residual blocks use ``recipe.conv``; the head conv,
the PixelShuffle upsampler, ``conv_hr`` and ``conv_last`` stay full precision unless the recipe
sets ``binary_upsampler``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from binsr.errors import UsageError
from binsr.models._common import ResidualBlock, Upsampler, check_scale, get_recipe, zero_last_conv
from binsr.models._registry import register_model
from binsr.nn.exact import ExactConv2d

__all__ = ["SRResNet"]


class SRResNet(nn.Module):
    """Modified SRResNet.

    Args:
        scale (int): upscaling factor, 2, 3 or 4.
        recipe (str): binarization recipe name (``binsr.nn.recipes``). Default: ``"fp"``.
        num_in_ch (int): input channels. Default: 3.
        num_out_ch (int): output channels. Default: 3.
        num_feat (int): body width. Default: 64.
        num_block (int): residual blocks in the body. Default: 16.
        tail (str): ``"msrresnet"`` (PixelShuffle stages, ``conv_hr``, ``conv_last``, as BasicSR)
            or ``"lite"`` (one FP conv to ``num_out_ch * scale**2`` channels + PixelShuffle, the
            ESPCN sub-pixel tail: 28K instead of 332K FP parameters at x4). Default: msrresnet.
        res_scale (float): EDSR's residual scale: multiplies the branch of a block's outer identity
            path. Only blocks with that path take it (``fp``, ``bnn``, ``bibert``, ``weight_only``, or
            any recipe with ``block="outer_skip"``, where a unit with its own FP skip makes a block
            return about ``(1 + res_scale) x``, so the body grows like ``(1 + res_scale) **
            num_block`` at initialisation: 2^8 = 256x for 8 blocks at 1.0). Default: 1.0.
        block (str): ``"published"`` (each method's own block) or ``"outer_skip"`` (binsr's earlier
            form; see :class:`~binsr.models._common.ResidualBlock`). Default: published.
        zero_tail (bool): initialise the last tail conv to zero, so that the untrained model is
            the bilinear upsampling its global skip adds (residual learning from the first step;
            Set5 x4 after 250 steps of the zoo config: 29.2 dB with, 25.9 dB without). Default: False.
        recipe_kwargs (dict): passed to the recipe (e.g. an estimator override).
    """

    def __init__(
        self,
        scale: int = 4,
        recipe: str = "fp",
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        tail: str = "msrresnet",
        res_scale: float = 1.0,
        zero_tail: bool = False,
        recipe_kwargs: dict | None = None,
        block: str = "published",
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4))
        rec = get_recipe(recipe, recipe_kwargs)
        self.block = block
        self.conv_first = ExactConv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlock(num_feat, rec, res_scale=res_scale, block=block) for _ in range(num_block)))
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        if tail == "msrresnet":
            self.tail = nn.Sequential(
                Upsampler(scale, num_feat, rec, act=lambda: nn.LeakyReLU(0.1, inplace=True)),
                nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                nn.Conv2d(num_feat, num_out_ch, 3, 1, 1),
            )
        elif tail == "lite":
            self.tail = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        else:
            raise UsageError(f"unknown SRResNet tail {tail!r}; valid: msrresnet, lite")
        if zero_tail:
            zero_last_conv(self.tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.lrelu(self.conv_first(x))
        out = self.tail(self.body(feat) + feat)
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


@register_model
def srresnet(scale: int = 4, recipe: str = "fp", **kwargs) -> SRResNet:
    """SRResNet, 16 blocks x 64 channels (the backbone of the E2FIF/SCALES tables)."""
    return SRResNet(scale=scale, recipe=recipe, **kwargs)


@register_model
def srresnet_small(scale: int = 4, recipe: str = "fp", **kwargs) -> SRResNet:
    """SRResNet with 8 blocks x 32 channels, for quick CPU runs and tests."""
    return SRResNet(scale=scale, recipe=recipe, **dict(dict(num_feat=32, num_block=8), **kwargs))


@register_model
def srresnet_lite(scale: int = 4, recipe: str = "fp", **kwargs) -> SRResNet:
    """SRResNet with 8 blocks (16 body convs) x 64 channels and the sub-pixel ``lite`` tail: the
    zoo's binary backbone, under 100K parameters (binary/32 + FP) at every scale."""
    return SRResNet(scale=scale, recipe=recipe, **dict(dict(num_block=8, tail="lite"), **kwargs))


@register_model
def srresnet_lite16(scale: int = 4, recipe: str = "fp", **kwargs) -> SRResNet:
    """SRResNet with the body of the E2FIF/SCALES tables (16 blocks x 64) and the sub-pixel ``lite``
    tail: the deployment backbone, whose FP head and tail are 4% of the packed engine's time and
    (with ``--fp16-weights``) 27% of the packed file, where the ``msrresnet`` tail is 85% / 83%."""
    return SRResNet(scale=scale, recipe=recipe, **dict(dict(tail="lite"), **kwargs))
