"""Integer kernels: bit-identical to the numpy reference for every shape, dtype and lane bound.

The kernels add values in narrow lanes (uint16/uint32 for uint8 data) over bounded numbers of
rows, read four row streams at once and fold narrow rows into wide ones; each of these has a
boundary where an off-by-one would silently corrupt a sum, so the tests sit on those
boundaries with the extreme values of each dtype. The exact mean/variance fast paths of
``Moments`` (float64 division when the integers are below 2**53) are checked against
``fractions.Fraction``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normlab import Moments, kernels
from normlab.exact import exact_ratio as _ratio

DTYPES = [np.uint8, np.int8, np.uint16, np.int16]


def assert_same(x: np.ndarray) -> None:
    got = kernels.reduce_integer(x)
    want = kernels._reduce_numpy(x)
    for name, g, w in zip(("sum", "sum of squares", "min", "max", "nnz"), got, want, strict=True):
        assert g.dtype == np.int64, name
        np.testing.assert_array_equal(g, w, err_msg=f"{name} of {x.dtype} {x.shape}")


@st.composite
def acb_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    # sizes around the 4-stream remainder, the 252-row fold, the 1024-value folding width
    # and the 256-value segment threshold
    a = draw(
        st.one_of(
            st.integers(1, 12), st.sampled_from([251, 252, 253, 255, 256, 1007, 1008, 1024, 1027])
        )
    )
    c = draw(st.sampled_from([1, 2, 3, 4, 7, 64, 1025]))
    b = draw(st.sampled_from([1, 2, 3, 255, 256, 300]))
    if a * b * c > 400_000:
        a = max(1, 400_000 // (b * c))
    info = np.iinfo(dtype)
    values = st.sampled_from([int(info.min), int(info.max), 0, 1]) | st.integers(
        int(info.min), int(info.max)
    )
    fill = draw(st.sampled_from(["random", "min", "max"]))
    if fill == "random":
        seed = draw(st.integers(0, 2**32 - 1))
        x = np.random.default_rng(seed).integers(
            info.min, info.max, (a, c, b), dtype=dtype, endpoint=True
        )
        x.reshape(-1)[: min(x.size, 5)] = draw(st.lists(values, min_size=5, max_size=5))[
            : min(x.size, 5)
        ]
        return x
    return np.full((a, c, b), info.min if fill == "min" else info.max, dtype=dtype)


@settings(max_examples=80, deadline=None)
@given(acb_arrays())
def test_matches_numpy_reference(x):
    assert_same(x)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=3, max_dims=3, max_side=40)))
def test_matches_numpy_reference_any_values(x):
    assert_same(x)


def test_non_contiguous_views_and_threads():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (3000, 40, 9), dtype=np.uint8)
    views = [x[::2], x[:, ::3], x[..., 1:], np.swapaxes(x, 0, 2)[:, :, :500]]
    # large enough (≥ 4 MiB a thread) for the work to be split between threads
    views += [
        rng.integers(0, 256, (4099, 2500, 1), dtype=np.uint8),  # row chunks per thread
        rng.integers(-(2**15), 2**15, (3001, 1500, 1), dtype=np.int16),
        rng.integers(-128, 128, (101, 3, 40_000), dtype=np.int8),  # tiles per thread
        rng.integers(0, 2**16, (2_500_003, 1, 1), dtype=np.uint16),  # global, folded
    ]
    before = kernels.get_threads()
    try:
        for threads in (1, 2):
            kernels.set_threads(threads)
            for view in views:
                assert_same(view)
    finally:
        kernels.set_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", ["min", "max"])
def test_lane_bounds_at_extreme_values(dtype, fill):
    """Several full folds of the narrowest lanes, every value at the dtype's extreme."""
    info = np.iinfo(dtype)
    value = int(info.min if fill == "min" else info.max)
    per_fold = kernels._LANES[np.dtype(dtype)][-1]
    # (rows, 1024) is reduced as is (no folding); one thread, so one task sees every row:
    # full lane folds, then a partial one, then rows left over by the four streams
    rows = per_fold + 5 if per_fold > 256 else 7 * per_fold + 3
    x = np.full((rows, 1024, 1), value, dtype=dtype)
    before = kernels.get_threads()
    try:
        kernels.set_threads(1)
        s1, s2, mn, mx, nz = kernels.reduce_integer(x)
    finally:
        kernels.set_threads(before)
    assert (s1 == rows * value).all() and (s2 == rows * value * value).all()
    assert (mn == value).all() and (mx == value).all() and (nz == rows * (value != 0)).all()


@pytest.mark.parametrize(
    "shape", [(1_000_003, 1, 1), (5, 3, 70_001), (70_001, 3, 1), (40, 1, 100_000)]
)
def test_folded_and_segmented_layouts(shape):
    x = np.random.default_rng(4).integers(-128, 128, shape, dtype=np.int8)
    x.reshape(-1)[-1] = -128
    assert_same(x)


def test_bool_and_wide_ints_through_moments():
    rng = np.random.default_rng(5)
    b = rng.random((999, 6)) < 0.3
    m = Moments("feature").update(b)
    np.testing.assert_array_equal(m.n_nonzero, b.sum(axis=0))
    assert m.mean.tolist() == [float(Fraction(int(k), 999)) for k in b.sum(axis=0)]
    w = rng.integers(-(2**31), 2**31, (50, 3), dtype=np.int64).astype(np.int32)
    assert Moments("feature").update(w).max.tolist() == w.max(axis=0).astype(float).tolist()


def fraction_mean_var(column) -> tuple[float, float]:
    vals = [Fraction(int(v)) for v in column]
    mean = sum(vals, Fraction(0)) / len(vals)
    return float(mean), float(sum(((v - mean) ** 2 for v in vals), Fraction(0)) / len(vals))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_var_fast_and_slow_paths_are_correctly_rounded(dtype):
    """Doubling a state 48 times keeps mean and variance but pushes n past 2**53 and the sums
    past int64: the float64 fast path and the Python-int path must give the same bits."""
    info = np.iinfo(dtype)
    x = np.random.default_rng(6).integers(info.min, info.max, (37, 5), dtype=dtype, endpoint=True)
    x[0, 0] = info.max
    want = np.array([fraction_mean_var(c) for c in x.T])
    m = Moments("feature").update(x)
    for doublings in range(49):
        np.testing.assert_array_equal(
            m.mean, want[:, 0], err_msg=f"mean after {doublings} doublings"
        )
        np.testing.assert_array_equal(
            m.var(), want[:, 1], err_msg=f"var after {doublings} doublings"
        )
        m = m + m
    assert int(m.count[0]) > 2**53 and m.exact_sums()[1][0] > 2**63


def test_ratio_is_correctly_rounded_near_2_53():
    cases = [
        (2**53 - 1, 3),
        (2**53 + 1, 3),
        (-(2**53) + 1, 7),
        (2**62 + 12345, 2**40 + 1),
        (1, 2**53 + 1),
    ]
    num = np.array([a for a, _ in cases], dtype=np.int64)
    den = np.array([b for _, b in cases], dtype=np.int64)
    want = [float(Fraction(a, b)) for a, b in cases]
    assert _ratio(num, den).tolist() == want
    assert _ratio(num.astype(object), den.astype(object)).tolist() == want
    assert np.isnan(_ratio(np.array([1, 2]), np.array([0, -1]))).all()
