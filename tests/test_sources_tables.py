"""Parquet files, Arrow tables and datasets, pandas and polars DataFrames as sources."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab.errors import DTypeError, NonFiniteError, NormlabError, SourceError
from normlab.sources import resolve
from object_store import Store

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _table(n: int = 5000, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "f": rng.normal(3.0, 2.0, n),
            "i": rng.integers(-1000, 1000, n),  # int64 whose values fit int32
            "u": rng.integers(0, 256, n).astype(np.uint8),
            "name": [f"row{k}" for k in range(n)],
            "g": rng.normal(-1.0, 0.5, n).astype(np.float32),
        }
    )


def _matrix(table: Any, names: list[str]) -> np.ndarray:
    return np.stack([table.column(n).to_numpy().astype(np.float64) for n in names], axis=1)


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path, row_group_size=1000)
    return path


def test_default_columns_are_the_numeric_ones_and_the_rest_is_named(parquet_file: Path) -> None:
    with pytest.warns(normlab.NormlabWarning, match=r"non-numeric columns .*name \(.*string\)"):
        m = normlab.compute_stats(parquet_file)
    table = pq.read_table(parquet_file)
    x = _matrix(table, ["f", "i", "u", "g"])
    assert m.n_samples_seen == 5000 and m.mean.shape == (4,)
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(m.var(), x.var(axis=0), rtol=1e-12)
    assert np.array_equal(m.min, x.min(axis=0)) and np.array_equal(m.max, x.max(axis=0))


def test_columns_select_and_order_features(parquet_file: Path) -> None:
    m = normlab.compute_stats(parquet_file, columns=["u", "f"])
    table = pq.read_table(parquet_file)
    np.testing.assert_allclose(m.mean, _matrix(table, ["u", "f"]).mean(axis=0), rtol=1e-13)
    assert resolve(parquet_file, columns="u,f").info["columns"] == ["u", "f"]


def test_integer_columns_take_the_exact_path(parquet_file: Path) -> None:
    table = pq.read_table(parquet_file)
    x = np.stack([table.column("i").to_numpy(), table.column("u").to_numpy()], axis=1)
    want = normlab.compute_stats(x.astype(np.int32))
    for chunk_size in (None, 333):
        m = normlab.compute_stats(parquet_file, columns="i,u", chunk_size=chunk_size)
        assert m.exact
        assert np.array_equal(m.mean, want.mean) and np.array_equal(m.var(), want.var())


def test_mixed_tables_read_integer_columns_exactly(parquet_file: Path, tmp_path: Path) -> None:
    table = pq.read_table(parquet_file)
    ints = np.stack([table.column("i").to_numpy(), table.column("u").to_numpy()], axis=1)
    exact = normlab.compute_stats(ints.astype(np.int32))
    src = resolve(parquet_file, columns="f,i,g,u")
    assert [p.info["positions"] for p in src.parts] == [[1, 3], [0, 2]]
    runs = [
        normlab.compute_stats(parquet_file, columns="f,i,g,u", chunk_size=chunk_size, **engine)
        for chunk_size, engine in ((None, {}), (211, {}), (211, {"engine": "local", "workers": 2}))
    ]
    for m in runs:
        assert np.array_equal(m.mean[[1, 3]], exact.mean)
        assert np.array_equal(m.var()[[1, 3]], exact.var())
        assert np.array_equal(m.min[[1, 3]], exact.min) and m.count.tolist() == [5000] * 4
    assert np.array_equal(runs[1].mean, runs[2].mean)  # same task split: same float bits
    floats = normlab.compute_stats(parquet_file, columns="f,g")
    np.testing.assert_allclose(runs[0].var()[[0, 2]], floats.var(), rtol=1e-14)
    frame = normlab.compute_stats(table.to_pandas(), columns=["f", "i", "g", "u"])
    assert np.array_equal(frame.mean[[1, 3]], exact.mean)
    ckpt = normlab.compute_stats(
        parquet_file, columns="f,i,g,u", checkpoint=tmp_path / "ckpt", checkpoint_every=1
    )
    assert np.array_equal(ckpt.mean, runs[0].mean)


def test_int64_beyond_int32_and_nullable_ints_go_to_float(tmp_path: Path) -> None:
    big = pa.table({"big": np.array([1, 2, 3 * 2**40], dtype=np.int64)})
    pq.write_table(big, tmp_path / "big.parquet")
    m = normlab.compute_stats(tmp_path / "big.parquet")
    assert not m.exact and m.mean[0] == (3 + 3 * 2**40) / 3


def test_one_task_per_row_group_bounded(parquet_file: Path, tmp_path: Path) -> None:
    # large row groups: one task each; tiny ones are joined into bounded runs
    src = resolve(parquet_file, columns="f", chunk_size=100)
    assert [t.row_groups for t in src.tasks] == [(0,), (1,), (2,), (3,), (4,)]
    tiny = tmp_path / "tiny.parquet"
    pq.write_table(_table(), tiny, row_group_size=10)
    src = resolve(tiny, columns="f")
    assert len(src.tasks) == 1 and len(src.tasks[0].row_groups) == 500
    # a task pickles as the URL and row-group numbers, never the data
    assert len(pickle.dumps(src.tasks[0])) < 5000


def test_nulls_follow_nan_policy(tmp_path: Path) -> None:
    table = pa.table(
        {
            "a": pa.array([1, None, 3, 4], pa.int64()),
            "b": pa.array([0.5, 1.5, None, None], pa.float64()),
        }
    )
    pq.write_table(table, tmp_path / "n.parquet")
    with pytest.raises(NonFiniteError):
        normlab.compute_stats(tmp_path / "n.parquet")
    m = normlab.compute_stats(tmp_path / "n.parquet", nan_policy="omit")
    assert m.count.tolist() == [3, 2]
    assert m.mean.tolist() == pytest.approx([8 / 3, 1.0], rel=1e-15)


def test_folders_globs_lists_and_partitions(tmp_path: Path) -> None:
    parts = [_table(1000, seed) for seed in range(3)]
    for k, part in enumerate(parts):
        folder = tmp_path / "ds" / f"year={2020 + k}"
        folder.mkdir(parents=True)
        pq.write_table(part, folder / "part-0.parquet")
    (tmp_path / "ds" / "_SUCCESS").write_bytes(b"")
    x = np.concatenate([_matrix(p, ["f", "i"]) for p in parts])
    for source in (
        tmp_path / "ds",
        str(tmp_path / "ds" / "*" / "*.parquet"),
        sorted(str(p) for p in (tmp_path / "ds").rglob("*.parquet")),
    ):
        m = normlab.compute_stats(source, columns="f,i")
        assert m.n_samples_seen == 3000
        np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-13)


def test_errors_name_the_file_and_the_row_group(parquet_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"t\.parquet: no column 'nope'; it has f, i, u"):
        normlab.compute_stats(parquet_file, columns="f,nope")
    with pytest.raises(DTypeError, match=r"name \(.*string\) are not numeric"):
        normlab.compute_stats(parquet_file, columns="f,name")
    with pytest.raises(NormlabError, match="names a column twice"):
        normlab.compute_stats(parquet_file, columns="f,f")
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"f": [1.0]}), other)
    with pytest.raises(SourceError, match=r"other\.parquet: no column 'i'"):
        normlab.compute_stats([parquet_file, other], columns="f,i")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"junk\.parquet: not a readable Parquet file"):
        normlab.compute_stats(junk)


def _corrupt_row_group(path: Path, group: int) -> None:
    column = pq.ParquetFile(path).metadata.row_group(group).column(0)
    data = bytearray(path.read_bytes())
    start, size = column.data_page_offset, column.total_compressed_size
    data[start : start + size] = b"\xff" * size
    path.write_bytes(data)


def test_a_corrupt_row_group_is_named(parquet_file: Path) -> None:
    _corrupt_row_group(parquet_file, 1)
    with pytest.raises(SourceError, match=r"t\.parquet row groups? .*row group 1: cannot read"):
        normlab.compute_stats(parquet_file, columns="f,i", chunk_size=10_000_000)


def test_dataframes_and_arrow_objects() -> None:
    pd = pytest.importorskip("pandas")
    table = _table(2000)
    want = normlab.compute_stats(table, columns=["f", "i"])
    df = table.to_pandas()
    candidates: list[Any] = [df, table.to_batches()[0], table]
    try:
        import polars as pl

        candidates.append(pl.from_arrow(table))
    except ImportError:
        pass
    for source in candidates:
        m = normlab.compute_stats(source, columns=["f", "i"], chunk_size=300)
        np.testing.assert_allclose(m.mean, want.mean, rtol=1e-14)
        np.testing.assert_allclose(m.var(), want.var(), rtol=1e-12)
    # the example: a DataFrame of numbers and a string column
    mixed = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "c": ["x", "y", "z"]})
    with pytest.warns(normlab.NormlabWarning, match=r"c \("):
        m = normlab.compute_stats(mixed)
    assert m.mean.tolist() == [2.0, 5.0]


def test_pyarrow_dataset(parquet_file: Path) -> None:
    ds = pytest.importorskip("pyarrow.dataset")
    m = normlab.compute_stats(ds.dataset(parquet_file), columns="f")
    assert m.n_samples_seen == 5000


def test_engines_give_the_same_bits(parquet_file: Path) -> None:
    serial = normlab.compute_stats(parquet_file, columns="f,g,i", chunk_size=700)
    local = normlab.compute_stats(
        parquet_file, columns="f,g,i", chunk_size=700, engine="local", workers=2
    )
    assert np.array_equal(serial.mean, local.mean) and np.array_equal(serial.var(), local.var())


def test_cli_stats_columns_over_expanded_glob(tmp_path: Path) -> None:
    from normlab.cli import app

    for k in range(2):
        pq.write_table(_table(1000, k), tmp_path / f"part{k}.parquet")
    files = sorted(str(p) for p in tmp_path.glob("*.parquet"))  # what the shell passes
    out = tmp_path / "s.safetensors"
    result = CliRunner().invoke(app, ["stats", *files, "--columns", "f,u", "-o", str(out)])
    assert result.exit_code == 0, result.output
    m = normlab.load(out)
    assert m.n_samples_seen == 2000 and m.mean.shape == (2,)
    result = CliRunner().invoke(app, ["stats", files[0], "--columns", "zz", "-o", str(out)])
    assert result.exit_code == 1 and "no column 'zz'" in result.output


def test_store_parquet_matches_local_and_dask_workers_read_it(
    store: Store, dask_client: Any, tmp_path: Path
) -> None:
    """S3 (moto) and GCS (the emulator): a folder, a glob, one file, ``columns=``; the Dask
    engine's workers (processes of the conftest LocalCluster) open the files themselves."""
    fs = store.filesystem()
    fs.mkdir("tables")
    for k in range(2):
        pq.write_table(_table(3000, k), tmp_path / f"part{k}.parquet", row_group_size=1000)
        fs.put(str(tmp_path / f"part{k}.parquet"), f"tables/data/part{k}.parquet")
    local = normlab.compute_stats(sorted(tmp_path.glob("*.parquet")), columns="f,i,u")
    ints = normlab.compute_stats(sorted(tmp_path.glob("*.parquet")), columns="i,u")
    options = store.options
    for url in (store.url("tables/data"), store.url("tables/data/*.parquet")):
        remote = normlab.compute_stats(url, columns="f,i,u", storage_options=options)
        assert np.array_equal(remote.mean, local.mean) and np.array_equal(remote.var(), local.var())
    one = normlab.compute_stats(
        store.url("tables/data/part1.parquet"), columns="i,u", storage_options=options
    )
    alone = normlab.compute_stats(tmp_path / "part1.parquet", columns="i,u")
    assert one.exact and np.array_equal(one.mean, alone.mean)
    assert np.array_equal(one.var(), alone.var())
    on_dask = normlab.compute_stats(
        store.url("tables/data"),
        columns="f,i,u",
        storage_options=options,
        engine="dask",
        scheduler=dask_client,
    )
    exact = normlab.compute_stats(
        store.url("tables/data"),
        columns="i,u",
        storage_options=options,
        engine="dask",
        scheduler=dask_client,
    )
    assert np.array_equal(on_dask.mean, local.mean) and np.array_equal(on_dask.var(), local.var())
    assert exact.exact and np.array_equal(exact.var(), ints.var())
    missing = store.url("tables/data/part9.parquet")
    with pytest.raises(SourceError, match=rf"{re.escape(missing)}: no such file"):
        normlab.compute_stats(missing, storage_options=options)
    with pytest.raises(SourceError, match=rf"{store.protocol}://no-bucket/t\.parquet: no such"):
        normlab.compute_stats(store.url("no-bucket/t.parquet"), storage_options=options)


