"""Numerical stress: merge laws for every accepted dtype against exact Fraction references,
hard cases (large offsets, dynamic range, subnormals, tiny counts, int64 overflow, 10⁷ float32
samples) and zero/tiny variance in every scheme.

The number of generated cases follows the hypothesis profile (``tests/conftest.py``):
``HYPOTHESIS_PROFILE=ci`` runs 1200 per dtype, 10 800 merge-law cases in all.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import normlab
from normlab import Moments, schemes
from normlab.errors import NormlabError, NormlabWarning

INT_DTYPES = [np.bool_, np.uint8, np.uint16, np.int8, np.int16, np.int32]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
EPS = np.finfo(np.float64).eps
TINY = 2.0**-1074  # the smallest subnormal float64


def float_tolerance(n: int) -> tuple[float, float]:
    """The stated float bound: ``|var − exact| ≤ rtol·exact + atol`` for ``n`` values.

    Rounding of the shifted deviations, of the squares and of the Chan merge each cost at most a
    few ulps per value, relative to the variance itself (the shift is one of the data's values,
    so ``(mean − shift)² ≤ range² ≤ 2n·var``); ``atol`` covers squares that underflow into the
    subnormal range.
    """
    return 4 * (n + 2) * EPS, 4 * (n + 2) * TINY


def exact_column_stats(x: np.ndarray, ddof: int = 0) -> tuple[list[Fraction], list[Fraction]]:
    """Exact mean and variance of every column of the stored values."""
    flat = x.reshape(x.shape[0], -1)
    means, variances = [], []
    for column in flat.T:
        vals = [Fraction(int(v)) if x.dtype.kind in "biu" else Fraction(float(v)) for v in column]
        n = len(vals)
        mean = sum(vals, Fraction(0)) / n
        means.append(mean)
        ss = sum(((v - mean) ** 2 for v in vals), Fraction(0))
        variances.append(ss / (n - ddof) if n > ddof else Fraction(0))
    return means, variances


def elements_for(dtype) -> st.SearchStrategy | None:
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        # |x| ≤ 1e100 keeps every variance finite (squares of 1e154 would overflow)
        return st.floats(-1e100, 1e100, allow_nan=False, allow_subnormal=True)
    if dtype.kind == "f":
        return st.floats(width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False)
    return None  # the whole integer range


@st.composite
def split_and_order(draw, dtype):
    """An array, a split into up to five (possibly empty) parts, and a merge plan."""
    n = draw(st.integers(1, 40))
    features = draw(st.integers(1, 3))
    x = draw(hnp.arrays(dtype, (n, features), elements=elements_for(dtype)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    parts = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    order = draw(st.permutations(range(len(parts))))
    tree = draw(st.booleans())
    return x, [parts[i] for i in order], tree


def merged_stats(parts: list[np.ndarray], tree: bool) -> Moments:
    """Per-part statistics merged left to right, or pairwise as a tree."""
    states = [Moments().update(p) for p in parts]
    if not tree:
        out = Moments()
        for s in states:
            out += s
        return out
    while len(states) > 1:
        states = [
            states[i] + states[i + 1] if i + 1 < len(states) else states[i]
            for i in range(0, len(states), 2)
        ]
    return states[0]


def assert_exact_integer(m: Moments, x: np.ndarray) -> None:
    means, variances = exact_column_stats(x)
    assert m.mean.tolist() == [float(v) for v in means]  # correctly rounded, bit for bit
    assert m.var().tolist() == [float(v) for v in variances]
    if x.shape[0] > 1:
        _, sample_var = exact_column_stats(x, ddof=1)
        assert m.var(ddof=1).tolist() == [float(v) for v in sample_var]


def assert_float_close(m: Moments, x: np.ndarray) -> None:
    n = x.shape[0]
    rtol, atol = float_tolerance(n)
    means, variances = exact_column_stats(x)
    magnitude = np.abs(x.astype(np.float64)).max(axis=0)
    for j, (mean, var) in enumerate(zip(means, variances, strict=True)):
        got_var, got_mean = Fraction(float(m.var()[j])), Fraction(float(m.mean[j]))
        assert abs(got_var - var) <= rtol * var + Fraction(atol), (j, float(got_var), float(var))
        assert abs(got_mean - mean) <= Fraction(rtol) * Fraction(float(magnitude[j])) + Fraction(
            atol
        )


@pytest.fixture
def one_numba_thread():
    """Thousands of tiny arrays: a parallel kernel launch costs more than the work, and on a
    busy 2-core machine its threads contend; one thread keeps the run time bounded."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_merge_law_any_split_any_order(dtype, one_numba_thread):
    """stats(A₁) + … + stats(Aₖ) in any order or tree == stats(A), against Fraction references."""

    @settings(deadline=None)  # max_examples from the profile: 60 locally, 1200 in CI
    @given(split_and_order(dtype))
    def check(case):
        x, parts, tree = case
        merged = merged_stats(parts, tree)
        assert merged.n_samples_seen == x.shape[0]
        assert np.array_equal(merged.min, x.min(axis=0).astype(np.float64))
        assert np.array_equal(merged.max, x.max(axis=0).astype(np.float64))
        assert np.array_equal(merged.n_nonzero, np.count_nonzero(x, axis=0))
        if np.dtype(dtype).kind in "biu":
            assert merged == Moments.from_array(x)  # every tensor, bit for bit
            assert_exact_integer(merged, x)
        else:
            assert_float_close(merged, x)

    check()


