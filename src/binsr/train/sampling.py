"""Deterministic batches: the batch of update ``s`` depends only on ``(seed, s, rank, world size)``.

Global sample positions ``g = (s * world + rank) * batch + j`` walk through a fresh seeded
permutation of the ``N`` images every epoch ``e = g // N``, so each rank sees different patches
and every image is used once per epoch. The dataset receives ``e * N + perm_e[g % N]``: the image
is that index modulo ``N`` and its random crop and flip are drawn from the index (the contract of
:class:`binsr.data.TrainPatches`), so each epoch brings new patches. Nothing depends on a
generator that keeps running: a resumed run gets exactly the batches of an uninterrupted one,
whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["StepBatchSampler", "make_loader", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps), so nearby inputs give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h >> 1


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches of dataset indices for updates ``start_step, start_step + 1, ...``."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_items <= 0:
            raise ValueError("the training set is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perm: tuple[int, torch.Tensor] | None = None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perm = (epoch, torch.randperm(self.num_items, generator=gen))
        return epoch * self.num_items + int(self._perm[1][offset])

    def batch(self, step: int) -> list[int]:
        """The indices this rank trains on in update ``step`` (0-based)."""
        first = (step * self.world_size + self.rank) * self.batch_size
        return [self._index(g) for g in range(first, first + self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def make_loader(dataset: Dataset, batch_size: int, seed: int, start_step: int, rank: int, world_size: int,
                num_workers: int, pin_memory: bool) -> DataLoader:
    """An endless DataLoader whose ``k``-th batch is the batch of update ``start_step + k``.

    ``dataset[i]`` must depend on ``i`` only, for any ``i >= 0`` (item ``i % len(dataset)``).
    """
    sampler = StepBatchSampler(len(dataset), batch_size, seed, start_step, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)