def test_skip_bad_skips_and_lists_row_groups(parquet_file: Path) -> None:
    _corrupt_row_group(parquet_file, 2)
    m = normlab.compute_stats(parquet_file, columns="f,i", chunk_size=500, skip_bad=True)
    assert m.n_samples_seen == 4000
    assert m.n_skipped == 1 and m.skipped[0]["item"].endswith("t.parquet row group 2")
    assert "cannot read" in m.skipped[0]["reason"]


@pytest.mark.parametrize("n", [5, 1024, 3000, 70_000])
def test_column_major_batches_give_each_column_its_own_bits(n: int) -> None:
    """Tables reach the float kernel column-major (no transposing copy): every column gets
    the bits it gets alone, whatever other columns are read with it, NaN and inf included."""
    from normlab.kernels import reduce_float

    rng = np.random.default_rng(n)
    columns = rng.normal(1e6, 3.0, (5, n))
    columns[1, ::7] = np.nan
    columns[2, 3 % n] = np.inf
    columns[3] = 0.0
    both = reduce_float(columns.T[:, :, None])  # an (n, 5) column-major batch
    for c in range(5):
        alone = reduce_float(columns[c].reshape(-1, 1, 1))
        for got, want in zip(both, alone, strict=True):
            assert np.array_equal(got[c], want[0], equal_nan=True)
    rows = reduce_float(np.ascontiguousarray(columns.T)[:, :, None])  # the row-major grid
    assert np.array_equal(both.n_finite, rows.n_finite)
    assert np.array_equal(both.min, rows.min) and np.array_equal(both.max, rows.max)
    np.testing.assert_allclose(both.shift + both.mean_shifted, rows.shift + rows.mean_shifted)
    np.testing.assert_allclose(both.m2, rows.m2, rtol=1e-12)


