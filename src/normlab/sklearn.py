"""scikit-learn: :class:`InputScaler`, any normlab scheme as a transformer.

Named ``InputScaler`` because scikit-learn's ``Normalizer`` means scaling each *row* to unit
norm. It passes scikit-learn's own estimator checks (``parametrize_with_checks``, nothing
skipped), works in ``Pipeline``/``ColumnTransformer``, supports ``set_output``,
``get_feature_names_out``, ``partial_fit`` and ``inverse_transform``. The statistics are
normlab's: integer features are summed exactly, floats in float64 with Chan's merge, so
``partial_fit`` over any split of the rows gives what ``fit`` on all of them gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from . import schemes
from .errors import NormlabError
from .normalizers import Normalizer

_OPTIONS = ("std_floor", "ddof", "feature_range", "max_value", "dtype")


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

    Options a scheme does not take must stay at their defaults.

    Attributes
    ----------
    normalizer_ : normlab.normalizers.Normalizer
        The fitted normlab normalizer (save it with ``normalizer_.save(path)``).
    n_samples_seen_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

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

    def __init__(
        self,
        scheme: str = "feature",
        *,
        std_floor: float | None = None,
        ddof: int = 0,
        feature_range: tuple[float, float] = (0.0, 1.0),
        max_value: float | None = None,
        dtype: Any = None,
    ) -> None:
        self.scheme = scheme
        self.std_floor = std_floor
        self.ddof = ddof
        self.feature_range = feature_range
        self.max_value = max_value
        self.dtype = dtype

    def _make_normalizer(self) -> Normalizer:
        accepted = schemes.get(self.scheme).get_params()
        defaults = _option_defaults()
        options: dict[str, Any] = {}
        for name in _OPTIONS:
            value = getattr(self, name)
            if name in accepted:
                options[name] = value
            elif not _same(value, defaults[name]):
                raise NormlabError(
                    f"scheme {self.scheme!r} takes no option {name!r} (got {name}={value!r}); "
                    f"its options are {sorted(accepted)}"
                )
        return schemes.get(self.scheme, **options)

    def fit(self, X: Any, y: Any = None) -> InputScaler:
        """Fit the scheme on ``X`` of shape ``(n_samples, n_features)``; returns ``self``."""
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)
        return self.partial_fit(X, y)

    def partial_fit(self, X: Any, y: Any = None) -> InputScaler:
        """Add the rows of ``X`` to the statistics seen so far (exact merge); returns ``self``."""
        first_call = not hasattr(self, "normalizer_")
        X = validate_data(self, X, reset=first_call, dtype="numeric")
        normalizer = self._make_normalizer() if first_call else self.normalizer_
        try:
            normalizer.partial_fit(X)
        except NormlabError as exc:  # say where: which scheme, on how much data
            raise type(exc)(
                f"InputScaler(scheme={self.scheme!r}) on {X.shape[0]} sample(s) x "
                f"{X.shape[1]} feature(s): {exc}"
            ) from None
        self.normalizer_ = normalizer
        self.n_samples_seen_ = (0 if first_call else self.n_samples_seen_) + X.shape[0]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Normalize ``X`` (float output: the input's float dtype, float32 for integers)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype="numeric")
        return self.normalizer_.transform(X)

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
        X = validate_data(self, X, reset=False, dtype="numeric")
        return self.normalizer_.inverse_transform(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _option_defaults() -> dict[str, Any]:
    import inspect

    params = inspect.signature(InputScaler.__init__).parameters
    return {k: params[k].default for k in _OPTIONS}


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list)) and tuple(value) == default
    return value is default or value == default
