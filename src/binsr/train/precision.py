"""``train.precision``: the dtype of the binary convs' and linears' +-1 operands during training.

``fp32`` computes everything in float32. ``bf16`` casts the operands of every binary-by-binary
conv and linear to bfloat16 (exact: they are +-1), lets oneDNN accumulate in float32 and returns
the sums (exact up to 256 in magnitude) as float32 (``binsr.nn.set_binary_dtype``), and trains in
channels_last; everything else (head, tail, BN, the FP skips, the loss, the optimizer) stays float32, so the full-precision information flow of
E2FIF-style bodies is untouched and checkpoints stay float32. ``auto`` is ``bf16`` on CUDA and on
CPUs with AVX-512 BF16 or AMX, else ``fp32``. Validation always runs in float32 (the packed
engine's exact maths). Measured by ``benchmarks/train_speed.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch import nn

from binsr.cpu import has_fast_bf16
from binsr.models.complexity import is_binary
from binsr.nn import BinaryConv2d, BinaryLinear, set_binary_dtype

__all__ = ["PRECISIONS", "resolve_precision", "prepare_model", "float32_binary", "cast_summary"]

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``bf16`` or ``fp32`` for a ``train.precision`` value on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or has_fast_bf16() else "fp32"


def _binary_dtype(precision: str) -> torch.dtype | None:
    return torch.bfloat16 if precision == "bf16" else None


def prepare_model(model: nn.Module, precision: str) -> nn.Module:
    """Set the binary convs' dtype for a resolved ``precision``; bf16 on a CPU also moves the
    model to channels_last (faster there with bfloat16 operands; the same with float32)."""
    set_binary_dtype(model, _binary_dtype(precision))
    if precision == "bf16" and next(model.parameters()).device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def cast_summary(model: nn.Module, precision: str) -> str:
    """What a resolved ``precision`` casts, for the log: under ``bf16`` the binary-by-binary
    :class:`~binsr.nn.BinaryConv2d` and :class:`~binsr.nn.BinaryLinear` (e.g. "32 binary convs in
    bfloat16", "5 binary convs, 96 binary linears in bfloat16"); a weight-only layer (FP inputs,
    binary weights) stays float32."""
    if precision != "bf16":
        return "every conv and linear in float32"
    counts = [(sum(isinstance(m, kind) and is_binary(m) for m in model.modules()), name)
              for kind, name in ((BinaryConv2d, "convs"), (BinaryLinear, "linears"))]
    parts = [f"{n} binary {name}" for n, name in counts if n]
    return ", ".join(parts) + " in bfloat16" if parts else "every conv and linear in float32"


@contextmanager
def float32_binary(model: nn.Module, precision: str) -> Iterator[nn.Module]:
    """``model`` with float32 binary convs and linears inside the block (validation), ``precision``'s after."""
    set_binary_dtype(model, None)
    try:
        yield model
    finally:
        set_binary_dtype(model, _binary_dtype(precision))
