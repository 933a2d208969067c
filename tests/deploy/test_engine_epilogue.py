"""Every kernel's dots and fused epilogue (scale, bias, pix, chan, div, post_scale, RPReLU,
residuals, gated bias, threshold packing) equal ONE independent NumPy formula (engine_reference.py),
bit for bit: each path against the formula, never against another path, with and without the int32
dots out (without them, the AVX-512 kernels' vector epilogue runs where it applies) and with the
packed bits alone (no float output). NEON: ``make
test-arm`` runs the same formula's values under qemu."""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import reference_conv, reference_epilogue
from hypothesis import given, settings
from hypothesis import strategies as st

from binsr.deploy import engine
from binsr.deploy.bitpack import pack_bits, pack_weights
from binsr.deploy.engine import BinaryConv

FEATS = engine._engine.cpu_features() if engine._engine is not None else {}


def _kernel_or_skip(kernel: str, monkeypatch) -> str:
    """The engine path name that runs ``kernel`` here, or a skip saying why it cannot run."""
    if kernel == "numpy":
        return "numpy"
    if engine._engine is None:
        pytest.skip("the compiled engine is not built (no C++ compiler at install time)")
    if kernel == "neon" or (kernel != "portable" and not FEATS.get(kernel.split("-")[0])):
        pytest.skip(f"this CPU cannot run the {kernel} kernel (features: {FEATS}); NEON runs under qemu in make test-arm")
    if kernel == "avx512-amx":
        if not FEATS["amx"]:
            pytest.skip("the AMX-INT8 kernel cannot run here: this CPU has no AMX-TILE / AMX-INT8 (or Linux "
                        "refused the tile state)")
        monkeypatch.delenv("BINSR_AMX", raising=False)
        return "avx512"  # the AVX-512 path runs the AMX kernel where the CPU has it
    return kernel


KERNELS = ["numpy", "portable", "avx2", "avx512-vpopcnt", "avx512-amx", "neon"]


def _signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], np.float32), shape)


@st.composite
def epilogues(draw):
    """A conv (3x3 or 1x1, grouped or not, 40 / 64 / 130 input channels) and a random epilogue."""
    k, groups = draw(st.sampled_from([(3, 1), (1, 1), (3, 2)]))
    cin = draw(st.sampled_from([40, 64, 130])) if groups == 1 else 64
    cout = groups * draw(st.sampled_from([3, 32, 50, 64, 65]))
    width = draw(st.sampled_from([7, 45]))
    nres = draw(st.integers(0, 3))
    flags = draw(st.fixed_dictionaries({k: st.booleans() for k in
                                        ("scale", "bias", "pix", "chan", "act", "act_first", "gate", "thr")}))
    return dict(k=k, groups=groups, cin=cin, cout=cout, width=width, nres=nres, flags=flags,
                div=draw(st.sampled_from([1.0, 3.0, 0.7, 130.0])), post_scale=draw(st.sampled_from([1.0, 0.5, 0.2])),
                post_after=draw(st.integers(0, nres)), seed=draw(st.integers(0, 2**31 - 1)))


