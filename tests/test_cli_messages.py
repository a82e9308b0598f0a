"""What the command line tells people to type works where they are: CLI options in the CLI,
Python keywords in Python, snippets that are Python with exact values; rarity only where it
means something; column labels that stay distinct."""

from __future__ import annotations

import ast
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from normlab import schemes
from normlab.cli import app
from normlab.errors import NormlabError

runner = CliRunner()


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


def _pasted(output: str) -> list[str]:
    """The lines ``stats``/``fit`` print to paste: ``mean = ...``, ``std = ...`` and the
    library calls after ``# <library>: ``."""
    lines = [line for line in output.splitlines() if re.match(r"(mean|std) = \(", line)]
    calls = re.findall(r"^# (?:torchvision|albumentations|keras): (.*)$", output, re.M)
    return lines + calls


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32"])
@pytest.mark.parametrize("axis", ["channel", "global"])
def test_paste_lines_are_python_with_the_exact_scale(tmp_path, dtype, axis) -> None:
    kind = np.dtype(dtype)
    rng = np.random.default_rng(0)
    if kind.kind == "f":
        x = rng.random((20, 3, 3, 3)).astype(kind)
    else:
        info = np.iinfo(kind)
        x = rng.integers(info.min, int(info.max) + 1, (20, 3, 3, 3), dtype=np.int64).astype(kind)
    np.save(tmp_path / "x.npy", x)
    result = invoke("stats", tmp_path / "x.npy", "--axis", axis, "-o", tmp_path / "s", "-q")
    assert result.exit_code == 0, result.output
    pasted = _pasted(result.stdout)
    assert len(pasted) == 5, result.stdout
    namespace: dict[str, object] = {}
    exec("\n".join(pasted[:2]), namespace)  # mean = (...), std = (...)
    for call in pasted[2:]:
        tree = ast.parse(call, mode="eval")  # valid Python
        assert isinstance(tree.body, ast.Call)
        for keyword in tree.body.keywords:
            if keyword.arg == "max_pixel_value":  # signed data stay in data units
                top = float(np.iinfo(kind).max) if kind.kind == "u" else 1.0
                assert ast.literal_eval(keyword.value) == top  # 65535.0: never an e-form
    if kind.kind == "u":
        top = int(np.iinfo(kind).max)
        assert f"(data / {top})" in result.stdout and f"Rescaling(1/{top})" in result.stdout


@pytest.mark.parametrize("target", ["sklearn", "torch", "keras"])
def test_export_snippets_compile(tmp_path, target) -> None:
    x = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    assert (
        invoke("fit", tmp_path / "x.npy", "--scheme", "channel", "-o", tmp_path / "n").exit_code
        == 0
    )
    out = tmp_path / "e.json"
    result = invoke("export", tmp_path / "n", "--to", target, "-o", out)
    assert result.exit_code == 0, result.output
    compile((tmp_path / "load_e_normalizer.py").read_text(), "snippet", "exec")


def _fit_options() -> dict[str, str]:
    command = typer.main.get_command(app).commands["fit"]  # type: ignore[attr-defined]
    return {
        p.name: max(o for o in p.opts if o.startswith("--"))
        for p in command.params
        if any(o.startswith("--") for o in p.opts)
    }


@pytest.mark.parametrize(
    "name",
    [n for n in _fit_options() if "_" in n and n in schemes.entry("feature").options]
    + ["max_value"],
)
@pytest.mark.parametrize("value", ["-1", "0"])
def test_fit_errors_name_the_flag_not_the_keyword(tmp_path, name, value) -> None:
    x = np.random.default_rng(0).integers(0, 256, (30, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    flag = _fit_options()[name]
    scheme = "max" if name == "max_value" else "feature"
    result = invoke(
        "fit", tmp_path / "x.npy", "--scheme", scheme, flag, value, "-o", tmp_path / "n"
    )
    if result.exit_code == 0:
        return  # a value this option takes
    assert flag in result.output, result.output
    assert not re.search(rf"(?<![\w-]){name}\b", result.output), result.output


def test_python_errors_name_the_keyword() -> None:
    with pytest.raises(NormlabError, match="^std_floor must be positive"):
        schemes.get("feature", std_floor=-1.0).fit(np.ones((4, 2)))


def test_other_commands_name_their_own_options(tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(30, 3)))
    assert (
        invoke("fit", tmp_path / "x.npy", "--scheme", "feature", "-o", tmp_path / "n").exit_code
        == 0
    )
    refused = invoke(
        "apply",
        tmp_path / "x.npy",
        "-n",
        tmp_path / "n",
        "-o",
        tmp_path / "y.npy",
        "--nan-policy",
        "omit",
    )
    assert refused.exit_code == 1 and "--nan-policy must be" in refused.output
    assert "nan_policy" not in refused.output
    rare = invoke("diagnose", tmp_path / "x.npy", "--rare", "-1", "-q")
    assert rare.exit_code == 1 and "--rare must be" in rare.output
    assert "rare_threshold" not in rare.output


def test_diagnose_names_the_fit_option_for_a_scheme_and_it_works(tmp_path) -> None:
    x = np.random.default_rng(1).random((60, 5)) * 255  # float data: no value scale
    np.save(tmp_path / "f.npy", x)
    result = invoke("diagnose", tmp_path / "f.npy", "-q", "--wide")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "`normlab fit --max-value`" in flat and "max_value=" not in flat
    fitted = invoke(
        "fit", tmp_path / "f.npy", "--scheme", "max", "--max-value", "255", "-o", tmp_path / "m"
    )
    assert fitted.exit_code == 0, fitted.output


def test_python_m_normlab_cli_translates_too(tmp_path) -> None:
    import os
    import subprocess
    import sys

    import normlab

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(30, 3)))
    src = os.path.dirname(os.path.dirname(normlab.__file__))
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-m", "normlab.cli", "diagnose", str(tmp_path / "x.npy"), "--rare", "-1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1 and "--rare must be" in done.stderr, done.stderr


