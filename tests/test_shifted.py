"""The shifted-float representation (normlab.shifted): Chan's merge, as Moments use it."""

from __future__ import annotations

import numpy as np

import normlab
from normlab.shifted import ShiftedCoMoments, ShiftedMoments


def test_moments_of_float_data_hold_shifted_moments_that_merge_like_the_whole():
    x = np.random.default_rng(1).normal(1e6, 1.0, (200, 3))
    whole = normlab.Moments().update(x)
    parts = normlab.Moments().update(x[:70]) + normlab.Moments().update(x[70:])
    assert isinstance(whole.sums, ShiftedMoments)
    np.testing.assert_allclose(parts.mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(parts.var(), x.var(axis=0), rtol=1e-9)
    np.testing.assert_allclose(whole.var(), parts.var(), rtol=1e-9)


def test_fractional_weights_turn_exact_sums_into_shifted_ones():
    x = np.arange(12, dtype=np.uint8).reshape(6, 2)
    m = normlab.Moments().update(x[:3])
    m.update(x[3:], sample_weight=[0.5, 1.5, 1.0])
    assert isinstance(m.sums, ShiftedMoments) and not m.exact
    want = np.average(x.astype(float), axis=0, weights=[1, 1, 1, 0.5, 1.5, 1.0])
    np.testing.assert_allclose(m.mean, want)


def test_shifted_comoments_merge_in_matrix_form():
    x = np.random.default_rng(2).normal(5.0, 2.0, (120, 3))
    a = ShiftedCoMoments(x[0])
    a.update(x[:50], 0)
    b = ShiftedCoMoments(x[50])
    b.update(x[50:], 0)
    a.merge(50, b, 70)
    centered = x - x.mean(axis=0)
    np.testing.assert_allclose(a.comoment, centered.T @ centered, rtol=1e-10)
