"""Predictions from the statistics (normlab.lab.theory) against what the lab measures."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from normlab import schemes  # noqa: E402
from normlab.errors import NormlabError  # noqa: E402
from normlab.lab import (  # noqa: E402
    compare,
    load_dataset,
    theory,  # noqa: E402
)
from normlab.lab.stability import measure_lsq_stable_lr, stable_lr_by_horizon  # noqa: E402
from normlab.lab.train import TrainConfig, measure_stable_lr  # noqa: E402

torch.set_num_threads(1)


def _data(name: str, ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norm = schemes.get(name).fit(ds.x_train)
        xtr, xte = norm.transform(ds.x_train), norm.transform(ds.x_test)
    tensors = {
        "x_train": torch.as_tensor(np.asarray(xtr, dtype=np.float32)),
        "y_train": torch.as_tensor(ds.y_train),
        "x_test": torch.as_tensor(np.asarray(xte, dtype=np.float32)),
        "y_test": torch.as_tensor(ds.y_test),
    }
    return xtr, tensors


def test_excess_is_loss_minus_optimum():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 4)) * [1.0, 3.0, 0.1, 2.0] + 5.0
    y = rng.integers(0, 3, 120)
    problem = theory.lsq_problem(x, y, 3)
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    onehot = np.eye(3)[y]
    loss = 0.5 * ((x @ w.T + b - onehot) ** 2).sum(axis=1).mean()
    assert problem.excess(w, b) == pytest.approx(loss - problem.loss_star, rel=1e-9)
    assert problem.lambda_max == pytest.approx(theory.augmented_lambda_max(x), rel=1e-12)


@pytest.mark.parametrize("scheme, epsilon", [("raw", 2.0), ("center", 0.1), ("feature", 0.05)])
def test_gd_closed_form_equals_the_measured_step_count(scheme, epsilon):
    """Checks the trainer and the bias handling: the count is exact, not approximately right."""
    ds = load_dataset("digits", seed=0, n_samples=600)
    results = compare(
        "digits",
        schemes=(scheme,),
        model="lsq",
        optimizer="gd",
        n_samples=600,
        seeds=2,
        epochs=400,
        epsilon=epsilon,
        lr_min=1 / 4,
        lr_max=1 / 2,
        max_extensions=0,
        progress=False,
    )
    entry = results["theory"]["schemes"][scheme]
    measured = [r["steps_to_epsilon"] for r in results["runs"] if r["lr"] == entry["lr"]]
    assert None not in measured and len(measured) == 2
    assert entry["steps_to_epsilon_predicted_per_seed"] == measured
    assert entry["ratio_measured_to_predicted"] == 1.0 and entry["agrees"] is True
    # the grid is centred on 2/λ_max of the augmented moment
    assert results["schemes"][scheme]["grid_center"] == pytest.approx(entry["lr_gd_max"])
    x, _ = _data(scheme, ds)
    assert entry["lr_gd_max"] == pytest.approx(2.0 / theory.augmented_lambda_max(x), rel=1e-6)


@pytest.mark.parametrize("scheme", ["raw", "feature"])
def test_sgd_stability_prediction_within_25_percent_at_batch_32(scheme):
    """feature: rare pixels give a few samples a huge norm, which the top direction misses."""
    ds = load_dataset("digits", seed=0)
    x, tensors = _data(scheme, ds)
    problem = theory.lsq_problem(x, ds.y_train, ds.n_classes)
    predicted = theory.sgd_stable_lr(problem, 32)
    assert predicted < 2.0 / problem.lambda_max  # the noise of small batches lowers it
    measured = measure_stable_lr(
        tensors,
        config=TrainConfig(model="lsq", batch_size=32),
        n_classes=ds.n_classes,
        guess=predicted,
    )
    assert measured["steps"] >= 500
    assert 0.8 <= measured["threshold"] / predicted <= 1.25
    if scheme == "feature":  # the heavy-tail correction is what makes it agree
        top = theory.sgd_top_direction_lr(problem, 32)
        assert measured["threshold"] / top < 0.5


def test_full_batch_stability_is_two_over_lambda_max():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3)) + 2.0
    problem = theory.lsq_problem(x, rng.integers(0, 2, 50), 2)
    assert theory.sgd_stable_lr(problem, 50) == pytest.approx(2.0 / problem.lambda_max)
    assert theory.sgd_stable_lr(problem, 1) < theory.sgd_stable_lr(problem, 10)


@pytest.mark.parametrize("batch", [1, 8])
def test_stable_rate_is_where_the_mean_square_operator_reaches_radius_one(batch):
    """Heavy tails: one sample lights a rare feature; the exact threshold sees it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 6)) * [1.0, 2.0, 0.5, 1.0, 1.0, 0.1]
    x[7, 5] = 40.0  # a rare feature: its fourth moment, not λ_max, limits small batches
    problem = theory.lsq_problem(x, rng.integers(0, 3, 300), 3)
    eta = theory.sgd_stable_lr(problem, batch)
    assert eta < theory.sgd_top_direction_lr(problem, batch)

    def radius(lr: float) -> float:
        operator = theory.mean_square_operator(problem, lr, batch)
        p = np.eye(problem.projected.shape[1])
        for _ in range(3000):
            q = operator(p)
            norm = float(np.linalg.norm(q))
            p = q / norm
        return norm

    assert radius(0.98 * eta) < 1.0 < radius(1.02 * eta)


