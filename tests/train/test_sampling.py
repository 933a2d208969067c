"""Batches are a function of (seed, step, rank): restartable, disjoint across ranks, new each epoch."""

from binsr.train.sampling import StepBatchSampler


def test_restart_gives_the_same_batches():
    full = StepBatchSampler(7, 3, seed=1)
    it = iter(full)
    first = [next(it) for _ in range(10)]
    it = iter(StepBatchSampler(7, 3, seed=1, start_step=6))
    assert [next(it) for _ in range(4)] == first[6:]
    assert first != [next(iter(StepBatchSampler(7, 3, seed=2, start_step=s))) for s in range(10)]


def test_ranks_get_different_items_and_epochs_cover_the_set():
    n, batch, world = 8, 2, 2
    ranks = [StepBatchSampler(n, batch, seed=0, rank=r, world_size=world) for r in range(world)]
    epoch0 = [i for s in range(2) for r in ranks for i in r.batch(s)]  # 2 steps x 2 ranks x 2 = one epoch
    assert sorted(epoch0) == list(range(n))
    epoch1 = [i for s in range(2, 4) for r in ranks for i in r.batch(s)]
    assert sorted(i % n for i in epoch1) == list(range(n))
    assert min(epoch1) >= n  # a new index, hence a new random crop, for every image
