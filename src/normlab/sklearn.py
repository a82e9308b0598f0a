"""scikit-learn: :class:`InputScaler`, any normlab scheme as a transformer.

Named ``InputScaler`` because scikit-learn's ``Normalizer`` means scaling each *row* to unit
norm. It passes scikit-learn's own estimator checks (``parametrize_with_checks``, nothing
skipped), works in ``Pipeline``/``ColumnTransformer``, supports ``set_output``,
``get_feature_names_out``, ``partial_fit`` and ``inverse_transform``. The statistics are
normlab's: integer features are summed exactly, floats in float64 with Chan's merge, so
``partial_fit`` over any split of the rows gives what ``fit`` on all of them gives.

It is a drop-in for ``StandardScaler``: the same constructor arguments (``with_mean``,
``with_std``, ``copy``), ``fit(X, sample_weight=w)``, the fitted ``mean_``, ``var_``,
``scale_``, ``n_samples_seen_``, ``n_features_in_``, ``feature_names_in_`` with
``StandardScaler``'s meanings, and its NaN convention (scikit-learn's, inside the
scikit-learn transformer): NaN is left out of ``fit`` and passed through by ``transform``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from . import schemes
from .errors import DTypeError, NormlabError
from .moments import Moments, check_sample_weight
from .normalizers import AffineNormalizer, Normalizer

_OPTIONS = (
    "with_mean",
    "with_std",
    "std_floor",
    "ddof",
    "feature_range",
    "max_value",
    "eps",
    "eps_mode",
    "dtype",
)


class _DTypeTypeError(DTypeError, TypeError):
    """What scikit-learn refuses as a TypeError stays one (its estimator checks expect it)."""


def _validate(estimator: Any, X: Any, **options: Any) -> Any:
    """scikit-learn's ``validate_data``; what it refuses becomes a :class:`DTypeError`
    (a ``ValueError`` still, with scikit-learn's own message)."""
    try:
        return validate_data(estimator, X, **options)
    except NormlabError:
        raise
    except TypeError as exc:
        raise _DTypeTypeError(f"InputScaler: {exc}") from None
    except ValueError as exc:
        raise DTypeError(f"InputScaler: {exc}") from None


class InputScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """A normlab normalization scheme as a scikit-learn transformer of 2-D feature matrices.

    Parameters
    ----------
    scheme : str
        A name of the scheme registry (``normlab.schemes.names()``) that fits a 2-D matrix:
        ``feature`` (per-feature z-score, as ``StandardScaler``), ``global``, ``center``,
        ``scale``, ``minmax``, ``maxabs``, ``max``, ``per-image`` (each row standardized by its
        own mean/std), ``raw``, and registered plug-in schemes. ``channel`` needs samples
        with a channel axis and is refused.
    std_floor : float, optional
        z-score schemes: the std is at least this (data units).
    ddof : int
        z-score schemes: delta degrees of freedom of the std (0, as ``StandardScaler``).
    feature_range : tuple of float
        ``minmax``: the output range.
    max_value : float, optional
        ``max``: the divisor for float data (integer data default to the dtype's maximum).
    dtype : dtype, optional
        Output dtype (default: the input's float dtype; float32 for integer input).
    with_mean, with_std : bool
        As ``StandardScaler``: ``scheme="feature"`` with ``with_mean=False`` is ``"scale"``,
        with ``with_std=False`` it is ``"center"``.
    copy : bool
        Accepted for ``StandardScaler``'s signature; ``transform`` always returns a new array.
    eps, eps_mode
        ``zca``/``pca`` whitening: see :class:`normlab.Whiten` (for fewer PCA components,
        fit ``normlab.Whiten(method="pca", n_components=k)`` and wrap it with
        :meth:`from_normalizer`). Options a scheme does not take must stay at their
        defaults.

    Attributes
    ----------
    normalizer_ : normlab.normalizers.Normalizer
        The fitted normlab normalizer (save it with ``normalizer_.save(path)``).
    mean_, var_ : ndarray of shape (n_features,) or None
        The per-feature mean and variance of the (weighted, NaN-free) data the scheme's
        statistics hold; for channel or global schemes the one value is repeated per feature.
        As ``StandardScaler``: ``mean_`` is None when neither mean nor std is used, ``var_``
        when the std is not used; both None for schemes that keep no statistics.
    scale_ : ndarray of shape (n_features,) or None
        The per-feature divisor of an affine scheme (``transform = (x − shift) / scale_``),
        None for ``with_std=False`` and for schemes that are not per-feature affine maps.
    n_samples_seen_ : int, float or ndarray of shape (n_features,)
        As ``StandardScaler``: the number of samples, the sum of their weights (float) with
        ``sample_weight``, per feature when NaN left different counts.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names (they are kept in
        ``normalizer_.feature_names_`` and its statistics, so a saved normalizer keeps them),
        or made by :meth:`from_normalizer` from statistics of named columns (a Parquet file,
        a DataFrame given to :func:`normlab.compute_stats`).

    Examples
    --------
    >>> import numpy as np
    >>> from normlab.sklearn import InputScaler
    >>> X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 6.0]])
    >>> InputScaler(scheme="minmax").fit_transform(X)
    array([[0. , 0. ],
           [0.5, 0.4],
           [1. , 1. ]])
    """

    # fitted attributes: absent until fitted
    normalizer_: Normalizer
    n_samples_seen_: Any  # a count, a sum of weights, or one per feature (as StandardScaler's)

    def __init__(
        self,
        scheme: str = "feature",
        *,
        std_floor: float | None = None,
        ddof: int = 0,
        feature_range: tuple[float, float] = (0.0, 1.0),
        max_value: float | None = None,
        dtype: Any = None,
        with_mean: bool = True,
        with_std: bool = True,
        copy: bool = True,
        eps: float = 1e-2,
        eps_mode: str = "relative",
    ) -> None:
        self.scheme = scheme
        self.std_floor = std_floor
        self.ddof = ddof
        self.feature_range = feature_range
        self.max_value = max_value
        self.dtype = dtype
        self.with_mean = with_mean
        self.with_std = with_std
        self.copy = copy
        self.eps = eps
        self.eps_mode = eps_mode

    @classmethod
    def from_normalizer(cls, normalizer: Normalizer) -> InputScaler:
        """A fitted ``InputScaler`` carrying a fitted normlab normalizer (no refit).

        Samples of more than one dim (images) are taken flattened, ``x.reshape(len(x), -1)``.
        """
        if not isinstance(normalizer, Normalizer) or not normalizer.is_fitted:
            raise NormlabError(
                f"InputScaler.from_normalizer needs a fitted normlab normalizer; got "
                f"{type(normalizer).__name__}"
            )
        params = normalizer.get_params()
        scaler = cls(
            scheme=normalizer.scheme,
            **{
                k: params[k] for k in _OPTIONS if k in params and k not in ("with_mean", "with_std")
            },
        )
        scaler.normalizer_ = normalizer
        scaler.n_features_in_ = math.prod(getattr(normalizer, "sample_shape_", None) or (0,))
        names = getattr(normalizer, "feature_names_", None)
        if names is not None:  # statistics of named columns: as if fitted on a DataFrame
            scaler.feature_names_in_ = np.asarray(names, dtype=object)
        scaler._set_fitted_attributes(int(getattr(normalizer, "n_samples_seen_", 0)))
        return scaler

    def _make_normalizer(self) -> Normalizer:
        if not isinstance(self.scheme, str):
            raise NormlabError(f"scheme must be a scheme name (a string); got {self.scheme!r}")
        accepted = schemes.get(self.scheme).get_params()
        defaults = _option_defaults()
        options: dict[str, Any] = {}
        for name in _OPTIONS:
            value = getattr(self, name)
            if _same(value, defaults[name]):
                continue  # the scheme's own setting (e.g. "center" fixes with_std=False)
            if name not in accepted:
                raise NormlabError(
                    f"scheme {self.scheme!r} takes no option {name!r} (got {name}={value!r}); "
                    f"its options are {sorted(accepted)}"
                )
            if not _same(value, accepted[name]):
                options[name] = value
        return schemes.get(self.scheme, **options)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> InputScaler:
        """Fit the scheme on ``X`` of shape ``(n_samples, n_features)``; returns ``self``.

        ``sample_weight``: one weight ≥ 0 per row, as ``StandardScaler``'s (whole numbers
        keep integer data exact).
        """
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)
        return self.partial_fit(X, y, sample_weight=sample_weight)

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> InputScaler:
        """Add the rows of ``X`` to the statistics seen so far (exact merge); returns ``self``."""
        first_call = not hasattr(self, "normalizer_")
        X = _validate(self, X, reset=first_call, dtype="numeric", ensure_all_finite="allow-nan")
        normalizer = self._make_normalizer() if first_call else self.normalizer_
        options: dict[str, Any] = {}
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, X.shape[0])
            if not weights.any():
                raise NormlabError(
                    f"InputScaler(scheme={self.scheme!r}): every sample_weight is 0; weights "
                    "must contain at least one non-zero number"
                )
            options["sample_weight"] = sample_weight = weights
        if X.dtype.kind == "f" and np.isnan(X).any():
            options["nan_policy"] = "omit"  # scikit-learn's convention: NaN is left out
        try:
            normalizer.partial_fit(X, **options)
        except NormlabError as exc:  # say where: which scheme, on how much data
            raise type(exc)(
                f"InputScaler(scheme={self.scheme!r}) on {X.shape[0]} sample(s) x "
                f"{X.shape[1]} feature(s): {exc}"
            ) from None
        self.normalizer_ = normalizer
        if first_call:
            self.n_samples_seen_ = 0
            _name_features(normalizer, getattr(self, "feature_names_in_", None))
        self._set_fitted_attributes(self.n_samples_seen_ + _weight_sum(X, sample_weight))
        return self

    def _set_fitted_attributes(self, rows_seen: float) -> None:
        """``mean_``, ``var_``, ``scale_``, ``n_samples_seen_`` as ``StandardScaler`` has them."""
        normalizer, d = self.normalizer_, self.n_features_in_
        stats = getattr(normalizer, "stats_", None)
        self.mean_ = self.var_ = self.scale_ = None
        self.n_samples_seen_ = rows_seen
        if isinstance(stats, Moments):
            count = _per_feature(stats.count, d)
            self.n_samples_seen_ = _collapse(count)
            if self.with_mean or self.with_std:
                with np.errstate(invalid="ignore", divide="ignore"):
                    self.mean_ = _per_feature(stats.mean, d)
            if self.with_std:
                self.var_ = _per_feature(stats.var(getattr(normalizer, "ddof", 0)), d)
        elif stats is not None:  # co-moments of a whitening
            self.mean_ = np.asarray(stats.mean, np.float64).reshape(-1)
            self.var_ = np.diag(stats.cov()).copy()
        if isinstance(normalizer, AffineNormalizer) and self.with_std:
            self.scale_ = normalizer.affine()[1]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The input's names, one per feature; ``pca0, pca1, …`` for PCA whitening."""
        check_is_fitted(self)
        if self.normalizer_.scheme == "pca":
            k = getattr(self.normalizer_, "matrix_").shape[0]  # noqa: B009 (Whiten only)
            return np.asarray([f"pca{i}" for i in range(k)], dtype=object)
        return super().get_feature_names_out(input_features)

    def _apply(self, method: str, X: np.ndarray) -> np.ndarray:
        """``normalizer_.<method>`` on flat rows, reshaped to its sample shape and back."""
        shape = tuple(getattr(self.normalizer_, "sample_shape_", None) or ())
        apply = functools.partial(getattr(self.normalizer_, method), nan_policy="propagate")
        if len(shape) > 1 and method == "transform":
            return apply(X.reshape(len(X), *shape)).reshape(len(X), -1)
        return apply(X)

    def transform(self, X: Any) -> np.ndarray:
        """Normalize ``X`` (float output: the input's float dtype, float32 for integers).

        NaN passes through as NaN, as in ``StandardScaler`` (``nan_policy="propagate"`` of the
        normlab normalizer); inf is refused by scikit-learn's input check, and outputs beyond
        the output dtype (``dtype=np.float16``) raise.
        """
        check_is_fitted(self)
        X = _validate(self, X, reset=False, dtype="numeric", ensure_all_finite="allow-nan")
        return self._apply("transform", X)

    def _has_inverse(self) -> bool:
        if hasattr(self, "normalizer_"):
            return self.normalizer_.has_inverse
        try:
            normalizer = schemes.get(self.scheme)
        except NormlabError:
            return True  # an unknown scheme: fit says so
        return normalizer.has_inverse

    @available_if(_has_inverse)
    def inverse_transform(self, X: Any) -> np.ndarray:
        """Back to the data's units (absent for ``per-image``, which keeps no statistics)."""
        check_is_fitted(self)
        X = _validate(self, X, reset=False, dtype="numeric", ensure_all_finite="allow-nan")
        return self._apply("inverse_transform", X).reshape(len(X), -1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = True
        return tags


def _name_features(normalizer: Normalizer, names: Any) -> None:
    """A DataFrame's column names into the fitted statistics (saved with the normalizer)."""
    stats = getattr(normalizer, "stats_", None)
    if names is None or stats is None:
        return
    stats.feature_names = [str(n) for n in names]
    normalizer.feature_names_ = stats.feature_names


def _weight_sum(X: np.ndarray, sample_weight: Any) -> float:
    if sample_weight is None:
        return X.shape[0]
    return float(np.sum(np.asarray(sample_weight, dtype=np.float64)))


def _per_feature(values: np.ndarray, n_features: int) -> np.ndarray:
    """A statistic (per feature, per channel or global) as one value per feature."""
    arr = np.asarray(values)
    return (
        np.broadcast_to(arr.reshape(-1), (n_features,)).copy()
        if arr.size == 1
        else arr.reshape(-1).copy()
    )


def _collapse(count: np.ndarray) -> Any:
    """``StandardScaler``'s ``n_samples_seen_``: one number when every feature saw the same."""
    if count.size and (count == count.flat[0]).all():
        first = count.flat[0]
        return int(first) if count.dtype.kind in "iu" else float(first)
    return count


def _option_defaults() -> dict[str, Any]:
    import inspect

    params = inspect.signature(InputScaler.__init__).parameters
    return {k: params[k].default for k in _OPTIONS}


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list)) and tuple(value) == default
    return value is default or value == default