def test_the_fast_threshold_is_the_labs_bisection():
    """stability.py computes the lab's lsq runs in the eigenbasis: the same threshold."""
    ds = load_dataset("digits", seed=0, n_samples=600)
    x, tensors = _data("feature", ds)
    problem = theory.lsq_problem(x, ds.y_train, ds.n_classes)
    guess = theory.sgd_stable_lr(problem, 32)
    lab = measure_stable_lr(
        tensors, config=TrainConfig(model="lsq", batch_size=32), n_classes=10, guess=guess
    )
    fast = measure_lsq_stable_lr(problem, ds.y_train, n_classes=10, batch_size=32, guess=guess)
    assert fast["steps"] == lab["steps"] >= 500
    assert fast["threshold"] == pytest.approx(lab["threshold"], rel=0.03)


@pytest.mark.parametrize("scheme", ["center", "global"])
def test_sgd_stability_prediction_within_25_percent_at_batch_1(scheme):
    ds = load_dataset("digits", seed=0)
    x, _ = _data(scheme, ds)
    problem = theory.lsq_problem(x, ds.y_train, ds.n_classes)
    predicted = theory.sgd_stable_lr(problem, 1)
    assert predicted < 0.6 * theory.sgd_stable_lr(problem, len(x))
    measured = measure_lsq_stable_lr(
        problem, ds.y_train, n_classes=10, batch_size=1, guess=predicted
    )
    assert measured["steps"] >= 500
    assert 0.8 <= measured["threshold"] / predicted <= 1.25
    again = measure_lsq_stable_lr(problem, ds.y_train, n_classes=10, batch_size=1, guess=predicted)
    assert again == measured  # deterministic


def test_signal_half_steps_sees_a_feature_on_a_huge_scale():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 400)
    x = rng.standard_normal((400, 5)) + np.eye(3)[y] @ rng.standard_normal((3, 5))
    even = theory.lsq_problem(x, y, 3)
    skewed = theory.lsq_problem(x * [1000.0, 1.0, 1.0, 1.0, 1.0], y, 3)
    # the same explainable loss from zero weights, whatever the scale
    zero_w, zero_b = np.zeros((3, 5)), np.zeros(3)
    assert even.excess(zero_w, zero_b) == pytest.approx(skewed.excess(zero_w, zero_b))
    t_even, t_skewed = theory.signal_half_steps(even), theory.signal_half_steps(skewed)
    assert t_even is not None and t_skewed is not None and t_skewed > 10 * t_even
    assert theory.ranking_cost(t_even, 0.5) == 2 * t_even
    assert theory.ranking_cost(None, 0.0) == float("inf")


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.integers(0, 5, 7).astype(float)
        b = rng.integers(0, 5, 7).astype(float)
        if len(set(a)) < 2 or len(set(b)) < 2:
            continue
        assert theory.spearman(list(a), list(b)) == pytest.approx(stats.spearmanr(a, b)[0])
    assert theory.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0
    assert theory.spearman([1.0, 1.0], [1.0, 2.0]) is None  # undefined, not NaN
    assert theory.ranks([2.0, float("inf"), 1.0, float("inf")]) == [2.0, 3.5, 1.0, 3.5]


