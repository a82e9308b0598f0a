"""Normalizers: fitted from exact :class:`~normlab.Moments`, applied as one multiply-add.

Every affine scheme is stored as ``shift_`` and ``scale_`` (arrays of the statistics'
reduced shape) with ``transform(x) = (x − shift_) / scale_`` and
``inverse_transform(y) = y · scale_ + shift_``. ``1/scale_`` and ``shift_/scale_`` are
precomputed, so the apply step is a multiply and a subtract into the output buffer.

Zero variance (and a zero range for ``minmax``/``maxabs``) has one policy, in one helper
(:func:`safe_scale`): the scale becomes 1 — or ``std_floor`` when given — and one
:class:`~normlab.NormlabWarning` names how many features and which. A feature is constant
when its ``min == max``: exact for every dtype, so integer images never depend on a
tolerance. Float features whose std is within rounding noise of their magnitude
(``std ≤ 16·eps·max|x|``) count as constant too: that is the near-constant case where
scikit-learn#17794 turned a constant column of 14.62 into −1.0.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Self

import numpy as np

from . import schemes
from .errors import (
    DTypeError,
    EmptyDataError,
    NormlabError,
    NormlabWarning,
    NotFittedError,
    ShapeError,
    warn,
)
from .io import register
from .layout import Layout, check_granularity
from .moments import Axis, Moments, as_batch, repeat_by_weight

# integer dtypes whose range is no value scale: no data fills 0..2**31 the way images fill 0..255
_WIDE_INTEGERS = frozenset({"int32", "uint32", "int64", "uint64"})
_NEAR_CONSTANT_ULPS = 16  # spreads within a few ulps of the values are rounding noise


def safe_scale(
    scale: np.ndarray,
    zero: np.ndarray,
    *,
    floor: float | None = None,
    what: str = "zero variance",
) -> np.ndarray:
    """The one zero-scale policy: ``zero`` entries get scale 1 (or ``floor``), with one warning.

    Returns a new float64 array; never contains 0, NaN or inf.
    """
    out = np.array(scale, dtype=np.float64, copy=True)
    if floor is not None:
        if not floor > 0 or not math.isfinite(floor):
            raise NormlabError(f"std_floor must be a positive finite number; got {floor}")
        out = np.maximum(np.where(zero, 0.0, out), floor)
    else:
        out = np.where(zero, 1.0, out)
    infinite = np.isinf(out) & ~zero
    if infinite.any():  # an infinite spread is not a zero one: no scale can be right
        raise NormlabError(
            f"{int(infinite.sum())} of {infinite.size} features have an infinite scale "
            f"({what.replace('zero', 'an infinite') if 'zero' in what else 'overflow'}): "
            "the values' spread exceeds the float64 range. Rescale the data first, e.g. x / 1e150"
        )
    bad = ~np.isfinite(out) | (out <= 0)
    out = np.where(bad, 1.0, out)
    zero = zero | bad
    if zero.any():
        idx = np.argwhere(zero)
        shown = (
            ", ".join(
                str(tuple(int(i) for i in r)) if len(r) > 1 else str(int(r[0])) for r in idx[:8]
            )
            if idx.ndim and idx.shape[1]
            else "all"
        )
        more = f" and {len(idx) - 8} more" if len(idx) > 8 else ""
        replacement = f"std_floor={floor}" if floor is not None else "1"
        warn(
            f"{int(zero.sum())} of {zero.size} features have {what} (at {shown}{more}); their "
            f"scale is set to {replacement}, so their outputs stay finite"
        )
    return out


def constant_mask(stats: Moments) -> np.ndarray:
    """Constant features: ``min == max`` exactly, or a float spread within rounding noise."""
    const = stats.is_constant()  # elements without values are not constant: they have none
    if not stats.exact:
        with np.errstate(invalid="ignore"):
            magnitude = np.fmax(np.abs(stats.min), np.abs(stats.max))
            noise = _NEAR_CONSTANT_ULPS * np.finfo(np.float64).eps * magnitude
            const = const | (stats.std() <= noise)
    return const


class DeprecatedFromStats:
    """``from_stats``: the deprecated name of :meth:`Normalizer.fit_stats`.

    On an instance it fits that instance. Called on the class, where it reads as a
    constructor (``ZScore.from_stats(m)``), it fits a default-constructed normalizer instead of
    failing with a ``TypeError``. Both warn, naming ``fit_stats``.
    """

    def __get__(self, obj: Normalizer | None, cls: type[Normalizer]) -> Any:
        def from_stats(stats: Any) -> Normalizer:
            name = cls.__name__
            if obj is None:
                warn(
                    f"{name}.from_stats is deprecated: use {name}().fit_stats(stats)",
                    DeprecationWarning,
                )
                return cls().fit_stats(stats)
            warn(f"{name}.from_stats is deprecated: use .fit_stats(stats)", DeprecationWarning)
            return obj.fit_stats(stats)

        return from_stats


class Normalizer:
    """Common behaviour: fit from data or statistics, validated apply, safe files."""

    scheme: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = True
    has_inverse: ClassVar[bool] = True  # False where inverse_transform cannot exist
    fixed_axis: ClassVar[Axis] = "feature"  # the granularity of a scheme without ``axis=``
    # fitted attributes: absent until fitted
    layout_: Layout | None  # None for whitening: co-moments describe the flattened sample
    sample_shape_: tuple[int, ...]
    feature_names_: list[str] | None  # the statistics' feature names (table columns)

    def __init__(
        self, *, layout: str | None = None, channel_axis: int | None = None, dtype: Any = None
    ) -> None:
        self.layout = layout
        self.channel_axis = channel_axis
        self.dtype = dtype

    @property
    def stats_axis(self) -> Axis:
        """The granularity of the statistics it is fitted from: its ``axis`` parameter where
        it takes one (checked), else the scheme's ``fixed_axis``."""
        if not hasattr(self, "axis"):
            return self.fixed_axis
        return check_granularity(self.axis)

    # ------------------------------------------------------------- validation
    def _validate_params(self) -> None:
        """Check the parameters, at one moment for every normalizer: when fitting starts."""
        check_granularity(self.stats_axis)
        self._requested_layout()
        if self.dtype is not None:
            try:
                kind = np.dtype(self.dtype).kind
            except TypeError:
                raise NormlabError(f"dtype must be a float dtype; got {self.dtype!r}") from None
            if kind != "f":
                raise NormlabError(f"dtype must be a float dtype; got {self.dtype!r}")

    def _requested_layout(self) -> Layout | None:
        """The layout the parameters ask for; None: the statistics' own (channels last on data)."""
        layout, channel_axis = getattr(self, "layout", None), getattr(self, "channel_axis", None)
        if layout is None and channel_axis is None:
            return None
        return Layout.parse(self.stats_axis, layout=layout, channel_axis=channel_axis)

    # ------------------------------------------------------------- parameters
    def get_params(self) -> dict[str, Any]:
        import inspect

        names = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in names if k != "self"}

    def _json_params(self) -> dict[str, Any]:
        params = self.get_params()
        if params.get("dtype") is not None:
            params["dtype"] = np.dtype(params["dtype"]).name
        if isinstance(params.get("feature_range"), tuple):
            params["feature_range"] = list(params["feature_range"])
        return params

    def params_repr(self) -> str:
        """``ZScore(axis='channel', ...)``: the class and its parameters (one line)."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fitted_values(self) -> dict[str, np.ndarray]:
        """The fitted arrays that define the map (shown by ``repr`` and ``normlab fit``)."""
        return {}

    def __repr__(self) -> str:
        """The parameters, then (once fitted) the fitted values, numpy-style."""
        from .display import numpy_text

        if not hasattr(self, "stats_"):
            return self.params_repr()
        fitted = self.fitted_values()
        width = max((len(k) for k in fitted), default=0)
        return "\n".join(
            [
                self.params_repr(),
                f"  fitted on {self.n_samples_seen_} samples",
                *(f"  {k:<{width}} = {numpy_text(v)}" for k, v in fitted.items()),
            ]
        )

    # ------------------------------------------------------------- fitting
    @property
    def is_fitted(self) -> bool:
        return not self.needs_fit or hasattr(self, "stats_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(X), partial_fit(X) or "
                "fit_stats(moments) first"
            )

    def _reset(self) -> None:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)

    def fit(
        self, X: Any, y: Any = None, *, sample_weight: Any = None, nan_policy: str = "raise"
    ) -> Normalizer:
        """Fit on ``X`` of shape ``(n_samples, *sample_shape)``; returns ``self``.

        ``sample_weight`` and ``nan_policy`` are those of :meth:`Moments.update` and
        :class:`Moments`.
        """
        self._reset()
        return self.partial_fit(X, sample_weight=sample_weight, nan_policy=nan_policy)

    def _empty_stats(self, nan_policy: str) -> Moments:
        """Empty statistics for ``partial_fit``: the fitted layout and NaN policy, else the
        requested ones (so statistics fitted with ``nan_policy="omit"`` keep taking batches)."""
        fitted = getattr(self, "stats_", None)
        if fitted is not None:
            return Moments(self.stats_axis, layout=fitted.layout, nan_policy=fitted.nan_policy)
        return Moments(self.stats_axis, layout=self._requested_layout(), nan_policy=nan_policy)

    def partial_fit(
        self, X: Any, y: Any = None, *, sample_weight: Any = None, nan_policy: str = "raise"
    ) -> Normalizer:
        """Add ``X`` to the statistics seen so far and refit; returns ``self``."""
        self._validate_params()
        if not self.needs_fit:
            as_batch(X, "X")
            return self
        batch = self._empty_stats(nan_policy).update(X, sample_weight=sample_weight)
        stats = self.stats_ + batch if hasattr(self, "stats_") else batch
        return self._fit_from(stats)

    def fit_stats(self, stats: Moments) -> Self:
        """Fit from computed or saved statistics (coarsened exactly when finer than needed).

        The layout (granularity aside) is the statistics' own unless ``layout`` was given.
        """
        if not isinstance(stats, Moments):
            raise NormlabError(
                f"{type(self).__name__}.fit_stats needs a Moments object, got "
                f"{type(stats).__name__}"
            )
        self._validate_params()
        if not self.needs_fit:
            return self
        self._reset()
        return self._fit_from(stats)

    from_stats = DeprecatedFromStats()

    def _coarsen(self, stats: Moments) -> Moments:
        target = self._requested_layout()
        if stats.axis == self.stats_axis and (
            target is None or self.stats_axis != "channel" or stats.layout.same_channels(target)
        ):
            return stats
        if stats.layout.coarser_than(self.stats_axis):
            raise NormlabError(
                f"{type(self).__name__} needs {self.stats_axis!r} statistics, but these are "
                f"{stats.axis!r}: compute statistics with axis='feature' to fit every scheme"
            )
        return stats.reduce(self.stats_axis, layout=target)

    def _fit_from(self, stats: Any) -> Self:
        """Fit from ``stats``: :class:`Moments` (:class:`CoMoments` for whitening).

        All or nothing: a fit that fails (no values somewhere, a ddof too large, a float
        overflow) leaves the normalizer as it was before this step (``fit``/``fit_stats``:
        unfitted; ``partial_fit``: as fitted before the batch), never half fitted.
        """
        before = dict(vars(self))
        try:
            return self._fit_from_checked(stats)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    def _fit_from_checked(self, stats: Any) -> Self:
        stats = self._coarsen(stats)
        self.stats_ = stats
        self.layout_ = getattr(stats, "layout", None)  # co-moments: the flattened sample
        self.n_samples_seen_ = stats.n_samples_seen
        self.value_scale_ = stats.value_scale
        if stats.sample_shape is None:  # no batch seen
            raise EmptyDataError("no samples seen: statistics of empty data are undefined")
        if isinstance(stats, Moments):  # never a made-up normalizer where no value was seen
            stats.require_values(f"cannot fit {type(self).__name__}")
        self.sample_shape_ = stats.sample_shape
        # the features' names (table columns), saved with the statistics; None when unnamed
        self.feature_names_ = getattr(stats, "feature_names", None)
        self._compute(stats)
        return self

    def _compute(self, stats: Moments) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def affine(self, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature ``(shift, scale)``, flat, for samples of ``sample_shape``."""
        raise NotImplementedError  # pragma: no cover - every normalizer defines it

    # ------------------------------------------------------------- applying
    def output_dtype(self, x: np.ndarray) -> np.dtype:
        """The dtype ``transform`` returns for input ``x`` (an array, or a dtype)."""
        if self.dtype is not None:
            return np.dtype(self.dtype)
        try:
            dt = x if isinstance(x, np.dtype) else np.asarray(x).dtype
        except (TypeError, ValueError):
            dt = np.dtype(object)
        if dt.kind not in "biuf":
            raise DTypeError(f"expected numeric data or a numeric dtype; got {type(x).__name__}")
        return dt if dt.kind == "f" else np.dtype(np.float32)

    def _check_input(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = as_batch(X, "X")
        expected = getattr(self, "sample_shape_", None)
        if expected is None or not self.needs_fit:
            return x
        sample = x.shape[1:]
        if self.stats_axis == "feature" and sample != tuple(expected):
            raise ShapeError(
                f"{type(self).__name__} was fitted on samples of shape {tuple(expected)}; got "
                f"samples of shape {sample}"
            )
        if self.stats_axis == "channel":
            assert self.layout_ is not None  # fitted from per-channel Moments, which have one
            ca = self.layout_.channel_index(tuple(expected))
            if len(sample) != len(expected) or sample[ca] != expected[ca]:
                raise ShapeError(
                    f"{type(self).__name__} was fitted on {expected[ca]} channels (dim {ca} of "
                    f"{self.layout_.letters} samples {tuple(expected)}); got samples of shape "
                    f"{sample}"
                )
        self._warn_double_normalization(x)
        return x

    def _warn_double_normalization(self, x: np.ndarray) -> None:
        scale = getattr(self, "value_scale_", None) or {}
        top = scale.get("max_value")
        if x.dtype.kind != "f" or not top or top <= 1 or x.size == 0:
            return
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        if lo >= -1.0 and hi <= 1.0:
            warn(
                f"these values lie within [{lo:.3g}, {hi:.3g}], but the normalizer was fitted on "
                f"{scale['dtype']} data (0..{top}): is the input already normalized (divided by "
                f"{top} twice)?"
            )

    def transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:  # pragma: no cover
        """Normalize ``X``; NaN/inf in it raise unless ``nan_policy="propagate"``
        (see :mod:`normlab.finite`)."""
        raise NotImplementedError

    def inverse_transform(
        self, X: Any, *, nan_policy: str = "raise"
    ) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _checked_output(
        self, x: np.ndarray, out: np.ndarray, nan_policy: str, *, whole_sample: bool = False
    ) -> np.ndarray:
        """``out`` after refusing NaN/inf in ``x`` (``nan_policy="raise"``) and outputs that
        overflowed their dtype from finite inputs (see :func:`normlab.finite.check_output`)."""
        from .finite import check_output

        check_output(
            x.reshape(len(x), -1),
            out.reshape(len(out), -1),
            tuple(x.shape[1:]),
            nan_policy,
            whole_sample=whole_sample,
            names=getattr(self, "feature_names_", None),
        )
        return out

    def fit_transform(self, X: Any, y: Any = None, *, nan_policy: str = "raise") -> np.ndarray:
        """``fit(X)`` then ``transform(X)``; NaN/inf in ``X`` raise (fit and transform both
        take them only by choice: fit ``nan_policy="omit"``, transform ``"propagate"``)."""
        return self.fit(X).transform(X, nan_policy=nan_policy)

    # ------------------------------------------------------------- files
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "class": type(self).__name__,
            "scheme": self.scheme,
            "params": self._json_params(),
        }
        if hasattr(self, "stats_"):
            meta["stats"] = self.stats_.metadata()
        return meta

    def to_tensors(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "stats_"):
            return {}
        return {f"stats.{k}": v for k, v in self.stats_.to_tensors().items()}

    @classmethod
    def from_tensors(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> Normalizer:
        params = dict(meta["params"])
        if "channel_axis" in params:  # files before layouts: the statistics carry the layout
            params["channel_axis"] = None
        if isinstance(params.get("feature_range"), list):
            params["feature_range"] = tuple(params["feature_range"])
        obj = cls(**params)
        if "stats" in meta:
            from .io import from_parts

            # the statistics' own class (Moments, or a subclass such as ImageStats with histograms)
            parts = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
            stats = (
                from_parts(meta["stats"], parts)
                if meta["stats"].get("class")
                else Moments.from_tensors(meta["stats"], parts)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NormlabWarning)  # warned once, at fit time
                obj._fit_from(stats)
        return obj

    def save(self, path: str) -> None:
        """Write atomically (safetensors + JSON metadata; never pickle)."""
        from .io import save_object

        self._check_fitted()
        save_object(self, path)

    @classmethod
    def load(cls, path: str) -> Normalizer:
        """Load a normalizer saved by :meth:`save`; a file of another class is an error."""
        from .io import load_as

        return load_as(path, cls)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Normalizer)
        if self.get_params() != other.get_params() or self.is_fitted != other.is_fitted:
            return False
        if not hasattr(self, "stats_"):
            return True
        return self.stats_ == other.stats_ and all(
            np.array_equal(getattr(self, k), getattr(other, k))
            for k in ("shift_", "scale_")
            if hasattr(self, k)
        )

    # unhashable: mutable and compared by value (typeshed types __hash__ as a method)
    __hash__ = None  # type: ignore[assignment]

    def summary(self) -> dict[str, Any]:
        """Plain values for printing (the same word as the statistics' ``summary``)."""
        return {"scheme": self.scheme, "normalizer": self.params_repr()}

    def describe(self) -> dict[str, Any]:
        """Deprecated name of :meth:`summary`."""
        warn(f"{type(self).__name__}.describe() is deprecated: use .summary()", DeprecationWarning)
        return self.summary()


