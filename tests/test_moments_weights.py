"""Weighted statistics: Moments.update(x, sample_weight=w) and compute_stats(sample_weight=)."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab import Moments, NormlabError
from normlab.errors import NonFiniteError


def repeated(x: np.ndarray, w: np.ndarray) -> Moments:
    """Integer weights mean copies: the reference is the unweighted statistics of the copies."""
    return Moments().update(np.repeat(x, w, axis=0))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["uint8", "int8", "uint16", "int16", "bool"]),
    cut=st.integers(0, 40),
)
def test_integer_weights_are_exact_copies_for_any_chunking(seed, dtype, cut):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if dtype != "bool" else None
    x = (
        rng.integers(0, 2, (40, 3)).astype(bool)
        if info is None
        else rng.integers(info.min, int(info.max) + 1, (40, 3)).astype(dtype)
    )
    w = rng.integers(0, 6, 40)
    whole = Moments().update(x, sample_weight=w)
    split = Moments().update(x[:cut], sample_weight=w[:cut])
    split += Moments().update(x[cut:], sample_weight=w[cut:])
    assert whole.exact and whole == split  # same bits, saved form included
    if w.sum():
        ref = repeated(x, w)
        np.testing.assert_array_equal(whole.mean, ref.mean)
        np.testing.assert_array_equal(whole.var(), ref.var())
        np.testing.assert_array_equal(whole.count, ref.count)


def test_whole_float_weights_take_the_exact_path():
    x = np.arange(12, dtype=np.uint8).reshape(6, 2)
    m = Moments().update(x, sample_weight=np.array([1.0, 2, 0, 1, 3, 1]))
    assert m.exact and m.count.dtype == np.int64 and m.n_samples_seen == 5


def test_huge_integer_weights_stay_exact_beyond_int64_sums():
    """max(w)·Σx² passes 2**63: the sums fall back to Python ints, still exact."""
    x = np.full((4, 1), 65535, np.uint16)
    w = np.array([2**40, 2**40 + 1, 3, 2**39])
    m = Moments().update(x, sample_weight=w)
    assert m.mean[0] == 65535.0 and m.var()[0] == 0.0
    x2 = np.array([[0], [65535]], np.uint16)
    w2 = np.array([2**45, 2**45 + 7])
    n = 2 * 2**45 + 7
    exact_mean = fractions.Fraction((2**45 + 7) * 65535, n)
    assert Moments().update(x2, sample_weight=w2).mean[0] == float(exact_mean)


def test_int32_weighted_sums_are_exact():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**31), 2**31 - 1, (30, 2)).astype(np.int32)
    w = rng.integers(0, 10**6, 30)
    m = Moments().update(x, sample_weight=w)
    for j in range(2):
        ref = fractions.Fraction(
            sum(int(a) * int(b) for a, b in zip(w, x[:, j], strict=True)), int(w.sum())
        )
        assert m.mean[j] == float(ref)


def test_weight_sums_beyond_exact_counts_are_refused():
    with pytest.raises(NormlabError, match="2\\*\\*62"):
        Moments().update(np.ones((2, 1), np.uint8), sample_weight=np.array([2**62, 2**62]))


@pytest.mark.parametrize("data_dtype", [np.float64, np.uint8])
def test_fractional_weights_equal_standard_scaler(data_dtype):
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    x = (rng.normal(50, 20, (500, 6)).clip(0, 255)).astype(data_dtype)
    w = rng.random(500) * 3
    m = Moments().update(x[:123], sample_weight=w[:123]).update(x[123:], sample_weight=w[123:])
    ref = StandardScaler().fit(x.astype(np.float64), sample_weight=w)
    assert not m.exact and m.value_scale == normlab.moments.value_scale_of(data_dtype)
    np.testing.assert_allclose(m.mean, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(m.var(), ref.var_, rtol=1e-12)
    np.testing.assert_allclose(m.count, w.sum(), rtol=1e-12)


def test_exact_and_fractional_sides_merge_as_floats(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (60, 4), dtype=np.uint8)
    w = np.r_[np.ones(30, np.int64), np.full(30, 0.25)]
    exact_side = Moments().update(x[:30])
    float_side = Moments().update(x[30:], sample_weight=w[30:])
    for merged in (exact_side + float_side, float_side + exact_side):
        ref = Moments().update(x.astype(np.float64), sample_weight=w)
        np.testing.assert_allclose(merged.mean, ref.mean, rtol=1e-13)
        np.testing.assert_allclose(merged.var(), ref.var(), rtol=1e-12)
        merged.save(tmp_path / "m.safetensors")
        assert Moments.load(tmp_path / "m.safetensors") == merged


def test_weighted_nan_omit_per_channel():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 2, 3))
    x[5, 1, 2] = np.nan
    w = rng.random(50)
    m = Moments("channel", nan_policy="omit").update(x, sample_weight=w)
    flat = x.reshape(-1, 3)
    wr = np.repeat(w, 2)
    for c in range(3):
        ok = np.isfinite(flat[:, c])
        assert m.count[c] == pytest.approx(wr[ok].sum(), rel=1e-13)
        assert m.mean[c] == pytest.approx(np.average(flat[ok, c], weights=wr[ok]), rel=1e-12)
    assert m.n_nonfinite[2] == 1
    with pytest.raises(NonFiniteError):
        Moments("channel").update(x, sample_weight=w)


@pytest.mark.parametrize(
    ("weights", "error"),
    [
        (np.array([1.0, -1.0, 1.0]), "negative"),
        (np.array([1.0, np.nan, 1.0]), "NaN"),
        (np.ones(4), "one weight per sample"),
        (np.array(["a", "b", "c"]), "expected numbers"),
    ],
)
def test_bad_weights_are_refused_in_words(weights, error):
    with pytest.raises(NormlabError, match=error):
        Moments().update(np.ones((3, 2)), sample_weight=weights)


def test_zero_weight_samples_are_left_out():
    x = np.array([[1.0], [1000.0], [3.0]])
    m = Moments().update(x, sample_weight=[1, 0, 1])
    assert m.mean[0] == 2.0 and m.max[0] == 3.0 and m.n_samples_seen == 2


def test_compute_stats_slices_the_weights_along_the_chunks(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (100, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    w = rng.integers(0, 4, 100)
    got = normlab.compute_stats(tmp_path / "x.npy", axis="channel", chunk_size=7, sample_weight=w)
    assert got == Moments("channel").update(x, sample_weight=w)
    with pytest.raises(NormlabError, match="99 sample weights"):
        normlab.compute_stats(x, sample_weight=w[:99])
    with pytest.raises(NormlabError, match="100 samples but 101"):
        normlab.compute_stats(x, sample_weight=np.r_[w, 1])
    with pytest.raises(NormlabError, match="serial engine"):
        normlab.compute_stats(x, sample_weight=w, histogram=True)