def test_saturation_from_moments_matches_the_data():
    ds = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    raw = ds.x_train.reshape(len(ds.x_train), -1)
    got = theory.saturation(raw, w, b)
    assert got["tanh_saturated_measured"] > 0.3  # 0..16 inputs: many units saturate
    assert got["tanh_saturated_predicted"] == pytest.approx(
        got["tanh_saturated_measured"], abs=0.05
    )
    z, _ = _data("feature", ds)
    low = theory.saturation(z, w, b)
    assert low["tanh_saturated_predicted"] < 0.05 and low["tanh_saturated_measured"] < 0.05


def test_lsq_runs_are_deterministic_and_record_the_theory(tmp_path):
    options = dict(
        schemes=("raw", "global"),
        model="lsq",
        seeds=1,
        epochs=2,
        n_samples=500,
        lr_min=1 / 4,
        lr_max=1 / 2,
        max_extensions=1,
        progress=False,
        report=False,
    )
    compare("digits", out=tmp_path / "a", **options)
    compare("digits", out=tmp_path / "b", **options)
    a = (tmp_path / "a" / "results.json").read_bytes()
    assert a == (tmp_path / "b" / "results.json").read_bytes()
    th = json.loads(a)["theory"]
    for name in ("raw", "global"):
        entry = th["schemes"][name]
        assert entry["lr_sgd_max_predicted"] <= entry["lr_gd_max"] * (1 + 1e-6)
        # the lab's batches (one permutation per epoch) are at least as stable here
        assert entry["lr_sgd_max_predicted_epoch"] >= 0.95 * entry["lr_sgd_max_predicted"]
        assert "steps_to_epsilon_predicted" in entry and "steps_to_epsilon_measured" in entry
        bracket = entry["lr_stable_measured"]  # the grid's measurement beside the prediction
        assert set(bracket) == {"largest_stable", "smallest_diverging"}
        assert isinstance(entry["stability_agrees"], bool)
    assert set(th["ranking"]["predicted"]) == {"raw", "global"}


def test_predicted_ties_open_at_the_cheapest_and_do_not_chain():
    inf = float("inf")
    costs = {"a": 1.0, "b": 1.9, "c": 3.6, "d": 7.0, "e": inf, "f": inf}
    assert theory.predicted_tie_groups(costs, 2.0) == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert theory.predicted_tie_groups(costs, 1.0) == [["a"], ["b"], ["c"], ["d"], ["e", "f"]]
    # exactly the factor is still a tie; the order does not depend on the dict's order
    assert theory.predicted_tie_groups({"y": 2.0, "x": 1.0}, 2.0) == [["x", "y"]]
    with pytest.raises(ValueError):
        theory.predicted_tie_groups(costs, 0.5)


def test_measured_ties_are_overlapping_seed_ranges():
    inf = float("inf")
    per_seed = {
        "fast": [32.0, 64.0, 32.0, 64.0],
        "close": [64.0, 96.0, 128.0, 96.0],  # its best seed equals fast's worst: a tie
        "slow": [160.0, 192.0, 224.0, 160.0],
        "partial": [300.0, inf, inf, 400.0],  # median ∞, range overlaps never
        "never": [inf, inf, inf, inf],
    }
    groups = theory.measured_tie_groups(per_seed)
    assert groups == [["fast", "close"], ["slow"], ["never", "partial"]]
    # one seed of "slow" as fast as "close": now indistinguishable from it, not from "fast"
    per_seed["slow"] = [96.0, 192.0, 224.0, 160.0]
    assert theory.measured_tie_groups(per_seed)[:2] == [["fast", "close"], ["slow"]]
    per_seed["slow"] = [64.0, 192.0, 224.0, 160.0]
    assert theory.measured_tie_groups(per_seed)[0] == ["fast", "close", "slow"]


