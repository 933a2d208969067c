"""One torch thread for the NAS tests: the machine's two cores are shared, and intra-op threads
on tiny tensors only add synchronisation."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
