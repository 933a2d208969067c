"""Memory known before it is allocated (binsr.memory): a training step's activations."""

import pytest
import torch
from torch import nn

from binsr.errors import UsageError
from binsr.models import create
from binsr.memory import check_step_memory, saved_bytes


class _NumpyNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.numpy())  # no meta kernel


@pytest.mark.parametrize("p", [4, 9, 16])
def test_saved_bytes_counts_what_autograd_keeps(p):
    """Conv2d keeps its input and weight, ReLU its output: float32 bytes, each tensor once."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    assert saved_bytes(net, p) == 4 * (3 * p * p + 8 * 3 * 3 * 3 + 8 * p * p)
    assert next(net.parameters()).device.type == "cpu"  # measured on a copy


def test_saved_bytes_grows_with_the_patch_area_and_is_none_without_meta_kernels():
    net = create("srresnet_small", scale=2, recipe="e2fif")
    small, large = saved_bytes(net, 48), saved_bytes(net, 96)  # activations outgrow the weights
    assert small is not None and 3.5 * small < large <= 4 * small
    assert saved_bytes(_NumpyNet(), 8) is None


def test_check_step_memory_refuses_a_batch_beyond_the_machine():
    net = create("srresnet_small", scale=2, recipe="e2fif")
    need = check_step_memory(net, 2, 16, 4, torch.device("cpu"))
    assert need == 4 * (saved_bytes(net, 8) + 4 * 3 * (16 * 16 + 8 * 8))
    with pytest.raises(UsageError, match="a step of data.batch_size 100000000 x 16 px patches .* needs at least"):
        check_step_memory(net, 2, 16, 10**8, torch.device("cpu"))
    assert check_step_memory(_NumpyNet(), 2, 16, 10**8, torch.device("cpu")) is None
