"""One CLI option per API option, `normlab comoments`, and messages that name real options."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import normlab
from normlab import schemes
from normlab.cli import CHOSEN_BY_SCHEME_NAME, app

runner = CliRunner()
SRC = Path(normlab.__file__).parent
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


def command_options(name: str) -> dict[str, str]:
    """``{python name: --flag}`` of one command's options."""
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return {
        p.name: max(o for o in p.opts if o.startswith("--"))
        for p in command.params
        if any(o.startswith("--") for o in p.opts)
    }


def all_options() -> set[str]:
    group = typer.main.get_command(app)
    flags = {o for p in group.params for o in p.opts}
    for command in group.commands.values():  # type: ignore[attr-defined]
        flags |= {o for p in command.params for o in p.opts}
    return flags | {"--help"}


@pytest.mark.parametrize("scheme", schemes.names())
def test_every_constructor_parameter_of_every_scheme_is_a_fit_option(scheme):
    options = command_options("fit")
    init = inspect.signature(type(schemes.get(scheme)).__init__)
    for name, parameter in init.parameters.items():
        if parameter.kind is not parameter.KEYWORD_ONLY or name in CHOSEN_BY_SCHEME_NAME:
            continue
        assert options.get(name) == "--" + name.replace("_", "-"), (scheme, name)
        assert name in schemes.entry(scheme).options, (scheme, name)  # fit refuses the others


def test_every_scheme_option_of_fit_is_a_constructor_parameter():
    parameters = set()
    for scheme in schemes.names():
        parameters |= set(inspect.signature(type(schemes.get(scheme)).__init__).parameters)
    reading = set(command_options("stats")) | {"stats_file", "scheme", "output"}
    for name in command_options("fit"):
        assert name in parameters or name in reading, name


@pytest.fixture()
def floats(tmp_path):
    x = np.random.default_rng(0).normal(3.0, 2.0, (200, 6))
    np.save(tmp_path / "x.npy", x)
    return x, tmp_path / "x.npy"


def fitted(tmp_path, *args):
    out = tmp_path / "n.safetensors"
    result = invoke("fit", *args, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return normlab.load(out)


def test_each_fit_option_reaches_the_normalizer(floats, tmp_path):
    x, path = floats
    assert float(fitted(tmp_path, path, "--scheme", "max", "--max-value", 16).scale_) == 16
    minmax = fitted(tmp_path, path, "--scheme", "minmax", "--feature-range", "-1", "1")
    y = minmax.transform(x)
    assert y.min() == pytest.approx(-1) and y.max() == pytest.approx(1)
    assert fitted(tmp_path, path, "--scheme", "minmax", "--axis", "global").scale_.shape == ()
    pca = fitted(tmp_path, path, "--scheme", "pca", "--n-components", 2)
    assert pca.transform(x).shape == (200, 2)
    zca = fitted(tmp_path, path, "--scheme", "zca", "--eps", 0.5, "--eps-mode", "absolute")
    assert zca.eps_ == 0.5
    sample = fitted(tmp_path, path, "--scheme", "feature", "--ddof", 1)
    np.testing.assert_allclose(sample.scale_, x.std(axis=0, ddof=1), rtol=1e-12)
    floored = fitted(tmp_path, path, "--scheme", "feature", "--std-floor", 5)
    assert (floored.scale_ == 5).all()
    wide = fitted(tmp_path, path, "--scheme", "global", "--dtype", "float64")
    assert wide.transform(x.astype(np.float32)).dtype == np.float64


def test_percentiles_and_nan_policy(tmp_path):
    x = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1)
    np.save(tmp_path / "u8.npy", x)
    clip = fitted(
        tmp_path, tmp_path / "u8.npy", "--scheme", "clip-percentile", "--low", 1, "--high", 99
    )
    assert (float(clip.low_.max()), float(clip.high_.max())) == (1.0, 197.0)
    nan = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]])
    np.save(tmp_path / "nan.npy", nan)
    refused = invoke("fit", tmp_path / "nan.npy", "-o", tmp_path / "n", "-q")
    assert refused.exit_code == 1 and "--nan-policy omit" in refused.stderr
    omitted = fitted(tmp_path, tmp_path / "nan.npy", "--nan-policy", "omit")
    np.testing.assert_allclose(omitted.shift_, [3.0, 5.0])


def test_an_option_the_scheme_does_not_take_is_refused_with_the_ones_it_does(floats, tmp_path):
    _, path = floats
    result = invoke("fit", path, "--scheme", "channel", "--eps", 1, "-o", tmp_path / "n")
    assert result.exit_code == 1
    assert "--eps: not an option of scheme 'channel'" in result.stderr
    assert "--std-floor" in result.stderr
    turned = invoke("fit", path, "--scheme", "feature", "--axis", "global", "-o", tmp_path / "n")
    assert turned.exit_code == 1 and "--scheme global" in turned.stderr


def test_apply_dtype_and_chunk_size(floats, tmp_path):
    x, path = floats
    norm = tmp_path / "n.safetensors"
    assert invoke("fit", path, "--scheme", "feature", "-o", norm, "-q").exit_code == 0
    out = tmp_path / "y.npy"
    result = invoke("apply", path, "-n", norm, "-o", out, "--dtype", "float32", "--chunk-size", 7)
    assert result.exit_code == 0, result.output
    y = np.load(out)
    assert y.dtype == np.float32
    expected = normlab.load(norm)
    expected.dtype = "float32"
    np.testing.assert_array_equal(y, expected.transform(x))