def test_rankings_with_ties_give_group_rho_and_best_worst_matches():
    stats = pytest.importorskip("scipy.stats")
    inf = float("inf")
    predicted = {"feature": 1.0, "center": 1.7, "global": 5.0, "raw": 28.0, "max": 252.0}
    per_seed = {
        "center": [224.0, 256.0, 240.0],
        "feature": [288.0, 320.0, 304.0],
        "global": [640.0, 704.0, 672.0],
        "raw": [832.0, 896.0, inf],
        "max": [inf, inf, inf],
    }
    got = theory.compare_rankings(predicted, per_seed, 2.0)
    assert got["predicted_groups"] == [["feature", "center"], ["global"], ["raw"], ["max"]]
    assert got["measured_groups"] == [["center"], ["feature"], ["global"], ["raw", "max"]]
    names = list(predicted)
    pred_rank = [0, 0, 1, 2, 3]  # group indices in the order of `names`
    meas_rank = [1, 0, 2, 3, 3]
    assert got["spearman"] == pytest.approx(stats.spearmanr(pred_rank, meas_rank)[0])
    medians = [304.0, 240.0, 672.0, 896.0, inf]
    expected = stats.spearmanr([predicted[s] for s in names], [1, 0, 2, 3, 4])[0]
    assert got["spearman_values"] == pytest.approx(expected)
    assert theory.spearman([predicted[s] for s in names], medians) == pytest.approx(expected)
    assert got["best_match"] is True and got["worst_match"] is True
    # the predicted worst measured among the best: a miss
    per_seed["max"] = [200.0, 210.0, 220.0]
    assert theory.compare_rankings(predicted, per_seed, 2.0)["worst_match"] is False
    # everything tied on one side: the match is undefined, not a success
    tied = theory.compare_rankings(predicted, {s: [32.0, inf] for s in predicted}, 2.0)
    assert tied["measured_groups"] == [sorted(predicted)]
    assert tied["best_match"] is None and tied["worst_match"] is None
    assert tied["spearman"] is None  # undefined, not NaN
    with pytest.raises(ValueError):
        theory.compare_rankings({"a": 1.0}, {"b": [1.0]}, 2.0)


def test_relative_target_is_the_same_under_every_affine_scheme():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 4)) + np.eye(3)[y] @ rng.standard_normal((3, 4))
    got = theory.relative_target(x, y, 3)
    scaled = theory.relative_target(x * [1e3, 1.0, 1e-2, 5.0] + 40.0, y, 3)
    assert got == pytest.approx(scaled)
    assert got["majority"] == np.bincount(y).max() / 300
    assert got["majority"] < got["target"] < got["linear_optimum"]
    assert got["best_single_feature"] <= got["linear_optimum"] + 1e-12


def test_mlp_ranking_is_deterministic_and_records_the_tie_groups(tmp_path):
    options = dict(
        schemes=("raw", "global", "feature"),
        model="mlp",
        seeds=2,
        epochs=1,
        n_samples=300,
        target=0.5,
        lr_factor=4.0,
        lr_min=1 / 4,
        lr_max=4.0,
        max_extensions=1,
        progress=False,
        report=False,
    )
    compare("digits", out=tmp_path / "a", **options)
    compare("digits", out=tmp_path / "b", **options)
    a = (tmp_path / "a" / "results.json").read_bytes()
    assert a == (tmp_path / "b" / "results.json").read_bytes()
    th = json.loads(a)["theory"]
    rk = th["ranking"]
    assert rk["predicted_tie_factor"] == 2.0
    assert sorted(s for g in rk["predicted_groups"] for s in g) == ["feature", "global", "raw"]
    assert [s for g in rk["measured_groups"] for s in g] == rk["measured"]
    for name in ("raw", "global", "feature"):
        assert len(th["schemes"][name]["samples_to_target_per_seed"]) == 2
    per_seed = {
        s: [
            float("inf") if v is None else v for v in th["schemes"][s]["samples_to_target_per_seed"]
        ]
        for s in ("raw", "global", "feature")
    }
    costs = {  # JSON writes an infinite cost as null
        s: float("inf")
        if th["schemes"][s]["ranking_cost"] is None
        else th["schemes"][s]["ranking_cost"]
        for s in per_seed
    }
    again = theory.compare_rankings(costs, per_seed, 2.0)
    assert again["measured_groups"] == rk["measured_groups"]
    assert again["spearman"] == rk["spearman"]