# ----------------------------------------------------------------------------- hard cases
def _chunked(x: np.ndarray, rng: np.random.Generator, n_parts: int = 7) -> Moments:
    cuts = np.sort(rng.integers(0, len(x) + 1, n_parts - 1))
    parts = np.split(x, cuts)
    order = rng.permutation(len(parts))
    return merged_stats([parts[i] for i in order], tree=False)


def _relative_error(got: float, exact: Fraction) -> float:
    return float(abs(Fraction(got) - exact) / exact)


def test_large_offset_tiny_spread():
    """1e9 + U(0, 1e-3): the variance stays within 1e-9 of the exact one (naive Σx² fails)."""
    rng = np.random.default_rng(1)
    x = (1e9 + rng.uniform(0, 1e-3, (5000, 2))).astype(np.float64)
    m = _chunked(x, rng)
    means, variances = exact_column_stats(x)
    for j in range(2):
        assert _relative_error(float(m.var()[j]), variances[j]) <= 1e-9
        assert _relative_error(float(m.mean[j]), means[j]) <= 1e-15
    naive = (x**2).mean(axis=0) - x.mean(axis=0) ** 2  # the textbook one-pass formula
    assert _relative_error(float(naive[0]), variances[0]) > 1e-3  # the test can tell


def test_dynamic_range_1e_minus30_to_1e30():
    rng = np.random.default_rng(2)
    magnitudes = 10.0 ** rng.uniform(-30, 30, (3000, 3))
    x = magnitudes * rng.choice([-1.0, 1.0], magnitudes.shape)
    m = _chunked(x, rng)
    means, variances = exact_column_stats(x)
    rtol, _ = float_tolerance(len(x))
    for j in range(3):
        assert _relative_error(float(m.var()[j]), variances[j]) <= rtol
        assert abs(Fraction(float(m.mean[j])) - means[j]) <= rtol * Fraction(
            float(np.abs(x[:, j]).max())
        )


