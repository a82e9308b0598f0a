"""ZCA and PCA whitening leave normlab: PyTorch, Keras, scikit-learn and JSON give its outputs."""

from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np
import pytest
import torch

import normlab
from normlab import NormlabWarning
from normlab.export import (
    keras_layer,
    sklearn_from_state,
    sklearn_state,
    to_json,
    to_keras,
    to_sklearn,
    to_torch,
)
from normlab.torch import Normalize, Whitening

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def close_at_output_scale(got, expected, tol: float = 1e-5) -> bool:
    """``max |got − expected| ≤ tol · max(1, max |expected|)``: the issue's 1e-5 of the output."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float(np.abs(got - expected).max()) <= tol * max(1.0, float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """uint8 HWC images with correlated pixels and a constant one (a zero eigenvalue)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (300, 4, 4, 1))
    x = (base + rng.integers(0, 56, (300, 4, 4, 3))).astype(np.uint8)
    x[:, 0, 0, :] = 7
    return x


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(3.0, 2.0, (400, 6)) @ rng.normal(size=(6, 6))


def whiten(method: str, x: np.ndarray, **options) -> normlab.Whiten:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        return normlab.Whiten(method=method, **options).fit(x)


CASES = [("zca", {}), ("pca", {}), ("pca", {"n_components": 3}), ("zca", {"eps": 1e-4})]


# ---------------------------------------------------------------- PyTorch
@pytest.mark.parametrize(("method", "options"), CASES, ids=str)
def test_torch_module_equals_whiten_on_uint8_images_and_floats(images, vectors, method, options):
    w = whiten(method, images, **options)
    module = to_torch(w)
    assert isinstance(module, Whitening) and isinstance(module.linear, torch.nn.Linear)
    expected = w.transform(images.astype(np.float64))
    got = module(torch.from_numpy(images))  # the fused uint8 path
    assert got.dtype == torch.float32
    assert close_at_output_scale(got.numpy(), expected)
    assert close_at_output_scale(module(torch.from_numpy(images[0])).numpy(), expected[0])
    on_01 = torch.from_numpy(images.astype(np.float32) / 255)  # float input: the 0..1 scale
    assert close_at_output_scale(module(on_01).numpy(), expected)
    v = whiten(method, vectors, **options)
    assert close_at_output_scale(
        to_torch(v)(torch.from_numpy(vectors)).numpy(), v.transform(vectors)
    )


def test_torch_module_saves_loads_and_exports(images, tmp_path):
    w = whiten("zca", images)
    module = to_torch(w)
    module.save(tmp_path / "w.safetensors")
    again = Whitening.from_file(tmp_path / "w.safetensors")
    x = torch.from_numpy(images[:8])
    torch.testing.assert_close(again(x), module(x))
    w.save(tmp_path / "norm.safetensors")  # a saved normlab Whiten works too
    torch.testing.assert_close(Whitening.from_file(tmp_path / "norm.safetensors")(x), module(x))
    exported = torch.export.export(module, (x,))
    torch.testing.assert_close(exported.module()(x), module(x))
    with pytest.raises(normlab.NormlabError, match="permute the tensor"):
        to_torch(w, layout="CHW")
    with pytest.raises(normlab.NormlabError, match="shape"):
        module(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))


