"""normlab.sklearn.InputScaler: scikit-learn's own checks, StandardScaler parity, pipelines."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

from normlab import NormlabError, NormlabWarning, schemes
from normlab.sklearn import InputScaler


def make(scheme: str) -> InputScaler:
    # float data has no value-scale maximum: "max" needs one given
    return InputScaler(scheme=scheme, max_value=10.0 if scheme == "max" else None)


def fits_2d(scheme: str) -> bool:
    """Whether a scheme fits a 2-D float feature matrix (``channel`` and image-only ones do not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        try:
            make(scheme).fit(np.random.default_rng(0).normal(size=(20, 3)))
        except NormlabError:
            return False
    return True


# Every registry scheme that fits a 2-D feature matrix, plug-ins (whitening, ...) included.
SCHEMES_2D = [name for name in schemes.names() if fits_2d(name)]


@pytest.fixture(autouse=True)
def _quiet_zero_variance():
    # scikit-learn's checks fit constant columns on purpose; the warning is tested below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        yield


@parametrize_with_checks([make(s) for s in SCHEMES_2D])
def test_sklearn_compatible(estimator, check, monkeypatch):
    # check_array_api_input (NumPy namespace) runs only with SCIPY_ARRAY_API set; set it here
    # so that no check is skipped, and only for the duration of this test
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


def test_no_check_skipped_or_expected_to_fail(monkeypatch):
    # the same checks as above, through check_estimator, which reports each one's status
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    results = check_estimator(make("feature"), on_fail=None)
    not_passed = [(r["check_name"], r["status"]) for r in results if r["status"] != "passed"]
    assert len(results) > 40 and not not_passed, not_passed


def rel_close(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> bool:
    return bool(np.all(np.abs(a - b) <= tol * np.maximum(1.0, np.abs(b))))


@pytest.fixture(scope="module")
def cancer() -> np.ndarray:
    return load_breast_cancer().data


def test_feature_matches_standard_scaler(cancer):
    ours = InputScaler().fit(cancer)
    ref = StandardScaler().fit(cancer)
    assert np.all(np.abs(ours.normalizer_.mean_ - ref.mean_) <= 1e-12 * np.abs(ref.mean_))
    assert np.all(np.abs(ours.normalizer_.var_ - ref.var_) <= 1e-12 * np.abs(ref.var_))
    assert rel_close(ours.transform(cancer), ref.transform(cancer))
    assert rel_close(ours.inverse_transform(ours.transform(cancer)), cancer)


@pytest.mark.parametrize(
    ("scheme", "reference"), [("minmax", MinMaxScaler()), ("maxabs", MaxAbsScaler())]
)
def test_other_schemes_match_sklearn(cancer, scheme, reference):
    assert rel_close(
        InputScaler(scheme=scheme).fit_transform(cancer), reference.fit_transform(cancer)
    )


def test_partial_fit_equals_fit_on_integers():
    x = np.random.default_rng(0).integers(0, 256, (300, 7), dtype=np.uint8)
    whole = InputScaler(dtype=np.float64).fit(x)
    parts = InputScaler(dtype=np.float64)
    for rows in np.array_split(x, 5):
        parts.partial_fit(rows)
    assert parts.n_samples_seen_ == 300
    # exact integer sums: the same bits whatever the split
    np.testing.assert_array_equal(parts.transform(x), whole.transform(x))
    mean = x.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(whole.normalizer_.mean_, mean, rtol=1e-15)


def test_pipeline_and_column_transformer(cancer):
    y = load_breast_cancer().target
    model = make_pipeline(InputScaler(), LogisticRegression(max_iter=500)).fit(cancer, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(cancer, y)
    np.testing.assert_allclose(
        model.predict_proba(cancer), ref.predict_proba(cancer), rtol=1e-6, atol=1e-9
    )

    frame = pd.DataFrame(cancer[:, :4], columns=["a", "b", "c", "d"])
    ct = ColumnTransformer(
        [("z", InputScaler(), ["a", "b"]), ("mm", InputScaler(scheme="minmax"), ["c", "d"])]
    )
    out = ct.fit_transform(frame)
    assert list(ct.get_feature_names_out()) == ["z__a", "z__b", "mm__c", "mm__d"]
    assert rel_close(out[:, :2], StandardScaler().fit_transform(cancer[:, :2]))
    assert rel_close(out[:, 2:], MinMaxScaler().fit_transform(cancer[:, 2:4]))


def test_set_output_pandas_and_feature_names(cancer):
    frame = pd.DataFrame(cancer[:, :3], columns=["radius", "texture", "perimeter"])
    scaler = InputScaler().set_output(transform="pandas").fit(frame)
    out = scaler.transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["radius", "texture", "perimeter"]
    assert list(scaler.get_feature_names_out()) == ["radius", "texture", "perimeter"]
    back = scaler.inverse_transform(out)
    assert rel_close(np.asarray(back), cancer[:, :3])


def test_registry_schemes_for_feature_matrices():
    assert {
        "feature",
        "global",
        "center",
        "scale",
        "minmax",
        "maxabs",
        "max",
        "per-image",
        "raw",
    } <= set(SCHEMES_2D)
    for name in set(schemes.names()) - set(SCHEMES_2D):  # refused with a NormlabError saying where
        with pytest.raises(NormlabError, match=rf"InputScaler\(scheme='{name}'\) on 20 sample"):
            make(name).fit(np.random.default_rng(0).normal(size=(20, 3)))


def test_errors_say_what_is_wrong():
    x = np.random.default_rng(1).normal(size=(20, 3))
    with pytest.raises(ValueError, match="infinity"):  # NaN is StandardScaler's "missing"
        InputScaler().fit(np.where(x > 1, np.inf, x))
    with pytest.raises(NormlabError, match="channel"):
        InputScaler(scheme="channel").fit(x)
    with pytest.raises(NormlabError, match="unknown scheme"):
        InputScaler(scheme="zscore").fit(x)
    with pytest.raises(NormlabError, match="takes no option 'std_floor'"):
        InputScaler(scheme="minmax", std_floor=0.1).fit(x)
    assert not hasattr(InputScaler(scheme="per-image").fit(x), "inverse_transform")


def test_constant_feature_warns_and_stays_finite():
    x = np.column_stack([np.arange(10.0), np.full(10, 14.62)])
    with pytest.warns(NormlabWarning, match="1 of 2 features"):
        out = InputScaler().fit_transform(x)
    np.testing.assert_array_equal(out[:, 1], 0.0)  # not StandardScaler's old −1 (sklearn#17794)


# ---------------------------------------------------------------- StandardScaler parity
ATTRIBUTES = ("mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_")


def assert_same_fitted_attributes(ours: InputScaler, ref: StandardScaler) -> None:
    for name in ATTRIBUTES:
        a, b = getattr(ours, name), getattr(ref, name)
        if b is None:
            assert a is None, name
        else:
            assert np.shape(a) == np.shape(b), name
            assert rel_close(np.asarray(a, np.float64), np.asarray(b, np.float64)), name


@pytest.mark.parametrize(
    "options",
    [{}, {"with_mean": False}, {"with_std": False}, {"with_mean": False, "with_std": False}],
    ids=str,
)
def test_swapping_the_class_name_is_enough(cancer, options):
    ours = InputScaler(**options, copy=True).fit(cancer)
    ref = StandardScaler(**options, copy=True).fit(cancer)
    assert_same_fitted_attributes(ours, ref)
    assert rel_close(ours.transform(cancer), ref.transform(cancer))


def test_feature_names_in_from_dataframes(cancer):
    frame = pd.DataFrame(cancer[:, :4], columns=["a", "b", "c", "d"])
    ours, ref = InputScaler().fit(frame), StandardScaler().fit(frame)
    np.testing.assert_array_equal(ours.feature_names_in_, ref.feature_names_in_)
    assert ours.get_feature_names_out().tolist() == ["a", "b", "c", "d"]


def test_nan_is_ignored_in_fit_and_passed_through_in_transform(cancer):
    x = cancer.copy()
    x[::7, 3] = np.nan
    x[::11, 5] = np.nan
    ours, ref = InputScaler().fit(x), StandardScaler().fit(x)
    assert_same_fitted_attributes(ours, ref)  # n_samples_seen_: per feature, as scikit-learn's
    out = ours.transform(x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
    assert rel_close(np.nan_to_num(out), np.nan_to_num(ref.transform(x)))
    assert rel_close(np.nan_to_num(ours.inverse_transform(out)), np.nan_to_num(x))


@pytest.mark.parametrize("kind", ["fractional", "whole"])
def test_sample_weight_equals_standard_scaler(cancer, kind):
    rng = np.random.default_rng(7)
    w = rng.random(len(cancer)) * 4 if kind == "fractional" else rng.integers(0, 5, len(cancer))
    ours = InputScaler().fit(cancer, sample_weight=w)
    ref = StandardScaler().fit(cancer, sample_weight=w)
    assert_same_fitted_attributes(ours, ref)
    assert rel_close(ours.transform(cancer), ref.transform(cancer))
    if kind == "whole":  # integer data stay exact: the same bits as the repeated rows
        counts = (cancer * 10).clip(0, 65535).astype(np.uint16)
        weighted = InputScaler().fit(counts, sample_weight=w)
        repeated = InputScaler().fit(np.repeat(counts, w, axis=0))
        np.testing.assert_array_equal(weighted.mean_, repeated.mean_)
        np.testing.assert_array_equal(weighted.var_, repeated.var_)
        assert weighted.n_samples_seen_ == repeated.n_samples_seen_ == w.sum()


def test_partial_fit_with_weights_merges_like_fit(cancer):
    w = np.random.default_rng(8).random(len(cancer))
    split = InputScaler().partial_fit(cancer[:200], sample_weight=w[:200])
    split.partial_fit(cancer[200:], sample_weight=w[200:])
    whole = InputScaler().fit(cancer, sample_weight=w)
    assert rel_close(split.mean_, whole.mean_) and rel_close(split.var_, whole.var_)
    assert split.n_samples_seen_ == pytest.approx(w.sum(), rel=1e-12)


def test_pca_output_names_are_components_not_input_columns(cancer):
    frame = pd.DataFrame(cancer[:, :5], columns=list("abcde"))
    scaler = InputScaler(scheme="pca").set_output(transform="pandas").fit(frame)
    assert scaler.transform(frame).columns.tolist() == ["pca0", "pca1", "pca2", "pca3", "pca4"]
    zca = InputScaler(scheme="zca").set_output(transform="pandas").fit(frame)
    assert zca.transform(frame).columns.tolist() == list("abcde")  # ZCA keeps the coordinates
