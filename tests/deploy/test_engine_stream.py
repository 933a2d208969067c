"""Float outputs written with non-temporal stores (maps above a quarter of the L3: engine.cpp
``stream_min_bytes``) equal the reference formula on every path this CPU runs: a child process
with ``BINSR_STREAM_MIN_BYTES=0`` streams even these small maps (the engine reads the variable
once per process). A value that is not a byte count is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from binsr.deploy import engine

HERE = Path(__file__).parent
FEATS = engine._engine.cpu_features() if engine._engine is not None else {}
pytestmark = pytest.mark.skipif(engine._engine is None, reason="the compiled engine is not built (no C++ compiler)")

# Channels 64 / 128 (whole words), 80 and 48 (a word's tail); widths with a tail of pixels; 1-2 residuals.
CHILD = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from engine_reference import reference_conv, reference_epilogue
from binsr.deploy.bitpack import pack_bits, pack_weights
from binsr.deploy.engine import BinaryConv
rng = np.random.default_rng(0)
signs = np.array([-1.0, 1.0], np.float32)
for cout, width, nres, act in ((64, 45, 1, True), (80, 21, 2, False), (128, 33, 0, True), (48, 17, 1, True)):
    x, wt = rng.choice(signs, (2, 5, width, 64)), rng.choice(signs, (cout, 64, 3, 3))
    vec = lambda: rng.normal(size=cout).astype(np.float32)
    kw = dict(scale=np.abs(vec()), bias=vec(), act=(vec(), np.abs(vec()), vec()) if act else None, thr=vec(),
              residual=tuple(rng.normal(size=(2, 5, width, cout)).astype(np.float32) for _ in range(nres)))
    out, bits = reference_epilogue(reference_conv(x, wt, 1, 1, 1), **kw)
    conv = BinaryConv(pack_weights(wt), 64, 3, 1, None, 1)
    for path in sys.argv[2].split(","):
        for threads in (1, 2):
            got = conv(pack_bits(x), path=path, threads=threads, pack=True, **kw)
            np.testing.assert_array_equal(got.out, out, err_msg=f"{path} streamed float output ({cout} channels)")
            np.testing.assert_array_equal(got.bits, bits, err_msg=f"{path} bits beside a streamed output")
print("ok")
"""


def _child(value: str, amx: str = "1") -> subprocess.CompletedProcess:
    env = {**os.environ, "BINSR_STREAM_MIN_BYTES": value, "BINSR_AMX": amx}
    compiled = engine.available_paths()[1:]  # all but "numpy", which has no streamed stores
    return subprocess.run([sys.executable, "-c", CHILD, str(HERE), ",".join(compiled)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_streamed_outputs_equal_the_reference_formula() -> None:
    for amx in ("1", "0") if FEATS.get("amx") else ("1",):  # "avx512" is the AMX kernel unless BINSR_AMX=0
        r = _child("0", amx)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_bad_stream_limit_is_one_clear_error() -> None:
    r = _child("8MB")
    assert r.returncode != 0
    assert "BINSR_STREAM_MIN_BYTES is not a byte count: '8MB'" in r.stderr