def test_comoments_command_writes_what_zca_fits_from(floats, tmp_path):
    x, path = floats
    out = tmp_path / "c.safetensors"
    result = invoke("comoments", path, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert "features     6 (samples (6,))" in result.stdout
    assert normlab.load(out) == normlab.compute_comoments(x)
    shown = invoke("show", out)
    assert shown.exit_code == 0 and "kept         dense, float64" in shown.stdout
    assert invoke("show", out, "--format", "json").exit_code == 0
    from_file = fitted(tmp_path, "--stats", out, "--scheme", "zca")
    from_data = fitted(tmp_path, path, "--scheme", "zca")
    np.testing.assert_allclose(from_file.matrix_, from_data.matrix_, rtol=1e-12)
    assert invoke("show", tmp_path / "n.safetensors", "--format", "json").exit_code == 0


def string_literals() -> list[tuple[str, str]]:
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append((str(path.relative_to(SRC)), node.value))
    return found


def test_every_option_named_in_the_source_exists():
    known = all_options()
    unknown = {
        (where, flag)
        for where, text in string_literals()
        for flag in OPTION.findall(text)
        if flag not in known
    }
    assert not unknown


def test_error_messages_name_options_of_the_command_the_user_ran(floats, tmp_path):
    x, path = floats
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]))
    np.save(tmp_path / "img.npy", np.zeros((3, 4, 4, 3), np.uint8))
    stats = tmp_path / "s.safetensors"
    assert invoke("stats", path, "-o", stats, "-q").exit_code == 0
    out = ("-o", tmp_path / "out", "-q")
    failures = [
        ("fit", path, "--scheme", "max", *out),
        ("fit", tmp_path / "nan.npy", *out),
        ("fit", tmp_path / "nan.npy", "--scheme", "zca", "--nan-policy", "omit", *out),
        ("stats", tmp_path / "nan.npy", *out),
        ("fit", "--stats", stats, "--scheme", "zca", *out),
        ("fit", "--stats", stats, "--scheme", "clip-percentile", *out),
        ("fit", path, "--scheme", "raw", "--eps", 1, *out),
        ("fit", path, "--dtype", "int8", *out),
        ("stats", tmp_path / "img.npy", "--percentiles", "x", *out),
        ("diagnose", stats, "-q"),
    ]
    for argv in failures:
        result = invoke(*argv)
        assert result.exit_code == 1, (argv, result.output)
        message = result.stderr
        own = set(command_options(str(argv[0])).values()) | {"--help"}
        for flag in OPTION.findall(message):
            elsewhere = re.search(rf"normlab (\w+)[^`]*{flag}", message)
            where = set(command_options(elsewhere.group(1)).values()) if elsewhere else own
            assert flag in where, (argv, message)
        for name in re.findall(r"(?<![\w.])([a-z][a-z0-9_]*)=", message):
            assert name not in command_options(str(argv[0])), (argv, message)


def test_every_keyword_of_apply_file_is_an_apply_option():
    from normlab.apply import apply_file

    options = command_options("apply")
    renamed = {"progress": "quiet"}  # a progress bar unless --quiet
    for name, parameter in inspect.signature(apply_file).parameters.items():
        if parameter.kind is parameter.KEYWORD_ONLY:
            assert renamed.get(name, name) in options, name
    assert "dtype" in options  # the normalizer's output dtype, for this file


def test_every_data_reading_command_takes_the_same_reading_options():
    """Declared once (`reads_data`): a command that takes one reading option takes them all."""
    from normlab.cli import READING_OPTIONS

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    reading = set(READING_OPTIONS) - {"key"}  # --key also names the array `apply` reads
    takers = {
        name for name, command in commands.items() if reading & {p.name for p in command.params}
    }
    assert {"stats", "fit", "comoments", "diagnose"} <= takers
    flags = {name: {command_options(name)[o] for o in READING_OPTIONS} for name in takers}
    assert len({frozenset(f) for f in flags.values()}) == 1, flags
    for name in takers:
        assert set(READING_OPTIONS) <= set(command_options(name)), name


def test_diagnose_reads_table_columns(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=200), "b": rng.normal(size=200), "s": ["x"] * 200})
    pq.write_table(table, tmp_path / "t.parquet")
    result = invoke("diagnose", tmp_path / "t.parquet", "--columns", "a", "--json")
    assert result.exit_code == 0, result.output
    assert '"n_features": 1' in result.output
    result = invoke("diagnose", tmp_path / "t.parquet", "--columns", "nope", "--json")
    assert result.exit_code == 1 and "no column 'nope'" in result.output


def test_a_data_file_given_where_a_saved_file_is_expected_is_named(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    pq.write_table(pa.table({"a": [1.0, 2.0]}), tmp_path / "t.parquet")
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    for path, what in (("t.parquet", "a Parquet file"), ("x.npy", "a .npy array")):
        result = invoke("show", tmp_path / path)
        assert result.exit_code == 1
        assert f"it is {what}: data, not saved statistics" in result.output
