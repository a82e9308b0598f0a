"""Columns held apart (``ColumnBatch``): the statistics read them where they lie, and give the
bits of the ``(n, k)`` array they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab import Moments, kernels
from normlab.columns import ColumnBatch
from normlab.errors import NonFiniteError, ShapeError


def _alone(columns: list[np.ndarray]) -> kernels.FloatSums:
    """Each column's statistics computed alone, stacked: what a table column must get."""
    parts = [kernels.reduce_float(np.ascontiguousarray(c).reshape(-1, 1, 1)) for c in columns]
    return kernels.FloatSums(
        *[
            np.concatenate([np.ravel(getattr(p, f)) for p in parts])
            for f in kernels.FloatSums._fields
        ]
    )


def _same(a: kernels.FloatSums, b: kernels.FloatSums) -> None:
    for field in kernels.FloatSums._fields:
        assert np.array_equal(getattr(a, field), getattr(b, field), equal_nan=True), field


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5000),
    k=st.integers(1, 6),
    threads=st.sampled_from([1, 2, 3]),
    nan_every=st.sampled_from([0, 7, 1001]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_columns_apart_give_each_column_its_own_bits(n, k, threads, nan_every, dtype):
    x = np.random.default_rng(n * 7 + k).normal(1e3, 2.0, (n, k)).astype(dtype)
    if nan_every:
        x.reshape(-1)[::nan_every] = np.nan
    columns = [x[:, j].copy() for j in range(k)]
    for column in columns[::2]:
        column.flags.writeable = False  # as Arrow hands them out: read-only beside writable
    before = kernels.get_threads()
    try:
        kernels.set_threads(threads)
        expected = _alone(columns)
        _same(kernels.reduce_float_columns(columns), expected)
        fortran = np.asfortranarray(x)
        _same(kernels.reduce_float(fortran[:, :, None]), expected)  # one (k, n) block
        if n > 1:  # a row slice of it: rows contiguous, not one block of memory
            _same(kernels.reduce_float(fortran[1:, :, None]), _alone([c[1:] for c in columns]))
    finally:
        kernels.set_threads(before)


def test_moments_of_a_column_batch_equal_those_of_its_array():
    rng = np.random.default_rng(3)
    columns = [rng.normal(j, 1 + j, 70_001) for j in range(5)]
    columns[2][[5, 60_000]] = np.nan
    batch = ColumnBatch(columns)
    array = np.asarray(batch)
    assert array.shape == (70_001, 5) and array.flags.f_contiguous
    with pytest.raises(ValueError, match="cannot be viewed"):
        np.asarray(batch, copy=False)
    assert np.asarray(batch, dtype=np.float32).dtype == np.float32
    a = Moments("feature", nan_policy="omit").update(batch).update(batch)
    b = Moments("feature", nan_policy="omit").update(array).update(array)
    assert a == b
    assert a.n_samples_seen == 140_002 and a.count.tolist()[2] == 140_002 - 4
    np.testing.assert_allclose(a.mean, np.nanmean(array, axis=0), rtol=1e-13)


def test_a_column_batch_with_nan_names_the_sample_as_the_array_does():
    columns = [np.arange(10.0), np.arange(10.0)]
    columns[1][6] = np.nan
    messages = []
    for batch in (ColumnBatch(columns), np.asarray(ColumnBatch(columns))):
        with pytest.raises(NonFiniteError) as info:
            Moments("feature").update(np.ones((3, 2))).update(batch)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "sample 9 at index (1,)" in messages[0]


def test_other_consumers_see_the_array():
    rng = np.random.default_rng(4)
    columns = [rng.normal(size=3000) for _ in range(3)]
    batch = ColumnBatch(columns)
    array = np.asarray(batch)
    # weighted, global and co-moments take the array path; the result is the array's
    weights = rng.integers(0, 3, 3000)
    assert Moments("feature").update(batch, sample_weight=weights) == Moments("feature").update(
        array, sample_weight=weights
    )
    assert Moments("global").update(batch) == Moments("global").update(array)
    co = normlab.CoMoments().update(batch)
    np.testing.assert_allclose(co.cov(), np.cov(array, rowvar=False, bias=True), atol=1e-12)


def test_columns_of_unequal_length_or_dtype_are_refused():
    with pytest.raises(ShapeError, match="one length and dtype"):
        ColumnBatch([np.zeros(3), np.zeros(4)])
    with pytest.raises(ShapeError, match="one length and dtype"):
        ColumnBatch([np.zeros(3), np.zeros(3, np.float32)])
    with pytest.raises(ShapeError, match="at least one column"):
        ColumnBatch([])


def test_a_pandas_frame_is_read_where_it_lies_and_nan_counts_as_a_null_would():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    values = rng.normal(size=(4000, 3))
    values[[3, 70], 1] = np.nan
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame["n"] = pd.array([1, None] * 2000, dtype="Int64")  # nullable: pyarrow's conversion
    m = normlab.compute_stats(frame, nan_policy="omit", chunk_size=1000)
    assert m.feature_names == ["a", "b", "c", "n"]
    assert m.count.tolist() == [4000, 3998, 4000, 2000]
    np.testing.assert_allclose(m.mean[:3], np.nanmean(values, axis=0), rtol=1e-13)
    arrow = normlab.compute_stats(
        __import__("pyarrow").Table.from_pandas(frame, preserve_index=False), nan_policy="omit"
    )  # pyarrow's conversion makes the NaN nulls: the same statistics
    np.testing.assert_array_equal(m.count, arrow.count)
    np.testing.assert_allclose(m.var(), arrow.var(), rtol=1e-13)
    with pytest.raises(NonFiniteError, match=r"^2002 non-finite .* row 1 .* in column 'n'"):
        normlab.compute_stats(frame)  # NaN and nulls counted alike; the first is row 1's null
    with pytest.raises(NonFiniteError, match=r"^2 non-finite .* row 3 .* in column 'b'"):
        normlab.compute_stats(frame[["a", "b"]])
