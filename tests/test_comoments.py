"""CoMoments: exact Gram/covariance against Fraction references, merge laws, sketch mode, files."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab import CoMoments, compute_comoments
from normlab.comoments import exact_gram
from normlab.errors import EmptyDataError, MergeError, NonFiniteError, NormlabError, ShapeError


def fraction_cov(x: np.ndarray) -> np.ndarray:
    """Population covariance from exact rationals, each entry rounded once."""
    rows = [[Fraction(int(v)) for v in r] for r in x.reshape(len(x), -1).tolist()]
    n, d = len(rows), len(rows[0])
    mean = [sum(r[j] for r in rows) / n for j in range(d)]
    return np.array(
        [
            [float(sum((r[i] - mean[i]) * (r[j] - mean[j]) for r in rows) / n) for j in range(d)]
            for i in range(d)
        ]
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.bool_])
def test_integer_cov_is_exactly_rounded(dtype):
    rng = np.random.default_rng(1)
    if dtype == np.bool_:
        x = rng.integers(0, 2, (60, 5)).astype(bool)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, int(info.max) + 1, (60, 5), dtype=np.int64).astype(dtype)
    c = CoMoments().update(x)
    assert np.array_equal(c.cov(), fraction_cov(x.astype(np.int64)))
    assert np.array_equal(c.mean, x.astype(np.float64).mean(axis=0))


def test_exact_gram_of_large_values_and_uint16_bounds():
    x = np.array([[2**31 - 1, -(2**31)], [12345, 2**30]], dtype=np.int64).astype(np.int32)
    ref = np.array(x.astype(object).T @ x.astype(object))
    assert np.array_equal(np.asarray(exact_gram(x), dtype=object), ref)
    # uint16: every product is ≤ 65535², so a float64 GEMM is exact for ≤ 2⁵³/65535² rows
    big = np.full((3000, 2), 65535, dtype=np.uint16)
    assert int(exact_gram(big)[0, 1]) == 3000 * 65535**2


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_integer_merge_is_bit_identical_for_any_chunking(sizes, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (sum(sizes), 7), dtype=np.uint8)
    whole = CoMoments().update(x)
    parts = CoMoments()
    start = 0
    for size in sizes:
        parts += CoMoments().update(x[start : start + size])
        start += size
    assert parts == whole
    assert np.array_equal(parts.cov(), whole.cov())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.floats(-1e6, 1e6))
def test_float_merge_matches_numpy(sizes, offset):
    rng = np.random.default_rng(len(sizes))
    x = rng.normal(size=(sum(sizes), 4)) * [1.0, 10.0, 0.1, 3.0] + offset
    total = CoMoments()
    start = 0
    for size in sizes:
        total += CoMoments().update(x[start : start + size])
        start += size
    ref = np.cov(x.T, ddof=0)
    assert np.allclose(total.cov(), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    assert np.allclose(total.mean, x.mean(axis=0), rtol=1e-12, atol=1e-9)


def test_shifted_float_data_keeps_precision():
    x = 1e8 + np.random.default_rng(2).normal(size=(1000, 3))
    c = CoMoments().update(x[:500]) + CoMoments().update(x[500:])
    assert np.allclose(c.cov(), np.cov(x.T, ddof=0), rtol=1e-6)


def test_compute_comoments_any_chunking_and_npy(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (101, 4, 4), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    a = compute_comoments(x, chunk_size=9)
    b = compute_comoments(str(path), chunk_size=50)
    assert a == b == CoMoments().update(x)
    assert a.moments == normlab.Moments().update(x)
    assert a.sample_shape == (4, 4)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    for x in (rng.integers(0, 256, (30, 6), dtype=np.uint8), rng.normal(size=(30, 6))):
        c = CoMoments().update(x)
        c.save(tmp_path / "c.safetensors")
        back = normlab.load(tmp_path / "c.safetensors")
        assert back == c and np.array_equal(back.cov(), c.cov())
        assert CoMoments.load(tmp_path / "c.safetensors") == c


def test_loading_moments_as_comoments_says_how_to_make_them(tmp_path):
    normlab.Moments().update(np.zeros((3, 2), np.uint8)).save(tmp_path / "m.safetensors")
    with pytest.raises(NormlabError, match="compute_comoments"):
        CoMoments.load(tmp_path / "m.safetensors")


def test_sketch_mode_above_the_feature_limit(tmp_path):
    x = np.random.default_rng(5).integers(0, 256, (20, 40), dtype=np.uint8)
    c = CoMoments(max_features=16, sketch_size=8).update(x[:10])
    c += CoMoments(max_features=16, sketch_size=8).update(x[10:])
    assert not c.dense
    with pytest.raises(ShapeError, match="per-channel statistics"):
        c.cov()
    sketch, omega = c.sketch()
    xf = x.astype(np.float64)
    assert np.allclose(sketch, xf.T @ (xf @ omega))
    c.save(tmp_path / "s.safetensors")
    assert normlab.load(tmp_path / "s.safetensors") == c


def test_bad_input():
    with pytest.raises(EmptyDataError):
        CoMoments().cov()
    with pytest.raises(NonFiniteError):
        CoMoments().update(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(MergeError):
        CoMoments().update(np.zeros((2, 3), np.uint8)).__iadd__(
            CoMoments().update(np.zeros((2, 3)))
        )
    with pytest.raises(MergeError):
        CoMoments(seed=1).__iadd__(CoMoments(seed=2).update(np.zeros((2, 3))))
    with pytest.raises(ShapeError):
        CoMoments().update(np.zeros((2, 3))).update(np.zeros((2, 4)))
    with pytest.raises(EmptyDataError):
        CoMoments().update(np.zeros((1, 3))).cov(ddof=1)


def test_local_engine_gives_the_same_bits(tmp_path):
    from normlab.engines import ENGINES

    if "local" not in ENGINES:
        pytest.skip("no local engine")
    x = np.random.default_rng(6).normal(size=(120, 9))
    np.save(tmp_path / "f.npy", x)
    serial = compute_comoments(str(tmp_path / "f.npy"), chunk_size=25)
    local = compute_comoments(str(tmp_path / "f.npy"), chunk_size=25, engine="local", workers=2)
    assert local == serial


def test_loaded_comoments_merge_and_refit(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 6), dtype=np.uint8)
    path = tmp_path / "c.safetensors"
    CoMoments().update(x[:20]).save(path)
    loaded = CoMoments.load(path)
    loaded += CoMoments().update(x[20:])
    assert loaded == CoMoments().update(x[:20]) + CoMoments().update(x[20:])
    assert np.array_equal(loaded.gram(), CoMoments().update(x).gram())
