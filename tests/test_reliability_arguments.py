"""Wrong arguments give a NormlabError (or work), never a raw exception.

Wrong-typed values are generated from the signatures of every public constructor, method
and function, so a new parameter is covered without editing this test; out-of-range values
come from the table ``OUT_OF_RANGE`` beside it. The CLI: every option of every command gets
nonsense, and must answer with one ``error:`` line and exit 1 (or a usage error, exit 2).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab.errors import NormlabError, NormlabWarning

X = np.random.default_rng(0).integers(0, 256, (12, 4, 3), dtype=np.uint8)
WRONG = ["a", 1.5, -1, 10**30, [1, 2], {"k": 1}, object(), float("nan"), True, None, b"x"]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own folder: a nonsense value given to an output or checkpoint
    argument (``-o -5``, ``checkpoint="a"``) is a valid relative path and gets written."""
    monkeypatch.chdir(tmp_path)


def _constructors() -> dict[str, Callable[..., Any]]:
    from normlab.histogram import ClipPercentile
    from normlab.sklearn import InputScaler

    found = {
        name: getattr(normlab, name)
        for name in normlab.__all__
        if inspect.isclass(getattr(normlab, name))
        and not issubclass(getattr(normlab, name), BaseException)
    }
    found["ClipPercentile"] = ClipPercentile
    found["InputScaler"] = InputScaler
    return found


def _functions() -> dict[str, Callable[..., Any]]:
    from normlab.apply import apply_file

    found = {
        name: getattr(normlab, name)
        for name in normlab.__all__
        if inspect.isfunction(getattr(normlab, name))
    }
    found["apply_file"] = apply_file
    return found


