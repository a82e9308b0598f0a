"""Column names of tables flow into statistics, normalizers, scikit-learn, exports and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import normlab
from normlab.errors import FileFormatError, MergeError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAMES = ["price", "count", "weight"]


def _table(n: int = 3000, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "price": rng.normal(3.0, 2.0, n),
            "count": rng.integers(0, 1000, n),  # an integer column: the exact path
            "label": [f"row{k}" for k in range(n)],  # not numeric: left out
            "weight": rng.normal(-1.0, 0.5, n).astype(np.float32),
        }
    )


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path, row_group_size=700)
    return path


def _stats(source: Any, **options: Any) -> normlab.Moments:
    with pytest.warns(normlab.NormlabWarning, match="non-numeric columns"):
        return normlab.compute_stats(source, **options)


def test_statistics_of_tables_carry_the_column_names(parquet_file: Path, tmp_path: Path) -> None:
    m = _stats(parquet_file)
    assert m.feature_names == NAMES
    assert normlab.compute_stats(parquet_file, columns="weight,count").feature_names == [
        "weight",
        "count",
    ]
    m.save(tmp_path / "s.safetensors")
    loaded = normlab.Moments.load(tmp_path / "s.safetensors")
    assert loaded.feature_names == NAMES and loaded == m
    c = normlab.compute_comoments(parquet_file, columns=["price", "count"])
    assert c.feature_names == ["price", "count"]
    c.save(tmp_path / "c.safetensors")
    assert normlab.CoMoments.load(tmp_path / "c.safetensors").feature_names == ["price", "count"]


def test_dataframes_give_the_same_names(parquet_file: Path) -> None:
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    table = pq.read_table(parquet_file)
    want = _stats(parquet_file)
    frame: Any = pd.read_parquet(parquet_file)
    assert isinstance(frame, pd.DataFrame)
    for source in (frame, pl.from_arrow(table), table):
        got = _stats(source)  # another task split: float bits may differ in the last place
        assert got.feature_names == NAMES
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
        np.testing.assert_array_equal(got.count, want.count)


def test_files_without_names_still_load_and_arrays_stay_unnamed(tmp_path: Path) -> None:
    x = np.arange(12.0).reshape(4, 3)
    m = normlab.compute_stats(x)
    assert m.feature_names is None and "feature_names" not in m.metadata()
    m.save(tmp_path / "plain.safetensors")
    assert normlab.Moments.load(tmp_path / "plain.safetensors").feature_names is None


def test_merging_differently_named_statistics_names_both(parquet_file: Path) -> None:
    a = normlab.compute_stats(parquet_file, columns="price,count")
    b = normlab.compute_stats(parquet_file, columns="count,price")
    with pytest.raises(MergeError, match=r"\[price, count\].*\[count, price\]"):
        a + b
    unnamed = normlab.compute_stats(np.ones((3, 2)))
    assert (a + unnamed).feature_names == ["price", "count"]
    assert (unnamed + a).feature_names == ["price", "count"]
    ca = normlab.compute_comoments(parquet_file, columns="price,count")
    cb = normlab.compute_comoments(parquet_file, columns="count,price")
    with pytest.raises(MergeError, match=r"\[price, count\].*\[count, price\]"):
        ca + cb


def test_wrong_names_in_a_file_are_a_format_error(parquet_file: Path, tmp_path: Path) -> None:
    m = normlab.compute_stats(parquet_file, columns="price,count")
    meta, tensors = m.metadata(), m.to_tensors()
    with pytest.raises(FileFormatError, match="2 features"):
        normlab.Moments.from_tensors({**meta, "feature_names": ["a"]}, tensors)
    with pytest.raises(FileFormatError, match="list of strings"):
        normlab.Moments.from_tensors({**meta, "feature_names": [1, 2]}, tensors)
