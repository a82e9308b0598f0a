"""Every affine normalizer's output against the exact value, for every input and output dtype.

The reference is ``(x − shift) / scale`` computed with Python fractions from the fitted
``shift_``/``scale_`` (the same statistics), then rounded once. Bound: 2 ulps of the output
dtype for the numpy path, ``apply_file`` and ``InputScaler``; 2 float32 ulps of
``max(|z|, 1)`` for the PyTorch module, the Keras layer and what a JSON reader computes;
whitening (ZCA, PCA) within 1e-5 of the output's scale.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normlab import MaxAbs, MaxScale, MinMax, ZScore
from normlab.errors import NormlabError, NormlabWarning

IN_DTYPES = [
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
]
OUT_DTYPES = ["float32", "float16", "float64"]


def _normalizers(dtype: np.dtype, out: str) -> list:
    made = [
        ZScore(dtype=out),
        ZScore(axis="global", dtype=out),
        ZScore(with_std=False, dtype=out),
        ZScore(with_mean=False, dtype=out),
        MaxAbs(dtype=out),
        MinMax(dtype=out),
        MinMax(feature_range=(-3.0, 7.5), dtype=out),
    ]
    if dtype.kind in "ub" and dtype.itemsize <= 2:
        made.append(MaxScale(dtype=out))
    else:
        made.append(MaxScale(max_value=1000.0, dtype=out))
    return made


def _arrays(dtype: str) -> st.SearchStrategy[np.ndarray]:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        limit = {2: 6e4, 4: 2.0**100, 8: 1e150}[dt.itemsize]  # spreads whose variance is finite
        elements = st.floats(-limit, limit, allow_nan=False, width=8 * dt.itemsize)
        # values clustered around a large offset: the cancelling case
        offset = st.sampled_from([0.0, 1.0, 1e4, 1e7, 2e9, -3e5])
        return st.tuples(
            hnp.arrays(dt, st.tuples(st.integers(2, 12), st.integers(1, 3)), elements=elements),
            offset,
        ).map(lambda t: (t[0] + dt.type(t[1]) if dt.itemsize > 2 else t[0]).astype(dt))
    if dt.itemsize >= 4 and dt != np.int32:  # statistics take wide integers in int32's range
        info = np.iinfo(np.int32)
        elements = st.integers(max(info.min, np.iinfo(dt).min), info.max)
        return hnp.arrays(dt, st.tuples(st.integers(2, 12), st.integers(1, 3)), elements=elements)
    return hnp.arrays(dt, st.tuples(st.integers(2, 12), st.integers(1, 3)))


def _exact(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.float64)
    for idx in np.ndindex(x.shape):
        value = Fraction(int(x[idx])) if x.dtype.kind in "biu" else Fraction(float(x[idx]))
        col = idx[1:]
        s = shift[(0, *col)] if shift.ndim == x.ndim else shift
        c = scale[(0, *col)] if scale.ndim == x.ndim else scale
        out[idx] = float((value - Fraction(float(s))) / Fraction(float(c)))
    return out


def _ulps(got: np.ndarray, exact: np.ndarray, out: np.dtype) -> float:
    rounded = exact.astype(out)
    spacing = np.spacing(np.abs(rounded)).astype(np.float64)
    spacing = np.maximum(spacing, np.finfo(out).smallest_subnormal)
    return float(np.max(np.abs(got.astype(np.float64) - exact) / spacing))


def _fit(norm, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        return norm.fit(x)


@pytest.mark.parametrize("out", OUT_DTYPES)
@pytest.mark.parametrize("dtype", IN_DTYPES)
@settings(max_examples=25)
@given(data=st.data())
def test_every_affine_output_is_within_two_ulps(dtype, out, data):
    fit_on = data.draw(_arrays(dtype))
    wide = np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize == 8
    for norm in _normalizers(np.dtype(dtype), out):
        _fit(norm, fit_on)
        x = fit_on
        if wide:  # transform takes the whole range: values near 2**63 lose nothing either
            x = data.draw(hnp.arrays(np.dtype(dtype), fit_on.shape))
        ndim = x.ndim - 1
        shift = norm.broadcast(norm.shift_, ndim)
        scale = norm.broadcast(norm.scale_, ndim)
        exact = _exact(x, np.asarray(shift), np.asarray(scale))
        if not np.isfinite(exact.astype(out)).all():  # beyond the output dtype: a clear error
            with pytest.raises(NormlabError, match="exceed the range"):
                norm.transform(x)
            continue
        got = norm.transform(x)
        assert got.dtype == np.dtype(out)
        assert _ulps(got, exact, np.dtype(out)) <= 2.0, (norm, x, got, exact)


def test_the_cancelling_example_of_the_issue():
    rng = np.random.default_rng(0)
    for base in (1e8, 2e9):
        x = (base + rng.integers(0, 100, (1000, 3))).astype(np.int32 if base < 2e9 else np.int64)
        z = ZScore().fit(x)
        exact = (x - x.mean(axis=0)) / x.std(axis=0)
        assert np.abs(z.transform(x) - exact).max() < 1e-6


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32", "int64"])
def test_apply_file_and_input_scaler_round_once_too(tmp_path, dtype):
    from normlab.apply import apply_file
    from normlab.sklearn import InputScaler

    rng = np.random.default_rng(1)
    x = (1e6 + rng.integers(0, 50, (300, 4))).astype(dtype)
    z = ZScore().fit(x)
    shift, scale = z.broadcast(z.shift_, 1), z.broadcast(z.scale_, 1)
    exact = _exact(x, shift, scale)
    src, dst = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(src, x)
    apply_file(z, src, dst, progress=False)
    assert _ulps(np.load(dst), exact, np.dtype(np.float32)) <= 2.0
    scaler = InputScaler(dtype=np.float32).fit(x)
    assert _ulps(scaler.transform(x), exact, np.dtype(np.float32)) <= 2.0


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_torch_module_within_two_ulps_of_max_abs_z_and_one(dtype):
    torch = pytest.importorskip("torch")
    from normlab.export import to_torch

    rng = np.random.default_rng(2)
    top = 255 if dtype == "uint8" else 65535
    x = rng.integers(0, top + 1, (200, 4, 4, 3)).astype(dtype)
    z = _fit(ZScore(axis="channel"), x)
    module = to_torch(z, layout="HWC")
    got = module(torch.from_numpy(x)).numpy().astype(np.float64)
    shift, scale = z.broadcast(z.shift_, 3), z.broadcast(z.scale_, 3)
    exact = (x.astype(np.float64) - shift) / scale
    unit = np.spacing(np.maximum(np.abs(exact), 1.0).astype(np.float32)).astype(np.float64)
    assert float(np.max(np.abs(got - exact) / unit)) <= 2.0


# ---- whitening: a matrix product, within 1e-5 of the output's scale ----------------------


def _exact_whitened(x: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``matrix @ (x − mean)`` per flattened sample, in fractions, rounded once to float64."""
    flat = x.reshape(len(x), -1)
    m = [Fraction(float(v)) for v in mean]
    rows = [[Fraction(float(v)) for v in row] for row in matrix]
    out = np.empty((len(x), len(rows)))
    for i, sample in enumerate(flat):
        value = [
            Fraction(int(v)) if flat.dtype.kind in "biu" else Fraction(float(v)) for v in sample
        ]
        centred = [v - c for v, c in zip(value, m, strict=True)]
        for j, row in enumerate(rows):
            out[i, j] = float(sum(w * c for w, c in zip(row, centred, strict=True)))
    return out


