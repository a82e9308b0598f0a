"""The convergence lab: datasets, probes against numpy references, the LR-grid rule, training,
CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend")
pytest.importorskip("matplotlib")

from typer.testing import CliRunner  # noqa: E402

import normlab.schemes as schemes  # noqa: E402
from normlab.cli import app  # noqa: E402
from normlab.errors import DTypeError, NormlabError, ShapeError  # noqa: E402
from normlab.lab import (  # noqa: E402
    compare,
    load_dataset,
    probes,  # noqa: E402
)
from normlab.lab.probes import UpdateProbe, second_moment_spectrum, single_signed_samples  # noqa: E402
from normlab.lab.train import TrainConfig, train_run  # noqa: E402

torch.set_num_threads(1)  # small models: one thread is fastest and deterministic
SMALL = dict(
    model="mlp", seeds=2, epochs=2, lr_min=1 / 4, lr_max=4.0, lr_factor=4.0, progress=False
)


@pytest.fixture(scope="module")
def digits_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "digits"
    results = compare("digits", schemes=("raw", "max", "feature"), out=out, report=False, **SMALL)
    return results, out


def _tensors(name, ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norm = schemes.get(name).fit(ds.x_train)
        xtr, xte = norm.transform(ds.x_train), norm.transform(ds.x_test)
    return {
        "x_train": torch.as_tensor(np.asarray(xtr, dtype=np.float32)),
        "y_train": torch.as_tensor(ds.y_train),
        "x_test": torch.as_tensor(np.asarray(xte, dtype=np.float32)),
        "y_test": torch.as_tensor(ds.y_test),
    }


# ------------------------------------------------------------------ datasets
def test_digits_are_sklearns_uint8_values():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", seed=0)
    assert ds.x_train.dtype == np.uint8 and ds.sample_shape == (8, 8)
    both = np.concatenate([ds.x_train, ds.x_test]).reshape(-1, 64).astype(np.float64)
    reference = load_digits().data
    # the split is a permutation of scikit-learn's rows
    assert sorted(map(tuple, both)) == sorted(map(tuple, reference))
    assert len(ds.y_train) + len(ds.y_test) == 1797 and ds.n_classes == 10


def test_mnist5k_is_shuffled_with_the_seed_and_stratified():
    a = load_dataset("mnist5k", seed=1)
    b = load_dataset("mnist5k", seed=1)
    c = load_dataset("mnist5k", seed=2)
    assert a.x_train.dtype == np.uint8 and a.sample_shape == (28, 28)
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    assert np.bincount(a.y_test).tolist() == [100] * 10  # 20 % of 500 per digit
    assert not np.all(np.diff(a.y_train) >= 0)  # no longer sorted by label


def test_lecun_gauss_offset_shifts_every_value():
    plain = load_dataset("lecun-gauss", seed=3)
    shifted = load_dataset("lecun-gauss", seed=3, offset=2.5)
    np.testing.assert_allclose(shifted.x_train, plain.x_train + 2.5, rtol=0, atol=1e-12)
    assert shifted.n_classes == 2


def test_own_arrays(tmp_path):
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.repeat([7, 9], 20))
    ds = load_dataset(data=tmp_path / "x.npy", labels=tmp_path / "y.npy", seed=0)
    assert ds.n_classes == 2 and set(ds.y_train.tolist()) == {0, 1}
    assert len(ds.y_train) + len(ds.y_test) == 40


@pytest.mark.parametrize(
    "labels, error, words",
    [
        (np.zeros(39, dtype=int), ShapeError, "40 samples but 39 labels"),
        (np.linspace(0, 1, 40), DTypeError, "labels must be integers"),
        (np.array(["a"] * 40), DTypeError, "labels must be integers"),
    ],
)
def test_bad_labels(tmp_path, labels, error, words):
    np.save(tmp_path / "x.npy", np.zeros((40, 3)))
    np.save(tmp_path / "y.npy", labels)
    with pytest.raises(error, match=words):
        load_dataset(data=tmp_path / "x.npy", labels=tmp_path / "y.npy")


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(NormlabError, match="digits, mnist5k, lecun-gauss"):
        load_dataset("cifar")
    with pytest.raises(NormlabError, match="linear, lsq, mlp, cnn"):
        compare("digits", model="resnet")
    with pytest.raises(NormlabError, match="raw, max"):
        compare("digits", schemes=("raw", "zscore"))


# ------------------------------------------------------------------ probes
def test_spectrum_matches_numpy(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.random((300, 12)) * 5
    reference = np.linalg.eigvalsh(x.T @ x / len(x))
    got = second_moment_spectrum(x)
    assert got["lambda_max"] == pytest.approx(reference[-1], rel=1e-12)
    assert got["trace"] == pytest.approx(reference.sum(), rel=1e-12)
    monkeypatch.setattr(probes, "_EIGH_LIMIT", 4)  # the power-iteration path for wide data
    assert second_moment_spectrum(x)["lambda_max"] == pytest.approx(reference[-1], rel=1e-8)


def test_update_probe_against_numpy():
    rng = np.random.default_rng(1)
    updates = rng.standard_normal((5, 6, 10))
    updates[:, 0] = np.abs(updates[:, 0])  # row 0 always single-signed
    updates[2, 3] = 0.0  # a unit that does not move
    mean = rng.standard_normal(10)
    probe = UpdateProbe(mean_direction=torch.as_tensor(mean))
    for u in updates:
        probe.observe(torch.as_tensor(u))
    got = probe.collect()
    single, agree, share, cos = [], [], [], []
    for t, u in enumerate(updates):
        for row in range(6):
            r = u[row]
            if np.any(r != 0):
                single.append(np.all(r >= 0) or np.all(r <= 0))
                pos, neg = r[r > 0].sum(), -r[r < 0].sum()
                agree.append(max(pos, neg) / (pos + neg))
                share.append((r @ mean) ** 2 / (r @ r) / (mean @ mean))
            if t and np.any(r != 0) and np.any(updates[t - 1, row] != 0):
                p = updates[t - 1, row]
                cos.append(r @ p / np.linalg.norm(r) / np.linalg.norm(p))
    assert got["single_signed"] == pytest.approx(np.mean(single))
    assert got["sign_agreement"] == pytest.approx(np.mean(agree))
    assert got["mean_share"] == pytest.approx(np.mean(share))
    assert got["cosine"] == pytest.approx(np.mean(cos))
    assert got["reversed"] == pytest.approx(np.mean(np.array(cos) < 0))
    assert probe.collect()["single_signed"] is None  # reset after collecting


def test_batch_one_illustration_is_the_sign_of_the_input():
    x = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 3.0], [-1.0, -2.0, 0.0]])
    assert single_signed_samples(x) == pytest.approx(2 / 3)  # the zero row is left out
    assert single_signed_samples(np.abs(x)) == 1.0


@pytest.mark.parametrize("scheme, expected", [("raw", 1.0), ("max", 1.0), ("feature", 0.0)])
def test_probe_at_batch_size_one_follows_the_inputs(scheme, expected):
    """With one sample per step the update row is δ_j·x: single-signed iff x is."""
    ds = load_dataset("digits", seed=0, n_samples=300)
    data = _tensors(scheme, ds)
    config = TrainConfig(model="mlp", epochs=1, batch_size=1, target=0.99)
    run = train_run(data, config=config, lr=1e-3, seed=0, n_classes=ds.n_classes)
    single = run["epochs"][0]["single_signed"]
    assert single == pytest.approx(expected, abs=0.05)
    if expected == 1.0:
        assert single == 1.0 and run["epochs"][0]["sign_agreement"] == 1.0


def test_probes_at_the_runs_batch_size(digits_results):
    """At batch size 32, non-negative inputs still give far more one-signed update rows."""
    results, _ = digits_results
    summary = {s: info["summary"] for s, info in results["schemes"].items()}
    assert results["config"]["batch_size"] == 32
    assert summary["raw"]["sign_agreement"] > summary["feature"]["sign_agreement"] + 0.15
    assert summary["max"]["sign_agreement"] > summary["feature"]["sign_agreement"] + 0.15
    assert summary["raw"]["mean_share"] > 10 * summary["feature"]["mean_share"]
    assert results["schemes"]["raw"]["batch1_single_signed"] == 1.0
    assert results["schemes"]["feature"]["batch1_single_signed"] < 0.01


# ------------------------------------------------------------------ the LR grid
def test_best_lr_lies_strictly_inside_each_grid(digits_results):
    results, _ = digits_results
    for name, info in results["schemes"].items():
        assert info["best_lr_inside_grid"], name
        assert info["grid"][0] < info["best_lr"] < info["grid"][-1]
        ratios = np.array(info["grid"]) / info["lr_bound"]
        np.testing.assert_allclose(
            np.log(ratios) / np.log(4.0), np.round(np.log(ratios) / np.log(4.0)), atol=1e-6
        )  # rates are stored to 7 significant digits
        assert info["lr_bound"] == pytest.approx(2.0 / info["lambda_max_augmented"])
        assert info["lambda_max_augmented"] >= info["lambda_max"] * (1 - 1e-9)  # the bias input
        tried = sorted({r["lr"] for r in results["runs"] if r["scheme"] == name})
        assert tried == sorted(info["grid"])


def test_lambda_max_is_that_of_the_training_split(digits_results):
    from sklearn.preprocessing import StandardScaler

    results, _ = digits_results
    ds = load_dataset("digits", seed=0)
    x = StandardScaler().fit_transform(ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64))
    reference = np.linalg.eigvalsh(x.T @ x / len(x))[-1]
    assert results["schemes"]["feature"]["lambda_max"] == pytest.approx(reference, rel=1e-5)
    raw = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    assert results["schemes"]["raw"]["lambda_max"] == pytest.approx(
        np.linalg.eigvalsh(raw.T @ raw / len(raw))[-1], rel=1e-6
    )


def test_grid_is_widened_until_the_best_is_inside():
    results = compare(
        "digits",
        schemes=("feature",),
        model="linear",
        seeds=1,
        epochs=1,
        lr_min=1 / 256,
        lr_max=1 / 256,
        lr_factor=4.0,
        n_samples=400,
        progress=False,
    )
    info = results["schemes"]["feature"]
    assert len(info["grid"]) >= 3 and info["best_lr_inside_grid"]
    assert info["grid"][0] < info["best_lr"] < info["grid"][-1]
    assert any(
        lr == pytest.approx(info["lr_bound"] / 256) for lr in info["grid"]
    )  # the initial point


# ------------------------------------------------------------------ training
def test_divergence_stops_cleanly():
    ds = load_dataset("digits", seed=0, n_samples=300)
    data = _tensors("raw", ds)
    run = train_run(
        data, config=TrainConfig(model="lsq", epochs=3), lr=10.0, seed=0, n_classes=ds.n_classes
    )
    assert run["diverged"] and run["samples_to_target"] is None and run["final_train_loss"] is None
    assert len(run["epochs"]) == 1
    json.dumps(run, allow_nan=False)


def test_results_are_deterministic_for_a_seed(digits_results, tmp_path):
    _, out = digits_results
    again = tmp_path / "again"
    compare("digits", schemes=("raw", "max", "feature"), out=again, report=False, **SMALL)
    assert (again / "results.json").read_bytes() == (out / "results.json").read_bytes()
    assert "seconds" in (again / "timings.json").read_text()
    assert "seconds" not in (again / "results.json").read_text()


def test_offset_gaussians_need_a_smaller_lr_and_more_steps():
    """Efficient BackProp §5: an input mean adds a large eigenvalue to E[x xᵀ]."""
    results = compare(
        "lecun-gauss",
        schemes=("raw", "center"),
        model="lsq",
        offset=5.0,
        seeds=1,
        epochs=60,
        batch_size=10**6,
        lr_factor=4.0,
        lr_min=1 / 16,
        lr_max=4.0,
        progress=False,
    )
    raw, center = results["schemes"]["raw"], results["schemes"]["center"]
    assert raw["lambda_max"] > 20 * center["lambda_max"]
    assert raw["best_lr"] < center["best_lr"] / 10
    steps_center = center["summary"]["samples_to_target_mean"]
    steps_raw = raw["summary"]["samples_to_target_mean"]
    assert steps_center is not None
    assert steps_raw is None or steps_raw > 10 * steps_center


def test_existing_output_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(NormlabError, match="exists; pass --overwrite"):
        compare("lecun-gauss", schemes=("center",), model="linear", out=out, progress=False)
    compare(
        "lecun-gauss",
        schemes=("center",),
        model="linear",
        seeds=1,
        epochs=1,
        out=out,
        overwrite=True,
        progress=False,
    )
    assert (out / "mine.txt").read_text() == "keep me"
    assert json.loads((out / "results.json").read_text())["complete"] is True
    assert (out / "report.html").exists()


def test_cnn_and_optimizers_run():
    for model, optimizer in (("cnn", "sgd"), ("mlp", "momentum"), ("linear", "adam")):
        results = compare(
            "digits",
            schemes=("feature",),
            model=model,
            optimizer=optimizer,
            seeds=1,
            epochs=1,
            n_samples=300,
            lr_min=1.0,
            lr_max=1.0,
            max_extensions=0,
            progress=False,
        )
        run = results["runs"][0]
        assert run["epochs"][0]["train_acc"] > 0.1
        assert run["probes"]["single_signed"] is not None
    with pytest.raises(NormlabError, match="image-shaped"):
        compare("lecun-gauss", schemes=("center",), model="cnn", progress=False)


def test_a_scheme_that_cannot_fit_fails_before_writing(tmp_path):
    with pytest.raises(
        NormlabError, match="max_value"
    ):  # 'max' needs a value scale; floats have none
        compare("lecun-gauss", schemes=("center", "max"), out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ CLI
runner = CliRunner()


def test_cli_compare(tmp_path):
    out = tmp_path / "cli"
    args = [
        "compare",
        "--dataset",
        "lecun-gauss",
        "--model",
        "linear",
        "--schemes",
        "raw,center",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--lr-factor",
        "4",
        "--lr-min",
        "0.25",
        "--lr-max",
        "4",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and (out / "report.html").exists()
    assert list(json.loads((out / "results.json").read_text())["schemes"]) == ["raw", "center"]
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "exists; pass --overwrite" in again.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--schemes", "raw,bogus"], "unknown scheme 'bogus'"),
        (["--model", "bogus"], "choose one of: linear, lsq, mlp, cnn"),
        (["--dataset", "bogus"], "choose one of: digits, mnist5k, lecun-gauss"),
        (["--optimizer", "bogus"], "sgd, momentum, adam"),
    ],
)
def test_cli_bad_names(tmp_path, args, words):
    result = runner.invoke(app, ["compare", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 1
    assert words in result.output and "Traceback" not in result.output


def test_cli_label_mismatch(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 4)))
    np.save(tmp_path / "y.npy", np.zeros(9, dtype=int))
    result = runner.invoke(
        app,
        [
            "compare",
            "--data",
            str(tmp_path / "x.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "10 samples but 9 labels" in result.output
    assert not (tmp_path / "o").exists()  # nothing written when the input is bad


def test_ctrl_c_keeps_finished_runs(tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "CI": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from normlab.cli import main; main()",
            "compare",
            "--dataset",
            "digits",
            "--schemes",
            "raw,feature",
            "--seeds",
            "3",
            "--epochs",
            "40",
            "--quiet",
            "--out",
            str(out),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results_file = out / "results.json"
    for _ in range(1200):  # poll for the first finished run (not a timing assertion)
        if results_file.exists() and json.loads(results_file.read_text())["runs"]:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    saved = json.loads(results_file.read_text())
    assert saved["complete"] is False and len(saved["runs"]) >= 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
