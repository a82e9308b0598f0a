"""Exports: one fitted normalizer, the same numbers in scikit-learn, PyTorch, Keras, torchvision
and JSON.

Every affine scheme is ``y = (x − shift) / scale`` and every whitening (ZCA, PCA) is
``y = W (x − mean)`` on the flattened sample; each target gets that map in its own terms, and
tests prove the outputs equal on the same input:

* :func:`to_sklearn` — a fitted ``StandardScaler`` / ``MinMaxScaler`` / ``MaxAbsScaler``
  (channel and global statistics expanded to per-feature ones) for inputs flattened to
  ``(n_samples, n_features)``; a fitted ``PCA(whiten=True)`` for PCA whitening, and
  ``InputScaler(scheme="zca")`` carrying the fitted state for ZCA;
* :func:`to_torch` — a :class:`normlab.torch.Normalize` module, or a
  :class:`normlab.torch.Whitening` module (mean subtraction + one ``nn.Linear``);
* :func:`to_torchvision` — ``{"mean": [...], "std": [...]}`` for ``transforms.Normalize``
  on the 0..1 scale of ``ToTensor`` (or the 0..255 one);
* :func:`to_keras` — keyword arguments of ``keras.layers.Normalization`` (whitening: the
  mean and matrix of a small block); :func:`keras_layer` builds the layer from either;
* :func:`to_json` — plain numbers for anything else.

A scheme the target cannot express (per-image standardization anywhere, per-pixel statistics
or a whitening in torchvision's per-channel ``Normalize``) raises a
:class:`~normlab.NormlabError` that says what to use instead.

Examples
--------
>>> import numpy as np
>>> from normlab.normalizers import ZScore
>>> x = np.array([[[0, 10, 20]], [[40, 50, 60]]], dtype=np.uint8)  # 2 images, 1x1 pixel, RGB
>>> tv = to_torchvision(ZScore(axis="channel").fit(x))
>>> tv["mean"]
[0.0784313725490196, 0.11764705882352941, 0.1568627450980392]
>>> tv["std"]
[0.0784313725490196, 0.0784313725490196, 0.0784313725490196]
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from .comoments import CoMoments
from .errors import NormlabError
from .fitted import as_affine, fitted
from .moments import Moments
from .normalizers import AffineNormalizer, MaxAbs, MaxScale, MinMax, Normalizer, ZScore
from .whitening import Whiten

TORCHVISION_SCALES = ("0..1", "0..255")
SCALES_HELP = "'0..1' (after ToTensor or Rescaling(1/255)) or '0..255'"


def _whitening_or_none(normalizer: Any, target: str) -> Whiten | None:
    normalizer = fitted(normalizer, target)
    return normalizer if isinstance(normalizer, Whiten) else None


def _divisor(value_scale: dict[str, Any] | None, scale: str | None) -> float:
    """Data units per unit of the target's input: 255 for uint8 data fed on the 0..1 scale.

    ``None`` keeps the data's own units; ``"0..1"`` divides integer data by the dtype's
    maximum (float data are taken to be on that scale already); ``"0..255"`` is the 0..1
    scale times 255.
    """
    if scale is None:
        return 1.0
    if scale not in TORCHVISION_SCALES:
        raise NormlabError(f"scale must be {SCALES_HELP}; got {scale!r}")
    top = float((value_scale or {}).get("max_value") or 1.0)
    return top / 255.0 if scale == "0..255" else top


def _expand(normalizer: AffineNormalizer, reduced: np.ndarray) -> np.ndarray:
    """A statistic of the reduced shape as one value per feature of the flattened sample."""
    shape = tuple(normalizer.sample_shape_)
    full = np.broadcast_to(
        normalizer.broadcast(np.asarray(reduced, np.float64), len(shape)), (1, *shape)
    )
    return full.reshape(-1).copy()


def _plain(value: Any) -> Any:
    """Nested lists of Python floats; non-finite values become ``None`` (valid JSON)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return v if math.isfinite(v) else None
    return [_plain(v) for v in arr]


