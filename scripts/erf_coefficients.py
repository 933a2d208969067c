"""Coefficients of the float64 ``erf`` in ``src/binsr/deploy/csrc/engine.cpp`` (the ``fp64`` GELU).

Two pieces, each a polynomial in ``t`` in [-1, 1] evaluated by Horner:

- ``|z| < 2``: ``erf(z) = z * P(t)``, ``t = z^2 / 2 - 1`` (``P(u) = erf(sqrt u) / sqrt u``);
- ``2 <= |z|``: ``erfc(|z|) = exp(-z^2) * R(t)``, ``t = (min(|z|, 6) - 4) / 2`` (``R = erfcx`` on
  [2, 6]; beyond 6, ``exp(-z^2)`` makes ``erfc`` far below an ulp of 1).

Each polynomial is the Chebyshev interpolant at 96 nodes, computed and expanded in powers of ``t``
in 50-digit arithmetic (mpmath, which PyTorch's sympy dependency installs), then rounded once to
double (Chebyshev terms below 1e-18 of the largest dropped). Run ``python
scripts/erf_coefficients.py`` to print them; ``--check`` also gives the largest error of the double
evaluation against mpmath, in ulps (1.2 at 20000 points).
"""

from __future__ import annotations

import math
import random
import sys

import mpmath as mp

mp.mp.dps = 50
NODES = 96


def power(f, a, b) -> list[float]:
    """Coefficients in ``t = (2u - a - b) / (b - a)`` of the Chebyshev interpolant of f on [a, b]
    (Horner in t is well conditioned: the Chebyshev terms fall fast)."""
    th = [mp.pi * (k + mp.mpf(1) / 2) / NODES for k in range(NODES)]
    fx = [f(a + (b - a) * (mp.cos(t) + 1) / 2) for t in th]
    c = [2 * mp.fsum(fx[k] * mp.cos(j * th[k]) for k in range(NODES)) / NODES for j in range(NODES)]
    c[0] /= 2
    big = max(abs(v) for v in c)
    while abs(c[-1]) < big * mp.mpf("1e-18"):
        c.pop()
    acc = [mp.mpf(0)] * len(c)
    t_prev, t_cur = [mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]  # T_0, T_1 as coefficient lists in t
    acc[0] = c[0]
    for k in range(1, len(c)):
        for i, v in enumerate(t_cur):
            acc[i] += c[k] * v
        nxt = [mp.mpf(0)] + [2 * v for v in t_cur]  # T_{k+1} = 2 t T_k - T_{k-1}
        for i, v in enumerate(t_prev):
            nxt[i] -= v
        t_prev, t_cur = t_cur, nxt
    return [float(v) for v in acc]


P = power(lambda u: mp.erf(mp.sqrt(u)) / mp.sqrt(u) if u else 2 / mp.sqrt(mp.pi), mp.mpf(0), mp.mpf(4))
R = power(lambda z: mp.erfc(z) * mp.exp(z * z), mp.mpf(2), mp.mpf(6))


def horner(c: list[float], t: float) -> float:
    p = 0.0
    for ck in reversed(c):
        p = p * t + ck
    return p


def erf64(z: float) -> float:
    """The double evaluation as engine.cpp does it (exp from libm here)."""
    a = abs(z)
    if a < 2:
        return z * horner(P, z * z / 2 - 1)
    return math.copysign(1 - math.exp(-z * z) * horner(R, (min(a, 6.0) - 4) / 2), z)


if __name__ == "__main__":
    for name, c in (("kErfP", P), ("kErfcR", R)):
        print(f"static constexpr double {name}[{len(c)}] = {{")
        print(",\n".join(f"    {v!r}" for v in c) + "};")
    if "--check" in sys.argv:
        random.seed(0)
        worst = 0.0
        for i in range(20000):
            z = random.uniform(-6.5, 6.5) if i % 2 else random.uniform(-2, 2)
            ref = mp.erf(z)
            worst = max(worst, float(abs(erf64(z) - ref) / (abs(ref) * 2.0 ** -52)))
        print(f"max error {worst:.2f} ulp over 20000 points in [-6.5, 6.5]")
