"""Binary layers, ReActNet shifts, gates, per-method conv units, recipes and the upsampler.

``BinaryConv2d`` is ``nn.Conv2d`` plus ``act_quant``/``weight_quant`` (binsr.quant); the units in
``blocks`` wrap one each; ``recipes`` maps a method name to its unit and kept activation.
"""

from binsr.nn.attention import ChannelGate, SpatialGate
from binsr.nn.bias_act import LearnableBias, RPReLU
from binsr.nn.binary_conv import BinaryConv2d, BinaryConvExport, same_padding
from binsr.nn.blocks import (
    BBCUConv,
    E2FIFConv,
    FPSkip,
    IRNetConv,
    LTAttnConv,
    ScalesConv,
    SRBNASOp,
    same_binary_conv,
)
from binsr.nn.progress import set_progress
from binsr.nn.recipes import Recipe, fp_conv, get_recipe, recipe_names
from binsr.nn.upsample import PixelShuffleUpsampler

__all__ = [
    "BinaryConv2d",
    "BinaryConvExport",
    "same_padding",
    "LearnableBias",
    "RPReLU",
    "ChannelGate",
    "SpatialGate",
    "FPSkip",
    "same_binary_conv",
    "E2FIFConv",
    "BBCUConv",
    "ScalesConv",
    "IRNetConv",
    "SRBNASOp",
    "LTAttnConv",
    "Recipe",
    "get_recipe",
    "recipe_names",
    "fp_conv",
    "PixelShuffleUpsampler",
    "set_progress",
]