def _rare_feature_problem():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 6)) * [1.0, 2.0, 0.5, 1.0, 1.0, 0.1]
    x[7, 5] = 40.0
    y = rng.integers(0, 3, 300)
    return theory.lsq_problem(x, y, 3), y


def test_thresholds_by_horizon_are_the_labs_and_the_mean_squares():
    """One grid run to the longest horizon answers every horizon; runs average the loss."""
    problem, y = _rare_feature_problem()
    eta = theory.sgd_stable_lr(problem, 8)
    options = dict(n_classes=3, batch_size=8, guess=eta, span=2.0, grid=13)
    lab = stable_lr_by_horizon(problem, y, epochs=[10, 40], **options)
    assert [f["steps"] for f in lab] == [500, 1520]  # at least 500 steps, else whole epochs
    assert lab[1]["threshold"] <= lab[0]["threshold"]  # a longer run only adds divergences
    single = measure_lsq_stable_lr(problem, y, n_classes=3, batch_size=8, guess=eta, min_epochs=40)
    assert lab[1]["threshold"] == pytest.approx(single["threshold"], rel=0.03)
    mean_square = stable_lr_by_horizon(
        problem, y, epochs=[40], sampling="fresh", runs=16, criterion="end", **options
    )
    assert mean_square[0]["runs"] == 16 and mean_square[0]["criterion"] == "end"
    assert 0.8 <= mean_square[0]["threshold"] / eta <= 1.25
    again = stable_lr_by_horizon(
        problem, y, epochs=[40], sampling="fresh", runs=16, criterion="end", **options
    )
    assert again == mean_square  # deterministic
    with pytest.raises(NormlabError, match="criterion"):
        stable_lr_by_horizon(problem, y, epochs=[4], criterion="max", **options)


def test_mean_square_of_independent_batches_is_what_the_prediction_is_about():
    """zca on digits, batch 32: one run with one permutation per epoch stays bounded well above
    η* (reshuffling: each rare sample once per epoch); runs with independently drawn batches,
    which the prediction describes, grow in the mean near η*."""
    ds = load_dataset("digits", seed=0)
    x, _ = _data("zca", ds)
    problem = theory.lsq_problem(x, ds.y_train, ds.n_classes)
    eta = theory.sgd_stable_lr(problem, 32)
    options = dict(n_classes=10, batch_size=32, guess=eta, epochs=[40], span=2.0, grid=13)
    lab = stable_lr_by_horizon(problem, ds.y_train, **options)[0]
    mean_square = stable_lr_by_horizon(
        problem, ds.y_train, sampling="fresh", runs=16, criterion="end", **options
    )[0]
    assert lab["threshold"] / eta > 1.25
    assert 0.8 <= mean_square["threshold"] / eta <= 1.25