def _case(c: dict):
    rng = np.random.default_rng(c["seed"])
    n, h, w, cout, f = 2, 5, c["width"], c["cout"], c["flags"]
    x = _signs(rng, (n, h, w, c["cin"]))
    wt = _signs(rng, (cout, c["cin"] // c["groups"], c["k"], c["k"]))
    vec = lambda: rng.normal(size=cout).astype(np.float32)  # noqa: E731
    pix = rng.random((n, h, w)).astype(np.float32) if f["pix"] or f["gate"] else None
    chan = rng.random((n, cout)).astype(np.float32) if f["chan"] else None
    kw = dict(scale=np.abs(vec()) if f["scale"] else None, bias=vec() if f["bias"] else None, pix=pix, chan=chan,
              act=(vec(), np.abs(vec()), vec()) if f["act"] else None, act_first=f["act_first"],
              residual=tuple(rng.normal(size=(n, h, w, cout)).astype(np.float32) for _ in range(c["nres"])),
              gate_bias=vec() if f["gate"] else None, thr=vec() if f["thr"] else None,
              div=c["div"], post_scale=c["post_scale"], post_after=c["post_after"])
    dots = reference_conv(x, wt, 1, c["k"] // 2, c["groups"])
    out, bits = reference_epilogue(dots, **kw)
    conv = BinaryConv(pack_weights(wt), c["cin"], c["k"], 1, None, c["groups"])
    return conv, pack_bits(x), kw, dots, out, bits


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=30, deadline=None)
@given(case=epilogues())
def test_kernel_equals_the_reference_formula(kernel: str, case: dict) -> None:
    with pytest.MonkeyPatch.context() as mp:
        path = _kernel_or_skip(kernel, mp)
        conv, xb, kw, dots, out, bits = _case(case)
        for threads, out_int in ((1, True), (2, True), (1, False), (2, False)):
            if path == "numpy":
                got = conv(xb, path=path, out_int=out_int, pack=True, **kw)
                got = (got.out, got.dots, got.bits)
            else:  # the layer itself: "avx512-vpopcnt" bypasses AMX where the CPU has it
                args = dict(scale=kw["scale"], bias=kw["bias"], pix=kw["pix"], chan=kw["chan"],
                            gate_bias=kw["gate_bias"], act_first=kw["act_first"], res=list(kw["residual"]),
                            thr=kw["thr"], div=kw["div"], post_scale=kw["post_scale"], post_after=kw["post_after"])
                if kw["act"] is not None:
                    args.update(act_shift=kw["act"][0], act_slope=kw["act"][1], act_bias=kw["act"][2])
                got = conv._layer.run(xb, path, threads, out_int=out_int, pack=True, **args)
                alone = conv._layer.run(xb, path, threads, out_float=False, pack=True, **args)  # bits alone
                np.testing.assert_array_equal(alone[2], bits, err_msg=f"{kernel} bits without the float output")
            if out_int:
                np.testing.assert_array_equal(got[1], dots, err_msg=f"{kernel} dots")
            np.testing.assert_array_equal(got[0], out, err_msg=f"{kernel} float output (out_int={out_int})")
            assert (np.signbit(got[0]) == np.signbit(out)).all(), f"{kernel}: the sign of a zero differs"
            np.testing.assert_array_equal(got[2], bits, err_msg=f"{kernel} bits (out_int={out_int})")


def test_reference_formula_checks() -> None:
    """The reference itself: fma_f32 rounds once (a case where two roundings differ), and the
    packing sets bit c of word c // 64 for v >= thr and 1 past the last channel."""
    from engine_reference import fma_f32, pack_signs

    a, b, c = np.float32(1 + 2**-12), np.float32(1 + 2**-12), np.float32(-(1 + 2**-11))
    assert float(a) * float(b) + float(c) == 2**-24  # exact value: 2^-24, lost by a rounded product
    assert fma_f32(np.array([a]), np.array([b]), np.array([c]))[0] == np.float32(2**-24)
    assert np.float32(a * b) + c == 0
    v = np.array([[0.5, -1.0, 2.0]], np.float32)
    assert pack_signs(v, np.array([0.5, -2.0, 3.0], np.float32))[0, 0] == ~np.uint64(0b100)
    assert pack_signs(np.zeros((1, 70), np.float32) - 1, None)[0, 1] == ~np.uint64(0) << np.uint64(6)


def test_reference_rprelu_is_torchs_prelu() -> None:
    """The reference RPReLU gives torch's PReLU bit for bit, the sign of zero and NaN included
    (u = -0 gives slope * -0; the earlier pos + slope * neg form gave +0)."""
    import torch
    from engine_reference import _rprelu

    u = np.array([-0.0, 0.0, np.nan, -1e-45, 1e-45, -3.5, 2.25, -np.inf, np.inf], np.float32)
    for slope in (np.float32(0.25), np.float32(-0.5)):
        zero = np.zeros_like(u)
        got = _rprelu(u[None], zero, np.full_like(u, slope), np.full_like(u, -0.0))[0]  # + -0 keeps every value
        want = torch.nn.functional.prelu(torch.from_numpy(u), torch.tensor([slope])).numpy()
        np.testing.assert_array_equal(got, want)
        assert (np.signbit(got) == np.signbit(want)).all(), (slope, got, want)
