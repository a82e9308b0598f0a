"""Moments: exactness against Fraction references, merge laws, modes, bad input, files."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import normlab
from normlab import Moments
from normlab.errors import (
    DTypeError,
    EmptyDataError,
    FileFormatError,
    MergeError,
    NonFiniteError,
    NormlabError,
    ShapeError,
)


def fraction_mean_var(values) -> tuple[float, float]:
    """Exact population mean and variance of the stored values, rounded once."""
    vals = [Fraction(v) for v in np.asarray(values, dtype=object).reshape(-1).tolist()]
    n = len(vals)
    mean = sum(vals, Fraction(0)) / n
    var = sum(((v - mean) ** 2 for v in vals), Fraction(0)) / n
    return float(mean), float(var)


def exact_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cols = x.reshape(x.shape[0], -1).T
    pairs = [
        fraction_mean_var([int(v) if x.dtype.kind in "biu" else float(v) for v in c]) for c in cols
    ]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


INT_DTYPES = [np.bool_, np.uint8, np.uint16, np.int8, np.int16, np.int32]


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integer_statistics_are_correctly_rounded(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if dtype is not np.bool_ else None
    lo, hi = (0, 2) if info is None else (int(info.min), int(info.max) + 1)
    x = rng.integers(lo, hi, size=(301, 5), dtype=np.int64).astype(dtype)
    m = Moments.from_array(x)
    mean, var = exact_columns(x)
    assert np.array_equal(m.mean, mean)
    assert np.array_equal(m.var(), var)
    assert np.array_equal(m.min, x.min(axis=0).astype(np.float64))
    assert np.array_equal(m.max, x.max(axis=0).astype(np.float64))
    assert np.array_equal(m.n_nonzero, np.count_nonzero(x, axis=0))
    assert np.array_equal(m.count, np.full(5, 301))


def test_integer_sums_beyond_int64_stay_exact():
    """Merged states past 2**63 (uint16 squares) equal the Fraction reference."""
    block = np.full((1, 3), 65535, dtype=np.uint16)
    block[0, 1] = 1
    one = Moments.from_array(np.repeat(block, 4096, axis=0))
    total = Moments()
    doubling = one
    for _ in range(22):  # 4096 · 2**22 samples of 65535²: Σx² ≈ 7.4e25 > 2**63
        doubling = doubling + doubling
    total += doubling
    total += Moments.from_array(np.array([[0, 7, 65535]], dtype=np.uint16))
    n = 4096 * 2**22 + 1
    s2 = 65535**2 * (n - 1)
    assert s2 > 2**63
    exact_mean0 = Fraction(65535 * (n - 1), n)
    exact_var0 = Fraction(n * s2 - (65535 * (n - 1)) ** 2, n * n)
    assert total.mean[0] == float(exact_mean0)
    assert total.var()[0] == float(exact_var0)
    assert total.var()[2] == 0.0
    assert int(total.count[0]) == n


def test_large_chunk_is_flushed_before_int64_overflow():
    """One update whose Σx² exceeds int64 (int16 extremes) is still exact."""
    x = np.full((2**20, 1), -32768, dtype=np.int16)
    x[::2] = 32767
    m = Moments("global").update(x)
    mean, var = fraction_mean_var([-32768, 32767])  # same distribution, halves
    assert m.mean == mean and m.var() == var


def test_float_large_offset_is_accurate():
    rng = np.random.default_rng(0)
    x = (1e9 + rng.uniform(0, 1e-3, size=(20000, 2))).astype(np.float64)
    m = Moments()
    for part in np.array_split(x, 7):
        m.update(part)
    _, var = exact_columns(x[:, :1])
    assert abs(m.var()[0] - var[0]) <= 1e-9 * var[0]
    # numpy's own axis-0 variance is far off on this data (why we compare with Fractions)
    assert abs(x.var(axis=0)[0] - var[0]) > 0.5 * var[0]


def test_float_statistics_match_fraction_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(5, 3, size=(500, 4)).astype(np.float32)
    m = Moments.from_array(x)
    mean, var = exact_columns(x)
    np.testing.assert_allclose(m.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(m.var(), var, rtol=1e-13)


@st.composite
def int_arrays_and_split(draw):
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.uint16]))
    n = draw(st.integers(1, 40))
    f = draw(st.integers(1, 4))
    x = draw(hnp.arrays(dtype, (n, f)))
    cut = draw(st.integers(0, n))
    return x, cut


@settings(max_examples=60, deadline=None)
@given(int_arrays_and_split())
def test_merge_law_integers_bit_identical(data):
    x, cut = data
    whole = Moments.from_array(x)
    a, b = Moments(), Moments()
    a.update(x[:cut])
    b.update(x[cut:])
    assert a + b == whole
    assert b + a == whole
    assert np.array_equal((a + b).var(), whole.var())
    assert np.array_equal((b + a).mean, whole.mean)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.uint8, st.tuples(st.integers(3, 30), st.integers(1, 3))),
    st.data(),
)
def test_merge_associative_and_commutative(x, data):
    i = data.draw(st.integers(0, len(x)))
    j = data.draw(st.integers(i, len(x)))
    a, b, c = (Moments.from_array(p) if len(p) else Moments() for p in (x[:i], x[i:j], x[j:]))
    assert ((a + b) + c) == (a + (b + c)) == (c + (b + a)) == Moments.from_array(x)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(2, 40), st.integers(1, 3)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    st.data(),
)
def test_merge_law_floats(x, data):
    cut = data.draw(st.integers(0, len(x)))
    whole = Moments.from_array(x)
    merged = Moments().update(x[:cut]) + Moments().update(x[cut:])
    _, var = exact_columns(x)
    scale = np.maximum(np.abs(x).max(axis=0) ** 2, 1e-300)
    np.testing.assert_allclose(merged.var(), var, rtol=1e-12, atol=0)
    np.testing.assert_allclose(merged.var(), whole.var(), rtol=1e-12, atol=1e-15 * scale.max())
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-14, atol=1e-9)


def test_chunking_gives_the_same_bits_for_integers():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1000, 6, 6, 3), dtype=np.uint8)
    for axis in ("feature", "channel", "global"):
        ref = normlab.compute_stats(x, axis)
        for chunk in (1, 7, 333):
            assert normlab.compute_stats(x, axis, chunk_size=chunk) == ref


def test_float_results_are_reproducible_for_a_chunking():
    x = np.random.default_rng(2).normal(size=(999, 5))
    a = normlab.compute_stats(x, chunk_size=10)
    b = normlab.compute_stats(x, chunk_size=10)
    assert a == b and np.array_equal(a.var(), b.var())


def test_sklearn_agreement_breast_cancer():
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.preprocessing import StandardScaler

    x = datasets.load_breast_cancer().data
    m = normlab.compute_stats(x, chunk_size=50)
    ref = StandardScaler().fit(x)
    np.testing.assert_allclose(m.mean, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(m.var(), ref.var_, rtol=1e-12)


def test_channel_modes_hwc_and_chw():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (20, 5, 4, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    a = Moments("channel", channel_axis=-1).update(hwc)
    b = Moments("channel", channel_axis=0).update(chw)
    ref = hwc.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(a.mean, ref.mean(axis=0), rtol=1e-15)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.var(), b.var())
    np.testing.assert_allclose(a.var(), ref.var(axis=0), rtol=1e-12)
    g = Moments("global").update(hwc)
    np.testing.assert_allclose(g.mean, ref.mean(), rtol=1e-15)
    assert g.reduced_shape == ()


def test_channel_stats_merge_across_image_sizes():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    m = Moments("channel").update(small)
    m.update(large)
    ref = np.concatenate([small.reshape(-1, 3), large.reshape(-1, 3)])
    np.testing.assert_allclose(m.mean, ref.mean(axis=0), rtol=1e-15)
    merged = Moments("channel").update(small) + Moments("channel").update(large)
    assert merged == m
    with pytest.raises(ShapeError, match="sample shape"):
        Moments("feature").update(small).update(large)


def test_channel_axis_on_flat_samples_is_an_error():
    with pytest.raises(ShapeError, match="channel dimension"):
        Moments("channel").update(np.zeros((4, 784), np.uint8))


@pytest.mark.parametrize("source_axis", ["feature", "channel"])
def test_reduce_is_exact_coarsening(source_axis):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)
    fine = Moments(source_axis).update(x)
    assert fine.reduce("global") == Moments("global").update(x)
    if source_axis == "feature":
        assert fine.reduce("channel") == Moments("channel").update(x)
    with pytest.raises(NormlabError, match="refine"):
        Moments("global").update(x).reduce("feature")


def test_reduce_floats_matches_direct():
    x = np.random.default_rng(4).normal(3, 2, (200, 4, 4, 3))
    fine = Moments("feature").update(x)
    direct = Moments("channel").update(x)
    np.testing.assert_allclose(fine.reduce("channel").mean, direct.mean, rtol=1e-14)
    np.testing.assert_allclose(fine.reduce("channel").var(), direct.var(), rtol=1e-12)
    np.testing.assert_allclose(fine.reduce("global").var(), x.var(), rtol=1e-12)


def test_nan_policy_raise_names_count_and_sample():
    x = np.ones((10, 3))
    x[4, 1] = np.nan
    x[7, 2] = np.inf
    m = Moments().update(np.zeros((5, 3)))
    with pytest.raises(NonFiniteError, match=r"2 non-finite.*sample 9"):
        m.update(x)


def test_nan_policy_omit_counts_per_feature():
    x = np.array([[1.0, np.nan], [3.0, 2.0], [np.inf, 4.0]])
    m = Moments(nan_policy="omit").update(x)
    assert m.count.tolist() == [2, 2]
    assert m.mean.tolist() == [2.0, 3.0]
    assert m.n_nonfinite.tolist() == [1, 1]
    assert m.min.tolist() == [1.0, 2.0] and m.max.tolist() == [3.0, 4.0]
    merged = Moments(nan_policy="omit").update(x[:1]) + Moments(nan_policy="omit").update(x[1:])
    np.testing.assert_allclose(merged.var(), m.var())


@pytest.mark.parametrize(
    "bad, error, text",
    [
        (np.zeros(5), ShapeError, "1-d"),
        (np.float64(3.0), ShapeError, "0-d"),
        (np.array([["a", "b"]]), DTypeError, "numeric"),
        (np.array([[1 + 2j]]), DTypeError, "numeric"),
        (np.array([[object()]], dtype=object), DTypeError, "numeric"),
    ],
)
def test_bad_batches(bad, error, text):
    with pytest.raises(error, match=text):
        Moments().update(bad)


def test_empty_data_is_an_error():
    with pytest.raises(EmptyDataError):
        normlab.compute_stats(np.zeros((0, 3), np.uint8))
    with pytest.raises(EmptyDataError):
        _ = Moments().mean


def test_merge_refuses_mismatches():
    a = Moments().update(np.zeros((2, 3), np.uint8))
    with pytest.raises(MergeError, match="value scale"):
        a + Moments().update(np.zeros((2, 3), np.uint16))
    with pytest.raises(MergeError, match="axis"):
        a + Moments("global").update(np.zeros((2, 3), np.uint8))
    with pytest.raises(MergeError, match=r"\(3,\)"):
        a + Moments().update(np.zeros((2, 4), np.uint8))
    with pytest.raises(MergeError, match="value scale"):
        Moments().update(np.zeros((2, 3), np.uint8)).update(np.zeros((2, 3), np.float32))


def test_value_scale_is_recorded():
    assert Moments().update(np.zeros((1, 2), np.uint8)).value_scale["max_value"] == 255
    assert Moments().update(np.zeros((1, 2), np.uint16)).value_scale["max_value"] == 65535
    assert Moments().update(np.zeros((1, 2), np.float32)).value_scale["max_value"] is None


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    t = torch.arange(24, dtype=torch.uint8).reshape(4, 6)
    assert Moments.from_array(t) == Moments.from_array(t.numpy())


def test_wide_int64_input_within_int32_is_exact_and_outside_is_refused():
    x = np.array([[1], [2], [2**31 - 1]], dtype=np.int64)
    m = Moments().update(x)
    assert m.mean[0] == float(Fraction(2**31 + 2, 3))
    with pytest.raises(DTypeError, match="int32"):
        Moments().update(np.array([[2**40]], dtype=np.int64))


def test_save_load_roundtrip(tmp_path):
    x = np.random.default_rng(0).integers(0, 65536, (40, 3, 3), dtype=np.uint16)
    for m in (
        Moments().update(x),
        Moments("global").update(x),
        Moments().update(x.astype(np.float32)),
    ):
        path = tmp_path / "m.safetensors"
        m.save(path)
        loaded = normlab.load(path)
        assert loaded == m
        assert np.array_equal(loaded.var(), m.var()) and np.array_equal(loaded.mean, m.mean)
        assert Moments.load(path) == m


def test_bad_files(tmp_path):
    m = Moments().update(np.zeros((2, 2), np.uint8))
    path = tmp_path / "m.safetensors"
    m.save(path)
    data = path.read_bytes()
    (tmp_path / "trunc").write_bytes(data[: len(data) - 5])
    with pytest.raises(FileFormatError, match="corrupt or truncated"):
        normlab.load(tmp_path / "trunc")
    (tmp_path / "junk").write_bytes(b"hello world, not a file")
    with pytest.raises(FileFormatError, match="not a normlab file"):
        normlab.load(tmp_path / "junk")
    newer = data.replace(b'\\"format_version\\": 1', b'\\"format_version\\": 9')
    assert newer != data
    (tmp_path / "newer").write_bytes(newer)
    with pytest.raises(FileFormatError, match="version 9.*up to 1"):
        normlab.load(tmp_path / "newer")
    with pytest.raises(FileFormatError, match="no such file"):
        normlab.load(tmp_path / "missing")


def test_npy_source_windows_and_npz(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (1234, 7, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "x.npz", images=x, labels=np.arange(1234))
    ref = Moments().update(x)
    assert normlab.compute_stats(tmp_path / "x.npy", chunk_size=100) == ref
    assert normlab.compute_stats(str(tmp_path / "x.npz"), key="images", chunk_size=99) == ref
    with pytest.raises(NormlabError, match="choose one with key"):
        normlab.compute_stats(tmp_path / "x.npz")
    shards = [tmp_path / "a.npy", tmp_path / "b.npy"]
    np.save(shards[0], x[:500])
    np.save(shards[1], x[500:])
    assert normlab.compute_stats([str(s) for s in shards]) == ref


def test_truncated_npy_is_an_error(tmp_path):
    x = np.zeros((100, 10), np.uint8)
    np.save(tmp_path / "x.npy", x)
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-50])
    with pytest.raises(NormlabError, match="truncated"):
        normlab.compute_stats(tmp_path / "t.npy")


def test_iterable_of_batches_and_pairs():
    x = np.random.default_rng(0).integers(0, 256, (30, 4), dtype=np.uint8)
    batches = [(x[i : i + 7], np.zeros(7)) for i in range(0, 30, 7)]
    assert normlab.compute_stats(iter(batches)) == Moments().update(x)


def test_channel_axis_warning_for_suspicious_channel_count():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Moments("channel").update(np.zeros((2, 28, 100), np.uint8))
    assert any("channel axis" in str(w.message) for w in caught)


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the file must end with 0666 less the umask."""
    import os

    umask = os.umask(0o022)
    try:
        path = tmp_path / "m.safetensors"
        Moments().update(np.zeros((2, 2), np.uint8)).save(path)
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o640)
        Moments().update(np.ones((2, 2), np.uint8)).save(path)
        assert path.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
    finally:
        os.umask(umask)


