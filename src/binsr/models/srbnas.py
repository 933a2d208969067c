"""SRBNAS (Su et al., Biomimetics 2024): the discrete network built from a searched genotype.

Paper: "Deep Learning and Neural Architecture Search for Optimizing Binary Neural Network Image
Super Resolution", Biomimetics 9(6):369, doi:10.3390/biomimetics9060369. No official code.

Architecture (``binsr.nas.network``): FP head conv, ``num_cells`` identical cells of the genotype
(3: the light model of Tables 2-5, 8: the large one), FP PixelShuffle tail, two parameter-free FP
shortcuts (head features -> after the last cell; bilinear LR image -> output). Our reading of
Figure 2 and the power-of-two output scale of the binary ops are documented in ``binsr.nas``.

Recipes: ``irnet`` (and ``srbnas``, if ``binsr.nn.recipes`` registers it) give the paper's ops,
:func:`binsr.nas.ops.srbnas_conv` (Libra-PB weights, EDE activations, no BN, no skip inside an
op); ``fp`` gives full-precision convs of the same geometry; any other recipe builds every cell
conv with that recipe's unit (e.g. ``e2fif`` adds its BN and FP skip). Head and tail stay FP.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from binsr.errors import UsageError
from binsr.models._common import check_scale, get_recipe, zero_last_conv
from binsr.models._registry import register_model
from binsr.nas.genotype import Genotype, load_genotype
from binsr.nas.network import Cell, SRBNASBackbone
from binsr.nas.ops import ConvFactory, srbnas_conv

__all__ = ["SRBNAS"]

_PAPER_RECIPES = ("srbnas", "irnet")


def _conv_factory(recipe: str, recipe_kwargs: dict | None) -> ConvFactory:
    if recipe in _PAPER_RECIPES and not recipe_kwargs:
        return srbnas_conv
    rec = get_recipe(recipe, recipe_kwargs)
    return lambda in_ch, out_ch, k, dilation, groups: rec.conv(in_ch, out_ch, k, dilation=dilation, groups=groups)


class SRBNAS(SRBNASBackbone):
    """SRBNAS network of a genotype.

    Args:
        scale (int): upscaling factor, 2, 3 or 4.
        recipe (str): ``irnet``/``srbnas`` (the paper's binary ops), ``fp`` or another recipe.
            Default: ``"irnet"``.
        genotype (str | Path | dict | Genotype | None): a shipped genotype's name (``srbnas_x4``,
            in ``binsr/nas/genotypes/``), a JSON path, a dict or a genotype; ``None``: ``srbnas_x4``.
        num_cells (int): cells. Default: 3.
        num_feat (int): width. Default: 64.
        groups (int | None): group count of the binary group convs; ``None``: the genotype's.
        zero_tail (bool): initialise the tail conv to zero, so that the untrained network is the
            bilinear shortcut (as ``srresnet``'s option). Default: False.
        recipe_kwargs (dict): recipe overrides (then ``irnet`` means the recipe's own unit).
    """

    def __init__(self, scale: int = 4, recipe: str = "irnet", genotype: str | Path | dict | Genotype | None = None,
                 num_cells: int = 3, num_feat: int = 64, groups: int | None = None, zero_tail: bool = False,
                 recipe_kwargs: dict | None = None) -> None:
        geno = load_genotype(genotype)
        groups = groups or geno.groups
        if num_cells < 1 or num_feat % groups:
            raise UsageError(f"srbnas needs num_cells >= 1 and num_feat ({num_feat}) divisible by groups ({groups})")
        conv = _conv_factory(recipe, recipe_kwargs)
        cells: list[nn.Module] = [Cell(geno, num_feat, groups, conv) for _ in range(num_cells)]
        super().__init__(cells, num_feat, check_scale(scale, (2, 3, 4)))
        if zero_tail:
            zero_last_conv(self.tail)
        self.genotype = geno


@register_model
def srbnas(scale: int = 4, recipe: str = "irnet", **kwargs) -> SRBNAS:
    """SRBNAS light model: 3 cells x 64 channels (Tables 2-5)."""
    return SRBNAS(scale=scale, recipe=recipe, **kwargs)


@register_model
def srbnas_large(scale: int = 4, recipe: str = "irnet", **kwargs) -> SRBNAS:
    """SRBNAS large model: 8 cells x 64 channels (Sec. 6). With the shipped cell (``srbnas_x4``,
    ``binsr profile --model srbnas_large --recipe irnet``): 61.2K params (binary/32 + FP) and
    2.61 GOPs (58.5 GBOPs/64 + 1.69 GFLOPs) at x4; with the x3 cell (``srbnas_x3``) 81.9K and
    2.85 GOPs at x3, at a 320x180 LR input: within the paper's 156K (x4, Table 5) and 192K (x3,
    Table 3)."""
    return SRBNAS(scale=scale, recipe=recipe, **dict(dict(num_cells=8), **kwargs))
