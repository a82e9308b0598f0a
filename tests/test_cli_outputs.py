"""Commands that write: every output path is checked before anything is written, and a command
that writes several files writes all of them or none (``normlab.io.written_together``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from normlab.cli import app
from normlab.commands.export import TARGETS, output_paths
from normlab.io import atomic_write, written_together

runner = CliRunner()


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture()
def normalizer(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", x)
    result = invoke("fit", tmp_path / "u8.npy", "--scheme", "channel", "-o", tmp_path / "n.st")
    assert result.exit_code == 0, result.output
    return tmp_path / "n.st"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("blocked", [0, 1])
def test_export_writes_nothing_when_any_output_path_is_unusable(
    normalizer: Path, tmp_path: Path, target: str, blocked: int
) -> None:
    out = tmp_path / "out" / "export.json"
    paths = output_paths(target, out)
    if blocked >= len(paths):
        pytest.skip(f"--to {target} writes one file")
    paths[blocked].mkdir(parents=True)  # a folder where a file goes
    before = _files(tmp_path)
    result = invoke("export", normalizer, "--to", target, "-o", out)
    assert result.exit_code == 1
    assert "is a folder" in result.output
    assert _files(tmp_path) == before  # neither the data file nor the snippet


@pytest.mark.parametrize("target", ["sklearn", "torch", "keras"])
def test_export_with_a_py_output_writes_nothing(normalizer: Path, tmp_path: Path, target) -> None:
    before = _files(tmp_path)
    result = invoke("export", normalizer, "--to", target, "-o", tmp_path / "model.py")
    assert result.exit_code == 1 and "goes beside it" in result.output
    assert _files(tmp_path) == before


@pytest.mark.parametrize("target", TARGETS)
def test_export_writes_every_file_it_names(normalizer: Path, tmp_path: Path, target) -> None:
    out = tmp_path / f"e-{target}.json"
    result = invoke("export", normalizer, "--to", target, "-o", out)
    assert result.exit_code == 0, result.output
    assert all(p.is_file() for p in output_paths(target, out))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_diagnose_writes_no_comoments_when_the_mask_fails(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).normal(size=(50, 6)))
    saved, mask = tmp_path / "c.st", tmp_path / "mask.png"
    result = invoke(
        "diagnose", tmp_path / "flat.npy", "--save-comoments", saved, "--mask-png", mask, "-q"
    )
    assert result.exit_code == 1 and "image-shaped" in result.output
    assert not saved.exists() and not mask.exists()
    ok = invoke("diagnose", tmp_path / "flat.npy", "--save-comoments", saved, "-q")
    assert ok.exit_code == 0, ok.output
    assert saved.is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "{data}", "-o", "{out}", "-q"],
        ["comoments", "{data}", "-o", "{out}", "-q"],
        ["fit", "{data}", "--scheme", "feature", "-o", "{out}", "-q"],
        ["apply", "{data}", "-n", "{norm}", "-o", "{out}", "-q"],
        ["diagnose", "{data}", "--save-comoments", "{out}", "-q"],
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("bad", ["folder", "below a file"])
def test_every_writing_command_refuses_a_bad_output_before_writing(
    tmp_path: Path, command: list[str], bad: str
) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(30, 3)))
    norm = tmp_path / "z.st"
    assert invoke("fit", data, "--scheme", "feature", "-o", norm, "-q").exit_code == 0
    if bad == "folder":
        out = tmp_path / "taken"
        out.mkdir()
    else:
        (tmp_path / "plain").write_text("a file")
        out = tmp_path / "plain" / "out.st"
    before = _files(tmp_path)
    args = [a.format(data=data, out=out, norm=norm) for a in command]
    result = invoke(*args)
    assert result.exit_code == 1
    assert ("is a folder" if bad == "folder" else "is a file, not a folder") in result.output
    assert _files(tmp_path) == before


def test_written_together_writes_all_or_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), written_together():
        with atomic_write(tmp_path / "a.bin") as handle:
            handle.write(b"a")
        assert not (tmp_path / "a.bin").exists()  # renamed only at the end
        raise RuntimeError("the second file failed")
    assert os.listdir(tmp_path) == []  # no file, no temporary file
    with written_together():
        for name in ("a.bin", "b.bin"):
            with atomic_write(tmp_path / name) as handle:
                handle.write(name.encode())
    assert (tmp_path / "a.bin").read_bytes() == b"a.bin"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]
