"""The lab's excess loss over the optimum, and predicted against measured steps to ε."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from normlab import schemes  # noqa: E402
from normlab.lab import compare, load_dataset, theory  # noqa: E402
from normlab.lab.report import write_report  # noqa: E402
from normlab.lab.train import TrainConfig, train_run  # noqa: E402

torch.set_num_threads(1)
SCHEMES = ("raw", "max", "center", "global", "feature", "zca")


@pytest.fixture(scope="module")
def mnist():
    """1,600 MNIST training images: ZCA maps their constant pixels to float32 rounding."""
    return load_dataset("mnist5k", seed=0, n_samples=2000)


def _normalized(name: str, ds) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norm = schemes.get(name).fit(ds.x_train)
        return np.asarray(norm.transform(ds.x_train), dtype=np.float32)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_measured_excess_is_train_loss_minus_the_optimum(mnist, scheme):
    """Before the fix, zca's ½ tr(E H Eᵀ) read 3.4 where the loss was 1.4 above the optimum."""
    x = _normalized(scheme, mnist)
    problem = theory.lsq_problem(x, mnist.y_train, mnist.n_classes)
    z = theory.augmented(x)
    onehot = np.eye(mnist.n_classes)[mnist.y_train]
    rng = np.random.default_rng(0)
    for size in (0.0, 0.03, 0.3):  # the optimum itself, and errors of two sizes
        w = problem.w_star + size * rng.standard_normal(problem.w_star.shape)
        loss = 0.5 * ((z @ w.T - onehot) ** 2).sum(axis=1).mean()
        assert problem.excess(w[:, :-1], w[:, -1]) == pytest.approx(
            loss - problem.loss_star, rel=1e-7, abs=1e-10
        )
    # the optimum's loss does not depend on the (invertible, affine) scheme
    reference = theory.lsq_problem(_normalized("max", mnist), mnist.y_train, mnist.n_classes)
    assert problem.loss_star == pytest.approx(reference.loss_star, rel=1e-5)
    # the trainer's excess at the end of a run equals its (float32) train loss minus the optimum
    tensors = {
        "x_train": torch.as_tensor(x),
        "y_train": torch.as_tensor(mnist.y_train),
        "x_test": torch.as_tensor(x[:10]),
        "y_test": torch.as_tensor(mnist.y_train[:10]),
    }
    quadratic = {
        "hessian": torch.as_tensor(problem.hessian),
        "w_star": torch.as_tensor(problem.w_star),
    }
    run = train_run(
        tensors,
        config=TrainConfig(model="lsq", epochs=1, epsilon=0.05, checkpoints_per_epoch=1),
        lr=min(0.2 / problem.lambda_max, 0.005),  # zca: heavy tails lower the stable rate
        seed=0,
        n_classes=mnist.n_classes,
        quadratic=quadratic,
    )
    assert not run["diverged"]
    assert run["final_excess"] == pytest.approx(
        run["final_train_loss"] - problem.loss_star, rel=1e-6, abs=2e-6
    )


