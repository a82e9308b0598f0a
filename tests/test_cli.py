"""The command line, through typer's CliRunner: real files in, real files out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab.cli import app

runner = CliRunner()


@pytest.fixture()
def images_npy(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (120, 6, 5, 3), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_stats_and_show(images_npy, tmp_path):
    x, path = images_npy
    out = tmp_path / "s.safetensors"
    result = invoke("stats", path, "--axis", "channel", "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "constant" in result.output
    assert normlab.load(out) == normlab.compute_stats(x, "channel")
    shown = invoke("show", out, "--format", "torchvision")
    consts = json.loads(shown.output)
    np.testing.assert_allclose(consts["mean"], x.reshape(-1, 3).mean(axis=0) / 255, rtol=1e-12)
    np.testing.assert_allclose(consts["std"], x.reshape(-1, 3).std(axis=0) / 255, rtol=1e-12)
    as_json = json.loads(invoke("show", out, "--format", "json").output)
    assert as_json["axis"] == "channel" and len(as_json["mean"]) == 3
    assert invoke("show", out).exit_code == 0


def test_fit_from_data_and_from_stats_agree(images_npy, tmp_path):
    x, path = images_npy
    stats = tmp_path / "s.safetensors"
    assert invoke("stats", path, "-o", stats, "-q").exit_code == 0
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert invoke("fit", path, "--scheme", "channel", "-o", a, "-q").exit_code == 0
    result = invoke("fit", "--stats", stats, "--scheme", "channel", "-o", b)
    assert result.exit_code == 0, result.output
    assert normlab.load(a) == normlab.load(b)


def test_apply_streams_and_matches_transform(images_npy, tmp_path):
    x, path = images_npy
    norm = tmp_path / "n.safetensors"
    assert invoke("fit", path, "--scheme", "feature", "-o", norm, "-q").exit_code == 0
    out = tmp_path / "out.npy"
    result = invoke("apply", path, "--normalizer", norm, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    y = np.load(out)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y, normlab.load(norm).transform(x))


def test_apply_shape_mismatch_writes_nothing(images_npy, tmp_path):
    x, path = images_npy
    norm = tmp_path / "n.safetensors"
    assert invoke("fit", path, "--scheme", "feature", "-o", norm, "-q").exit_code == 0
    other = tmp_path / "other.npy"
    np.save(other, np.zeros((4, 7, 7, 3), np.uint8))
    out = tmp_path / "out.npy"
    result = invoke("apply", other, "--normalizer", norm, "-o", out, "-q")
    assert result.exit_code == 1
    assert (
        result.output.count("\n") == 1
        and "error:" in result.output
        and "(6, 5, 3)" in result.output
    )
    assert not out.exists() and not list(tmp_path.glob(".out.npy*"))


def test_errors_are_one_line_and_debug_shows_traceback(tmp_path):
    result = invoke("stats", tmp_path / "missing.npy", "-o", tmp_path / "s")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'missing.npy'}: no such file"
    debug = runner.invoke(app, ["--debug", "stats", str(tmp_path / "missing.npy"), "-o", "s"])
    assert debug.exit_code != 0 and isinstance(debug.exception, normlab.NormlabError)
    assert invoke("fit", "--scheme", "nope", "--stats", tmp_path / "s").exit_code == 1


def test_demo_quick_prints_every_scheme():
    pytest.importorskip("sklearn")
    result = invoke("demo", "--quick")
    assert result.exit_code == 0, result.output
    for name in ("raw", "max", "global", "feature", "per-image", "zca", "pca"):
        assert f"│ {name} " in result.output


def test_fit_reads_sources_like_stats(tmp_path):
    """`fit` takes the same reading options as `stats` (here: an image folder with a bad file)."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = []
    for i in range(6):
        img = rng.integers(0, 256, (8 + i, 9, 3), dtype=np.uint8)  # mixed sizes: fine per channel
        Image.fromarray(img).save(folder / f"{i}.png")
        pixels.append(img.reshape(-1, 3))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "n.safetensors"
    failed = invoke("fit", folder, "--scheme", "channel", "-o", out, "-q")
    assert failed.exit_code == 1 and "broken.png" in failed.output and not out.exists()
    result = invoke("fit", folder, "--scheme", "channel", "-o", out, "-q", "--skip-bad")
    assert result.exit_code == 0, result.output
    ref = np.concatenate(pixels).astype(np.float64)
    np.testing.assert_allclose(normlab.load(out).mean_, ref.mean(axis=0), rtol=1e-15)
