"""Binarization library: quantizers with their estimators, looked up by name.

``binsr.quant.get("ede")``, ``get({"type": "rsign", "estimator": "ede"}, channels=64)``, an
instance, or ``None`` (full precision). ``names()`` lists the registered names. The tie rule and
the +1 padding are fixed by docs/CONVENTIONS.md; :func:`binsr.quant.functional.sign` is the one
sign of binsr.
"""

from binsr.quant import functional
from binsr.quant._get import get, names
from binsr.quant.modules import (
    EDE,
    ActivationExport,
    ActivationQuantizer,
    ApproxSign,
    ClippedSTE,
    Identity,
    LibraPB,
    Quantizer,
    RSign,
    ScaledSign,
    ScalesAct,
    SignEstimator,
    SignSTE,
    WeightExport,
    WeightQuantizer,
    WeightSign,
    XNORWeight,
)

get_quantizer = get

__all__ = [
    "functional",
    "get",
    "get_quantizer",
    "names",
    "Quantizer",
    "ActivationQuantizer",
    "WeightQuantizer",
    "SignEstimator",
    "ActivationExport",
    "WeightExport",
    "Identity",
    "SignSTE",
    "ClippedSTE",
    "ApproxSign",
    "EDE",
    "RSign",
    "ScalesAct",
    "WeightSign",
    "XNORWeight",
    "LibraPB",
    "ScaledSign",
]