# ---------------------------------------------------------------- scikit-learn
def to_sklearn(normalizer: Normalizer) -> Any:
    """A fitted scikit-learn scaler whose ``transform`` equals ``normalizer.transform``.

    ``feature``/``channel``/``global``/``center``/``scale`` z-scores become a
    ``StandardScaler``, ``minmax`` a ``MinMaxScaler``, ``maxabs`` and ``max`` a
    ``MaxAbsScaler``. Channel and global statistics are expanded to one value per feature, so
    the scaler takes samples flattened to ``(n_samples, n_features)`` (``x.reshape(n, -1)``).
    PCA whitening becomes a fitted ``PCA(whiten=True)`` (``explained_variance_`` holds
    ``λ + ε``, so its whitening divides by normlab's ``√(λ + ε)``); ZCA, which scikit-learn
    has no class for, becomes :class:`normlab.sklearn.InputScaler` ``(scheme="zca")`` carrying
    a copy of the fitted state.

    Raises
    ------
    NormlabError
        For schemes that are not a per-feature affine map (``per-image``, clipping):
        :class:`normlab.sklearn.InputScaler` wraps any scheme in a scikit-learn transformer.

    Examples
    --------
    >>> import numpy as np
    >>> from normlab.normalizers import ZScore
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> scaler = to_sklearn(ZScore().fit(x))
    >>> type(scaler).__name__, scaler.mean_, scaler.scale_
    ('StandardScaler', array([2., 4.]), array([1., 2.]))
    """
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    whitening = _whitening_or_none(normalizer, "scikit-learn")
    if whitening is not None:
        return _sklearn_whitening(whitening)
    n = as_affine(
        normalizer,
        "a scikit-learn scaler",
        f"use normlab.sklearn.InputScaler(scheme={getattr(normalizer, 'scheme', '?')!r}), which "
        "wraps any normlab scheme in a scikit-learn transformer",
    )
    shift, scale = n.affine()
    common = {"n_features_in_": shift.size, "n_samples_seen_": int(n.n_samples_seen_)}
    if isinstance(n, ZScore):
        est: Any = StandardScaler(with_mean=n.with_mean, with_std=n.with_std)
        if n.with_mean or n.with_std:
            est.mean_ = shift if n.with_mean else _expand(n, n.mean_)
            est.var_ = _expand(n, n.var_) if n.with_std else None
        else:
            est.mean_ = est.var_ = None
        est.scale_ = scale if n.with_std else None
    elif isinstance(n, MinMax):
        est = MinMaxScaler(feature_range=tuple(float(v) for v in n.feature_range))
        est.scale_ = 1.0 / scale
        est.min_ = -shift * est.scale_
        est.data_min_ = _expand(n, n.data_min_)
        est.data_max_ = _expand(n, n.data_max_)
        est.data_range_ = est.data_max_ - est.data_min_
    elif isinstance(n, (MaxAbs, MaxScale)):
        est = MaxAbsScaler()
        est.scale_ = scale
        est.max_abs_ = _expand(n, n.max_abs_) if isinstance(n, MaxAbs) else scale.copy()
    else:
        raise NormlabError(
            f"no scikit-learn scaler matches {type(n).__name__}; use "
            f"normlab.sklearn.InputScaler(scheme={n.scheme!r}) instead"
        )
    for name, value in common.items():
        setattr(est, name, value)
    names = feature_names_of(n)
    if names is not None:  # as scikit-learn sets it when fitted on a DataFrame
        est.feature_names_in_ = np.asarray(names, dtype=object)
    return est


def feature_names_of(source: Any) -> list[str] | None:
    """The feature names (table columns) of a fitted normalizer or statistics, or None."""
    names = getattr(source, "feature_names_", getattr(source, "feature_names", None))
    return None if names is None else [str(n) for n in names]


def _sklearn_whitening(w: Whiten) -> Any:
    import copy

    from .sklearn import InputScaler

    if w.method == "zca":
        return InputScaler.from_normalizer(copy.deepcopy(w))
    from sklearn.decomposition import PCA

    k, d = w.matrix_.shape
    cov_eigenvalues = np.asarray(w.eigenvalues_, np.float64)
    est = PCA(n_components=k, whiten=True)
    est.mean_ = np.asarray(w.mean_, np.float64).copy()
    # rows normlab zeroes (directions without variance, see Whiten) are zero here too
    no_variance = np.asarray(~np.asarray(w.matrix_).any(axis=1))
    est.components_ = np.where(no_variance[:, None], 0.0, np.asarray(w.components_, np.float64))
    est.explained_variance_ = cov_eigenvalues + w.eps_  # PCA divides by its square root
    total = float(np.sum(cast(CoMoments, w.stats_).cov().diagonal()))
    est.explained_variance_ratio_ = cov_eigenvalues / total if total > 0 else cov_eigenvalues * 0
    n = int(w.n_samples_seen_)
    est.singular_values_ = np.sqrt(cov_eigenvalues * max(n - 1, 1))
    est.noise_variance_ = float((total - cov_eigenvalues.sum()) / (d - k)) if d > k else 0.0
    est.n_components_ = k
    est.n_features_in_ = d
    est.n_samples_ = n
    names = feature_names_of(w)
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    return est


