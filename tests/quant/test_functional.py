"""binsr.quant.functional: the tie rule and every estimator's backward against its formula."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from binsr.quant import functional as QF

FLOATS = arrays(
    np.float32,
    st.integers(1, 64),
    elements=st.one_of(st.just(0.0), st.just(-0.0), st.just(1.0), st.just(-1.0), st.floats(-3, 3, width=32)),
)


def _grad(fn, x: np.ndarray) -> np.ndarray:
    """d/dx of sum(fn(x) * g) divided by g, for a non-zero upstream gradient g."""
    t = torch.tensor(x, requires_grad=True)
    upstream = torch.linspace(0.5, 2.0, t.numel()) * (-1.0) ** torch.arange(t.numel())
    (fn(t) * upstream).sum().backward()
    return t.grad.numpy() / upstream.numpy()


@given(FLOATS)
@settings(max_examples=50, deadline=None)
def test_sign_tie_rule(x):
    s = QF.sign(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(s, np.where(x >= 0, 1.0, -1.0))
    assert s.dtype == np.float32 and not (s == 0).any()


def test_zeros_binarize_to_plus_one():
    z = torch.tensor([0.0, -0.0])
    for fn in (QF.sign, QF.sign_ste, QF.sign_clipped_ste, QF.approx_sign, lambda v: QF.ede_sign(v, 1.0, 1.0)):
        assert torch.equal(fn(z), torch.ones(2))


def test_sign_keeps_dtype():
    assert QF.sign(torch.zeros(3, dtype=torch.float64)).dtype == torch.float64


@given(FLOATS)
@settings(max_examples=40, deadline=None)
def test_ste_gradient_is_identity(x):
    np.testing.assert_allclose(_grad(QF.sign_ste, x), np.ones_like(x), rtol=1e-6)


@given(FLOATS, st.sampled_from([0.5, 1.0, 2.0]))
@settings(max_examples=40, deadline=None)
def test_clipped_ste_gradient(x, clip):
    expected = (np.abs(x) <= clip).astype(np.float32)
    np.testing.assert_allclose(_grad(lambda t: QF.sign_clipped_ste(t, clip), x), expected, rtol=1e-6)


@given(FLOATS)
@settings(max_examples=40, deadline=None)
def test_approx_sign_gradient(x):
    expected = np.where(np.abs(x) < 1, 2 - 2 * np.abs(x), 0.0)
    np.testing.assert_allclose(_grad(QF.approx_sign, x), expected, rtol=1e-5, atol=1e-6)


@given(FLOATS, st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
@settings(max_examples=40, deadline=None)
def test_ede_gradient(x, p):
    t, k = QF.ede_schedule(p)
    expected = k * t * (1 - np.tanh(t * x.astype(np.float64)) ** 2)
    np.testing.assert_allclose(_grad(lambda v: QF.ede_sign(v, t, k), x), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("p", "t", "k"), [(0.0, 0.1, 10.0), (0.5, 1.0, 1.0), (1.0, 10.0, 1.0)])
def test_ede_schedule_endpoints(p, t, k):
    got_t, got_k = QF.ede_schedule(p)
    assert math.isclose(got_t, t, rel_tol=1e-12) and math.isclose(got_k, k, rel_tol=1e-12)


def test_ede_first_stage_keeps_peak_derivative_one():
    for p in (0.0, 0.2, 0.4):
        t, k = QF.ede_schedule(p)
        assert math.isclose(k * t, 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_ede_schedule_rejects_bad_progress(p):
    with pytest.raises(ValueError):
        QF.ede_schedule(p)
