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

__all__ = ["words", "pack_bits", "unpack_bits", "pack_weights", "unpack_weights", "concat_bits"]


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


def concat_bits(maps: list[np.ndarray], channels: tuple[int, ...] | list[int],
                out: np.ndarray | None = None) -> np.ndarray:
    """The channels of packed bit maps (..., words(C_i)), in order, as one packed map
    (..., words(sum C_i)), padding bits 1. When every map but the last holds a multiple of 64
    channels this is a concatenation of words (the last map's padding bits are the result's);
    otherwise the bits are unpacked, concatenated and packed again."""
    if len(maps) != len(channels):
        raise ValueError(f"{len(maps)} bit maps for {len(channels)} channel counts")
    lead = maps[0].shape[:-1]
    if out is None:
        out = np.empty((*lead, words(sum(channels))), np.uint64)
    if all(c % 64 == 0 for c in channels[:-1]):
        return np.concatenate(maps, axis=-1, out=out)
    bits = [np.unpackbits(np.ascontiguousarray(m, dtype="<u8").view(np.uint8), axis=-1, bitorder="little")[..., :c]
            for m, c in zip(maps, channels)]
    total = sum(channels)
    if total % 64:
        bits.append(np.ones((*lead, words(total) * 64 - total), np.uint8))
    packed = np.packbits(np.concatenate(bits, axis=-1), axis=-1, bitorder="little")
    out[...] = np.ascontiguousarray(packed).view("<u8").reshape(out.shape)
    return out
