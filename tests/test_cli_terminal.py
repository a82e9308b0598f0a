"""What a person sees in a terminal: help, version, option spellings, listings (CliRunner)."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import normlab
from normlab.cli import app

runner = CliRunner()


def invoke(*args: object, columns: int = 80) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def write_pngs(folder, n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (n, 4, 5, 3), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(x):
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
    return x


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"normlab {normlab.__version__}"


@pytest.mark.parametrize("command", [None, *command_names()])
def test_help_shows_no_value_for_flags_and_fits_80_columns(command):
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_mode_accepts_any_case(tmp_path):
    write_pngs(tmp_path / "imgs", 3)
    upper, lower = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert invoke("stats", tmp_path / "imgs", "-o", upper, "--mode", "RGB", "-q").exit_code == 0
    result = invoke("stats", tmp_path / "imgs", "-o", lower, "--mode", "rgb", "-q")
    assert result.exit_code == 0, result.output
    assert normlab.load(upper) == normlab.load(lower)
    assert normlab.compute_stats(tmp_path / "imgs", mode="Keep").n_samples_seen == 3


def test_glob_without_slash_matches_in_subfolders(tmp_path):
    write_pngs(tmp_path / "imgs" / "cats", 2)
    write_pngs(tmp_path / "imgs" / "dogs" / "small", 3, seed=1)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "imgs" / "cats" / "x.bmp")
    out = tmp_path / "s.safetensors"
    result = invoke("stats", tmp_path / "imgs", "-o", out, "--glob", "*.png", "-q")
    assert result.exit_code == 0, result.output
    assert normlab.load(out).n_samples_seen == 5
    only_top = normlab.compute_stats(tmp_path / "imgs", glob="cats/*.png")
    assert only_top.n_samples_seen == 2


def test_fit_skip_bad_lists_what_it_skipped(tmp_path):
    write_pngs(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_text("not an image")
    out = tmp_path / "n.safetensors"
    result = invoke("fit", tmp_path / "imgs", "--scheme", "channel", "-o", out, "--skip-bad", "-q")
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "broken.png" in result.stderr


def test_demo_refuses_an_existing_folder_without_overwrite(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = invoke("demo", "--out", out, "--quiet")
    assert result.exit_code == 1
    assert "exists" in result.stderr and "--overwrite" in result.stderr
    assert (out / "mine.txt").read_text() == "keep me" and sorted(out.iterdir()) == [
        out / "mine.txt"
    ]


def cells(text: str) -> int:
    from rich.cells import cell_len

    return max(cell_len(line) for line in text.splitlines())


def test_diagnose_tables_fit_80_columns_and_wide_shows_every_column(tmp_path):
    x = np.random.default_rng(0).integers(0, 17, (300, 12), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 3, 300)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    args = ("diagnose", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--measure", "-q")
    narrow = invoke(*args)
    assert narrow.exit_code == 0, narrow.output
    assert cells(narrow.stdout) <= 80
    for key in ("κ₉₉=λmax/λk99", "LR ≤ 2/λmax", "vs raw", "iterations"):
        assert key in narrow.stdout
    assert "not shown at this width" in narrow.stdout and "--wide or --json" in narrow.stdout
    wide = invoke(*args, "--wide")
    assert wide.exit_code == 0, wide.output
    assert "λmax/λ10" in wide.stdout and "measured threshold" in wide.stdout
    assert "not shown at this width" not in wide.stdout


@pytest.mark.parametrize("argv", [["schemes"], ["demo", "--quick"]])
def test_listings_fit_80_columns(argv):
    pytest.importorskip("sklearn")
    result = invoke(*argv)
    assert result.exit_code == 0, result.output
    assert cells(result.stdout) <= 80


def test_fitted_table_keeps_key_columns_and_names_the_others():
    from normlab.commands.tables import Column, shown_columns

    columns = [Column("name", key=True), Column("a" * 30), Column("b" * 30), Column("c")]
    rows = [{"name": "x", "c": "1"}]
    shown = [c.name for c in shown_columns(columns, rows, width=50, wide=False)]
    assert shown == ["name", "a" * 30, "c"]
    assert len(shown_columns(columns, rows, width=50, wide=True)) == 4


@pytest.mark.slow
def test_demo_prints_the_verdict_before_the_report_path_within_80_columns(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    result = invoke("demo", "--out", tmp_path / "demo", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    report = next(i for i, line in enumerate(lines) if line.startswith("report: "))
    before = "\n".join(lines[:report])
    assert "trained fastest" in before and "fewer than" in before
    assert cells(before) <= 80  # (the report path itself may be longer)
    assert (tmp_path / "demo" / "report.html").is_file()
