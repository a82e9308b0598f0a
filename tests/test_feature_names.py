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


def test_normalizers_keep_the_names_in_their_files(parquet_file: Path, tmp_path: Path) -> None:
    from normlab.normalizers import Normalizer, ZScore
    from normlab.whitening import Whiten

    m = normlab.compute_stats(parquet_file, columns="price,count")
    z = ZScore().fit_stats(m)
    assert z.feature_names_ == ["price", "count"]
    z.save(str(tmp_path / "z.safetensors"))
    assert Normalizer.load(str(tmp_path / "z.safetensors")).feature_names_ == ["price", "count"]
    assert ZScore(axis="global").fit_stats(m).feature_names_ == ["price", "count"]
    w = Whiten().fit_stats(normlab.compute_comoments(parquet_file, columns="price,count"))
    assert w.feature_names_ == ["price", "count"]
    assert ZScore().fit(np.arange(6.0).reshape(3, 2)).feature_names_ is None


def test_input_scaler_names_features_as_scikit_learn_does(parquet_file: Path) -> None:
    pd = pytest.importorskip("pandas")
    from normlab.normalizers import ZScore
    from normlab.sklearn import InputScaler

    frame = pd.read_parquet(parquet_file, columns=["price", "count"])
    scaler = InputScaler().fit(frame)
    assert scaler.feature_names_in_.tolist() == ["price", "count"]
    assert scaler.get_feature_names_out().tolist() == ["price", "count"]
    assert scaler.normalizer_.feature_names_ == ["price", "count"]
    assert scaler.normalizer_.stats_.feature_names == ["price", "count"]
    scaler.partial_fit(frame)  # the names stay through merges
    assert scaler.normalizer_.stats_.feature_names == ["price", "count"]
    out = scaler.set_output(transform="pandas").transform(frame)
    assert list(out.columns) == ["price", "count"]

    named = ZScore().fit_stats(normlab.compute_stats(parquet_file, columns="price,count"))
    wrapped = InputScaler.from_normalizer(named)
    assert wrapped.feature_names_in_.tolist() == ["price", "count"]
    assert wrapped.get_feature_names_out().tolist() == ["price", "count"]
    np.testing.assert_allclose(wrapped.transform(frame), scaler.transform(frame).to_numpy())


def test_exports_carry_the_names(parquet_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from normlab import export
    from normlab.cli import app
    from normlab.normalizers import ZScore

    z = ZScore().fit_stats(normlab.compute_stats(parquet_file, columns="price,count"))
    assert export.to_json(z)["feature_names"] == ["price", "count"]
    assert export.to_json(z.stats_)["feature_names"] == ["price", "count"]
    assert "feature_names" not in export.to_json(ZScore().fit(np.arange(6.0).reshape(3, 2)))
    scaler = export.to_sklearn(z)
    assert scaler.get_feature_names_out().tolist() == ["price", "count"]
    rebuilt = export.sklearn_from_state(export.sklearn_state(scaler))
    assert rebuilt.feature_names_in_.tolist() == ["price", "count"]
    path = tmp_path / "z.safetensors"
    z.save(str(path))
    runner = CliRunner()
    for target, suffix in (("keras", ".json"), ("json", ".json"), ("sklearn", ".json")):
        out = tmp_path / f"{target}{suffix}"
        result = runner.invoke(app, ["export", str(path), "--to", target, "-o", str(out)])
        assert result.exit_code == 0, result.output
        if target == "keras":
            snippet = (tmp_path / "load_keras_normalizer.py").read_text()
            assert "FEATURE_NAMES = ['price', 'count']" in snippet
        if target == "json":
            assert '"feature_names"' in out.read_text()
    pytest.importorskip("torch")
    out = tmp_path / "t.safetensors"
    result = runner.invoke(app, ["export", str(path), "--to", "torch", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "FEATURE_NAMES = ['price', 'count']" in (tmp_path / "load_t_normalizer.py").read_text()


def test_cli_rows_are_labelled_by_column_name(parquet_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from normlab.cli import app

    runner = CliRunner()
    stats, fitted = tmp_path / "s.safetensors", tmp_path / "n.safetensors"
    result = runner.invoke(
        app, ["stats", str(parquet_file), "--columns", "price,count", "-o", str(stats), "-q"]
    )
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if line}
    assert rows["column"] == ["mean", "std", "min", "max"]
    m = normlab.Moments.load(stats)
    assert rows["count"][2:] == ["0", str(int(m.max[1]))]  # integers shown as integers
    assert float(rows["price"][0]) == pytest.approx(m.mean[0], abs=1e-3)
    shown = runner.invoke(app, ["show", str(stats)])
    assert shown.exit_code == 0 and "price" in shown.output and "count" in shown.output
    as_json = runner.invoke(app, ["show", str(stats), "--format", "json"])
    assert '"feature_names": ["price", "count"]' in as_json.output
    result = runner.invoke(
        app, ["fit", "--stats", str(stats), "--scheme", "feature", "-o", str(fitted)]
    )
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if line}
    assert rows["column"] == ["shift_", "scale_"] and len(rows["price"]) == 2
    assert "price" in runner.invoke(app, ["show", str(fitted)]).output
