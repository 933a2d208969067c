"""Real 1-bit inference: bit packing, compiled XNOR-popcount kernels, packed export and a
torch-free runtime. Only :func:`export_packed` imports torch."""

from __future__ import annotations

from typing import Any

from binsr.deploy.bitpack import pack_bits, pack_weights, unpack_bits, unpack_weights
from binsr.deploy.engine import BinaryConv, available_paths, isa
from binsr.deploy.runtime import Runtime

__all__ = ["pack_bits", "unpack_bits", "pack_weights", "unpack_weights", "BinaryConv", "available_paths", "isa",
           "Runtime", "export_packed"]


def export_packed(model: Any, path: Any) -> dict[str, int]:
    """Export a binary model to a packed file (see :mod:`binsr.deploy.export`)."""
    from binsr.deploy.export import export_packed as _export

    return _export(model, path)
