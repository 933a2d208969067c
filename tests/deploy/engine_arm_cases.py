"""Writes the cases ``make test-arm`` checks under qemu-aarch64 (engine_arm_check.cpp): convs with
epilogues, inputs and the expected dots, floats and bits from the independent NumPy reference
(engine_reference.py), each first confirmed bit for bit on this machine's compiled paths.

Usage: python tests/deploy/engine_arm_cases.py OUT.bin
File: "BSRC", int32 count, then per case 12 int32 (k, dilation, padding, groups, cin, cout, N, H, W,
act_first, post_after, pack), float32 div and post_scale, then arrays, each an int64 length and its
data: weights u64, x u64, scale, bias, pix, act shift / slope / bias, thr, gate_bias, residuals 0-2
(f32; length 0: absent), expected dots i32, floats f32, bits u64.
"""

from __future__ import annotations

import sys

import numpy as np
from engine_reference import reference_conv, reference_epilogue

from binsr.deploy import available_paths
from binsr.deploy.bitpack import pack_bits, pack_weights
from binsr.deploy.engine import BinaryConv

# (k, dilation, groups, cin, cout, H, W, epilogue stages)
CASES = [
    (3, 1, 1, 64, 64, 9, 37, "scale bias thr"),
    (3, 1, 1, 64, 64, 6, 45, "scale bias act res2 post1"),
    (3, 1, 1, 40, 100, 5, 23, "scale pix bias act_first div res1 thr"),
    (1, 1, 1, 130, 70, 4, 19, "scale bias gate act res3 post0"),
    (5, 2, 1, 64, 20, 11, 17, "scale act thr"),
    (3, 1, 4, 64, 64, 7, 21, "scale bias"),
    (3, 1, 2, 32, 32, 6, 19, "pix gate res1"),
    (7, 1, 3, 15, 9, 10, 12, ""),
    (3, 1, 1, 200, 130, 5, 11, "scale bias act_first act div res2 post2 thr"),
]


def _case(rng: np.random.Generator, k: int, dil: int, groups: int, cin: int, cout: int, h: int, w: int,
          stages: str) -> tuple[list[int], list[float], list[np.ndarray]]:
    st = stages.split()
    n, pad = 2, dil * (k - 1) // 2
    signs = lambda shape: rng.choice(np.array([-1.0, 1.0], np.float32), shape)  # noqa: E731
    vec = lambda: rng.normal(size=cout).astype(np.float32)  # noqa: E731
    x, wt = signs((n, h, w, cin)), signs((cout, cin // groups, k, k))
    nres = next((int(s[3:]) for s in st if s.startswith("res")), 0)
    post_after = next((int(s[4:]) for s in st if s.startswith("post")), 0)
    kw = dict(scale=np.abs(vec()) if "scale" in st else None, bias=vec() if "bias" in st else None,
              pix=rng.random((n, h, w)).astype(np.float32) if "pix" in st or "gate" in st else None,
              act=(vec(), np.abs(vec()), vec()) if "act" in st or "act_first" in st else None,
              act_first="act_first" in st, gate_bias=vec() if "gate" in st else None,
              residual=tuple(rng.normal(size=(n, h, w, cout)).astype(np.float32) for _ in range(nres)),
              div=3.0 if "div" in st else 1.0, post_scale=0.5 if post_after or "post0" in st else 1.0,
              post_after=post_after, thr=vec() if "thr" in st else None)
    dots = reference_conv(x, wt, dil, pad, groups).astype(np.int32)
    out, bits = reference_epilogue(dots, **kw)
    conv = BinaryConv(pack_weights(wt), cin, k, dil, pad, groups)
    for path in available_paths():  # the dumped values are this machine's engine outputs too
        got = conv(pack_bits(x), path=path, threads=2, out_int=True, pack=True, **kw)
        assert (np.array_equal(got.dots, dots) and np.array_equal(got.out, out)
                and np.array_equal(got.bits, bits)), f"{path} differs from the reference on {k, cin, cout, stages}"
    act = kw["act"] or (None, None, None)
    res = list(kw["residual"]) + [None] * (3 - nres)
    ints = [k, dil, pad, groups, cin, cout, n, h, w, int(kw["act_first"]), post_after, 1]
    arrays = [pack_weights(wt), pack_bits(x), kw["scale"], kw["bias"], kw["pix"], *act, kw["thr"], kw["gate_bias"],
              *res, dots, out, bits]
    return ints, [kw["div"], kw["post_scale"]], arrays


def main(path: str) -> None:
    rng = np.random.default_rng(2024)
    with open(path, "wb") as f:
        f.write(b"BSRC" + np.int32(len(CASES)).tobytes())
        for case in CASES:
            ints, floats, arrays = _case(rng, *case)
            f.write(np.array(ints, np.int32).tobytes() + np.array(floats, np.float32).tobytes())
            for a in arrays:
                a = np.zeros(0, np.float32) if a is None else np.ascontiguousarray(a)
                f.write(np.int64(a.size).tobytes() + a.tobytes())
    print(f"{len(CASES)} cases from the NumPy reference, equal on this machine's paths {available_paths()}: {path}")


if __name__ == "__main__":
    main(sys.argv[1])