def test_the_epoch_product_is_the_epochs_steps_one_after_another():
    """Blocks of batches in compact form: the same product as one batch at a time."""
    rng = np.random.default_rng(5)
    y = rng.standard_normal((53, 40)) * np.linspace(0.2, 2.0, 40)  # r > the block size
    order = rng.permutation(53)
    columns = np.array([1, 4, 7, 30, 39])
    for batch in (1, 4, 53):  # 53 = 13·4 + 1: the last batch holds one sample
        lr = 0.9 / float((y**2).sum(axis=1).max())
        phi = np.eye(40)
        for start in range(0, 53, batch):
            rows = y[order[start : start + batch]]
            phi = phi - lr / len(rows) * rows.T @ (rows @ phi)
        got = theory._epoch_product(y, order, lr, batch, columns)
        assert got == pytest.approx(phi[np.ix_(columns, columns)], abs=1e-12)


def test_epoch_radius_by_power_iteration_is_the_perron_root():
    rng = np.random.default_rng(6)
    phis = [np.eye(26) + 0.15 * rng.standard_normal((26, 26)) for _ in range(3)]
    dense = sum(np.kron(f, f) for f in phis) / 3
    expected = float(np.abs(np.linalg.eigvals(dense)).max())
    got, p = theory._epoch_radius(phis)  # 26 > 24: power iteration
    assert got == pytest.approx(expected, rel=1e-3)
    assert np.linalg.eigvalsh(p).min() > -1e-8  # a positive semi-definite eigenvector
    side, _ = theory._epoch_radius(phis, side_only=True)  # what the threshold search asks
    assert side > 1.0 and abs(np.log(side / expected)) <= abs(np.log(expected)) / 10
    small, _ = theory._epoch_radius([f[:20, :20] for f in phis])  # dense
    assert small == pytest.approx(
        float(
            np.abs(
                np.linalg.eigvals(sum(np.kron(f[:20, :20], f[:20, :20]) for f in phis) / 3)
            ).max()
        ),
        rel=1e-9,
    )


def test_epoch_stability_at_full_batch_is_two_over_lambda_max():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3)) + 2.0
    problem = theory.lsq_problem(x, rng.integers(0, 2, 50), 2)
    assert theory.sgd_stable_lr_epoch(problem, 50) == pytest.approx(2.0 / problem.lambda_max)


def test_epoch_stability_prediction_within_25_percent_where_independent_batches_miss():
    """zca on digits, batch 32: each sample once per epoch makes SGD more stable than the
    closed form for independent batches says; the prediction for the lab's batches sees it.
    Measured: 16 runs with the lab's batches, their mean loss after 40 epochs above 10×."""
    ds = load_dataset("digits", seed=0)
    x, _ = _data("zca", ds)
    problem = theory.lsq_problem(x, ds.y_train, ds.n_classes)
    predicted = theory.sgd_stable_lr_epoch(problem, 32)
    independent = theory.sgd_stable_lr(problem, 32)
    (measured,) = stable_lr_by_horizon(
        problem,
        ds.y_train,
        n_classes=ds.n_classes,
        batch_size=32,
        guess=predicted,
        epochs=[40],
        sampling="epoch",
        runs=16,
        criterion="end",
        span=2.0,
        grid=13,
    )
    assert measured["steps"] >= 500
    assert 0.8 <= measured["threshold"] / predicted <= 1.25
    assert measured["threshold"] / independent > 1.25
    assert theory.sgd_stable_lr_epoch(problem, 32) == predicted  # deterministic


def test_above_the_size_limit_the_lab_batches_prediction_is_left_out(tmp_path, monkeypatch):
    """Its epoch products grow with samples × directions²: a big problem records null, and
    the grid is checked against the closed form instead."""
    from normlab.lab import runner

    monkeypatch.setattr(runner, "_EPOCH_PREDICTION_LIMIT", 0.0)
    out = tmp_path / "run"
    options = dict(
        schemes=("global",), model="lsq", seeds=1, epochs=1, n_samples=300, progress=False
    )
    compare("digits", out=out, lr_min=0.25, lr_max=0.5, max_extensions=1, **options)
    theory_of = json.loads((out / "results.json").read_text())["theory"]
    entry = theory_of["schemes"]["global"]
    assert entry["lr_sgd_max_predicted_epoch"] is None
    assert entry["lr_sgd_max_predicted"] > 0 and isinstance(entry["stability_agrees"], bool)
