"""Shared fixtures. ``data_root``: the benchmark/training data, or skip when it is absent."""

from pathlib import Path

import pytest

from binsr.data.paths import data_root as find_data_root
from binsr.errors import UsageError


@pytest.fixture(scope="session")
def data_root() -> Path:
    try:
        return find_data_root()
    except UsageError as exc:
        pytest.skip(f"no data: {exc}")


@pytest.fixture
def assert_body_exact(tmp_path):
    """``check(model)``: every float map an SRResNet body binarizes is bit-identical on the engine
    and in PyTorch (so no sign can flip); for an SRBNAS network, every cell's output and the tail's
    input; for a SwinIR, the tail's input. The head conv, SCALES' gates and SwinIR's FP ops are
    computed in float64 and rounded once on both sides (binsr.nn.exact), so the model's own weights
    and an ordinary image serve."""
    import numpy as np
    import torch

    from binsr.deploy import Runtime, export_packed

    def check(model: torch.nn.Module) -> None:
        gen = torch.Generator().manual_seed(0)
        srbnas, swinir = not hasattr(model, "conv_first"), hasattr(model, "window_size")
        x = torch.rand(1, 3, 29, 37, generator=gen).numpy()
        export_packed(model, tmp_path / "m.bsr")
        seen = {}
        if srbnas or swinir:  # the last cell's output is only written with the head features added: the tail's input
            cells = list(model.body)[:-1] if srbnas else []
            hooks = [c.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(f"c{i}", out))
                     for i, c in enumerate(cells)]
            hooks.append(model.tail.register_forward_pre_hook(lambda mod, args: seen.__setitem__("deep", args[0])))
        else:
            hooks = [b.conv2.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(f"t{i}", args[0]))
                     for i, b in enumerate(model.body)]
            hooks += [b.conv1.register_forward_pre_hook(
                lambda mod, args, i=i: seen.__setitem__(f"h{i - 1}" if i else "feat", args[0]))
                for i, b in enumerate(model.body)]
        with torch.no_grad():
            model(torch.from_numpy(x))
        for h in hooks:
            h.remove()
        kept = {}
        Runtime(tmp_path / "m.bsr", threads=2).run_hwc(x[0].transpose(1, 2, 0).copy(), keep=kept)
        assert len(seen) == (1 if swinir else len(model.body) if srbnas else 2 * len(model.body))
        for key, t in seen.items():
            assert np.array_equal(kept[key], t[0].permute(1, 2, 0).numpy()), key

    return check
