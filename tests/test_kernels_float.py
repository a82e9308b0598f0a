"""Float kernel: exact-rational references on hard cases, thread independence, NaN/inf/overflow.

The kernel sums each block of a fixed grid of rows from a per-block shift and redoes a block
from its own mean where cancellation would lose digits; the hard cases are the ones that
force that second pass (a large offset, a far first row) and the ones that sit on the grid's
boundaries (1024-row blocks, four streams, 1024-value folding, 1024-column tiles). Every
expected value is computed from the stored numbers with ``fractions.Fraction``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab import Moments, kernels
from normlab.errors import EmptyDataError, FloatOverflowError, NonFiniteError


def exact_mean_var(values: np.ndarray) -> tuple[float, float]:
    """Mean and population variance of the finite values, rounded once from exact rationals."""
    exact = [Fraction(float(v)) for v in values.reshape(-1) if np.isfinite(v)]
    mean = sum(exact, Fraction(0)) / len(exact)
    return float(mean), float(sum(((v - mean) ** 2 for v in exact), Fraction(0)) / len(exact))


def per_column(x: np.ndarray) -> list[tuple[float, float]]:
    return [exact_mean_var(x[:, c]) for c in range(x.shape[1])]


@st.composite
def hard_columns(draw):
    """``(rows, columns)`` float data with large offsets, far first rows, NaN and block edges."""
    rows = draw(st.sampled_from([1, 2, 3, 5, 1023, 1024, 1025, 2051, 4100]))
    columns = draw(st.sampled_from([1, 2, 3, 5]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    offset = draw(st.sampled_from([0.0, 1.0, -3e4, 1e9, -1e12, 1e15, 2.0**60]))
    spread = draw(st.sampled_from([1e-3, 1.0, 1e6]))
    x = offset + spread * rng.standard_normal((rows, columns))
    if draw(st.booleans()):  # a far first row: the block's shift is far from its mean
        x[0] = offset + spread * draw(st.sampled_from([1e4, -1e8, 1e12]))
    if draw(st.booleans()):  # repeated values (zero variance pieces, exact zeros)
        x[rows // 3 : rows // 2] = draw(st.sampled_from([0.0, offset]))
    x = x.astype(dtype)
    nan_rate = draw(st.sampled_from([0.0, 0.0, 0.01, 0.5]))
    x[rng.random(x.shape) < nan_rate] = np.nan
    return x


@settings(max_examples=40, deadline=None)
@given(hard_columns(), st.sampled_from([1, 2]))
def test_matches_fractions_on_hard_cases(x, threads):
    """Mean to 1e-13 (of mean |x| near 0), variance to 1e-9 (1e-13 of mean² at spread 0)."""
    before = kernels.get_threads()
    try:
        kernels.set_threads(threads)
        m = Moments(nan_policy="omit").update(x)
    finally:
        kernels.set_threads(before)
    if not np.isfinite(x).any():  # nothing left to describe: an error, never NaN
        with pytest.raises(EmptyDataError):
            m.var()
        return
    for c, finite in enumerate(np.isfinite(x).T):
        if not finite.any():
            assert m.count[c] == 0 and m.n_nonfinite[c] == len(x)
            continue
        mean, var = exact_mean_var(x[:, c])
        assert m.count[c] == finite.sum() and m.n_nonfinite[c] == (~finite).sum()
        scale = float(np.nanmean(np.abs(x[:, c].astype(np.float64))))  # mean ≈ 0: its digits
        assert m.mean[c] == pytest.approx(mean, rel=1e-13, abs=1e-13 * scale + 1e-300)
        assert m.var()[c] == pytest.approx(var, rel=1e-9, abs=1e-13 * mean * mean + 1e-300)
        assert m.min[c] == np.nanmin(x[:, c]) and m.max[c] == np.nanmax(x[:, c])
        assert m.n_nonzero[c] == np.count_nonzero(x[finite, c])


def test_offset_variance_within_1e9_of_exact():
    """1e9 + U(0, 1e-3): the digits that matter sit 12 decimal places below the offset."""
    x = 1e9 + np.random.default_rng(3).uniform(0, 1e-3, (5000, 3))
    got = Moments().update(x).var()
    for c, (_, var) in enumerate(per_column(x)):
        assert got[c] == pytest.approx(var, rel=1e-9)


@pytest.mark.slow
def test_float32_ten_million_samples_exact():
    """10⁷ float32 values, exact reference from integers (x·2¹⁴ − 1000·2¹⁴ fits int64)."""
    x = (1000 + np.random.default_rng(5).random(10_000_000)).astype(np.float32)
    ticks = (x.astype(np.float64) * 2**14 - 1000 * 2**14).astype(np.int64)  # exact: ulp 2⁻¹⁴
    n = len(ticks)
    s1, s2 = int(ticks.sum()), int((ticks * ticks).sum())
    mean = Fraction(s1, n * 2**14) + 1000
    var = Fraction(n * s2 - s1 * s1, n * n * 2**28)
    for axis in ("feature", "global"):
        m = Moments(axis).update(x[:, None])
        assert float(m.mean.reshape(-1)[0]) == pytest.approx(float(mean), rel=1e-15)
        assert float(m.var().reshape(-1)[0]) == pytest.approx(float(var), rel=1e-9)


@pytest.mark.parametrize(
    ("shape", "axis", "channel_axis"),
    [
        ((5000, 784), "feature", -1),  # blocks of 1024 rows, one tile
        ((3000, 1500), "feature", -1),  # two column tiles
        ((300, 40, 40, 3), "channel", -1),  # HWC: folded rows of 1023 values
        ((30, 3, 40, 40), "channel", 0),  # CHW: segments
        ((200, 50, 50), "global", -1),  # folded rows of 1024 values
    ],
)
def test_same_bits_for_any_thread_count(shape, axis, channel_axis):
    x = np.random.default_rng(7).normal(3, 2, shape).astype(np.float32)
    x.reshape(-1)[::997] = np.nan
    before = kernels.get_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            kernels.set_threads(threads)
            results.append(Moments(axis, channel_axis=channel_axis, nan_policy="omit").update(x))
    finally:
        kernels.set_threads(before)
    assert results[0] == results[1] == results[2]


def test_clean_and_masked_blocks_give_the_same_bits():
    """A NaN in block 0 switches blocks 1-3 of the share to the masked kernel: same bits."""
    x = np.random.default_rng(8).normal(0, 1, (4096, 1, 20))
    dirty = x.copy()
    dirty[0, 0, :] = np.nan
    before = kernels.get_threads()
    try:
        kernels.set_threads(1)
        clean_blocks, _ = kernels._float_blocks(x)
        dirty_blocks, _ = kernels._float_blocks(dirty)
    finally:
        kernels.set_threads(before)
    np.testing.assert_array_equal(clean_blocks[:, 1:], dirty_blocks[:, 1:])
    assert dirty_blocks[7, 0, 0].tolist() == [1.0] * 20  # the non-finite count of block 0


def test_numpy_fallback_agrees():
    x = np.random.default_rng(9).normal(5, 1, (2100, 3, 7))
    x[3, 1, 2] = np.inf
    x[5, 0, 0] = np.nan
    got, want = kernels.reduce_float(x), kernels._reduce_float_numpy(x)
    for name in ("n_finite", "min", "max", "n_nonzero", "n_nonfinite", "n_overflow"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_allclose(got.shift + got.mean_shifted, want.shift + want.mean_shifted)
    np.testing.assert_allclose(got.m2, want.m2, rtol=1e-12)


def test_infinities_are_counted_and_left_out_of_min_and_max():
    x = np.random.default_rng(10).normal(0, 1, (3000, 4))
    x[7, 0], x[2000, 1], x[10, 2] = np.inf, -np.inf, np.nan
    m = Moments(nan_policy="omit").update(x)
    assert m.n_nonfinite.tolist() == [1, 1, 1, 0]
    finite = np.where(np.isfinite(x), x, np.nan)
    np.testing.assert_array_equal(m.min, np.nanmin(finite, 0))
    np.testing.assert_array_equal(m.max, np.nanmax(finite, 0))
    with pytest.raises(NonFiniteError, match="sample 7"):
        Moments().update(x)


@pytest.mark.parametrize("nan_policy", ["raise", "omit"])
def test_overflow_is_told_apart_from_nan(nan_policy):
    """Finite values near ±1e308 overflow Σd² (no NaN in the input): a FloatOverflowError."""
    x = np.zeros((10, 3))
    x[:, 1] = np.tile([1.5e308, -1.5e308], 5)
    with pytest.raises(FloatOverflowError, match=r"statistic \(1,\).*not NaN/inf"):
        Moments(nan_policy=nan_policy).update(x)
    big = np.full((10, 3), 1.5e308)  # near the limit but no spread: fine
    m = Moments(nan_policy=nan_policy).update(big)
    assert (m.var() == 0.0).all() and m.mean[0] == pytest.approx(1.5e308)
    big[::2] = 1.4e308  # a spread of 1e307: its square (the variance) is beyond float64
    with pytest.raises(FloatOverflowError):
        Moments(nan_policy=nan_policy).update(big)


def test_float16_and_bfloat16_accumulate_in_float64():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(12).normal(100, 0.5, (3000, 17))
    half = x.astype(np.float16)
    m = Moments().update(half)
    np.testing.assert_allclose(m.var(), half.astype(np.float64).var(0), rtol=1e-12)
    assert m.value_scale["dtype"] == "float"
    bf = torch.tensor(x).to(torch.bfloat16)
    b = Moments().update(bf)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(bf), batch_size=700)
    from_loader = normlab.compute_stats(loader, progress=False)
    np.testing.assert_allclose(from_loader.var(), b.var(), rtol=1e-12)
    stored = bf.float().numpy().astype(np.float64)
    np.testing.assert_allclose(b.var(), stored.var(0), rtol=1e-12)
    np.testing.assert_allclose(b.mean, stored.mean(0), rtol=1e-14)


@pytest.mark.parametrize("scale", [1e160, 1e200, 1e300])
def test_squared_deviations_beyond_float64_are_an_overflow_never_a_zero_variance(scale):
    """Values far apart at 1e200: Σd² and s1·mean both overflow to inf, and inf − inf is NaN.

    Before the fix ``max(0, NaN)`` read 0: a variance of 0 for data spread over 1e199.
    """
    x = np.random.default_rng(5).random((30, 3)) * scale
    with pytest.raises(FloatOverflowError, match="not NaN/inf"):
        Moments().update(x)
    with pytest.raises(FloatOverflowError):
        normlab.compute_stats(x, "feature")
