"""torch.distributed set-up for runs launched by ``torchrun`` (gloo on CPU, NCCL on GPU).

One machine, 2 processes (CPU or 2 GPUs)::

    torchrun --standalone --nproc_per_node 2 -m binsr train --config configs/train/srresnet_e2fif_x4.yaml

Two machines with 8 GPUs each (run on both, ``--node_rank`` 0 and 1; HOST0 reachable from both)::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST0:29500 --rdzv_id srresnet_e2fif_x4 \\
        -m binsr train --config configs/train/srresnet_e2fif_x4.yaml --out runs/srresnet_e2fif_x4

The run folder (``--out``) must be on storage that rank 0 writes and every node can read when
resuming. ``data.batch_size`` is per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from binsr.errors import UsageError

__all__ = ["DistEnv", "setup", "teardown"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {preference!r}; valid: auto, cpu, cuda")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is available")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def setup(preference: str = "auto") -> DistEnv:
    """Read torchrun's environment, pick the device and join the process group when world size > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=1),
                                device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world_size, local_rank, device)


def teardown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
