"""Numbers on screen: what `normlab stats`, `fit` and `show` print, and repr, for known data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import normlab
from normlab import display
from normlab.cli import app
from normlab.export import to_torchvision

runner = CliRunner()


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


@pytest.fixture()
def two_images(tmp_path):
    """Two 2x2 RGB images: one all (255, 0, 51), one all (0, 255, 51); blue is constant."""
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    Image.fromarray(np.full((2, 2, 3), (255, 0, 51), np.uint8)).save(folder / "a" / "1.png")
    Image.fromarray(np.full((2, 2, 3), (0, 255, 51), np.uint8)).save(folder / "b" / "2.png")
    return folder


def test_channel_stats_print_values_and_the_lines_to_paste(two_images, tmp_path):
    out = tmp_path / "s.safetensors"
    result = invoke("stats", two_images, "--axis", "channel", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2:] == [
        "axis         channel (3 of HWC samples (2, 2, 3))",
        "samples      2",
        "count        8 values per channel",
        "value scale  uint8 0..255",
        "mean         [127.500, 127.500, 51.000]",
        "std          [127.500, 127.500, 0.000]",
        "min          [0, 0, 51]",
        "max          [255, 255, 51]",
        "constant     1 of 3 channels at 2",
        "rare         counted per feature (statistics with --axis feature)",
        "# on the 0..1 scale (data / 255), as after ToTensor() or Rescaling(1/255):",
        "mean = (0.500, 0.500, 0.200)",
        "std = (0.500, 0.500, 0.000)",
        "# torchvision: transforms.Normalize(mean, std)",
        "# albumentations: A.Normalize(mean, std, max_pixel_value=255.0)",
        "# keras: layers.Normalization(mean=mean, variance=[s * s for s in std])",
    ]
    # the pasted lines are Python and give torchvision's constants
    pasted: dict[str, object] = {}
    exec("\n".join(lines[-5:-3]), pasted)
    consts = to_torchvision(normlab.load(out))
    np.testing.assert_allclose(pasted["mean"], consts["mean"], atol=5e-4)
    np.testing.assert_allclose(pasted["std"], consts["std"], atol=5e-4)


def test_random_images_to_three_decimals(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    for i, arr in enumerate(x):
        Image.fromarray(arr).save(tmp_path / "imgs" / f"{i}.png")
    result = invoke("stats", tmp_path / "imgs", "--axis", "channel", "-o", tmp_path / "s", "-q")
    assert result.exit_code == 0, result.output
    pixels = x.reshape(-1, 3).astype(np.float64)
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    assert "mean         [" + ", ".join(f"{v:.3f}" for v in mean) + "]" in result.stdout
    assert "mean = (" + ", ".join(f"{v / 255:.3f}" for v in mean) + ")" in result.stdout
    assert "std = (" + ", ".join(f"{v / 255:.3f}" for v in std) + ")" in result.stdout
    assert f"count        {5 * 4 * 7} values per channel" in result.stdout


def test_feature_stats_print_a_summary_with_where_the_extremes_are(tmp_path):
    x = np.zeros((10, 3, 4, 1), np.uint8)
    x[:, 1, 2, 0] = np.arange(10, dtype=np.uint8) * 20  # the most spread pixel
    x[3, 2, 3, 0] = 9  # a rare pixel: non-zero in one sample
    x[:, 0, 1, 0] = 5  # constant, not zero
    np.save(tmp_path / "x.npy", x)
    result = invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "s", "-q")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "axis         feature (12 features: samples (3, 4, 1))" in out
    assert "mean         0.000 at (0, 0, 0) .. 90.000 at (1, 2, 0)" in out
    assert "std          0.000 at (0, 0, 0) .. 57.446 at (1, 2, 0)" in out
    assert "max          0 at (0, 0, 0) .. 180 at (1, 2, 0)" in out
    flat = " ".join(out.split())  # lines wrap at 80 columns
    assert (
        "constant 10 of 12 features at (0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0), (1, 0, 0), ..."
        in flat
    )
    assert "rare         1 of 12 features (non-zero in 1..1 of 10 samples) at (2, 3, 0)" in out
    assert "per channel (HWC, exact from these):" in out


def test_fit_prints_what_it_fitted(two_images, tmp_path):
    result = invoke("fit", two_images, "--scheme", "channel", "-o", tmp_path / "n", "-q")
    assert result.exit_code == 0, result.output
    assert "shift_       [127.500, 127.500, 51.000]" in result.stdout
    assert "scale_       [127.500, 127.500, 1.000]" in result.stdout
    assert "mean = (0.500, 0.500, 0.200)" in result.stdout
    assert "std = (0.500, 0.500, 0.004)" in result.stdout  # the constant channel's scale is 1
    assert "warning: 1 of 3 features have zero variance" in result.stderr
    shown = invoke("show", tmp_path / "n")
    assert "shift_       [127.500, 127.500, 51.000]" in shown.stdout


def test_every_line_fits_80_columns(tmp_path):
    x = np.random.default_rng(0).normal(1e5, 3e4, (30, 20))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "img.npy", np.random.default_rng(1).integers(0, 256, (5, 4, 4, 3), np.uint8))
    for args in (
        ["stats", tmp_path / "x.npy", "-o", tmp_path / "s", "-q"],
        ["stats", tmp_path / "x.npy", "--axis", "global", "-o", tmp_path / "g", "-q"],
        ["stats", tmp_path / "img.npy", "--axis", "channel", "--per-image-std-average", "-q"]
        + ["--percentiles", "0.5,99.5", "-o", tmp_path / "p"],
        ["fit", tmp_path / "x.npy", "--scheme", "zca", "-o", tmp_path / "z", "-q"],
        ["fit", tmp_path / "x.npy", "--scheme", "minmax", "-o", tmp_path / "m", "-q"],
    ):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        # every line but a path longer than the terminal
        lines = [line for line in result.stdout.splitlines() if str(tmp_path) not in line]
        assert max(len(line) for line in lines) <= 80, result.stdout


def test_repr_shows_values_numpy_style():
    x = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    m = normlab.compute_stats(x, "channel")
    assert "mean = [10.5, 11.5, 12.5]" in repr(m)
    assert "max  = [21., 22., 23.]" in repr(m)
    z = normlab.ZScore(axis="channel").fit(x)
    assert repr(z).splitlines()[0].startswith("ZScore(axis='channel'")
    assert "shift_ = [10.5, 11.5, 12.5]" in repr(z)
    big = normlab.compute_stats(np.arange(200.0).reshape(2, 100), "feature")
    assert "mean = [ 50.,  51.,  52., ..., 147., 148., 149.]" in repr(big)
    assert repr(normlab.ZScore()) == normlab.ZScore().params_repr()  # unfitted: parameters only


@pytest.mark.parametrize(
    ("dtype", "head", "divisor"),
    [
        ("int32", "# int32 is signed (no 0..1 scale): data units, for unscaled floats", 1.0),
        ("uint16", "# on the 0..1 scale (data / 65535), as after Rescaling(1/65535):", 65535.0),
    ],
)
def test_paste_lines_say_what_each_integer_type_is_divided_by(dtype, head, divisor):
    """ToTensor rescales uint8 only; signed data has no 0..1 scale (data / max spans −1..1)."""
    info = np.iinfo(dtype)
    scale = {"dtype": dtype, "min_value": int(info.min), "max_value": int(info.max)}
    lines = display.paste_lines(np.array([-3.0, 120.0]), np.array([7.0, 2.0]), scale)
    assert lines[0] == head and all(len(line) <= 80 for line in lines)
    pasted: dict[str, object] = {}
    exec("\n".join(lines[1:3]), pasted)
    np.testing.assert_allclose(pasted["mean"], np.array([-3.0, 120.0]) / divisor, atol=5e-4)
    pixel = "1.0" if dtype == "int32" else "65535.0"
    assert lines[-2].endswith(f"max_pixel_value={pixel})")


def test_json_output_is_strict_json_where_a_feature_has_no_values(tmp_path):
    """An all-NaN feature (omitted) has no mean: `null`, never a bare NaN that strict JSON
    parsers reject — for `show --format json` and `diagnose --json` alike."""
    import json

    x = np.random.default_rng(0).normal(0, 1, (40, 3))
    x[:, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    made = runner.invoke(
        app, ["stats", str(tmp_path / "x.npy"), "--nan-policy", "omit", "-o", str(tmp_path / "s")]
    )
    assert made.exit_code == 0, made.output

    def strict(text: str) -> object:
        def refuse(constant: str) -> None:
            raise AssertionError(f"not JSON: {constant}")

        return json.loads(text, parse_constant=refuse)

    shown = runner.invoke(app, ["show", str(tmp_path / "s"), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    summary = strict(shown.stdout)
    assert isinstance(summary, dict) and summary["mean"][1] is None
    assert summary["mean"][0] == pytest.approx(np.nanmean(x[:, 0]))