def sklearn_state(estimator: Any) -> dict[str, Any]:
    """A fitted scaler as JSON-ready data: class, parameters and fitted attributes (no pickle).

    :func:`sklearn_from_state` rebuilds it; so does the snippet ``normlab export`` writes.
    An :class:`~normlab.sklearn.InputScaler` (ZCA) carries its normlab normalizer as plain
    metadata and tensors (:func:`normlab.io.to_plain`).
    """
    from .io import to_plain

    if type(estimator).__name__ == "InputScaler":
        return {
            "class": "InputScaler",
            "params": estimator.get_params(),
            "normalizer": to_plain(estimator.normalizer_),
        }
    attributes = {
        k: (v.tolist() if isinstance(v, np.ndarray) else v)
        for k, v in vars(estimator).items()
        if k.endswith("_") and not k.startswith("_")
    }
    params = {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in estimator.get_params().items()
    }
    return {"class": type(estimator).__name__, "params": params, "attributes": attributes}


def sklearn_from_state(state: dict[str, Any]) -> Any:
    """Rebuild a scaler written by :func:`sklearn_state`."""
    from sklearn import decomposition, preprocessing

    allowed = {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "PCA", "InputScaler"}
    if state.get("class") not in allowed:
        raise NormlabError(f"expected one of {sorted(allowed)}; got class {state.get('class')!r}")
    if state["class"] == "InputScaler":
        from .io import from_plain
        from .sklearn import InputScaler

        return InputScaler.from_normalizer(from_plain(state["normalizer"]))
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["params"].items()}
    module = decomposition if state["class"] == "PCA" else preprocessing
    est = getattr(module, state["class"])(**params)
    for k, v in state["attributes"].items():
        kind = object if k == "feature_names_in_" else np.float64
        setattr(est, k, np.asarray(v, dtype=kind) if isinstance(v, list) else v)
    return est


SKLEARN_SNIPPET = """\
# Rebuild the fitted scikit-learn scaler exported by normlab (no pickle involved).
import json
from pathlib import Path

import numpy as np
from sklearn import decomposition, preprocessing

with open(Path(__file__).resolve().with_name({path!r})) as f:  # the file beside this one
    state = json.load(f)
if state["class"] == "InputScaler":  # ZCA whitening: scikit-learn has no class for it
    from normlab.export import sklearn_from_state

    scaler = sklearn_from_state(state)
else:
    params = {{k: tuple(v) if isinstance(v, list) else v for k, v in state["params"].items()}}
    module = decomposition if state["class"] == "PCA" else preprocessing
    scaler = getattr(module, state["class"])(**params)
    for name, value in state["attributes"].items():
        kind = object if name == "feature_names_in_" else np.float64  # column names: strings
        setattr(scaler, name, np.asarray(value, kind) if isinstance(value, list) else value)
# scaler.transform(x.reshape(len(x), -1)) now equals normlab's transform
"""


# ---------------------------------------------------------------- PyTorch / torchvision
def to_torch(normalizer: Normalizer, *, layout: str | None = None) -> Any:
    """A :class:`normlab.torch.Normalize` module, or :class:`normlab.torch.Whitening` for ZCA
    and PCA (samples in the shape they were fitted on); needs the ``torch`` extra."""
    from .errors import require

    require("torch", "torch")
    from .torch import Normalize, Whitening

    if _whitening_or_none(normalizer, "PyTorch") is not None:
        if layout is not None:
            raise NormlabError(
                f"a whitening module takes samples of the shape they were fitted on "
                f"({tuple(normalizer.sample_shape_)}); layout={layout!r} is for per-feature "
                "schemes: permute the tensor instead (x.permute(0, 2, 3, 1) for CHW → HWC)"
            )
        return Whitening.from_normalizer(normalizer)
    return Normalize.from_normalizer(normalizer, layout=layout)