# ---------------------------------------------------------------- rarity
def test_no_feature_is_rare_at_tiny_sample_counts(tmp_path) -> None:
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).normal(size=(5, 1000)))
    stats = invoke("stats", tmp_path / "tiny.npy", "-o", tmp_path / "s", "-q")
    assert stats.exit_code == 0, stats.output
    assert "rare         not judged at 5 samples; needs 10 or more" in stats.stdout
    assert "1000 of 1000" not in stats.stdout
    report = invoke("diagnose", tmp_path / "tiny.npy", "-q", "--json")
    import json

    health = json.loads(report.stdout)["health"]["rare"]
    assert health["count"] == 0 and "not judged" in health["rule"]


def test_rare_features_are_still_found(tmp_path) -> None:
    x = np.zeros((100, 6))
    x[:, :5] = np.random.default_rng(0).normal(size=(100, 5))
    x[17, 5] = 3.0  # non-zero in one sample of 100
    np.save(tmp_path / "x.npy", x)
    stats = invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "s", "-q")
    assert "rare         1 of 6 features (non-zero in 1..5 of 100 samples) at 5" in stats.stdout
    dense = np.random.default_rng(0).normal(size=(12, 40))  # dense: never rare at any n
    np.save(tmp_path / "d.npy", dense)
    assert (
        "rare         0 of 40 features"
        in invoke("stats", tmp_path / "d.npy", "-o", tmp_path / "d", "-q").stdout
    )


# ---------------------------------------------------------------- column labels
def test_long_column_names_stay_distinct_at_80_columns(tmp_path) -> None:
    names = [f"a_very_long_column_name_{s}" for s in "xyz"]
    names += ["p_" + "m" * 40 + "_1_" + "m" * 40, "p_" + "m" * 40 + "_2_" + "m" * 40]
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({n: pa.array(rng.normal(size=20)) for n in names}), tmp_path / "t.pq")
    (tmp_path / "t.parquet").write_bytes((tmp_path / "t.pq").read_bytes())
    result = invoke("stats", tmp_path / "t.parquet", "-o", tmp_path / "s", "-q")
    assert result.exit_code == 0, result.output
    rows = result.stdout.split("column ", 1)[1].splitlines()[1:]
    labels = [row.split()[0] for row in rows if row.strip()]
    assert len(labels) == len(names) == len(set(labels)), labels
    assert all(len(row) <= 80 for row in rows)
    assert labels[0].endswith("name_x") and labels[2].endswith("name_z")


@pytest.mark.parametrize(
    "command",
    [
        ["diagnose", "{data}", "-q"],
        ["comoments", "{data}", "-o", "{out}", "-q"],
        ["fit", "{data}", "--scheme", "zca", "-o", "{out}", "-q"],
    ],
    ids=lambda c: c[0],
)
def test_nan_hints_offer_no_option_the_computation_lacks(tmp_path, command) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    x[3, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    args = [a.format(data=tmp_path / "x.npy", out=tmp_path / "o") for a in command]
    result = invoke(*args)
    assert result.exit_code == 1 and "row 3" in result.output
    assert "nan-policy" not in result.output and "nan_policy" not in result.output
    assert "drop or impute" in result.output
    stats = invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "s", "-q")
    assert stats.exit_code == 1 and "--nan-policy omit" in stats.output
    assert (
        invoke(
            "stats", tmp_path / "x.npy", "-o", tmp_path / "s", "-q", "--nan-policy", "omit"
        ).exit_code
        == 0
    )


def test_python_comoments_nan_message_offers_no_missing_keyword() -> None:
    from normlab.comoments import compute_comoments

    x = np.random.default_rng(0).normal(size=(40, 3))
    x[3, 0] = np.inf
    with pytest.raises(NormlabError, match="drop or impute") as caught:
        compute_comoments(x)
    assert "nan_policy" not in str(caught.value)


def test_paths_in_messages_are_never_rewritten(tmp_path) -> None:
    missing = tmp_path / "max_value" / "std_floor.npy"
    result = invoke("fit", missing, "--scheme", "feature", "-o", tmp_path / "n")
    assert result.exit_code == 1
    assert str(missing) in " ".join(result.output.split()) or "std_floor.npy" in result.output
    assert "--std-floor.npy" not in result.output and "/--max-value" not in result.output
