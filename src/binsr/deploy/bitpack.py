"""Channel-last bit packing of ±1 tensors into 64-bit words (NumPy only).

Activations ``(..., C)`` become ``(..., ceil(C / 64))`` uint64: channel ``c`` is bit ``c % 64`` of
word ``c // 64`` (bit = ``x >= 0``, so ``+1 -> 1``), whatever the groups of the layer that reads
them. Bits past ``C`` in the last word are set to **1** (like the +1 spatial padding, an all-ones
word). Weights ``(O, I/g, k, k)`` are stored per output channel as ``(O, k, k, ceil(I/g / 64))``
words holding that channel's own group's inputs, padding bits also 1. The engine places each
group's weights at its channels' bit positions with zeros elsewhere and subtracts
``popcount(x & ~group_mask)``, so ``dot = C_in_per_group * k * k - 2 * popcount(x ^ w)`` is exact
for any channel count and grouping; padding bits never reach a result.
"""

from __future__ import annotations

import numpy as np

__all__ = ["words", "pack_bits", "unpack_bits", "pack_weights", "unpack_weights"]


def words(channels: int) -> int:
    """Number of 64-bit words holding ``channels`` bits."""
    return -(-channels // 64)


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Pack the signs of channel-last ``x`` (..., C) into uint64 words (..., ceil(C / 64))."""
    x = np.asarray(x)
    c = x.shape[-1]
    bits = x >= 0
    if c % 64:
        bits = np.concatenate([bits, np.ones((*x.shape[:-1], words(c) * 64 - c), bool)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").reshape(*x.shape[:-1], words(c))


def unpack_bits(p: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: float32 ±1 array (..., channels)."""
    p = np.ascontiguousarray(p, dtype="<u8")
    if p.shape[-1] != words(channels):
        raise ValueError(f"expected {words(channels)} words per pixel, got {p.shape[-1]}")
    bits = np.unpackbits(p.view(np.uint8), axis=-1, bitorder="little")[..., :channels]
    return bits.astype(np.float32) * 2 - 1


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Pack the signs of OIHW conv weights into ``(O, kh, kw, ceil(I / 64))`` uint64."""
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"expected OIHW weights, got shape {w.shape}")
    return pack_bits(np.transpose(w, (0, 2, 3, 1)))


def unpack_weights(p: np.ndarray, in_channels_per_group: int) -> np.ndarray:
    """Inverse of :func:`pack_weights`: float32 ±1 OIHW weights."""
    return np.transpose(unpack_bits(p, in_channels_per_group), (0, 3, 1, 2))
