"""Whiten: against a direct numpy eigh, output covariance, symmetry, inverse, registry, files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import normlab
from normlab import CoMoments, Whiten, schemes
from normlab.errors import NormlabError, NotFittedError, ShapeError


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6)) * [1, 2, 3, 0.5, 4, 1]
    return rng.normal(size=(800, 6)) @ mix + 5.0


def reference(x, eps):
    """Direct numpy: population covariance, eigh, the two whitening matrices."""
    cov = np.cov(x.T, ddof=0)
    lam, u = np.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]
    zca = u @ np.diag(1 / np.sqrt(lam + eps)) @ u.T
    pca = np.diag(1 / np.sqrt(lam + eps)) @ u.T
    return lam, zca, pca


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_matches_direct_eigh(data, method):
    lam, zca, pca = reference(data, 0.01 * np.linalg.eigvalsh(np.cov(data.T, ddof=0)).mean())
    w = Whiten(method=method).fit(data)
    y = w.transform(data)
    expected = (data - data.mean(axis=0)) @ (zca if method == "zca" else pca).T
    if method == "pca":  # eigenvectors are defined up to sign
        expected = expected * np.sign((expected * y).sum(axis=0))
    assert np.allclose(y, expected, atol=1e-9)
    assert np.allclose(w.eigenvalues_, lam, rtol=1e-10)


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_output_covariance_is_identity_and_inverse(data, method):
    w = Whiten(method=method, eps=0.0).fit(data)
    y = w.transform(data)
    assert np.allclose(np.cov(y.T, ddof=0), np.eye(6), atol=1e-10)
    assert np.allclose(w.inverse_transform(y), data, atol=1e-9)


def test_zca_matrix_is_symmetric_and_keeps_sample_shape():
    x = np.random.default_rng(1).integers(0, 256, (300, 3, 3), dtype=np.uint8)
    w = Whiten(method="zca").fit(x)
    assert np.allclose(w.matrix_, w.matrix_.T, atol=1e-14)
    y = w.transform(x)
    assert y.shape == x.shape and y.dtype == np.float32


def test_relative_eps_is_scale_free(data):
    a = Whiten(method="zca").fit(data).transform(data)
    b = Whiten(method="zca").fit(data * 255.0).transform(data * 255.0)
    assert np.allclose(a, b, atol=1e-9)
    absolute = Whiten(method="zca", eps=1e-3, eps_mode="absolute").fit(data)
    assert absolute.eps_ == 1e-3


def test_pca_truncation_covariance_on_retained_subspace(data):
    w = Whiten(method="pca", n_components=3, eps=0.0).fit(data)
    y = w.transform(data)
    assert y.shape == (800, 3)
    assert np.allclose(np.cov(y.T, ddof=0), np.eye(3), atol=1e-10)
    assert w.inverse_transform(y).shape == data.shape


def test_singular_covariance_needs_eps():
    x = np.random.default_rng(2).normal(size=(100, 3))
    x = np.hstack([x, np.full((100, 1), 7.0)])  # a constant feature
    with pytest.raises(NormlabError, match="eps > 0"):
        Whiten(eps=0.0).fit(x)
    y = Whiten().fit(x).transform(x)
    assert np.isfinite(y).all() and np.allclose(y[:, 3], 0.0)


def test_from_stats_partial_fit_registry_and_files(data, tmp_path):
    stats = CoMoments().update(data)
    a = schemes.get("zca").from_stats(stats)
    b = Whiten().partial_fit(data[:300]).partial_fit(data[300:])
    assert np.allclose(a.matrix_, b.matrix_, atol=1e-12)
    assert schemes.get("pca").method == "pca"
    a.save(tmp_path / "w.safetensors")
    back = normlab.load(tmp_path / "w.safetensors")
    assert back == a and np.array_equal(back.transform(data), a.transform(data))


def test_errors():
    with pytest.raises(NotFittedError):
        Whiten().transform(np.zeros((2, 2)))
    with pytest.raises(NormlabError, match="co-moments"):
        Whiten().from_stats(normlab.Moments().update(np.zeros((3, 2))))
    with pytest.raises(NormlabError, match="method"):
        Whiten(method="svd").fit(np.eye(3))
    with pytest.raises(NormlabError, match="at least 2 samples"):
        Whiten().fit(np.zeros((1, 3)))
    big = CoMoments(max_features=4, sketch_size=2).update(np.zeros((3, 5), np.uint8))
    with pytest.raises(ShapeError, match="patches"):
        Whiten().from_stats(big)
    w = Whiten().fit(np.random.default_rng(3).normal(size=(20, 3)))
    with pytest.raises(ShapeError):
        w.transform(np.zeros((2, 4)))
    with pytest.raises(NormlabError):
        w.affine((3,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Whiten(method="pca", n_components=2).fit(np.random.default_rng(4).normal(size=(20, 3)))


def test_cli_fit_from_data_and_from_saved_comoments(tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app

    x = np.random.default_rng(5).integers(0, 256, (200, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    CoMoments().update(x).save(tmp_path / "c.safetensors")
    runner = CliRunner()
    a = runner.invoke(
        app,
        ["fit", str(tmp_path / "x.npy"), "--scheme", "zca", "-o", str(tmp_path / "a.safetensors")],
    )
    b = runner.invoke(
        app,
        [
            "fit",
            "--stats",
            str(tmp_path / "c.safetensors"),
            "--scheme",
            "zca",
            "-o",
            str(tmp_path / "b.safetensors"),
        ],
    )
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    assert normlab.load(tmp_path / "a.safetensors") == normlab.load(tmp_path / "b.safetensors")
    c = runner.invoke(
        app,
        [
            "fit",
            "--stats",
            str(tmp_path / "c.safetensors"),
            "--scheme",
            "feature",
            "-o",
            str(tmp_path / "f.safetensors"),
        ],
    )
    assert c.exit_code == 0