def to_torchvision(source: Normalizer | Moments, *, scale: str = "0..1") -> dict[str, list[float]]:
    """Per-channel ``mean``/``std`` lists for torchvision's ``transforms.Normalize``.

    ``scale="0..1"`` (default) is the scale of ``ToTensor``/``ToDtype(scale=True)`` output:
    statistics of integer images are divided by the dtype's maximum (255 for uint8);
    statistics of float data are taken to be on that scale already. ``"0..255"`` multiplies
    the 0..1 values by 255 (for pipelines that normalize unscaled uint8 values).

    ``source`` is a fitted per-channel or global normalizer (any affine scheme: ``channel``,
    ``global``, ``max``, channel-wise ``minmax``/``maxabs``), or statistics: per-feature
    statistics are reduced exactly to per-channel ones (on the channels of their layout for
    samples with ≥ 2 dims, else global).
    """
    if scale not in TORCHVISION_SCALES:
        raise NormlabError(f"scale must be {SCALES_HELP}; got {scale!r}")
    if isinstance(source, Moments):
        stats = source
        if stats.axis == "feature":
            stats = stats.reduce(
                "channel"
                if stats.sample_shape is not None and len(stats.sample_shape) >= 2
                else "global"
            )
        stats.require_values("torchvision's mean/std")  # never NaN in a pipeline
        value_scale, mean, std = stats.value_scale, stats.mean, stats.std()
    else:
        n = as_affine(
            source,
            "torchvision's Normalize",
            "standardize each image with normlab.PerImage before the model instead",
        )
        if n.stats_axis == "feature":
            raise NormlabError(
                f"torchvision's Normalize holds one mean/std per channel, but this {n.scheme!r} "
                f"normalizer has one per feature (per pixel, samples {tuple(n.sample_shape_)}): "
                "use "
                "normlab.torch.Normalize.from_normalizer(n), which keeps per-pixel buffers, or fit "
                "scheme 'channel'"
            )
        value_scale, mean, std = n.value_scale_, n.shift_, n.scale_
    divisor = _divisor(value_scale, scale)
    mean = np.asarray(mean, np.float64).reshape(-1) / divisor
    std = np.asarray(std, np.float64).reshape(-1) / divisor
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


# ---------------------------------------------------------------- Keras
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): Normalization divides by max(std, epsilon)