def test_float_kernel_path_matches_fraction_reference():
    """The float kernel (blocks, per-block shifts, pairwise merge) keeps 1e-9 on offset data."""
    from normlab import kernels

    rng = np.random.default_rng(11)
    offset = 1e9 + rng.uniform(0, 1e-3, size=(6000, 20))
    assert kernels.reduce_float(offset[:, :, None]).n_finite.tolist() == [6000] * 20
    m = Moments()
    for part in np.array_split(offset, 3):
        m.update(part)
    _, var = exact_columns(offset[:, :2])
    np.testing.assert_allclose(m.var()[:2], var, rtol=1e-9)
    x = rng.normal(5, 3, size=(700, 17)).astype(np.float32)
    k = Moments.from_array(x)
    mean, var = exact_columns(x[:, :3])
    np.testing.assert_allclose(k.mean[:3], mean, rtol=1e-14)
    np.testing.assert_allclose(k.var()[:3], var, rtol=1e-13)
    assert np.array_equal(k.min, x.min(axis=0)) and np.array_equal(k.max, x.max(axis=0))
    bad = x.copy()
    bad[3, 16] = np.inf  # the kernel refuses; the masked path reports it
    with pytest.raises(NonFiniteError, match="sample 3"):
        Moments().update(bad)
    omitted = Moments(nan_policy="omit").update(bad)
    assert omitted.count[16] == 699 and omitted.count[0] == 700