@pytest.mark.parametrize("scale", [TINY, 2.0**-1060, 2.0**-1030, 2.0**-1023])
def test_subnormal_values(scale):
    """Subnormal data: finite results within the stated absolute bound; never NaN."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1000, (500, 2)).astype(np.float64) * scale  # exact multiples of scale
    m = _chunked(x, rng)
    means, variances = exact_column_stats(x)
    rtol, atol = float_tolerance(len(x))
    assert np.isfinite(m.var()).all() and np.isfinite(m.mean).all()
    for j in range(2):
        assert abs(Fraction(float(m.var()[j])) - variances[j]) <= rtol * variances[j] + Fraction(
            atol
        )
        assert abs(Fraction(float(m.mean[j])) - means[j]) <= Fraction(
            rtol * float(x[:, j].max()) + atol
        )


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_and_two_samples_at_the_dtype_extremes(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        lo, hi = False, True
    elif dtype.kind in "iu":
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    elif dtype == np.float64:
        lo, hi = -1e150, 1e150  # (hi − lo)² must stay finite
    else:
        lo, hi = np.finfo(dtype).min, np.finfo(dtype).max
    one = np.array([[hi]], dtype=dtype)
    m1 = Moments.from_array(one)
    assert m1.var().tolist() == [0.0] and m1.mean.tolist() == [float(hi)]
    with pytest.raises(NormlabError, match=r"ddof=1 .* only 1 \(from 1 samples"):
        m1.var(ddof=1)  # undefined: refused, naming ddof and the count (never NaN)
    two = np.array([[lo], [hi]], dtype=dtype)
    m2 = Moments().update(two[:1]) + Moments().update(two[1:])
    exact_var = (Fraction(float(hi)) - Fraction(float(lo))) ** 2 / 4
    exact_mean = (Fraction(float(hi)) + Fraction(float(lo))) / 2
    assert m2.mean.tolist() == [float(exact_mean)]
    if dtype.kind in "biu":
        assert m2.var().tolist() == [float(exact_var)]
    else:
        assert _relative_error(float(m2.var()[0]), exact_var) <= float_tolerance(2)[0]


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_equal_columns_have_exactly_zero_variance(dtype):
    rng = np.random.default_rng(4)
    dtype = np.dtype(dtype)
    values = [1, 0] if dtype.kind == "b" else [7, -3, 0] if dtype.kind == "i" else [7, 0]
    if dtype.kind == "f":
        values += [1e-5 if dtype == np.float16 else 1e-40 if dtype == np.float32 else 1e9 + 0.1]
    x = np.tile(np.array(values, dtype=dtype), (999, 1))
    m = _chunked(x, rng)
    assert m.var().tolist() == [0.0] * len(values)
    assert m.mean.tolist() == [float(v) for v in x[0]]
    assert m.is_constant().all()


def test_float16_full_range():
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**16, (4000, 2), dtype=np.uint16)
    x = bits.view(np.float16)
    x = np.where(np.isfinite(x), x, np.float16(0))  # every finite float16, subnormals included
    m = _chunked(x, rng)
    assert_float_close(m, x)


def _exact_sums_int(m: np.ndarray) -> tuple[int, int]:
    """Exact Σm and Σm² of |m| < 2³¹ as Python ints: m = hi·2¹⁶ + lo keeps int64 partials."""
    m = m.astype(np.int64)
    hi, lo = m >> 16, m & 0xFFFF
    s1 = int(hi.sum()) * 2**16 + int(lo.sum())
    s2 = int((hi * hi).sum()) * 2**32 + int((hi * lo).sum()) * 2**17 + int((lo * lo).sum())
    return s1, s2


def test_float32_ten_million_samples():
    """10⁷ float32 values near 1e4: exact reference from the values' integer mantissas."""
    rng = np.random.default_rng(6)
    n = 10_000_000
    x = (1e4 + rng.standard_normal(n, dtype=np.float32)).astype(np.float32)[:, None]
    # float32 values in [2¹³, 2¹⁴) are multiples of 2⁻¹⁰: exact integers after scaling
    assert x.min() >= 2**13 and x.max() < 2**14
    mantissas = (x[:, 0].astype(np.float64) * 2**10).astype(np.int64)
    s1, s2 = _exact_sums_int(mantissas)
    exact_mean = Fraction(s1, n * 2**10)
    exact_var = Fraction(n * s2 - s1 * s1, n * n * 2**20)
    m = normlab.compute_stats(x, chunk_size=1_000_003)
    assert _relative_error(float(m.mean[0]), exact_mean) <= 1e-15
    assert _relative_error(float(m.var()[0]), exact_var) <= 1e-9
    naive32 = float(np.var(x[:, 0], dtype=np.float32))  # float32 accumulation, for contrast
    assert _relative_error(float(m.var()[0]), exact_var) < _relative_error(naive32, exact_var)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int32], ids=lambda d: np.dtype(d).name
)
def test_integer_sums_beyond_int64(dtype):
    """Merge 2⁵⁰ copies (by doubling) and unequal states: sums far past 2⁶³, still exact."""
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    base = rng.integers(info.min, info.max, (64, 3), endpoint=True, dtype=dtype)
    base[0] = info.max
    base[1] = info.min
    big = Moments.from_array(base)
    for _ in range(50):
        big += big  # count 64·2⁵⁰: Σx² reaches ~2⁵⁶·max² > 2⁶³
    copies = 2**50
    s1, s2 = big.exact_sums()
    assert max(abs(int(v)) for v in s2.reshape(-1)) > 2**63
    assert big.count.tolist() == [64 * copies] * 3
    means, variances = exact_column_stats(base)  # duplicating data keeps mean and variance
    assert big.mean.tolist() == [float(v) for v in means]
    assert big.var().tolist() == [float(v) for v in variances]
    n = 64 * copies
    assert big.var(ddof=1).tolist() == [float(v * n / (n - 1)) for v in variances]
    # an unequal merge: big + one more chunk, against the Fraction of the combined sums
    extra = rng.integers(info.min, info.max, (5, 3), endpoint=True, dtype=dtype)
    total = big + Moments.from_array(extra)
    for j in range(3):
        col = [int(v) for v in extra[:, j]]
        t1 = int(s1[j]) + sum(col)
        t2 = int(s2[j]) + sum(v * v for v in col)
        nt = n + 5
        assert float(total.mean[j]) == float(Fraction(t1, nt))
        assert float(total.var()[j]) == float(Fraction(nt * t2 - t1 * t1, nt * nt))
    # the exact sums survive a file round trip
    assert normlab.load(_saved(total)) == total