def to_keras(normalizer: Normalizer, *, scale: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``keras.layers.Normalization`` giving normlab's outputs.

    ``axis`` has Keras's meaning: the axes of the *batch* that keep their own mean and
    variance (``None``: one scalar; ``-1``: channels last; a tuple for per-feature
    statistics of n-d samples). ``variance`` is ``scale_**2``, the variance after the
    zero-variance policy, so Keras's ``max(sqrt(variance), 1e-7)`` never divides a constant
    pixel by 1e-7 (keras-team/keras#20011).

    ``scale`` is the scale of what the layer is fed: ``None`` (default) the data's own units
    (feed it what you fitted on); ``"0..1"`` for uint8 data after ``Rescaling(1/255)`` (as
    :func:`to_torchvision`; float data are taken to be on that scale already); ``"0..255"``.

    ZCA and PCA whitening give ``{"kind": "whitening", "method", "sample_shape", "mean",
    "matrix"}`` (``y = matrix @ (x − mean)`` per flattened sample): :func:`keras_layer`
    builds the layer from either form.
    """
    whitening = _whitening_or_none(normalizer, "Keras")
    if whitening is not None:
        mean, matrix = whitening.linear_map()
        divisor = _divisor(whitening.value_scale_, scale)
        return {
            "kind": "whitening",
            "method": whitening.method,
            "sample_shape": list(whitening.sample_shape_),
            "mean": _plain(mean / divisor),
            "matrix": _plain(matrix * divisor),
        }
    n = as_affine(
        normalizer,
        "keras.layers.Normalization",
        "apply normlab's transform to the data before Keras instead",
    )
    axis = n.layout_.keras_axis
    divisor = _divisor(n.value_scale_, scale)
    largest = float(np.max(n.scale_ / divisor, initial=0.0))
    if largest > float(np.finfo(np.float32).max):  # keras.ops.maximum(std, 1e-7) gives inf
        raise NormlabError(
            f"a scale of {largest:.3g} is beyond float32, where Keras's Normalization turns it "
            "into inf (its max(sqrt(variance), 1e-7) is computed in float32) and outputs 0; "
            "rescale the data first, or apply normlab's transform before Keras"
        )
    smallest = float(np.min(n.scale_ / divisor, initial=np.inf))
    if smallest < KERAS_EPSILON:
        raise NormlabError(
            f"a scale of {smallest:.3g} is below Keras's epsilon ({KERAS_EPSILON:g}): its "
            "Normalization divides by max(sqrt(variance), epsilon), which would shrink these "
            "outputs; rescale the data first (e.g. x * 1e6), or apply normlab's transform before "
            "Keras"
        )
    variance = (n.scale_ / divisor) ** 2
    return {"mean": _plain(n.shift_ / divisor), "variance": _plain(variance), "axis": axis}


def keras_layer(source: Normalizer | dict[str, Any], *, scale: str | None = None) -> Any:
    """The Keras layer itself: ``Normalization`` for affine schemes; for ZCA/PCA a small
    ``Sequential`` block — flatten, ``Normalization(mean, variance=1)`` (the mean
    subtraction), ``Dense(use_bias=False)`` holding the matrix, and (ZCA) reshape back.

    ``source`` is a fitted normalizer or what :func:`to_keras` returned (e.g. read back from
    the JSON file ``normlab export --to keras`` writes). Needs ``keras``.

    The layers compute in float64 (the data's mean and scale kept in float64, the input cast
    to float64), so their outputs, once rounded to float32 by the next layer, are within 2
    float32 ulps of ``max(|z|, 1)`` of the exact value (whitening: within 1e-5 of the
    output's scale). ``keras.layers.Normalization(**to_keras(n))`` rounds the mean and
    variance to Keras's float32 first: off by several ulps where the mean is large.
    """
    import keras

    spec = source if isinstance(source, dict) else to_keras(source, scale=scale)
    if spec.get("kind") != "whitening":
        kwargs = dict(spec)
        if isinstance(kwargs["axis"], list):
            kwargs["axis"] = tuple(kwargs["axis"])
        kwargs["mean"] = np.asarray(kwargs["mean"], np.float64)  # lists become float32
        kwargs["variance"] = np.asarray(kwargs["variance"], np.float64)
        return keras.layers.Normalization(**kwargs, dtype="float64")
    shape = tuple(spec["sample_shape"])
    mean = np.asarray(spec["mean"], np.float64).reshape(-1)
    matrix = np.asarray(spec["matrix"], np.float64)
    dense = keras.layers.Dense(matrix.shape[0], use_bias=False, dtype="float64")
    block = keras.Sequential(
        [
            keras.Input(shape=shape, dtype="float64"),
            keras.layers.Reshape((mean.size,), dtype="float64"),
            keras.layers.Normalization(mean=mean, variance=np.ones_like(mean), dtype="float64"),
            dense,
            *([keras.layers.Reshape(shape, dtype="float64")] if spec["method"] == "zca" else []),
        ],
        name=f"normlab_{spec['method']}",
    )
    dense.set_weights([matrix.T])
    return block


# ---------------------------------------------------------------- JSON
def to_json(source: Normalizer | Moments) -> dict[str, Any]:
    """Plain numbers (lists of floats) for any other framework.

    A normalizer gives ``shift``/``scale`` of its reduced shape with the formula
    ``y = (x − shift) / scale`` and where they broadcast (``stats_axis``, ``channel_axis``,
    ``sample_shape``); a whitening gives ``mean``, ``matrix`` (``y = matrix @ (x − mean)``
    per flattened sample), ``eps`` (absolute, in squared data units) and ``method``;
    statistics give count, mean, std (ddof 0), min and max. Statistics of named features
    (table columns) add ``feature_names``, in the order of the values.
    """
    out = _to_json(source)
    names = feature_names_of(source)
    if names is not None:
        out["feature_names"] = names
    return out


def _to_json(source: Normalizer | Moments) -> dict[str, Any]:
    if isinstance(source, Moments):
        return {
            "kind": "statistics",
            "axis": source.axis,
            "layout": source.layout.letters,
            "channel_axis": source.channel_axis,
            "sample_shape": list(source.sample_shape or ()),
            "value_scale": source.value_scale,
            "n_samples_seen": int(source.n_samples_seen),
            "count": np.asarray(source.count).tolist(),
            "mean": _plain(source.mean),
            "std": _plain(source.std()),
            "min": _plain(source.min),
            "max": _plain(source.max),
        }
    whitening = _whitening_or_none(source, "JSON")
    if whitening is not None:
        mean, matrix = whitening.linear_map()
        return {
            "kind": "whitening",
            "method": whitening.method,
            "formula": "y = matrix @ (x - mean), x flattened per sample",
            "sample_shape": list(whitening.sample_shape_),
            "value_scale": whitening.value_scale_,
            "n_samples_seen": int(whitening.n_samples_seen_),
            "eps": float(whitening.eps_),
            "eps_param": float(whitening.eps),
            "eps_mode": whitening.eps_mode,
            "mean": _plain(mean),
            "matrix": _plain(matrix),
        }
    n = as_affine(normalizer=source, target="JSON", instead="apply it with normlab itself")
    return {
        "kind": "affine",
        "scheme": n.scheme,
        "class": type(n).__name__,
        "formula": "y = (x - shift) / scale",
        "stats_axis": n.stats_axis,
        "layout": n.layout_.letters,
        "channel_axis": n.layout_.channel_axis,
        "sample_shape": list(n.sample_shape_),
        "value_scale": n.value_scale_,
        "shift": _plain(n.shift_),
        "scale": _plain(n.scale_),
    }