@pytest.mark.parametrize(
    ("low", "high"), [(-1000, 1000), (0, 65535), (-(2**15), 2**15 - 1), (-(2**31), 2**31 - 1)]
)
def test_wide_integer_columns_stay_exact_on_the_16_bit_path(low: int, high: int) -> None:
    rng = np.random.default_rng(high)
    x = rng.integers(low, high, (20_000, 3), endpoint=True).astype(np.int32)
    x[0] = [low, high, 0]
    m = normlab.Moments().update(x)
    wide = x.astype(object)
    n = len(x)
    for j in range(3):
        s1, s2 = int(wide[:, j].sum()), int((wide[:, j] ** 2).sum())
        assert m.mean[j] == s1 / n
        assert m.var()[j] == (n * s2 - s1 * s1) / (n * n)
    assert m.min.tolist() == x.min(axis=0).tolist() and m.value_scale["dtype"] == "int32"
    column_major = normlab.Moments().update(np.asfortranarray(x))
    assert column_major == m


# ---------------------------------------------------------------------- found by a hostile test
def _cli(*args: str) -> Any:
    from normlab.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("order", ["later", "earlier"])
def test_files_disagreeing_on_numeric_columns_fail_in_either_order(
    tmp_path: Path, order: str
) -> None:
    """A numeric column only some files hold is never dropped: the same error whichever file
    comes first, from the footers, before any row is read."""
    folder = tmp_path / "ds"
    folder.mkdir()
    only_a = pa.table({"a": pa.array([1, 2], pa.int32())})
    with_c = pa.table({"a": pa.array([3, 4], pa.int32()), "c": [1.5, 2.5]})
    first, second = (only_a, with_c) if order == "later" else (with_c, only_a)
    pq.write_table(first, folder / "0.parquet")
    pq.write_table(second, folder / "1.parquet")
    lacking, holding = ("0", "1") if order == "later" else ("1", "0")
    pattern = rf"{lacking}\.parquet: no column 'c' \(which .*{holding}\.parquet has\)"
    with pytest.raises(SourceError, match=pattern):
        normlab.compute_stats(folder)
    out = tmp_path / "o.st"
    result = _cli("stats", str(folder), "-o", str(out))
    assert result.exit_code == 1 and "no column 'c'" in result.output and not out.exists()
    # columns= chooses what every file holds
    assert normlab.compute_stats(folder, columns="a").mean.tolist() == [2.5]


