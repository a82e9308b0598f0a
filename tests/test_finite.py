"""NaN/inf on every transform path: refused by default, naming the row and column (and file);
kept only by choice (``nan_policy="propagate"``); outputs beyond the output dtype always refused.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import normlab
from normlab import schemes
from normlab.apply import apply_file
from normlab.cli import app
from normlab.errors import NonFiniteError, NormlabError

runner = CliRunner()


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def _train() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(100, 4))


def _dirty() -> np.ndarray:
    test = _train()
    test[7, 1] = np.nan
    test[3, 0] = np.inf
    return test


# every scheme that fits 2-D float data (channel needs image-shaped samples; zca/pca: co-moments)
FLAT_SCHEMES = [s for s in schemes.names() if s not in ("channel", "clip-percentile")]


@pytest.mark.parametrize("scheme", FLAT_SCHEMES)
def test_transform_refuses_nan_and_inf_naming_row_and_column(scheme: str) -> None:
    options = {"max_value": 10.0} if scheme == "max" else {}  # float data have no scale
    normalizer = schemes.get(scheme, **options).fit(_train())
    with pytest.raises(NonFiniteError, match=r"inf at row 3, column 0.*nan_policy='propagate'"):
        normalizer.transform(_dirty())
    kept = normalizer.transform(_dirty(), nan_policy="propagate")
    assert np.isnan(kept[7]).any() and not np.isfinite(kept[3]).all()
    clean_rows = np.delete(np.arange(100), [3, 7])
    assert np.isfinite(kept[clean_rows]).all()  # propagation never reports a false overflow
    if normalizer.has_inverse:
        with pytest.raises(NonFiniteError, match="row 3, column 0"):
            normalizer.inverse_transform(_dirty())
        back = normalizer.inverse_transform(_dirty(), nan_policy="propagate")
        assert np.isfinite(back[clean_rows]).all()
    with pytest.raises(NormlabError, match="'raise' or 'propagate'"):
        normalizer.transform(_train(), nan_policy="omit")


def test_clip_percentile_and_images_name_the_position() -> None:
    x = np.random.default_rng(1).integers(0, 256, (50, 4, 4, 3)).astype(np.float32)
    for scheme in ("channel", "clip-percentile"):
        normalizer = schemes.get(scheme).fit(x.astype(np.uint8))
        bad = x.copy()
        bad[9, 2, 1, 0] = np.nan
        with pytest.raises(NonFiniteError, match=r"nan at row 9 at \(2, 1, 0\)"):
            normalizer.transform(bad)


def test_the_message_names_a_table_column(tmp_path) -> None:
    columns = {c: pa.array(_train()[:, i]) for i, c in enumerate("abcd")}
    pq.write_table(pa.table(columns), tmp_path / "train.parquet")
    stats = normlab.compute_stats(tmp_path / "train.parquet")
    normalizer = schemes.get("feature").fit_stats(stats)
    with pytest.raises(NonFiniteError, match="column 1 \\(feature 'b'\\)"):
        normalizer.transform(np.where(np.arange(4) == 1, np.nan, _train()))


def test_float16_overflow_is_refused_with_the_position() -> None:
    normalizer = schemes.get("feature", dtype="float16").fit(_train())
    far = _train()
    far[50, 2] = 1e6
    for policy in ("raise", "propagate"):
        with pytest.raises(NormlabError, match=r"float16.*row 50, column 2.*dtype='float64'"):
            normalizer.transform(far, nan_policy=policy)
    normalizer.dtype = "float64"  # what the message says works
    assert np.isfinite(normalizer.transform(far)).all()
    raw = schemes.get("raw", dtype="float16").fit(_train())
    with pytest.raises(NormlabError, match="exceed the range of float16"):
        raw.transform(far)


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitening_propagates_a_nan_to_its_sample_only(method: str) -> None:
    from normlab.comoments import compute_comoments

    w = schemes.get(method).fit_stats(compute_comoments(_train()))
    with pytest.raises(NonFiniteError, match="row 3, column 0"):
        w.transform(_dirty())
    out = w.transform(_dirty(), nan_policy="propagate")
    assert np.isnan(out[7]).all() and np.isfinite(np.delete(out, [3, 7], axis=0)).all()


def test_sklearn_transformer_passes_nan_through_as_standard_scaler() -> None:
    from sklearn.preprocessing import StandardScaler

    from normlab.sklearn import InputScaler

    test = _train()
    test[7, 1] = np.nan
    ours = InputScaler().fit(_train()).transform(test)
    theirs = StandardScaler().fit(_train()).transform(test)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    with pytest.raises(ValueError, match="inf"):  # scikit-learn's own check refuses inf
        InputScaler().fit(_train()).transform(_dirty())
    far = _train()
    far[50, 2] = 1e6
    with pytest.raises(NormlabError, match="float16"):
        InputScaler(dtype=np.float16).fit(_train()).transform(far)


def test_torch_module_passes_values_through_as_a_model_layer() -> None:
    torch = pytest.importorskip("torch")
    from normlab.export import to_torch

    module = to_torch(schemes.get("feature").fit(_train()))
    out = module(torch.as_tensor(_dirty()))
    assert torch.isnan(out[7, 1]) and torch.isinf(out[3, 0])  # documented: no data checks


# ---------------------------------------------------------------- the command line and files
@pytest.fixture()
def fitted(tmp_path):
    np.save(tmp_path / "tr.npy", _train())
    result = invoke("fit", tmp_path / "tr.npy", "--scheme", "feature", "-o", tmp_path / "z.st")
    assert result.exit_code == 0, result.output
    return tmp_path / "z.st"


def _inputs(tmp_path) -> dict[str, tuple[object, list[str]]]:
    """The dirty test data in every format ``apply`` reads."""
    np.save(tmp_path / "te.npy", _dirty())
    np.savez(tmp_path / "te.npz", x=_dirty())
    columns = {c: pa.array(_dirty()[:, i]) for i, c in enumerate("abcd")}
    pq.write_table(pa.table(columns), tmp_path / "te.parquet")
    inputs = {
        "npy": (tmp_path / "te.npy", []),
        "npz": (tmp_path / "te.npz", ["--key", "x"]),
        "parquet": (tmp_path / "te.parquet", []),
    }
    try:
        import h5py

        with h5py.File(tmp_path / "te.h5", "w") as handle:
            handle["x"] = _dirty()
        inputs["hdf5"] = (tmp_path / "te.h5", ["--key", "x"])
    except ImportError:
        pass
    try:
        import zarr

        zarr.save_array(str(tmp_path / "te.zarr"), _dirty())
        inputs["zarr"] = (tmp_path / "te.zarr", [])
    except ImportError:
        pass
    return inputs


@pytest.mark.parametrize("kind", ["npy", "npz", "parquet", "hdf5", "zarr"])
@pytest.mark.parametrize("chunk", [None, 2])
def test_apply_refuses_nan_and_writes_nothing(fitted, tmp_path, kind, chunk) -> None:
    inputs = _inputs(tmp_path)
    if kind not in inputs:
        pytest.skip(f"{kind} needs an extra that is not installed")
    path, extra = inputs[kind]
    out = tmp_path / "y.npy"
    chunks = ["--chunk-size", chunk] if chunk else []
    result = invoke("apply", path, "-n", fitted, "-o", out, "-q", *extra, *chunks)
    assert result.exit_code == 1
    assert f"{path.name} holds inf at row 3, column 0" in result.output
    assert "--nan-policy propagate" in result.output and "nan_policy" not in result.output
    assert not out.exists()
    result = invoke(
        "apply", path, "-n", fitted, "-o", out, "-q", *extra, *chunks, "--nan-policy", "propagate"
    )
    assert result.exit_code == 0, result.output
    y = np.load(out)
    assert np.isinf(y[3, 0]) and np.isnan(y[7, 1])


def test_apply_names_the_row_in_the_file_after_many_windows(fitted, tmp_path) -> None:
    data = _train()
    data[57, 3] = np.nan
    np.save(tmp_path / "late.npy", data)
    with pytest.raises(NonFiniteError, match="late.npy holds nan at row 57, column 3"):
        apply_file(normlab.load(fitted), tmp_path / "late.npy", tmp_path / "o.npy", chunk_size=5)
    assert not (tmp_path / "o.npy").exists()


def test_apply_float16_overflow_names_an_option_that_works(fitted, tmp_path) -> None:
    data = _train()
    data[50, 2] = 1e6
    np.save(tmp_path / "far.npy", data)
    out = tmp_path / "o.npy"
    result = invoke("apply", tmp_path / "far.npy", "-n", fitted, "-o", out, "--dtype", "float16")
    assert result.exit_code == 1 and not out.exists()
    assert "row 50, column 2" in result.output
    assert "--dtype float64" in result.output and "np." not in result.output
    result = invoke("apply", tmp_path / "far.npy", "-n", fitted, "-o", out, "--dtype", "float64")
    assert result.exit_code == 0, result.output