def test_layout_spellings_and_relayout():
    """'HWC' and 'NHWC' name the last axis of HWC samples; another cannot be re-laid silently.

    The deprecated positive channel_axis (2 for HWC) is refused as ambiguous: counted on the
    sample shape, channel_axis=1 named H of an NCHW batch.
    """
    from normlab.normalizers import ZScore

    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    stats = Moments("channel").update(x)
    for layout in ("HWC", "NHWC"):
        z = ZScore(axis="channel", layout=layout).fit_stats(stats)
        np.testing.assert_allclose(z.shift_, x.reshape(-1, 3).mean(axis=0), rtol=1e-15)
    with pytest.raises(NormlabError, match="ambiguous"):
        ZScore(axis="channel", channel_axis=2).fit_stats(stats)
    with pytest.raises(NormlabError, match="re-laid"):
        stats.reduce("channel", layout="CHW")


def test_omit_merge_takes_the_shift_of_the_side_that_saw_values():
    a = np.array([[np.nan, 1.0], [np.nan, 2.0]])
    b = np.array([[3.0, 1.0], [5.0, 2.0]])
    merged = Moments(nan_policy="omit").update(a) + Moments(nan_policy="omit").update(b)
    assert merged.mean.tolist() == [4.0, 1.5]
    assert merged == Moments(nan_policy="omit").update(a).update(b)


def test_empty_first_batch_then_data():
    x = np.random.default_rng(0).integers(0, 256, (5, 2, 2, 3), dtype=np.uint8)
    assert Moments("channel").update(x[:0]).update(x) == Moments("channel").update(x)


def test_channel_error_names_the_samples_shape():
    with pytest.raises(ShapeError, match=r"shape \(6,\)"):
        Moments("channel").update(np.zeros((3, 6)))