def test_a_column_numeric_in_one_file_and_text_in_another_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1.0], "b": ["x"]}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"a": [2.0], "b": [5.0]}), tmp_path / "1.parquet")
    with (
        pytest.warns(normlab.NormlabWarning),
        pytest.raises(
            DTypeError, match=r"0\.parquet: columns b \(string; numeric in .*1\.parquet\)"
        ),
    ):
        normlab.compute_stats(tmp_path)
    # a text column only a later file has is named too
    pq.write_table(pa.table({"a": [3.0], "note": ["y"]}), tmp_path / "2.parquet")
    files = [tmp_path / "0.parquet", tmp_path / "2.parquet"]
    pq.write_table(pa.table({"a": [1.0]}), files[0])
    with pytest.warns(normlab.NormlabWarning, match=r"note \(string\) in .*2\.parquet"):
        m = normlab.compute_stats(files)
    assert m.feature_names == ["a"] and m.mean.tolist() == [2.0]


def test_integer_types_differing_between_files_stay_exact(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int8())}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"a": pa.array([1000, 2000], pa.int32())}), tmp_path / "1.parquet")
    m = normlab.compute_stats(tmp_path)
    assert m.exact and m.mean.tolist() == [750.75] and m.max.tolist() == [2000]


BIG = [2**53 + 1, 2**53 + 3, -(2**62)]


