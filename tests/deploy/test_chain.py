"""Depth-first binary conv chains (``csrc/chain.cpp``, ``Runtime._run_chain``): every output
bit-identical to running the convs one after the other, on every kernel path and thread count,
at sizes smaller than a chain's row skew; the engine's refusals of malformed chains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binsr.deploy import Runtime, available_paths, export_packed
from binsr.deploy.engine import BinaryConv, _engine
from binsr.models import create
from binsr.pretrained import ZOO_DIR

pytestmark = pytest.mark.skipif(_engine is None, reason="the compiled engine is not built")
PATHS = [p for p in available_paths() if p != "numpy"]
ZOO = sorted(ZOO_DIR.glob("*.bsr"))


def _both(rt: Runtime, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runtime's output with chains (down to two bconvs), then with every op on its own."""
    chains = rt._chains = rt._find_chains(min_length=2)
    assert chains, "the graph has no chain"
    with_chains = rt.run_hwc(x).copy()
    rt._chains = {}
    try:
        return with_chains, rt.run_hwc(x).copy()
    finally:
        rt._chains = chains


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("zoo", ZOO, ids=[p.stem for p in ZOO])
def test_zoo_chains_are_bit_identical(zoo, path, threads) -> None:
    rt = Runtime(zoo, threads=threads, path_isa=path)
    if not rt._find_chains(min_length=2) and any(op["op"] == "spatial_gate" for op in rt.graph["ops"]):
        pytest.skip("no chain to compare: SCALES' gates read each bconv's whole input map first")
    rng = np.random.default_rng(0)
    for h, w in ((29, 41), (5, 7)):  # 5 rows: fewer than the body's skew (one row per conv)
        a, b = _both(rt, rng.random((h, w, 3), dtype=np.float32))
        assert np.array_equal(a, b)


def _random_net(tmp_path_factory, name: str, **kwargs) -> str:
    """A random-init model (non-trivial BN statistics and thresholds), packed."""
    torch.manual_seed(3)
    model = create(name, scale=2, **kwargs).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        for n, p in model.named_parameters():
            if "threshold" in n or "shift_" in n:
                p.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("chain") / f"{name}.bsr"
    export_packed(model, path)
    return str(path)


ALL_OPS = {"format": "binsr.srbnas.genotype/1", "groups": 2,  # 5x5, 7x7, dilated, grouped, skips, concat
           "nodes": [[["dil_conv_3x3", 0], ["skip_connect", 1]], [["conv_5x5", 0], ["conv_7x7", 2]],
                     [["skip_connect", 0], ["skip_connect", 1]], [["dil_conv_5x5", 3], ["conv_3x3", 4]]]}
NETS = {"e2fif": ("srresnet_small", dict(recipe="e2fif")),
        "bbcu_outer": ("srresnet_small", dict(recipe="bbcu", block="outer_skip", res_scale=0.5)),
        "srbnas_all_ops": ("srbnas", dict(recipe="irnet", genotype=ALL_OPS, num_cells=2, num_feat=32))}


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, str]:
    return {key: _random_net(tmp_path_factory, name, **kw) for key, (name, kw) in NETS.items()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(net=st.sampled_from(sorted(NETS)), path=st.sampled_from(PATHS), threads=st.integers(1, 4),
       h=st.integers(1, 23), w=st.integers(1, 23), seed=st.integers(0, 2**16))
def test_random_nets_chains_are_bit_identical(nets, net, path, threads, h, w, seed) -> None:
    rt = Runtime(nets[net], threads=threads, path_isa=path)
    h, w = max(h, rt.min_side), max(w, rt.min_side)
    a, b = _both(rt, np.random.default_rng(seed).random((h, w, 3), dtype=np.float32))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("threads", [2, 3, 4, 5])
def test_thread_parts_as_short_as_a_halo(nets, threads) -> None:
    """Threads cut the chain into horizontal parts (down, up, down, ..) that read each other's seam
    rows; a part is at least a halo tall (4 rows: the dilated 5x5), so at 4 * threads - 1 rows one
    part fewer runs. Both, at every thread count, equal conv by conv."""
    rt = Runtime(nets["srbnas_all_ops"], threads=threads, path_isa=PATHS[-1])
    rng = np.random.default_rng(threads)
    for h in (4 * threads, 4 * threads - 1, 4 * threads + 3):
        a, b = _both(rt, rng.random((max(h, rt.min_side), 9, 3), dtype=np.float32))
        assert np.array_equal(a, b)


def _step(layer, **kw) -> dict:
    step = dict(layer=layer, src=-1, x=None, scale=None, bias=None, gate_bias=None, pix=None, chan=None, act_shift=None,
                act_slope=None, act_bias=None, act_first=False, thr=None, div=1.0, post_scale=1.0, post_after=0,
                res=[], res_src=[], out=None, bits_out=None, ring_out=False, ring_bits=False)
    return {**step, **kw}


def test_malformed_chains_are_refused() -> None:
    rng = np.random.default_rng(0)
    conv = BinaryConv(rng.integers(0, 2**63, (64, 3, 3, 1), dtype=np.uint64), 64, 3)._layer
    x = rng.integers(0, 2**63, (4, 5, 1), dtype=np.uint64)
    out = np.empty((4, 5, 64), np.float32)
    cases = [
        ([_step(conv, x=x, out=out), _step(conv, src=2, out=out)], "reads a later step"),
        ([_step(conv, x=x[:3], out=out)], "input bits have the wrong size"),
        ([_step(conv, x=x, out=out), _step(conv, src=0, out=out)], "reads bits its source does not make"),
        ([_step(conv, x=x, ring_out=True), _step(conv, x=x, res=[None], res_src=[1], out=out)], "reads a later step"),
        ([_step(conv, x=x, res=[np.zeros(7, np.float32)], res_src=[-1], out=out)], "residual has the wrong size"),
        ([_step(conv, x=x, out=out, ring_out=True)], "both a ring and a whole map"),
        ([_step(conv, x=x, chan=np.ones(63, np.float32), out=out)], "chan"),
    ]
    for steps, match in cases:
        with pytest.raises(ValueError, match=match):
            _engine.run_chain(steps, 4, 5, PATHS[-1], 1)


def test_wide_maps_run_conv_by_conv(monkeypatch) -> None:
    """Rows wider than CHAIN_ROW_BYTES do not take the chain (threaded runtimes do)."""
    from binsr.deploy import runtime

    zoo = ZOO_DIR / "srresnet_lite16_e2fif_x4.bsr"
    calls = []
    monkeypatch.setattr(runtime._engine, "run_chain", lambda *a, **k: calls.append(a) or True)
    rt = Runtime(zoo, threads=1)
    assert rt._chains and Runtime(zoo, threads=2)._chains
    wide = runtime.CHAIN_ROW_BYTES // (64 * 4) + 1
    monkeypatch.setattr(rt, "_run_bconv", lambda *a: (_ for _ in ()).throw(AssertionError("conv by conv")))
    with pytest.raises(AssertionError, match="conv by conv"):
        rt.run_hwc(np.zeros((2, wide, 3), np.float32))
    assert not calls
