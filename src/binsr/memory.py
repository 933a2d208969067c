"""Memory known before it is allocated: a model's weights, and one training step's activations.

A config's ``data.batch_size`` and ``data.patch_size`` set how much a step allocates: a batch of
10^6 patches would grow patch by patch until the machine runs out of memory. So the trainer and
the search measure, on the ``meta`` device (shapes only, no memory), what autograd saves for the
backward of one LR patch, and refuse a config whose batch would not fit before anything is cut.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from binsr.errors import UsageError

__all__ = ["model_bytes", "saved_bytes", "check_fits", "check_step_memory", "device_memory"]


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (a ``meta`` model's too: shapes only)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def saved_bytes(model: nn.Module, lr_patch: int) -> int | None:
    """Bytes of the tensors autograd keeps for the backward of one ``lr_patch`` x ``lr_patch`` RGB
    input (each tensor counted once); None when the model does not run on the meta device."""
    seen: dict[int, torch.Tensor] = {}  # held, so an id is never reused for another tensor

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.setdefault(id(t), t)
        return t

    x = torch.empty(1, 3, lr_patch, lr_patch, device="meta")
    try:
        meta = copy.deepcopy(model).to("meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            meta.train()(x)
    except Exception:  # a module that cannot be copied, an op without a meta kernel: the step runs unchecked
        return None
    return sum(t.numel() * t.element_size() for t in seen.values())


def device_memory(device: torch.device) -> int:
    """Bytes of memory on ``device``: the GPU's, or this machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(need: int, device: torch.device, what: str, hint: str) -> None:
    """One-line :class:`UsageError` when ``need`` bytes exceed ``device``'s memory: "``what`` needs
    at least N GiB, more than the M GiB of this machine; ``hint``"."""
    memory = device_memory(device)
    if need > memory:
        where = "this machine" if device.type == "cpu" else str(device)
        raise UsageError(f"{what} needs at least {need / 2**30:.1f} GiB, more than the {memory / 2**30:.1f} GiB "
                         f"of {where}; {hint}")


def check_step_memory(model: nn.Module, scale: int, patch_size: int, batch_size: int,
                      device: torch.device) -> int | None:
    """Refuse (one-line :class:`UsageError`) a batch whose step needs more than ``device``'s memory:
    ``batch_size`` x (the saved tensors of one LR patch + the HR and LR patch in float32), a lower
    bound (gradients, optimizer state and temporaries come on top). Returns that bound, or None
    when the model does not run on the meta device."""
    per_patch = saved_bytes(model, patch_size // scale)
    if per_patch is None:
        return None
    need = batch_size * (per_patch + 4 * 3 * (patch_size ** 2 + (patch_size // scale) ** 2))
    check_fits(need, device, f"a step of data.batch_size {batch_size} x {patch_size} px patches "
               f"({per_patch / 2**20:.1f} MiB of activations a patch)", "lower data.batch_size or data.patch_size")
    return need