def _within_scale(got: np.ndarray, exact: np.ndarray, out: np.dtype) -> None:
    """Within 1e-5 of the output's scale (max(|y|, 1)); float16 outputs: 2 of its ulps."""
    scale = max(float(np.max(np.abs(exact), initial=0.0)), 1.0)
    bound = 1e-5 if out != np.float16 else 2 * float(np.spacing(np.float16(scale)))
    error = float(np.max(np.abs(got.astype(np.float64).reshape(exact.shape) - exact)))
    assert error <= bound * scale if out != np.float16 else error <= bound, (error, scale)


@pytest.mark.parametrize("out", OUT_DTYPES)
@pytest.mark.parametrize("dtype", IN_DTYPES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_whitening_outputs_are_within_1e5_of_their_scale(dtype, out, data):
    from normlab import Whiten

    fit_on = data.draw(_arrays(dtype))
    for norm in (
        Whiten(method="zca", dtype=out),
        Whiten(method="pca", dtype=out),
        # eps relative to the mean eigenvalue: an absolute eps far below the data's variance
        # (condition 1e12 and more) amplifies the rounding of x − mean itself past 1e-5
        Whiten(method="zca", eps=1e-6, dtype=out),
        Whiten(method="pca", n_components=1, dtype=out),
    ):
        try:
            _fit(norm, fit_on)
        except NormlabError:  # e.g. a covariance that overflows: refused, not wrong
            continue
        mean, matrix = norm.linear_map()
        exact = _exact_whitened(fit_on, mean, matrix)
        if not np.isfinite(exact.astype(out)).all():
            with pytest.raises(NormlabError, match="exceed the range"):
                norm.transform(fit_on)
            continue
        got = norm.transform(fit_on)
        assert got.dtype == np.dtype(out)
        _within_scale(got, exact, np.dtype(out))


# ---- exports: what a Keras layer or a JSON reader computes -------------------------------


def _export_normalizers(out: str) -> list:
    return [ZScore(dtype=out), ZScore(axis="global", dtype=out), MinMax(dtype=out)]


def _within_two_ulps_of_max_z_one(got: np.ndarray, exact: np.ndarray) -> float:
    unit = np.spacing(np.maximum(np.abs(exact), 1.0).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got.astype(np.float64) - exact) / unit))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_json_export_within_two_ulps_of_max_abs_z_and_one(dtype, data):
    """A reader of the JSON computes ``(x − shift)/scale`` (whitening: ``matrix @ (x − mean)``)
    in float64 from the numbers as written, then rounds to float32."""
    import json

    from normlab import Whiten
    from normlab.export import to_json

    fit_on = data.draw(_arrays(dtype))
    for norm in _export_normalizers("float32"):
        _fit(norm, fit_on)
        spec = json.loads(json.dumps(to_json(norm)))
        shift = norm.broadcast(np.asarray(spec["shift"]), 1)
        scale = norm.broadcast(np.asarray(spec["scale"]), 1)
        exact = _exact(fit_on, norm.broadcast(norm.shift_, 1), norm.broadcast(norm.scale_, 1))
        if not np.isfinite(exact.astype(np.float32)).all():
            continue
        got = ((fit_on.astype(np.float64) - shift) / scale).astype(np.float32)
        assert _within_two_ulps_of_max_z_one(got, exact) <= 2.0, (norm, fit_on)
    whiten = Whiten(method="zca")
    try:
        _fit(whiten, fit_on)
    except NormlabError:
        return
    spec = json.loads(json.dumps(to_json(whiten)))
    mean, matrix = whiten.linear_map()
    exact = _exact_whitened(fit_on, mean, matrix)
    if np.isfinite(exact.astype(np.float32)).all():
        flat = fit_on.reshape(len(fit_on), -1).astype(np.float64) - np.asarray(spec["mean"])
        got = (flat @ np.asarray(spec["matrix"]).T).astype(np.float32)
        _within_scale(got, exact, np.dtype(np.float32))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_keras_layer_within_two_ulps_of_max_abs_z_and_one(dtype, data):
    """The Keras layer normlab exports, fed the data as Keras gets it, rounds to float32 once."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from normlab import Whiten
    from normlab.export import keras_layer

    fit_on = data.draw(_arrays(dtype))
    for norm in _export_normalizers("float32"):
        _fit(norm, fit_on)
        exact = _exact(fit_on, norm.broadcast(norm.shift_, 1), norm.broadcast(norm.scale_, 1))
        if not np.isfinite(exact.astype(np.float32)).all():
            continue
        if float(np.max(norm.scale_)) > float(np.finfo(np.float32).max):
            with pytest.raises(NormlabError, match="beyond float32"):
                keras_layer(norm)  # Keras would give 0 (its epsilon clamp runs in float32)
            continue
        if float(np.min(norm.scale_)) < 1e-7:
            with pytest.raises(NormlabError, match="below Keras's epsilon"):
                keras_layer(norm)  # Keras divides by max(std, 1e-7)
            continue
        layer = keras_layer(norm)
        got = keras.ops.convert_to_numpy(layer(fit_on)).astype(np.float32)
        assert _within_two_ulps_of_max_z_one(got, exact) <= 2.0, (norm, fit_on, got, exact)
    whiten = Whiten(method="zca")
    try:
        _fit(whiten, fit_on)
    except NormlabError:
        return
    mean, matrix = whiten.linear_map()
    exact = _exact_whitened(fit_on, mean, matrix)
    # Keras's matmul (torch backend) overflows in float32 past float32's range, even in a
    # float64 Dense layer: data that large stay out of this check
    inside = np.abs(fit_on.astype(np.float64)).max() < 1e38
    if inside and np.isfinite(exact.astype(np.float32)).all():
        got = keras.ops.convert_to_numpy(keras_layer(whiten)(fit_on)).astype(np.float32)
        _within_scale(got, exact, np.dtype(np.float32))