def test_compare_counts_flags_every_kind_of_disagreement():
    h, cap = 1000, 4000
    # both reached: the exact ratio decides
    assert theory.compare_counts([100, 100], [110, 120], h, cap)["agrees"] is True
    r = theory.compare_counts([100, 100], [140, 140], h, cap)
    assert (r["ratio"], r["ratio_bound"], r["agrees"]) == (1.4, "exact", False)
    # measured never, predicted well inside the horizon: a lower bound above 1.25
    r = theory.compare_counts([320, 324], [None, None], h, cap)
    assert r["ratio_bound"] == "lower" and r["ratio"] == pytest.approx(1000 / 322)
    assert r["agrees"] is False and "> 3.12" in r["disagreement"]
    assert r["per_seed"][0]["ratio"] == pytest.approx(1000 / 320)
    # ... at exactly horizon/1.25 still a disagreement; closer to the horizon it cannot be told
    assert theory.compare_counts([800], [None], h, cap)["agrees"] is False
    assert theory.compare_counts([900], [None], h, cap)["agrees"] is True
    # predicted never (beyond the cap), measured reached: an upper bound below 1/1.25
    r = theory.compare_counts([None, None], [500, 700], h, cap)
    assert (r["ratio_bound"], r["agrees"]) == ("upper", False)
    assert r["ratio"] == pytest.approx(600 / 4000)
    # predicted beyond the horizon (a number), measured reached: the exact ratio decides
    assert theory.compare_counts([1500], [900], h, cap)["agrees"] is False
    # one seed never against a prediction well inside: flagged although the mean bound is not
    r = theory.compare_counts([700, 700], [660, None], h, cap)
    assert r["ratio_bound"] == "lower" and r["ratio"] < 1.25
    assert r["agrees"] is False and r["per_seed"][1]["agrees"] is False
    # both never: consistent, no ratio
    r = theory.compare_counts([None, None], [None, None], h, cap)
    assert (r["ratio"], r["ratio_bound"], r["agrees"], r["disagreement"]) == (
        None,
        None,
        True,
        None,
    )


def test_results_and_report_say_where_prediction_and_measurement_disagree(tmp_path):
    out = tmp_path / "digits-lsq"
    compare(
        "digits",
        schemes=("raw", "zca"),
        model="lsq",
        seeds=2,
        epochs=2,
        n_samples=600,
        epsilon=0.05,
        lr_min=1 / 16,
        lr_max=1.0,
        lr_factor=4.0,
        max_extensions=0,
        out=out,
        progress=False,
    )
    saved = json.loads((out / "results.json").read_text())
    for name in ("raw", "zca"):
        entry = saved["theory"]["schemes"][name]
        assert entry["agrees"] in (True, False)  # never null: censored counts are bounds
        assert entry["steps_to_epsilon_horizon"] == 2 * 15
        assert len(entry["ratio_per_seed"]) == 2
        assert entry["excess_floor_predicted"] >= 0.0
        for run in saved["runs"]:
            if run["scheme"] == name and not run["diverged"]:
                loss_star = entry["loss_star"]
                assert run["final_excess"] == pytest.approx(
                    run["final_train_loss"] - loss_star,
                    rel=1e-6,
                    abs=1e-5,  # 7 digits
                )
    # raw at its chosen rate: predicted and measured both beyond the horizon
    raw = saved["theory"]["schemes"]["raw"]
    assert raw["steps_to_epsilon_measured_per_seed"] == [None, None]
    assert raw["agrees"] is True and raw["ratio_bound"] is None
    # the report states a censored disagreement: measurements never reached ε against a
    # prediction well inside the horizon (here written into a real run's results)
    zca = saved["theory"]["schemes"]["zca"]
    compared = theory.compare_counts([5, 6], [None, None], 30, 120)
    zca.update(
        {
            "steps_to_epsilon_predicted_per_seed": [5, 6],
            "steps_to_epsilon_measured_per_seed": [None, None],
            "ratio_measured_to_predicted": compared["ratio"],
            "ratio_bound": compared["ratio_bound"],
            "agrees": compared["agrees"],
            "disagreement": compared["disagreement"],
        }
    )
    page = write_report(saved, tmp_path / "edited").read_text()
    assert "&gt; 5.45 (!)" in page and "&gt; 30, &gt; 30" in page
    assert "disagree by more than 25 % for zca" in page and "beyond a factor 1.25" in page


def test_predicted_never_where_the_noise_floor_reaches_epsilon():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 5)) * [1.0, 2.0, 0.5, 1.0, 0.3]
    problem = theory.lsq_problem(x, rng.integers(0, 3, 400), 3)
    s0 = problem.components(np.zeros((3, 5)), np.zeros(3))
    assert theory.sgd_excess_floor(problem, 0.05, 400) == 0.0  # full batch: no noise
    floors = [theory.sgd_excess_floor(problem, lr, 8) for lr in (0.01, 0.02, 0.04)]
    assert all(f is not None and f > 0 for f in floors) and floors == sorted(floors)
    below, above = 1.01 * floors[1], 0.99 * floors[1]
    assert theory.sgd_steps_to_epsilon(problem, s0, 0.02, 8, below, max_steps=10**6) is not None
    assert theory.sgd_steps_to_epsilon(problem, s0, 0.02, 8, above) is None


