"""Every scheme against a direct numpy float64 computation; zero variance; files; bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import normlab
from normlab import schemes
from normlab.errors import NormlabError, NormlabWarning, NotFittedError, ShapeError
from normlab.normalizers import MinMax, PerImage, ZScore

BASE_SCHEMES = [
    "raw",
    "max",
    "maxabs",
    "minmax",
    "center",
    "scale",
    "global",
    "channel",
    "feature",
    "per-image",
]


def numpy_reference(name: str, x: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """The scheme computed directly in float64 with numpy (population std)."""
    f = x.astype(np.float64)
    n = len(f)
    if name == "raw":
        return f
    if name == "max":
        return f / np.iinfo(x.dtype).max
    if name == "maxabs":
        m = np.abs(f).max(axis=0)
        return f / np.where(m > 0, m, 1)
    if name == "minmax":
        lo, hi = f.min(axis=0), f.max(axis=0)
        return (f - lo) / np.where(hi > lo, hi - lo, 1)
    if name in ("center", "scale", "feature"):
        mean, std = f.mean(axis=0), f.std(axis=0)
        std = np.where(f.max(axis=0) > f.min(axis=0), std, 1)
        return {"center": f - mean, "scale": f / std, "feature": (f - mean) / std}[name]
    if name == "global":
        return (f - f.mean()) / f.std()
    if name == "channel":
        moved = np.moveaxis(f, 1 + channel_axis % (f.ndim - 1), -1)
        flat = moved.reshape(-1, moved.shape[-1])
        out = (moved - flat.mean(axis=0)) / flat.std(axis=0)
        return np.moveaxis(out, -1, 1 + channel_axis % (f.ndim - 1))
    if name == "per-image":
        flat = f.reshape(n, -1)
        std = np.maximum(flat.std(axis=1, keepdims=True), 1 / np.sqrt(flat.shape[1]))
        return ((flat - flat.mean(axis=1, keepdims=True)) / std).reshape(f.shape)
    raise AssertionError(name)


def images(shape, seed=0):
    x = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    x[:, 0, 0] = 17  # constant features
    return x


SHAPES = {
    "mnist": ((300, 28, 28), -1),
    "hwc": ((60, 6, 5, 3), -1),
    "chw": ((60, 3, 6, 5), 0),
}


@pytest.mark.parametrize(
    "name, layout",
    # gray images (n, H, W) have no channel axis, so no per-channel scheme
    [(n, lay) for n in BASE_SCHEMES for lay in sorted(SHAPES) if (n, lay) != ("channel", "mnist")],
)
def test_scheme_matches_numpy_on_uint8_images(name, layout):
    shape, channel_axis = SHAPES[layout]
    x = images(shape)
    options = {"channel_axis": channel_axis} if name == "channel" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        n = schemes.get(name, **options).fit(x)
    y = n.transform(x)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    ref = numpy_reference(name, x, channel_axis)
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=2e-6 * max(1.0, np.abs(ref).max()))
    if name != "per-image":
        np.testing.assert_allclose(n.inverse_transform(y), x, atol=2e-4 * max(1, x.max()))


@pytest.mark.parametrize("name", [s for s in BASE_SCHEMES if s not in ("max", "channel")])
def test_scheme_matches_numpy_on_float_data(name):
    x = np.random.default_rng(1).normal(3, 2, (200, 7))
    n = schemes.get(name).fit(x)
    y = n.transform(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, numpy_reference(name, x), rtol=1e-12, atol=1e-12)
    if name != "per-image":
        np.testing.assert_allclose(n.inverse_transform(y), x, rtol=1e-12, atol=1e-12)
    assert (
        schemes.get(name).fit(x.astype(np.float32)).transform(x.astype(np.float32)).dtype
        == np.float32
    )


def test_max_on_float_data_needs_max_value():
    x = np.random.default_rng(0).uniform(0, 255, (10, 4))
    with pytest.raises(NormlabError, match="max_value"):
        schemes.get("max").fit(x)
    np.testing.assert_allclose(schemes.get("max", max_value=255.0).fit(x).transform(x), x / 255.0)


def test_max_on_uint16_divides_by_65535():
    x = np.array([[0, 65535], [1000, 2]], dtype=np.uint16)
    np.testing.assert_allclose(schemes.get("max").fit(x).transform(x), x / 65535.0, rtol=1e-7)


def test_feature_equals_sklearn_standard_scaler():
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.preprocessing import StandardScaler

    x = datasets.load_breast_cancer().data
    ours = ZScore(axis="feature").fit(x).transform(x)
    ref = StandardScaler().fit(x).transform(x)
    # relative to the output's scale: near z = 0 both sides carry the mean's last-ulp rounding
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_every_scheme_from_one_saved_per_feature_stats_file(tmp_path, dtype):
    x = images((80, 5, 4, 3), seed=3).astype(dtype)
    path = tmp_path / "stats.safetensors"
    normlab.compute_stats(x, "feature").save(path)
    stats = normlab.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        for name in BASE_SCHEMES:
            options = {"max_value": 255.0} if name == "max" and dtype == np.float64 else {}
            from_file = schemes.from_stats(name, stats, **options).transform(x)
            direct = schemes.get(name, **options).fit(x).transform(x)
            if dtype == np.uint8:
                assert np.array_equal(from_file, direct), name
            else:
                np.testing.assert_allclose(from_file, direct, rtol=1e-12, atol=1e-12)


def test_zero_variance_gets_scale_one_and_one_warning():
    x = np.random.default_rng(0).integers(0, 256, (50, 10), dtype=np.uint8)
    x[:, [2, 7]] = 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = ZScore().fit(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, NormlabWarning)]
    assert len(messages) == 1 and "2 of 10 features" in messages[0] and "2, 7" in messages[0]
    assert z.scale_[2] == 1.0 and z.scale_[7] == 1.0
    holdout = x.copy()
    holdout[0, 2] = 0
    y = ZScore().fit(x).transform(holdout)
    assert np.isfinite(y).all() and y[0, 2] == -200.0


def test_std_floor_in_data_units():
    x = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        z = ZScore(std_floor=2.0).fit(x)
    assert z.scale_.tolist() == [2.0, 2.0]  # std of column 0 is 1.633 < 2
    with pytest.raises(NormlabError, match="std_floor"):
        ZScore(std_floor=-1.0).fit(x)


def test_near_constant_float_column_is_constant():
    """scikit-learn#17794: a constant column of 14.62 must not scale to -1."""
    x = np.full((1000, 1), 14.62)
    x = np.hstack([x, np.random.default_rng(0).normal(size=(1000, 1))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        y = ZScore().fit(x).transform(x)
    assert np.all(y[:, 0] == 0.0)


def test_minmax_feature_range_and_zero_range():
    x = np.array([[1.0, 3.0], [3.0, 3.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = MinMax(feature_range=(-1, 1)).fit(x)
    assert any("zero range" in str(w.message) for w in caught)
    y = m.transform(x)
    assert y[:, 0].tolist() == [-1.0, 1.0] and np.isfinite(y).all()


def test_not_fitted_is_an_error_and_stateless_schemes_are_not():
    with pytest.raises(NotFittedError, match="not fitted"):
        ZScore().transform(np.zeros((2, 3)))
    assert schemes.get("per-image").transform(np.ones((2, 3))).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(NormlabError, match="no inverse"):
        PerImage().inverse_transform(np.zeros((2, 3)))


def test_shape_and_channel_mismatch_name_both():
    z = ZScore().fit(np.zeros((4, 28, 28), np.uint8) + np.arange(4, dtype=np.uint8)[:, None, None])
    with pytest.raises(ShapeError, match=r"\(28, 28\).*\(32, 32\)"):
        z.transform(np.zeros((1, 32, 32), np.uint8))
    c = schemes.get("channel").fit(images((10, 4, 4, 3)))
    with pytest.raises(ShapeError, match="3 channels"):
        c.transform(np.zeros((1, 4, 4, 4), np.uint8))
    assert c.transform(images((2, 9, 9, 3))).shape == (2, 9, 9, 3)  # other image sizes are fine


def test_double_normalization_warns():
    x = images((20, 4, 4))
    z = ZScore(axis="global").fit(x)
    with pytest.warns(NormlabWarning, match="already normalized"):
        z.transform(x.astype(np.float32) / 255)


def test_partial_fit_equals_fit():
    x = images((90, 5, 5), seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        whole = ZScore().fit(x)
        parts = ZScore()
        for chunk in np.array_split(x, 4):
            parts.partial_fit(chunk)
    assert parts == whole and parts.n_samples_seen_ == 90


@pytest.mark.parametrize("name", BASE_SCHEMES)
def test_save_load_every_scheme(tmp_path, name):
    x = images((30, 4, 4, 3), seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        n = schemes.get(name).fit(x)
    path = tmp_path / f"{name}.safetensors"
    n.save(path)
    loaded = normlab.load(path)
    assert loaded == n and loaded.scheme == name
    assert np.array_equal(loaded.transform(x), n.transform(x))


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(NormlabError, match="raw, max, maxabs"):
        schemes.get("zscore")


def test_affine_matches_transform():
    x = images((40, 4, 4, 3), seed=6)
    for name in ("feature", "channel", "global", "minmax", "max", "raw"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NormlabWarning)
            n = schemes.get(name).fit(x)
        shift, scale = n.affine((4, 4, 3))
        flat = x.reshape(40, -1).astype(np.float64)
        np.testing.assert_allclose(
            n.transform(x).reshape(40, -1), (flat - shift) / scale, rtol=1e-5, atol=1e-5
        )


def test_from_stats_on_the_class_builds_and_fits_a_default_one():
    """``ZScore.from_stats(m)`` reads as a constructor: it fits ``ZScore()`` (deprecated, like
    the instance method), never a raw TypeError."""
    m = normlab.compute_stats(np.arange(12.0).reshape(6, 2))
    with pytest.warns(DeprecationWarning, match=r"ZScore\(\)\.fit_stats"):
        from_class = ZScore.from_stats(m)
    with pytest.warns(DeprecationWarning, match="fit_stats"):
        from_instance = ZScore(with_std=False).from_stats(m)
    np.testing.assert_array_equal(from_class.mean_, [5.0, 6.0])
    assert from_class.with_std and not from_instance.with_std


def test_every_normalizer_checks_its_parameters_when_fitting_starts():
    """One moment for all: construction stores the parameters; fit refuses bad ones."""
    x = np.ones((4, 2))
    bad = [
        lambda: normlab.ZScore(axis="pixel"),
        lambda: normlab.MaxAbs(axis="pixel"),
        lambda: normlab.MinMax(axis="pixel"),
        lambda: normlab.MaxScale(max_value=-1.0),
        lambda: normlab.Whiten(eps=-1.0),
        lambda: normlab.Whiten(dtype="int8"),
    ]
    for make in bad:
        normalizer = make()  # no error yet
        with pytest.raises(NormlabError):
            normalizer.fit(x)
