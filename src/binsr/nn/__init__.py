"""Binary layers, ReActNet shifts, gates, per-method conv units, recipes and the upsampler.

``BinaryConv2d`` is ``nn.Conv2d`` plus ``act_quant``/``weight_quant`` (binsr.quant), ``BinaryLinear``
the same for ``nn.Linear``; the units in ``blocks`` wrap one conv each; ``recipes`` maps a method name
to its conv unit, kept activation and Transformer linear.
"""

from binsr.nn.attention import ChannelGate, SpatialGate
from binsr.nn.bias_act import LearnableBias, RPReLU
from binsr.nn.binary_conv import BinaryConv2d, BinaryConvExport, same_padding, set_binary_dtype
from binsr.nn.binary_linear import BinaryLinear, ScalesLinear, TokenGate
from binsr.nn.exact import ExactConv2d, ExactGELU, ExactLayerNorm, ExactLinear, fp64_at_inference
from binsr.nn.blocks import (
    BBCUConv,
    E2FIFConv,
    FPSkip,
    IRNetConv,
    LTAttnConv,
    ScalesConv,
    SRBNASOp,
    WeightOnlyConv,
    same_binary_conv,
)
from binsr.nn.progress import set_progress
from binsr.nn.recipes import Recipe, fp_conv, get_recipe, linear_recipe_names, recipe_names
from binsr.nn.upsample import PixelShuffleUpsampler

__all__ = [
    "BinaryConv2d",
    "BinaryConvExport",
    "same_padding",
    "BinaryLinear",
    "ScalesLinear",
    "TokenGate",
    "LearnableBias",
    "RPReLU",
    "ChannelGate",
    "SpatialGate",
    "ExactConv2d",
    "ExactGELU",
    "ExactLayerNorm",
    "ExactLinear",
    "fp64_at_inference",
    "FPSkip",
    "same_binary_conv",
    "E2FIFConv",
    "BBCUConv",
    "ScalesConv",
    "IRNetConv",
    "SRBNASOp",
    "LTAttnConv",
    "WeightOnlyConv",
    "Recipe",
    "get_recipe",
    "recipe_names",
    "linear_recipe_names",
    "fp_conv",
    "PixelShuffleUpsampler",
    "set_progress",
    "set_binary_dtype",
]