def _noisy_problem_data():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 5)) * [1.0, 2.0, 0.5, 1.0, 0.3]
    return x, rng.integers(0, 3, 400)


def _noisy_problem():
    x, y = _noisy_problem_data()
    return theory.lsq_problem(x, y, 3), y


@pytest.mark.parametrize(
    ("lr", "batch", "epochs"),
    [(0.02, 8, 40), (0.1, 8, 40), (0.2, 48, 200), (0.2, 133, 200), (0.1, 399, 400)],
)
def test_predicted_excess_of_epoch_permutations_matches_simulated_runs(lr, batch, epochs):
    """The closure against 64 simulated SGD runs from the same initial weights, epoch ends.

    One permutation per epoch (the lab's) makes the batch noise sum to zero over the epoch:
    with batches of 8 at the slower rate the floor is a third of the independent batches'
    one. Batches of 48 end each epoch on a batch of 16, batches of 133 and 399 on a single sample,
    whose larger noise (additive and multiplicative) puts the epoch's end above the
    independent floor. Each prediction lands within 8 % of its own simulation and at least
    20 % from the other one.
    """
    from normlab.lab.stability import _initial_error, _run

    problem, y = _noisy_problem()
    per_epoch = -(-400 // batch)
    start = _initial_error(problem, 5, 3, 0)
    s0 = np.zeros(len(problem.lam))
    s0[problem.lam > 1e-12 * problem.lambda_max] = (start**2).sum(axis=0)
    ends = slice(epochs // 2 * per_epoch - 1, None, per_epoch)  # the second half's epoch ends
    found = {}
    for sampling, kernel in (("epoch", "epoch"), ("independent", "fresh")):
        _, simulated, _ = _run(
            problem,
            y,
            np.array([lr]),
            n_classes=3,
            batch_size=batch,
            steps=epochs * per_epoch,
            seed=0,
            sampling=kernel,
            runs=64,
            checkpoints_per_epoch=1,
            factor=1e12,
        )
        path = theory.sgd_excess_path(problem, s0, lr, batch, epochs * per_epoch, sampling)
        predicted = float(path[ends].mean())
        measured = float((simulated[0, epochs // 2 - 1 :] - problem.loss_star).mean())
        assert predicted == pytest.approx(measured, rel=0.08), sampling
        found[sampling] = predicted
        if sampling == "epoch":  # the floor is the lowest point of the cycle the path settles on
            floor = theory.sgd_excess_floor(problem, lr, batch)
            assert floor is not None and 0.0 < floor <= path[-per_epoch:].min() * 1.001
    assert abs(math.log(found["epoch"] / found["independent"])) > math.log(1.2)
    with pytest.raises(ValueError, match="sampling"):
        theory.sgd_excess_floor(problem, lr, batch, sampling="shuffled")


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 6])
def test_permutation_drive_is_exact_for_the_additive_noise(batch):
    """Every ordering of 7 samples: with the mean Hessian at each step, the drive is exact."""
    import itertools

    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 2)) * [1.0, 0.5]
    y = rng.integers(0, 2, 7)
    problem = theory.lsq_problem(x, y, 2)
    keep = problem.lam > 1e-12 * problem.lambda_max
    lam, u = problem.lam[keep], problem.projected
    onehot = np.eye(2)[y]
    residual = onehot - u @ (problem.w_star @ problem.vecs[:, keep]).T
    gradient = u[:, :, None] * residual[:, None, :]  # per sample, direction, output
    orders = np.array(list(itertools.permutations(range(7))))
    for lr in (0.05, 0.3, 1.5 / lam.max()):
        a = 1.0 - lr * lam
        drives = theory._drives(problem, lr, batch, "epoch")
        error = np.zeros((len(orders), len(lam), 2))
        s = np.zeros(len(lam))
        for position in range(-(-7 // batch)):
            rows = orders[:, position * batch : (position + 1) * batch]
            error = a[None, :, None] * error - lr * gradient[rows].mean(axis=1)
            s = a**2 * s + drives[position]
            np.testing.assert_allclose(s, (error**2).sum(axis=2).mean(axis=0), rtol=1e-9)


def test_predicted_steps_are_the_first_crossing_of_the_predicted_path():
    problem, _ = _noisy_problem()
    s0 = problem.components(np.ones((3, 5)), np.zeros(3))
    for batch, lr in ((8, 0.05), (48, 0.2), (1, 0.01)):
        path = theory.sgd_excess_path(problem, s0, lr, batch, 3000)
        epsilon = float(np.quantile(path, 0.3))
        steps = theory.sgd_steps_to_epsilon(problem, s0, lr, batch, epsilon)
        assert steps == int(np.argmax(path <= epsilon)) + 1
    gd = theory.sgd_excess_path(problem, s0, 0.05, 400, 50)
    assert theory.sgd_steps_to_epsilon(problem, s0, 0.05, 400, float(gd[29])) == 30


@pytest.mark.parametrize(("batch", "lr"), [(1, 0.01), (48, 0.2), (7, 0.05)])
def test_an_epoch_at_a_time_is_the_step_by_step_closure(monkeypatch, batch, lr):
    """The predicted path walks whole epochs (one product per epoch): the same numbers as
    applying each step's transition and drive in turn, with and without the stored rows."""
    problem, _ = _noisy_problem()
    s0 = problem.components(np.ones((3, 5)), np.zeros(3))
    closure = theory._build_closure(problem, lr, batch, "epoch")
    s, reference = s0[closure.keep].copy(), []
    for step in range(3 * closure.period + 5):
        position = step % closure.period
        s = closure.transition(position) @ s + closure.drives[position]
        reference.append(0.5 * closure.lam @ s + problem.unreachable)
    steps = len(reference)
    fast = theory.sgd_excess_path(problem, s0, lr, batch, steps)
    np.testing.assert_allclose(fast, reference, rtol=1e-10)
    monkeypatch.setattr(theory, "_ROWS_LIMIT", 0)  # too large to store: walked step by step
    slow = theory.sgd_excess_path(
        theory.lsq_problem(*_noisy_problem_data(), 3), s0, lr, batch, steps
    )
    np.testing.assert_allclose(slow, reference, rtol=1e-10)
    epsilon = float(np.quantile(reference, 0.4))
    expected = int(np.argmax(np.asarray(reference) <= epsilon)) + 1
    assert theory.sgd_steps_to_epsilon(problem, s0, lr, batch, epsilon) == expected
    assert (
        theory.sgd_steps_to_epsilon(problem, s0, lr, batch, epsilon, max_steps=expected - 1) is None
    )


def test_tiny_rates_give_a_small_positive_floor():
    problem, _ = _noisy_problem()
    floors = [theory.sgd_excess_floor(problem, lr, 8) for lr in (1e-9, 1e-6, 1e-3)]
    assert all(f is not None and f > 0.0 for f in floors)
    assert floors == sorted(floors)


def test_an_unstable_last_batch_has_no_floor():
    """400 samples in batches of 399: each epoch ends on one sample, whose step diverges."""
    problem, _ = _noisy_problem()
    assert theory.sgd_excess_floor(problem, 0.1, 399) is not None
    assert theory.sgd_excess_floor(problem, 0.45, 399) is None
    assert theory.sgd_excess_floor(problem, 0.45, 399, sampling="independent") is not None


def test_a_large_mean_does_not_move_the_optimum_that_epsilon_counts_from():
    """Inputs offset by 1000: the bias direction's eigenvalue falls below 1e-12 of the largest.

    The optimum over the kept directions then lies well above the true one; the part between
    them (``unreachable``) is added to every excess, so ε counts from the same optimum as for
    centred inputs, and a count that only the missing direction would reach is "never".
    """
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    x = rng.standard_normal((200, 6)) + 1.5 * y[:, None] + 1000.0
    raw = theory.lsq_problem(x, y, 2)
    centred = theory.lsq_problem(x - x.mean(axis=0), y, 2)
    assert centred.unreachable == 0.0 and raw.unreachable > 0.05
    assert raw.loss_star - raw.unreachable == pytest.approx(centred.loss_star, rel=1e-6)
    s0 = raw.components(np.zeros((2, 6)), np.zeros(2))
    epsilon = 0.5 * raw.unreachable
    assert theory.gd_steps_to_epsilon(raw, s0, 1.0 / raw.lambda_max, epsilon) is None
    assert theory.sgd_steps_to_epsilon(raw, s0, 0.1 / raw.lambda_max, 8, epsilon) is None
    floor = theory.sgd_excess_floor(raw, 0.1 / raw.lambda_max, 8)
    assert floor is not None and floor >= raw.unreachable


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_no_ranking_of_step_counts_that_were_not_predicted(optimizer):
    """Steps to ε are predicted for SGD and GD only: no 'raw = zca (tied)' of two unknowns."""
    results = compare(
        "digits",
        schemes=("raw", "zca"),
        model="lsq",
        optimizer=optimizer,
        n_samples=300,
        seeds=1,
        epochs=1,
        epsilon=0.05,
        lr_factor=4.0,
        max_extensions=0,
        progress=False,
    )
    assert results["theory"]["ranking"] is None
    assert all(
        "steps_to_epsilon_predicted" not in entry for entry in results["theory"]["schemes"].values()
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "mlp", "--epsilon", "0.5"], "applies to --model lsq only"),
        (["--model", "lsq", "--optimizer", "gd", "--batch-size", "7"], "does not apply"),
    ],
)
def test_compare_refuses_options_it_would_ignore(tmp_path, args, words):
    from typer.testing import CliRunner

    from normlab.cli import app

    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["compare", "--dataset", "digits", *args, "--out", str(out)])
    assert result.exit_code != 0 and words in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_compare_refuses_inputs_beyond_float32(tmp_path):
    """The lab trains in float32: inputs near 1e150 would be inf, and the theory would overflow."""
    from normlab.errors import NormlabError

    rng = np.random.default_rng(6)
    np.save(tmp_path / "x.npy", rng.random((120, 4)) * 1e150)
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 120))
    with pytest.raises(NormlabError, match=r"beyond float32.*x / 1e148"):
        compare(
            None,
            data=tmp_path / "x.npy",
            labels=tmp_path / "y.npy",
            model="lsq",
            seeds=1,
            epochs=1,
            out=tmp_path / "out",
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_predicted_counts_beyond_the_cap_read_never_at_full_batch_too(tmp_path):
    """GD's exact count may run far past 4× the horizon: it is 'never' there, as for SGD."""
    from normlab.errors import NormlabError

    results = compare(
        "digits",
        schemes=("raw",),
        model="lsq",
        optimizer="gd",
        n_samples=300,
        seeds=1,
        epochs=2,
        epsilon=0.01,
        lr_factor=4.0,
        max_extensions=0,
        progress=False,
    )
    entry = results["theory"]["schemes"]["raw"]
    cap = entry["steps_to_epsilon_prediction_cap"]
    assert cap == 8 and entry["steps_to_epsilon_predicted_per_seed"] == [None]
    with pytest.raises(NormlabError, match="is a file"):
        (tmp_path / "afile").write_text("keep me")
        compare("digits", model="lsq", seeds=1, epochs=1, out=tmp_path / "afile", progress=False)
    assert (tmp_path / "afile").read_text() == "keep me"