class AffineNormalizer(Normalizer):
    """``y = (x − shift_) / scale_`` with ``shift_``/``scale_`` of the statistics' reduced shape."""

    layout_: Layout  # fitted from Moments, which always have a layout

    def _set_affine(self, shift: np.ndarray, scale: np.ndarray) -> None:
        self.shift_ = np.asarray(shift, dtype=np.float64)
        self.scale_ = np.asarray(scale, dtype=np.float64)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            self._mult = 1.0 / self.scale_
            self._offset = self.shift_ * self._mult

    def fitted_values(self) -> dict[str, np.ndarray]:
        return {"shift_": self.shift_, "scale_": self.scale_}

    def broadcast(self, arr: np.ndarray, sample_ndim: int) -> np.ndarray:
        """Shape ``arr`` (reduced shape) to broadcast against ``(n, *sample)``."""
        from .validate import integer

        self._check_fitted()
        sample_ndim = integer("sample_ndim", sample_ndim, minimum=0, maximum=64)
        try:
            values = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            raise DTypeError(f"arr must be numbers of the reduced shape; got {arr!r}") from None
        if values.shape != tuple(np.shape(self.shift_)):
            raise ShapeError(
                f"arr has shape {values.shape}; expected the reduced shape {np.shape(self.shift_)}"
            )
        try:
            return self.layout_.broadcast(values, sample_ndim)
        except (ValueError, IndexError, ZeroDivisionError) as exc:
            raise ShapeError(f"cannot broadcast to samples of {sample_ndim} dims ({exc})") from None

    def _fused_factors(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """``1/scale`` and ``shift/scale`` in ``dtype``, or None where they would overflow it.

        A scale below ``1/finfo(dtype).max`` (a std near the dtype's smallest values) has no
        finite reciprocal: such data take the slower, exact division path instead.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            mult, offset = self._mult.astype(dtype), self._offset.astype(dtype)
        if np.isfinite(mult).all() and np.isfinite(offset).all():
            return mult, offset
        return None

    def transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Normalize ``X`` of shape ``(n_samples, *sample_shape)``.

        NaN/inf in ``X`` raise :class:`~normlab.errors.NonFiniteError` naming the first row and
        position; ``nan_policy="propagate"`` keeps them (NaN stays NaN, ±inf stays ±inf).
        Outputs beyond the output dtype raise either way.
        """
        from .affine import apply_affine  # numba kernels: imported on first use
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        x = self._check_input(X)
        out_dtype = self.output_dtype(x)
        ndim = x.ndim - 1
        shift, scale = self.broadcast(self.shift_, ndim), self.broadcast(self.scale_, ndim)
        names = getattr(self, "feature_names_", None)
        if out_dtype.kind == "f":  # subtract in float64, round once (see normlab.affine)
            return apply_affine(x, shift, scale, out_dtype, nan_policy=nan_policy, names=names)
        out = np.subtract(x, shift, dtype=np.float64)
        np.divide(out, scale, out=out)
        return self._checked_output(x, out, nan_policy).astype(out_dtype, copy=False)

    def inverse_transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Back to the data's units: ``y · scale_ + shift_`` (NaN/inf: as :meth:`transform`)."""
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        self._check_fitted()
        y = as_batch(X, "X")
        ndim = y.ndim - 1
        out_dtype = y.dtype if y.dtype.kind == "f" else np.dtype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.multiply(y, self.broadcast(self.scale_, ndim), dtype=np.float64)
            np.add(out, self.broadcast(self.shift_, ndim), out=out)
            out = out.astype(out_dtype, copy=False)
        return self._checked_output(y, out, nan_policy)

    def affine(self, sample_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature ``(shift, scale)``, flat, for samples of ``sample_shape``."""
        self._check_fitted()
        if sample_shape is not None:
            sample_shape = _shape("sample_shape", sample_shape)
            try:
                np.broadcast_shapes(
                    self.broadcast(self.shift_, len(sample_shape)).shape, (1, *sample_shape)
                )
            except (ValueError, IndexError):
                raise ShapeError(
                    f"sample_shape={sample_shape} does not fit this normalizer (fitted on "
                    f"samples of shape {getattr(self, 'sample_shape_', None)})"
                ) from None
        shape = tuple(sample_shape if sample_shape is not None else self.sample_shape_)
        shift = np.broadcast_to(self.broadcast(self.shift_, len(shape)), (1, *shape))
        scale = np.broadcast_to(self.broadcast(self.scale_, len(shape)), (1, *shape))
        return shift.reshape(-1).astype(np.float64), scale.reshape(-1).astype(np.float64)


@register
class Identity(Normalizer):
    """The ``raw`` baseline: values unchanged (integers become float32)."""

    scheme = "raw"
    needs_fit = False

    def __init__(self, *, dtype: Any = None) -> None:
        super().__init__(dtype=dtype)

    def transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        x = as_batch(X, "X")
        with np.errstate(over="ignore"):
            out = x.astype(self.output_dtype(x), copy=True)
        return self._checked_output(x, out, nan_policy)

    def inverse_transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        x = as_batch(X, "X")
        return self._checked_output(x, np.array(x, copy=True), nan_policy)

    def affine(self, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        size = math.prod(_shape("sample_shape", sample_shape))
        return np.zeros(size), np.ones(size)


schemes.register(
    "raw",
    Identity,
    "nothing: the values as they are (the baseline)",
    needs=(),
    granularity=None,
    reference=True,
    baseline=True,
    measured_by_default=True,
    in_default_set=True,
)


@register
class MaxScale(AffineNormalizer):
    """Divide by the value scale's maximum (255 for uint8, 65535 for uint16, or ``max_value``).

    What most code calls "normalizing to [0, 1]". Not a z-score: the outputs stay
    all-positive, the case Efficient BackProp §4.3 warns about.
    """

    scheme = "max"
    fixed_axis = "global"

    def __init__(self, *, max_value: float | None = None, dtype: Any = None) -> None:
        super().__init__(dtype=dtype)
        self.max_value = max_value

    def _validate_params(self) -> None:
        from . import validate

        super()._validate_params()
        validate.optional_real("max_value", self.max_value, positive=True, normal=True)

    def _compute(self, stats: Moments) -> None:
        if stats.value_scale is None:  # no batch seen (was an AttributeError)
            raise EmptyDataError("no samples seen: statistics of empty data are undefined")
        top = self.max_value if self.max_value is not None else stats.value_scale.get("max_value")
        if top is None:
            raise NormlabError(
                "scheme 'max' divides by the value scale's maximum, but float data has none: pass "
                "max_value= (e.g. 255.0 for images stored as floats)"
            )
        if not top > 0:
            raise NormlabError(f"max_value must be positive; got {top}")
        dtype = (stats.value_scale or {}).get("dtype")
        if self.max_value is None and dtype in _WIDE_INTEGERS:
            warn(
                f"scheme 'max' divides {dtype} data by its dtype's maximum {top:.3g}: the outputs "
                "will be near 0; pass max_value= (the data's real scale, e.g. 4095 for 12-bit "
                "values)"
            )
        data_max = float(np.nanmax(stats.max))
        if data_max > top:  # e.g. 16-bit images about to be divided by 255
            warn(
                f"values reach {data_max:g} ({_scale_name(stats.value_scale)} data) but are "
                "divided "
                f"by max_value={top:g}: outputs will exceed 1; is this 16-bit data treated as "
                "8-bit?"
            )
        self._set_affine(np.zeros(()), np.full((), float(top)))


schemes.register(
    "max",
    MaxScale,
    "divide by the value scale's maximum (255 for uint8); NOT a z-score: outputs stay all-positive",
    granularity="global",
    reference=True,
    measured_by_default=True,
    in_default_set=True,
)


def _scale_name(scale: dict[str, Any] | None) -> str:
    return (scale or {}).get("dtype") or "float"


@register
class MaxAbs(AffineNormalizer):
    """Divide each feature (or channel, or all values) by its largest ``|x|``."""

    scheme = "maxabs"

    def __init__(
        self,
        *,
        axis: str = "feature",
        layout: str | None = None,
        channel_axis: int | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(layout=layout, channel_axis=channel_axis, dtype=dtype)
        self.axis = axis

    def _compute(self, stats: Moments) -> None:
        self.max_abs_ = np.fmax(np.abs(stats.min), np.abs(stats.max))
        scale = safe_scale(self.max_abs_, ~(self.max_abs_ > 0), what="max |x| = 0")
        self._set_affine(np.zeros_like(scale), scale)


schemes.register("maxabs", MaxAbs, "divide each feature by its largest |x|")


@register
class MinMax(AffineNormalizer):
    """Map each feature's ``[min, max]`` onto ``feature_range`` (default ``(0, 1)``)."""

    scheme = "minmax"

    def __init__(
        self,
        *,
        feature_range: tuple[float, float] = (0.0, 1.0),
        axis: str = "feature",
        layout: str | None = None,
        channel_axis: int | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(layout=layout, channel_axis=channel_axis, dtype=dtype)
        self.feature_range = (
            tuple(feature_range) if isinstance(feature_range, (tuple, list)) else feature_range
        )
        self.axis = axis

    def _validate_params(self) -> None:
        from . import validate

        super()._validate_params()
        validate.real_pair("feature_range", self.feature_range)

    def _compute(self, stats: Moments) -> None:
        low, high = (float(v) for v in self.feature_range)
        if not high > low:
            raise NormlabError(f"feature_range must be increasing; got {self.feature_range}")
        self.data_min_, self.data_max_ = stats.min, stats.max
        span = self.data_max_ - self.data_min_
        span = safe_scale(span, constant_mask(stats), what="a zero range (max == min)")
        scale = span / (high - low)
        self._set_affine(np.where(stats.count > 0, self.data_min_, 0.0) - low * scale, scale)


schemes.register("minmax", MinMax, "map each feature's [min, max] onto feature_range (0..1)")


@register
class ZScore(AffineNormalizer):
    """Subtract the mean and divide by the std — per feature (pixel), per channel or global.

    Parameters
    ----------
    axis : {"feature", "channel", "global"}
        Which z-score: one mean/std per feature (per pixel), per channel, or over all values.
    layout : str, optional
        Dimension letters of the samples (``"HWC"``, ``"CHW"``, ``"NCHW"``) for
        ``axis="channel"``; default: the statistics' own layout (channels last on data).
    channel_axis : int, optional
        Deprecated spelling of ``layout`` (``0``: CHW, ``-1``: channels last).
    with_mean, with_std : bool
        Center and/or scale (``center`` and ``scale`` in the scheme registry).
    ddof : int
        Delta degrees of freedom of the std (0, as scikit-learn's ``StandardScaler``).
    std_floor : float, optional
        Scale is ``max(std, std_floor)`` in data units; constant features get ``std_floor``
        (else 1).
    dtype : dtype, optional
        Output dtype (default float32 for integer input, the input's float dtype otherwise).

    Examples
    --------
    >>> import numpy as np
    >>> from normlab.normalizers import ZScore
    >>> x = np.array([[0, 10], [2, 10], [4, 10]], dtype=np.uint8)
    >>> import warnings; warnings.simplefilter("ignore")
    >>> z = ZScore(axis="feature").fit(x)
    >>> z.transform(x)
    array([[-1.2247449,  0.       ],
           [ 0.       ,  0.       ],
           [ 1.2247449,  0.       ]], dtype=float32)
    """

    def __init__(
        self,
        *,
        axis: str = "feature",
        layout: str | None = None,
        channel_axis: int | None = None,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        std_floor: float | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(layout=layout, channel_axis=channel_axis, dtype=dtype)
        self.axis = axis
        self.with_mean = with_mean
        self.with_std = with_std
        self.ddof = ddof
        self.std_floor = std_floor

    # mypy: a read-only property overrides the base's class attribute (ignored below)
    @property
    def scheme(self) -> str:  # type: ignore[override]
        if not self.with_std:
            return "center" if self.with_mean else "raw"
        if not self.with_mean:
            return "scale"
        return self.axis

    def _validate_params(self) -> None:
        from . import validate

        super()._validate_params()
        validate.boolean("with_mean", self.with_mean)
        validate.boolean("with_std", self.with_std)
        validate.integer("ddof", self.ddof, minimum=0)
        validate.optional_real("std_floor", self.std_floor, positive=True, normal=True)

    def _compute(self, stats: Moments) -> None:
        self.mean_ = stats.mean
        self.var_ = stats.var(self.ddof)
        shift = self.mean_ if self.with_mean else np.zeros_like(self.mean_)
        if self.with_std:
            zero = constant_mask(stats)
            self.zero_variance_ = zero
            scale = safe_scale(np.sqrt(self.var_), zero, floor=self.std_floor)
        else:
            scale = np.ones_like(self.mean_)
        self._set_affine(np.where(stats.count > 0, shift, 0.0), scale)


def _zscore(axis: str, **fixed: Any) -> Any:
    """A factory of the ZScore scheme with this default ``axis`` and the name's fixed options."""

    def factory(**options: Any) -> Normalizer:
        return ZScore(axis=options.pop("axis", axis), **fixed, **options)

    return factory


schemes.register(
    "center",
    _zscore("feature", with_std=False),
    "subtract the per-feature mean only",
)
schemes.register(
    "scale",
    _zscore("feature", with_mean=False),
    "divide by the per-feature std only",
    feature_std=True,
)
schemes.register(
    "global",
    _zscore("global"),
    "z-score with one mean and one std over all values",
    granularity="global",
    in_default_set=True,
)
schemes.register(
    "channel",
    _zscore("channel"),
    "z-score per channel (torchvision's Normalize)",
    granularity="channel",
)
schemes.register(
    "feature",
    _zscore("feature"),
    "z-score per feature (per pixel): each input's own mean/std",
    feature_std=True,
    default=True,
    measured_by_default=True,
    in_default_set=True,
)


@register
class PerImage(Normalizer):
    """Standardize each sample by its own mean and std (TensorFlow's ``per_image_standardization``).

    The std is floored at ``1/√N`` (N = values per sample), as TensorFlow does, so a uniform
    image maps to zeros. Stateless: nothing to fit, and no inverse (each sample's own mean and
    std are discarded).
    """

    scheme = "per-image"
    needs_fit = False
    has_inverse = False

    def __init__(self, *, dtype: Any = None) -> None:
        super().__init__(dtype=dtype)

    def transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Each sample by its own mean/std; a NaN/inf in a sample makes all of its outputs NaN
        under ``nan_policy="propagate"`` (its mean and std are undefined)."""
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        x = as_batch(X, "X")
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = flat.mean(axis=1, keepdims=True)
            floor = 1.0 / math.sqrt(max(1, flat.shape[1]))
            std = np.maximum(flat.std(axis=1, keepdims=True), floor)
            out = ((flat - mean) / std).reshape(x.shape).astype(self.output_dtype(x), copy=False)
        return self._checked_output(x, out, nan_policy, whole_sample=True)

    def inverse_transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        raise NormlabError(
            "per-image standardization has no inverse: each sample's own mean and std are not kept"
        )

    def affine(self, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        raise NormlabError("per-image standardization is not one affine map for all samples")


schemes.register(
    "per-image",
    PerImage,
    "standardize each sample by its own mean/std (std ≥ 1/√N)",
    needs=(),
    granularity=None,
)


@register
class ClipPercentile(AffineNormalizer):
    """Clip to the ``[low, high]`` percentiles per channel, then map that range onto ``[0, 1]``.

    Percentiles are exact (nearest rank, from the 256-bin histograms of uint8 data or the
    65,536-bin ones of uint16 data): fit from data (``fit``) or from statistics computed with
    ``histogram=`` or ``percentiles=`` (``compute_stats(..., percentiles=(0.5, 99.5))``).
    ``inverse_transform`` maps back inside ``[low, high]``; clipped values are not recovered, and
    the clipping makes this scheme not affine (``affine()`` raises).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(200, dtype=np.uint8).reshape(200, 1)
    >>> c = ClipPercentile(low=1, high=99, axis="global").fit(x)
    >>> float(c.low_), float(c.high_)
    (1.0, 197.0)
    >>> c.transform(np.array([[0], [99], [255]], dtype=np.uint8)).ravel()
    array([0. , 0.5, 1. ], dtype=float32)
    """

    scheme = "clip-percentile"

    def __init__(
        self,
        *,
        low: float = 0.5,
        high: float = 99.5,
        axis: str = "channel",
        layout: str | None = None,
        channel_axis: int | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(layout=layout, channel_axis=channel_axis, dtype=dtype)
        self.low = low
        self.high = high
        self.axis = axis

    def partial_fit(
        self, X: Any, y: Any = None, *, sample_weight: Any = None, nan_policy: str = "raise"
    ) -> ClipPercentile:
        from .imagestats import ImageStats

        self._validate_params()
        if nan_policy != "raise":
            raise NormlabError(
                "clip-percentile needs histograms of finite data: drop or impute the samples "
                "with NaN first"
            )
        if sample_weight is not None:
            X = repeat_by_weight(X, sample_weight, "clip-percentile")
        fitted = getattr(self, "stats_", None)
        layout = fitted.layout if fitted is not None else self._requested_layout()
        batch = ImageStats(self.stats_axis, layout=layout, histogram=self.stats_axis).update(X)
        stats = self.stats_ + batch if hasattr(self, "stats_") else batch
        self._fit_from(stats)
        return self

    def _validate_params(self) -> None:
        from . import validate

        super()._validate_params()
        validate.real("low", self.low, nonnegative=True)
        validate.real("high", self.high, nonnegative=True)

    def _compute(self, stats: Moments) -> None:
        if not 0 <= self.low < self.high <= 100:
            raise NormlabError(f"need 0 ≤ low < high ≤ 100; got low={self.low}, high={self.high}")
        histogram = getattr(stats, "histogram", None)
        if histogram is None:
            raise NormlabError(
                "clip-percentile needs exact histograms: compute the statistics with "
                "histogram=True or percentiles=(...) (CLI: --percentiles 0.5,99.5), or fit on data"
            )
        if histogram.axis != self.axis:
            if histogram.layout.coarser_than(self.axis):
                raise NormlabError(
                    f"clip-percentile with axis={self.axis!r} needs {self.axis} histograms or "
                    f"finer; these statistics keep {histogram.axis} ones: compute them with "
                    f"histogram={self.axis!r}, or use axis={histogram.axis!r}"
                )
            if stats.sample_shape is None:  # no batch seen (was a TypeError)
                raise EmptyDataError("no samples seen: statistics of empty data are undefined")
            histogram = histogram.reduce(
                self.axis, sample_shape=tuple(stats.sample_shape), layout=self._requested_layout()
            )
        self.low_ = histogram.percentile(self.low)
        self.high_ = histogram.percentile(self.high)
        span = self.high_ - self.low_
        scale = safe_scale(span, ~(span > 0), what="equal low and high percentiles")
        self._set_affine(np.where(np.isnan(self.low_), 0.0, self.low_), scale)
        self._upper = np.where(span > 0, 1.0, 0.0)

    def transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Clip to ``[low_, high_]`` and scale onto ``[0, 1]`` (NaN stays NaN under
        ``nan_policy="propagate"``; ±inf is clipped to 0 or 1)."""
        out = super().transform(X, nan_policy=nan_policy)
        upper = self.broadcast(self._upper.astype(out.dtype), out.ndim - 1)
        np.clip(out, 0, upper, out=out)
        return out

    def affine(self, sample_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NormlabError(
            "clip-percentile clips before scaling, so it is not one affine map: use its low_ and "
            "high_ (the clip bounds) and transform()"
        )


schemes.register(
    "clip-percentile",
    ClipPercentile,
    "clip each channel to its exact [0.5, 99.5] percentiles (nearest rank, 8/16-bit data), then "
    "scale that range onto 0..1",
    needs=("moments", "histogram"),
    granularity="channel",
)


def _shape(name: str, value: Any) -> tuple[int, ...]:
    """A sample shape: a tuple of non-negative integers."""
    from .validate import integer

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise NormlabError(f"{name} must be a tuple of sizes; got {value!r}")
    shape = tuple(integer(f"{name}[{i}]", v, minimum=0) for i, v in enumerate(value))
    if math.prod(shape) >= 2**40:
        raise NormlabError(f"{name}={shape} holds {math.prod(shape)} values: too many")
    return shape