def _saved(obj) -> str:
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "big.safetensors")
    obj.save(path)
    return path


# ------------------------------------------------------------------- zero and tiny variance
@st.composite
def near_constant(draw):
    """Columns that are constant, or spread by an ulp, a subnormal or a tiny fraction."""
    dtype = np.dtype(
        draw(st.sampled_from([np.uint8, np.int16, np.float16, np.float32, np.float64]))
    )
    n = draw(st.integers(1, 30))
    columns = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["constant", "ulp", "tiny", "subnormal", "zero"]))
        if dtype.kind in "iu":
            base = draw(st.integers(int(np.iinfo(dtype).min), int(np.iinfo(dtype).max) - 1))
            col = np.full(n, base, dtype)
            if kind != "constant" and n > 1:
                col[draw(st.integers(0, n - 1))] = base + 1
        else:
            finfo = np.finfo(dtype)
            base = dtype.type(draw(st.floats(-1e4, 1e4, width=8 * dtype.itemsize)))
            col = np.full(n, base, dtype)
            if n > 1 and kind != "constant":
                other = {
                    "ulp": np.nextafter(base, dtype.type(np.inf)),
                    "tiny": base + base * dtype.type(finfo.eps) * 4,
                    "subnormal": dtype.type(finfo.smallest_subnormal),
                    "zero": dtype.type(0),
                }[kind]
                col[draw(st.integers(0, n - 1))] = other
        columns.append(col)
    return np.stack(columns, axis=1)


@settings(max_examples=150, deadline=None)
@given(
    near_constant(), st.sampled_from(["feature", "global", "channel", "scale", "maxabs", "minmax"])
)
def test_zero_and_tiny_variance_never_give_inf_or_nan(x, scheme):
    """Fitting warns at most once, and only then; transform never warns and stays finite."""
    if scheme == "channel":
        x = x[:, None, :]  # samples (1, F): F channels on the last axis
    with warnings.catch_warnings(record=True) as fit_warnings:
        warnings.simplefilter("always")
        normalizer = schemes.get(scheme).fit(x)
    ours = [w for w in fit_warnings if issubclass(w.category, NormlabWarning)]
    assert len(ours) <= 1
    scale = getattr(normalizer, "scale_", None)
    assert scale is not None and np.isfinite(scale).all() and (scale > 0).all()
    with warnings.catch_warnings(record=True) as apply_warnings:
        warnings.simplefilter("always")
        for _ in range(3):
            if x.dtype.kind == "f":
                assert np.isfinite(normalizer.transform(x.astype(np.float64))).all()
            y = normalizer.transform(x)
            assert np.isfinite(y).all(), (x, y)
    assert not [w for w in apply_warnings if issubclass(w.category, NormlabWarning)]


def test_constant_features_warn_once_naming_the_count():
    x = np.zeros((10, 6), np.float32)
    x[:, :2] = np.arange(10)[:, None]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = normlab.ZScore().fit(x)
        z.transform(x)
        z.transform(x)
    ours = [w for w in caught if issubclass(w.category, NormlabWarning)]
    assert len(ours) == 1 and "4 of 6 features" in str(ours[0].message)


def test_max_scheme_on_float_data_is_a_clear_error():
    with pytest.raises(NormlabError, match="max_value"):
        schemes.get("max").fit(np.ones((3, 2)))
    assert math.isfinite(
        float(
            schemes.get("max", max_value=255.0)
            .fit(np.ones((3, 2)))
            .transform(np.ones((1, 2)))[0, 0]
        )
    )


@pytest.mark.parametrize(
    "scheme, x",
    [
        ("feature", np.array([[6e-8], [0.0]], np.float16)),
        ("feature", np.array([[1e-45], [0.0]], np.float32)),
        ("maxabs", np.array([[5e-324], [0.0]], np.float64)),
    ],
    ids=["feature-float16", "feature-float32", "maxabs-float64"],
)
def test_scale_with_an_overflowing_reciprocal_stays_finite(scheme, x):
    """Scales below 1/finfo(dtype).max: 1/scale overflows the output dtype (found by the
    property test above; fixed in normalizers.py by falling back to exact division)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        y = schemes.get(scheme).fit(x).transform(x)
    assert np.isfinite(y).all()
