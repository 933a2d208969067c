"""Real 1-bit inference: bit packing, compiled XNOR-popcount kernels, packed export and a
torch-free runtime. Only :func:`export_packed` imports torch."""

from __future__ import annotations

from typing import Any

from binsr.deploy.bitpack import pack_bits, pack_weights, unpack_bits, unpack_weights
from binsr.deploy.engine import BinaryConv, available_paths, isa
from binsr.deploy.runtime import Runtime

__all__ = ["pack_bits", "unpack_bits", "pack_weights", "unpack_weights", "BinaryConv", "available_paths", "isa",
           "Runtime", "export_packed", "round_fp16_"]


def export_packed(model: Any, path: Any, fp16: bool = False) -> dict[str, int]:
    """Export a binary model to a packed file (see :mod:`binsr.deploy.export`)."""
    from binsr.deploy.export import export_packed as _export

    return _export(model, path, fp16)


def round_fp16_(model: Any) -> Any:
    """Round the model's FP conv weights to float16 values in place (see :mod:`binsr.deploy.export`)."""
    from binsr.deploy.export import round_fp16_ as _round

    return _round(model)
