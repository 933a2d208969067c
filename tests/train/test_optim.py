"""Learning-rate schedule: linear warm-up, cosine to eta_min, multi-step halving."""

import math

import pytest
import torch

from binsr.train.config import config_from_dict
from binsr.train.optim import build_optimizer, build_scheduler, lr_factor


def _train(**kw):
    return config_from_dict({"name": "x", "train": kw}, check_names=False).train


def test_warmup_then_cosine():
    t = _train(steps=11, lr=1.0, warmup=2, scheduler={"type": "cosine", "eta_min": 0.1})
    f = [lr_factor(s, t) for s in range(11)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)  # warm-up 1/2, 2/2
    assert f[2] == pytest.approx(1.0)  # cosine starts after warm-up
    assert f[10] == pytest.approx(0.1)  # eta_min / lr at the last update
    assert all(a >= b for a, b in zip(f[1:], f[2:]))
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_multistep():
    t = _train(steps=100, lr=1.0, scheduler={"type": "multistep", "milestones": [10, 20], "gamma": 0.5})
    assert [lr_factor(s, t) for s in (0, 9, 10, 19, 20, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_scheduler_drives_the_optimizer():
    t = _train(steps=5, lr=0.2, warmup=4, scheduler={"type": "constant"})
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], t)
    sched = build_scheduler(opt, t)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2])