@pytest.mark.parametrize(
    "array",
    [
        pa.array(BIG, pa.int64()),
        pa.array([2**63 + 1, 2**64 - 1, 5], pa.uint64()),
        pa.array([2**53 + 1, None, 2**53 + 3], pa.int64()),
    ],
    ids=["int64", "uint64", "int64-nulls"],
)
def test_integers_beyond_2_53_take_the_float_path(tmp_path: Path, array: Any) -> None:
    """Integers that float64 cannot hold exactly round to the nearest float64 (the documented
    float path), in a file, a DataFrame or an Arrow table; never an unreadable row group."""
    values = [v for v in array.to_pylist() if v is not None]
    want = np.array([float(v) for v in values])
    path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"a": array}), path)
    m = normlab.compute_stats(path, nan_policy="omit", skip_bad=True)
    assert not m.exact and getattr(m, "n_skipped", 0) == 0 and m.count.tolist() == [len(values)]
    assert m.mean.tolist() == pytest.approx([want.mean()], rel=1e-15)
    assert m.min.tolist() == [want.min()] and m.max.tolist() == [want.max()]
    out = tmp_path / "o.st"
    result = _cli("stats", str(path), "--nan-policy", "omit", "-o", str(out))
    assert result.exit_code == 0, result.output
    candidates: list[Any] = [pa.table({"a": array})]
    if array.null_count == 0:
        pd = pytest.importorskip("pandas")
        candidates.append(pd.DataFrame({"a": array.to_numpy()}))
        try:
            import polars as pl

            candidates.append(pl.from_arrow(pa.table({"a": array})))
        except ImportError:
            pass
    for source in candidates:
        got = normlab.compute_stats(source, nan_policy="omit")
        assert np.array_equal(got.mean, m.mean) and np.array_equal(got.max, m.max)


def test_a_one_group_task_names_its_row_group_once(parquet_file: Path) -> None:
    _corrupt_row_group(parquet_file, 1)
    with pytest.raises(SourceError) as info:
        normlab.compute_stats(parquet_file, columns="f", chunk_size=100)
    assert str(info.value).count("row group 1") == 1, str(info.value)


def test_symlinked_subfolders_of_a_parquet_folder_are_read_once(tmp_path: Path) -> None:
    """A linked subfolder was skipped unnoticed; a loop ends, and each real file is read once."""
    import os

    root, ext = tmp_path / "ds", tmp_path / "ext"
    (root / "a").mkdir(parents=True)
    ext.mkdir()
    pq.write_table(pa.table({"a": [1.0]}), root / "a" / "0.parquet")
    pq.write_table(pa.table({"a": [3.0, 5.0]}), ext / "1.parquet")
    os.symlink(ext, root / "ext")
    m = normlab.compute_stats(root)
    assert m.n_samples_seen == 3 and m.mean.tolist() == [3.0]
    os.symlink(root, ext / "loop")
    os.symlink(ext / "1.parquet", root / "a" / "again.parquet")
    with pytest.warns(normlab.NormlabWarning) as record:
        again = normlab.compute_stats(root)
    said = " | ".join(str(w.message) for w in record)
    assert "loop (the folder" in said and "1.parquet (the file" in said, said
    # a folder whose only Parquet files lie behind a link is a Parquet folder too
    only = tmp_path / "only"
    only.mkdir()
    os.symlink(ext, only / "ext")
    with pytest.warns(normlab.NormlabWarning):
        assert normlab.compute_stats(only).n_samples_seen == 3
    assert again.n_samples_seen == 3 and again.mean.tolist() == [3.0]
