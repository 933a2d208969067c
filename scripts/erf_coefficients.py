"""Coefficients of the float64 ``erf`` in ``src/binsr/deploy/csrc/engine.cpp`` (the ``fp64`` GELU).

- ``|z| < 1`` (the GELU's fast pass): ``erf(z) = z * P1(z^2)``, a polynomial in ``u = z^2`` by
  Horner (the Chebyshev interpolant of ``P(u) = erf(sqrt u) / sqrt u`` on [0, 1], expanded in
  powers of ``u`` in 50 digits);

and everywhere (``erf64``), two Chebyshev series in ``t`` in [-1, 1], summed by Clenshaw's recurrence:

- ``|z| < 2``: ``erf(z) = z * P(t)``, ``t = z^2 / 2 - 1``;
- ``2 <= |z| <= 6``: ``erfc(|z|) = exp(-z^2) * R(t)``, ``t = (|z| - 4) / 2`` (``R = erfcx``);
  beyond 6, ``R(1)`` (``exp(-z^2)`` makes ``erfc`` far below an ulp of 1 there).

The coefficients are the Chebyshev interpolants at 96 nodes, computed in 50-digit arithmetic
(mpmath, which PyTorch's sympy dependency installs) and rounded once to double; trailing terms
below 1e-18 of the piece's size are dropped. Run ``python scripts/erf_coefficients.py`` to print
them and the largest error of the double evaluation in ulps (``--check``).
"""

from __future__ import annotations

import sys

import mpmath as mp

mp.mp.dps = 50
NODES = 96


def cheb(f, a, b, exact=False):
    """Chebyshev coefficients of f on [a, b] (interpolation at the NODES Chebyshev points), as
    doubles (``exact``: as mp numbers)."""
    th = [mp.pi * (k + mp.mpf(1) / 2) / NODES for k in range(NODES)]
    fx = [f(a + (b - a) * (mp.cos(t) + 1) / 2) for t in th]
    c = [2 * mp.fsum(fx[k] * mp.cos(j * th[k]) for k in range(NODES)) / NODES for j in range(NODES)]
    c[0] /= 2
    big = max(abs(v) for v in c)
    while abs(c[-1]) < big * mp.mpf("1e-18"):
        c.pop()
    return c if exact else [float(v) for v in c]


def power(f, a, b):
    """Coefficients in ``u`` of the Chebyshev interpolant of f on [a, b] (for Horner on [a, b])."""
    c = cheb(f, a, b, exact=True)
    # sum_k c_k T_k(t), t = (2u - a - b) / (b - a): expand T_k by T_{k+1} = 2 t T_k - T_{k-1}, in mp
    lin = [(-a - b) / (b - a), 2 / (b - a)]  # t as a polynomial in u
    def mul(p, q):
        out = [mp.mpf(0)] * (len(p) + len(q) - 1)
        for i, x in enumerate(p):
            for j, y in enumerate(q):
                out[i + j] += x * y
        return out
    t_prev, t_cur = [mp.mpf(1)], lin
    acc = [c[0]] + [mp.mpf(0)] * (len(c) - 1)
    for k in range(1, len(c)):
        for i, v in enumerate(t_cur):
            acc[i] += c[k] * v
        nxt = [2 * v for v in mul(lin, t_cur)]
        for i, v in enumerate(t_prev):
            nxt[i] -= v
        t_prev, t_cur = t_cur, nxt
    return [float(v) for v in acc]


P = cheb(lambda u: mp.erf(mp.sqrt(u)) / mp.sqrt(u) if u else 2 / mp.sqrt(mp.pi), mp.mpf(0), mp.mpf(4))
R = cheb(lambda z: mp.erfc(z) * mp.exp(z * z), mp.mpf(2), mp.mpf(6))
P1 = power(lambda u: mp.erf(mp.sqrt(u)) / mp.sqrt(u) if u else 2 / mp.sqrt(mp.pi), mp.mpf(0), mp.mpf(1))


def horner(c, u):
    p = 0.0
    for ck in reversed(c):
        p = p * u + ck
    return p


def clenshaw(c, t):
    b1 = b2 = 0.0
    for ck in reversed(c[1:]):
        b1, b2 = 2 * t * b1 - b2 + ck, b1
    return t * b1 - b2 + c[0]


def erf64(z: float) -> float:
    """The double evaluation as engine.cpp does it (exp from libm here; |z| < 1 by P1)."""
    import math
    a = abs(z)
    if a < 1:
        return z * horner(P1, z * z)
    if a < 2:
        return z * clenshaw(P, z * z / 2 - 1)
    e = 1 - math.exp(-z * z) * clenshaw(R, (min(a, 6.0) - 4) / 2)
    return math.copysign(e, z)


if __name__ == "__main__":
    for name, c in (("kErfP1", P1), ("kErfP", P), ("kErfcR", R)):
        print(f"static constexpr double {name}[{len(c)}] = {{")
        print(",\n".join(f"    {v!r}" for v in c) + "};")
    if "--check" in sys.argv:
        import random
        random.seed(0)
        worst = 0.0
        for _ in range(20000):
            z = random.uniform(-6.5, 6.5) if _ % 2 else random.uniform(-1, 1)
            ref = mp.erf(z)
            err = abs(erf64(z) - ref) / (abs(ref) * 2.0 ** -52)
            worst = max(worst, float(err))
        print(f"max error {worst:.2f} ulp over 20000 points in [-6.5, 6.5]")