def test_normalize_warns_once_on_float_input_still_on_the_integer_scale(images):
    n = normlab.schemes.get("channel").fit(images)
    module = Normalize.from_normalizer(n)
    unscaled = torch.from_numpy(images.astype(np.float32))  # forgot the / 255
    with pytest.warns(NormlabWarning, match="0..1 scale"):
        module(unscaled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(unscaled)  # once per module
        Normalize.from_normalizer(n)(unscaled / 255)  # on the 0..1 scale: quiet
        Normalize.from_normalizer(n)(torch.from_numpy(images))  # uint8: quiet
    with pytest.warns(NormlabWarning, match="0..1 scale"):
        to_torch(whiten("zca", images))(unscaled)


# ---------------------------------------------------------------- Keras
@pytest.mark.parametrize(("method", "options"), CASES, ids=str)
def test_keras_block_equals_whiten(images, method, options):
    keras = pytest.importorskip("keras")
    w = whiten(method, images, **options)
    spec = json.loads(json.dumps(to_keras(w), allow_nan=False))
    assert spec["kind"] == "whitening" and spec["method"] == method
    layer = keras_layer(spec)
    got = keras.ops.convert_to_numpy(layer(images.astype(np.float32)))
    assert close_at_output_scale(got, w.transform(images.astype(np.float64)))
    after_rescaling = keras_layer(w, scale="0..1")  # fed Rescaling(1/255)'s output
    got01 = keras.ops.convert_to_numpy(after_rescaling(images.astype(np.float32) / 255))
    assert close_at_output_scale(got01, w.transform(images.astype(np.float64)))


@pytest.mark.parametrize("scheme", ["channel", "feature", "global", "minmax"])
def test_keras_scale_0_1_after_rescaling(images, scheme):
    keras = pytest.importorskip("keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        n = normlab.schemes.get(scheme, dtype=np.float64).fit(images)
    model = keras.Sequential(
        [
            keras.Input(images.shape[1:]),
            keras.layers.Rescaling(1 / 255),
            keras_layer(n, scale="0..1"),
        ]
    )
    got = keras.ops.convert_to_numpy(model(images.astype(np.float32)))
    assert close_at_output_scale(got, n.transform(images), 1e-5)
    unscaled = to_keras(n, scale="0..255")
    assert np.allclose(unscaled["mean"], to_keras(n)["mean"])  # uint8: 0..255 is the data's own
    with pytest.raises(normlab.NormlabError, match="0..1"):
        to_keras(n, scale="255")


# ---------------------------------------------------------------- scikit-learn
def test_pca_becomes_a_fitted_sklearn_pca_with_whiten(vectors, images):
    from sklearn.decomposition import PCA

    for x, k in ((vectors, None), (vectors, 4), (images, 10), (images, None)):
        w = whiten("pca", x, n_components=k)
        est = to_sklearn(w)
        assert isinstance(est, PCA) and est.whiten and est.n_components_ == (k or x[0].size)
        flat = x.reshape(len(x), -1).astype(np.float64)
        assert close_at_output_scale(est.transform(flat), w.transform(x.astype(float)), 1e-9)
        rebuilt = sklearn_from_state(json.loads(json.dumps(sklearn_state(est))))
        np.testing.assert_allclose(rebuilt.transform(flat), est.transform(flat), atol=1e-12)
        assert est.get_feature_names_out().tolist()[:2] == ["pca0", "pca1"]


def test_zca_becomes_an_input_scaler_carrying_the_fitted_state(vectors, images):
    from normlab.sklearn import InputScaler

    for x in (vectors, images):
        w = whiten("zca", x)
        est = to_sklearn(w)
        assert isinstance(est, InputScaler) and est.scheme == "zca"
        flat = x.reshape(len(x), -1).astype(np.float64)
        expected = w.transform(x.astype(np.float64)).reshape(len(x), -1)
        assert close_at_output_scale(est.transform(flat), expected, 1e-12)
        state = json.loads(json.dumps(sklearn_state(est), allow_nan=False))
        rebuilt = sklearn_from_state(state)
        np.testing.assert_array_equal(rebuilt.transform(flat), est.transform(flat))


# ---------------------------------------------------------------- JSON
@pytest.mark.parametrize(("method", "options"), CASES, ids=str)
def test_json_mean_matrix_formula(images, method, options):
    w = whiten(method, images, **options)
    data = json.loads(json.dumps(to_json(w), allow_nan=False))
    assert data["kind"] == "whitening" and data["method"] == method
    assert data["eps"] == pytest.approx(w.eps_) and data["eps_mode"] == "relative"
    flat = images.reshape(len(images), -1).astype(np.float64)
    y = (flat - np.asarray(data["mean"])) @ np.asarray(data["matrix"]).T
    if method == "zca":
        y = y.reshape(images.shape)
    assert close_at_output_scale(y, w.transform(images.astype(np.float64)), 1e-12)