def _fitted(cls: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = cls()
        if hasattr(obj, "fit"):
            if cls.__name__ == "InputScaler":
                return obj.fit(X.reshape(12, -1))
            return obj.fit(X)
        if hasattr(obj, "update"):
            return obj.update(X)
    return obj


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run; success and NormlabError pass, anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        try:
            func(*args, **kwargs)
        except NormlabError:
            pass


def _params(func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    return [
        p
        for p in sig.parameters.values()
        if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


CONSTRUCTOR_CASES = [
    (name, p.name) for name, cls in _constructors().items() for p in _params(cls.__init__)
]


@pytest.mark.parametrize("cls_name,param", CONSTRUCTOR_CASES)
def test_constructors_refuse_wrong_types(cls_name, param):
    cls = _constructors()[cls_name]
    for value in WRONG:

        def make_and_use(value: Any = value) -> None:
            obj = cls(**{param: value})
            if hasattr(obj, "fit"):
                obj.fit(X.reshape(12, -1) if cls_name == "InputScaler" else X)
            elif hasattr(obj, "update"):
                obj.update(X)

        _call(make_and_use)


METHOD_CASES = [
    (cls_name, meth, p.name)
    for cls_name, cls in _constructors().items()
    for meth, func in inspect.getmembers(cls, inspect.isfunction)
    if not meth.startswith("_")
    and meth not in ("save", "load", "from_tensors", "metadata", "to_tensors", "set_params")
    and meth not in ("get_params", "set_output", "get_feature_names_out", "get_metadata_routing")
    and not meth.endswith("_request")  # scikit-learn's metadata routing
    for p in _params(func)
]


@pytest.mark.parametrize("cls_name,method,param", METHOD_CASES)
def test_methods_refuse_wrong_types(cls_name, method, param):
    obj = _fitted(_constructors()[cls_name])
    func = getattr(obj, method)
    params = _params(func)
    for value in WRONG:
        kwargs = {}
        for p in params:
            if p.name == param:
                kwargs[p.name] = value
            elif p.default is inspect.Parameter.empty:
                kwargs[p.name] = X if cls_name != "InputScaler" else X.reshape(12, -1)
        _call(func, **kwargs)


FUNCTION_CASES = [(name, p.name) for name, f in _functions().items() for p in _params(f)]


@pytest.mark.parametrize("func_name,param", FUNCTION_CASES)
def test_functions_refuse_wrong_types(func_name, param, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # checkpoint="a" is a valid folder name: it is written there
    func = _functions()[func_name]
    defaults: dict[str, Any] = {"source": X, "path": tmp_path / "missing.safetensors"}
    if func_name == "apply_file":
        np.save(tmp_path / "x.npy", X)
        defaults = {
            "normalizer": _fitted(normlab.ZScore),
            "source": tmp_path / "x.npy",
            "output": tmp_path / "y.npy",
        }
    for value in WRONG:
        kwargs = {}
        for p in _params(func):
            if p.name == param:
                kwargs[p.name] = value
            elif p.default is inspect.Parameter.empty:
                kwargs[p.name] = defaults.get(p.name, X)
        _call(func, **kwargs)


# The out-of-range table: calls that must raise NormlabError (normalizers check their
# parameters when fitting starts, as scikit-learn's estimators do).
OUT_OF_RANGE: list[tuple[str, Callable[[], Any]]] = [
    ("Moments channel_axis 'a'", lambda: normlab.Moments(channel_axis="a")),
    ("Moments channel_axis out of the sample", lambda: normlab.Moments(channel_axis=7).update(X)),
    ("var ddof '1'", lambda: normlab.Moments.from_array(X).var(ddof="1")),
    ("var ddof -1", lambda: normlab.Moments.from_array(X).var(ddof=-1)),
    ("ZScore ddof -1", lambda: normlab.ZScore(ddof=-1).fit(X)),
    ("ZScore std_floor -1", lambda: normlab.ZScore(std_floor=-1.0).fit(X)),
    ("ZScore std_floor inf", lambda: normlab.ZScore(std_floor=float("inf")).fit(X)),
    ("ZScore std_floor subnormal", lambda: normlab.ZScore(std_floor=1e-310).fit(X)),
    ("ZScore dtype int", lambda: normlab.ZScore(dtype=np.int32).fit(X)),
    ("MinMax (0, inf)", lambda: normlab.MinMax(feature_range=(0, float("inf"))).fit(X)),
    ("MinMax (1, 0)", lambda: normlab.MinMax(feature_range=(1, 0)).fit(X)),
    ("MinMax (-1e308, 1e308)", lambda: normlab.MinMax(feature_range=(-1e308, 1e308)).fit(X)),
    ("MinMax one number", lambda: normlab.MinMax(feature_range=1).fit(X)),
    ("MaxScale max_value 0", lambda: normlab.MaxScale(max_value=0).fit(X)),
    ("MaxScale max_value nan", lambda: normlab.MaxScale(max_value=float("nan")).fit(X)),
    ("MaxAbs axis", lambda: normlab.MaxAbs(axis="rows").fit(X)),
    ("Whiten eps -1", lambda: normlab.Whiten(eps=-1.0).fit(X)),
    ("Whiten n_components 0", lambda: normlab.Whiten(n_components=0).fit(X)),
    ("compute_stats chunk_size 0", lambda: normlab.compute_stats(X, chunk_size=0)),
    ("compute_stats workers 0", lambda: normlab.compute_stats(X, engine="local", workers=0)),
    ("compute_stats engine", lambda: normlab.compute_stats(X, engine="spark")),
    ("compute_stats percentiles 101", lambda: normlab.compute_stats(X, percentiles=[101])),
    ("compute_stats nan_policy", lambda: normlab.compute_stats(X, nan_policy="drop")),
]


@pytest.mark.parametrize("name", [n for n, _ in OUT_OF_RANGE])
def test_out_of_range_values_are_refused(name):
    func = dict(OUT_OF_RANGE)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        with pytest.raises(NormlabError):
            func()


# ---- the CLI ------------------------------------------------------------------------------


def _commands() -> list[tuple[str, str]]:
    import typer.main

    from normlab.cli import app

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        for p in cmd.params:
            if p.param_type_name == "option" and p.opts and not p.is_flag:
                out.append((name, p.opts[0]))
    return out


@pytest.mark.parametrize("command,option", _commands())
def test_cli_options_with_nonsense_give_one_line(command, option, tmp_path):
    from normlab.cli import app

    np.save(tmp_path / "x.npy", X)
    normlab.compute_stats(X).save(tmp_path / "s.st")
    _fitted(normlab.ZScore).save(tmp_path / "n.st")
    runner = CliRunner()
    x, s, n = (str(tmp_path / f) for f in ("x.npy", "s.st", "n.st"))
    base = {
        "stats": ["stats", x, "-o", str(tmp_path / "o.st")],
        "fit": ["fit", x, "-o", str(tmp_path / "o.st")],
        "diagnose": ["diagnose", x],
        "apply": ["apply", x, "-n", n, "-o", str(tmp_path / "y.npy")],
        "export": ["export", n, "--to", "json", "-o", str(tmp_path / "e.json")],
        "show": ["show", s],
        "demo": ["demo", "--quick"],
    }.get(command, [command])
    if command in ("compare",):
        pytest.skip("trains models: its options are checked by the lab's own tests")
    for value in ("-5", "nan", "abc", "0"):
        if option in base:  # replace the base's value of this option
            i = base.index(option)
            args = base[:i] + base[i + 2 :] + [option, value]
        else:
            args = [*base, option, value]
        result = runner.invoke(app, args)
        if result.exit_code == 1:
            err = result.output.strip().splitlines()
            assert any(line.startswith("error:") for line in err), (args, result.output)
            assert "Traceback" not in result.output
        assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), (args, repr(result.exception))


@pytest.mark.parametrize("source", ["x.npy", "s.tar", "t.parquet"])
def test_reading_options_of_the_wrong_type_are_refused_for_every_source(tmp_path, source):
    """glob and skip_bad are checked once, whichever adapter reads the source."""
    import io
    import tarfile

    from PIL import Image

    path = tmp_path / source
    if source.endswith(".npy"):
        np.save(path, np.zeros((3, 2)))
    elif source.endswith(".tar"):
        png = io.BytesIO()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, format="PNG")
        with tarfile.open(path, "w") as shard:
            member = tarfile.TarInfo("0.png")
            member.size = len(png.getvalue())
            shard.addfile(member, io.BytesIO(png.getvalue()))
    else:
        pa = pytest.importorskip("pyarrow")
        pytest.importorskip("pyarrow.parquet").write_table(pa.table({"a": [1.0]}), path)
    with pytest.raises(NormlabError, match="glob must be a string"):
        normlab.compute_stats(path, glob=3)
    with pytest.raises(NormlabError, match="skip_bad must be True or False"):
        normlab.compute_stats(path, skip_bad="yes")
