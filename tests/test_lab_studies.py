"""The lab's study options: an input BatchNorm layer, momentum and Adam with their own grid
centres, and the CNN — each changes what is trained, is validated, and is recorded."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend")
pytest.importorskip("matplotlib")

from typer.testing import CliRunner  # noqa: E402

import normlab.schemes as schemes  # noqa: E402
from normlab.cli import app  # noqa: E402
from normlab.errors import NormlabError  # noqa: E402
from normlab.lab import (  # noqa: E402
    compare,
    load_dataset,
    theory,  # noqa: E402
)
from normlab.lab.models import build_model, input_norm_layer  # noqa: E402
from normlab.lab.runner import batchnorm_view  # noqa: E402
from normlab.lab.train import MOMENTUM, TrainConfig, make_optimizer, train_run  # noqa: E402

torch.set_num_threads(1)
TINY = dict(seeds=1, epochs=1, n_samples=300, lr_min=1.0, lr_max=1.0, max_extensions=0)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", seed=0, n_samples=300)
    raw = schemes.get("raw").fit(ds.x_train)
    data = {
        "x_train": torch.as_tensor(np.asarray(raw.transform(ds.x_train), dtype=np.float32)),
        "y_train": torch.as_tensor(ds.y_train),
        "x_test": torch.as_tensor(np.asarray(raw.transform(ds.x_test), dtype=np.float32)),
        "y_test": torch.as_tensor(ds.y_test),
    }
    return ds, data


# ------------------------------------------------------------------ input BatchNorm
def test_input_bn_puts_a_batchnorm_before_the_first_layer():
    mlp = build_model("mlp", sample_shape=(8, 8), n_classes=10, input_bn=True)
    layers = list(mlp)
    assert isinstance(layers[1], torch.nn.BatchNorm1d) and isinstance(layers[2], torch.nn.Linear)
    assert layers[1].num_features == 64
    cnn = build_model("cnn", sample_shape=(8, 8), n_classes=10, input_bn=True)
    assert isinstance(input_norm_layer(cnn), torch.nn.BatchNorm2d)
    assert input_norm_layer(cnn).num_features == 1  # per channel: grayscale has one
    assert input_norm_layer(build_model("mlp", sample_shape=(8, 8), n_classes=10)) is None
    # it draws no random numbers: the other layers start exactly as without it
    torch.manual_seed(3)
    plain = build_model("mlp", sample_shape=(8, 8), n_classes=10)
    torch.manual_seed(3)
    with_bn = build_model("mlp", sample_shape=(8, 8), n_classes=10, input_bn=True)
    assert torch.equal(plain[1].weight, with_bn[2].weight)


def test_input_bn_running_statistics_move_to_the_data(digits):
    ds, data = digits
    config = TrainConfig(model="mlp", epochs=2, input_bn=True)
    run = train_run(data, config=config, lr=0.1, seed=0, n_classes=10)
    running = run["input_bn_running"]
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    # an exponential average (momentum 0.1) from PyTorch's start, mean 0 and variance 1,
    # towards the raw digits' (0..16) statistics
    kept = 0.9 ** run["steps"]
    assert running["mean"] == pytest.approx((1 - kept) * x.mean(axis=0).mean(), rel=0.1)
    expected_var = kept + (1 - kept) * x.var(axis=0, ddof=1).mean()
    assert running["var"] == pytest.approx(expected_var, rel=0.25) and running["var"] > 5
    plain = train_run(data, config=TrainConfig(model="mlp", epochs=2), lr=0.1, seed=0, n_classes=10)
    assert "input_bn_running" not in plain
    # the first layer's inputs are centred by the BatchNorm: no common-mode direction to watch
    assert run["probes"]["mean_share"] is None and plain["probes"]["mean_share"] is not None
    assert plain["checkpoints"] != run["checkpoints"]  # the option changes what is trained
    again = train_run(data, config=config, lr=0.1, seed=0, n_classes=10)
    assert again == run


def test_input_bn_centres_the_grid_on_what_the_first_layer_sees():
    results = compare("digits", schemes=("raw", "feature"), input_bn=True, **TINY, progress=False)
    assert results["config"]["input_bn"] is True
    ds = load_dataset("digits", seed=0, n_samples=300)
    for name in ("raw", "feature"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # feature: constant pixels get scale 1
            x = schemes.get(name).fit(ds.x_train).transform(ds.x_train)
        lam = theory.augmented_lambda_max(batchnorm_view(x))
        info = results["schemes"][name]
        assert info["grid_center"] == pytest.approx(2 / lam, rel=1e-6)
        assert info["first_layer_inputs"].startswith("the input BatchNorm")
    view = batchnorm_view(ds.x_train.reshape(len(ds.x_train), -1))
    lit = ds.x_train.reshape(len(ds.x_train), -1).std(axis=0) > 0
    np.testing.assert_allclose(view.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(view[:, lit].std(axis=0), 1, rtol=0.05)
    assert (view[:, ~lit] == 0).all()  # a constant pixel passes on as 0


def test_input_bn_is_validated():
    with pytest.raises(NormlabError, match="True or False"):
        compare("digits", schemes=("max",), input_bn="yes", **TINY, progress=False)  # type: ignore[arg-type]
    with pytest.raises(NormlabError, match="'lsq'"):
        compare("digits", schemes=("max",), model="lsq", input_bn=True, **TINY, progress=False)
    with pytest.raises(NormlabError, match="at least 2 samples"):
        compare("digits", schemes=("max",), input_bn=True, batch_size=1, **TINY, progress=False)
    # 240 training samples in batches of 239: the last batch holds one sample
    with pytest.raises(NormlabError, match="single sample"):
        compare("digits", schemes=("max",), input_bn=True, batch_size=239, **TINY, progress=False)
    with pytest.raises(NormlabError, match="True or False"):
        build_model("mlp", sample_shape=(4,), n_classes=2, input_bn=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ optimizers
def test_momentum_and_adam_keep_their_state():
    net = build_model("mlp", sample_shape=(8,), n_classes=2)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    for name, key in (("momentum", "momentum_buffer"), ("adam", "exp_avg_sq")):
        opt = make_optimizer(name, net.parameters(), 0.01)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        state = opt.state[net[1].weight]
        assert key in state and state[key].abs().sum() > 0, name
    assert make_optimizer("momentum", net.parameters(), 0.1).defaults["momentum"] == MOMENTUM
    assert make_optimizer("sgd", net.parameters(), 0.1).defaults["momentum"] == 0.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(NormlabError, match="learning rate"):
            make_optimizer("adam", net.parameters(), bad)
    with pytest.raises(NormlabError, match="sgd, momentum, adam"):
        make_optimizer("rmsprop", net.parameters(), 0.1)


def test_each_optimizer_gets_its_own_grid_centre(tmp_path):
    found = {}
    for optimizer in ("sgd", "momentum", "adam"):
        out = tmp_path / optimizer
        results = compare(
            "digits", schemes=("max",), optimizer=optimizer, out=out, **TINY, progress=False
        )
        info = results["schemes"]["max"]
        found[optimizer] = info["grid_center"]
        assert info["grid"] == [pytest.approx(info["grid_center"], rel=1e-6)]
        saved = json.loads((out / "results.json").read_text())
        assert saved["config"]["optimizer"] == optimizer
        assert saved["schemes"]["max"]["grid_center_rule"] == info["grid_center_rule"]
        page = (out / "report.html").read_text()
        assert f"centred on {info['grid_center_rule']}" in page
        if optimizer != "sgd":
            assert "<th>grid centre</th>" in page
    assert found["momentum"] == pytest.approx((1 - MOMENTUM) * found["sgd"], rel=1e-6)
    assert found["adam"] == 1e-3


def test_optimizers_change_what_is_trained(digits):
    _, data = digits
    runs = {
        name: train_run(
            data,
            config=TrainConfig(model="mlp", epochs=1, optimizer=name),
            lr=0.001,
            seed=0,
            n_classes=10,
        )
        for name in ("sgd", "momentum", "adam")
    }
    losses = {name: run["final_train_loss"] for name, run in runs.items()}
    assert len(set(losses.values())) == 3
    # at the same small rate, momentum's effective step is 10x SGD's and Adam's is per weight
    assert losses["momentum"] < losses["sgd"] and losses["adam"] < losses["sgd"]


# ------------------------------------------------------------------ the CNN
def test_cnn_trains_and_is_deterministic_for_a_seed(digits):
    _, data = digits
    config = TrainConfig(model="cnn", epochs=1)
    first = train_run(data, config=config, lr=0.01, seed=1, n_classes=10)
    again = train_run(data, config=config, lr=0.01, seed=1, n_classes=10)
    other = train_run(data, config=config, lr=0.01, seed=2, n_classes=10)
    assert first == again and first["checkpoints"] != other["checkpoints"]
    assert first["checkpoints"][-1][1] < first["checkpoints"][0][1]  # the loss fell
    with_bn = train_run(
        data,
        config=TrainConfig(model="cnn", epochs=1, input_bn=True),
        lr=0.01,
        seed=1,
        n_classes=10,
    )
    assert with_bn["input_bn_running"]["var"] > 1.0  # raw 0..16 pixels, one channel


# ------------------------------------------------------------------ CLI
def test_cli_input_bn_is_recorded_and_shown(tmp_path):
    out = tmp_path / "bn"
    args = ["compare", "--dataset", "digits", "--n-samples", "300", "--schemes", "raw,max"]
    args += ["--seeds", "1", "--epochs", "1", "--lr-min", "1", "--lr-max", "1", "--input-bn"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "input BatchNorm" in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["input_bn"] is True
    assert all("input_bn_running" in run for run in saved["runs"])
    assert "input BatchNorm layer" in (out / "report.html").read_text()


def test_cli_input_bn_with_lsq_is_one_error_line(tmp_path):
    result = CliRunner().invoke(
        app, ["compare", "--model", "lsq", "--input-bn", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "lsq" in lines[0]
    assert not (tmp_path / "o").exists()
