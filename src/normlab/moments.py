"""Exact, streaming, mergeable first and second moments (plus min, max, counts).

One class, :class:`Moments`, in the style of ``river.stats``: ``update`` a batch, merge
with ``+=`` (Chan et al.), read ``mean``/``var()``/``std()``.

Two representations of the sums, chosen by the data's dtype, each a small class of its own
(:attr:`Moments.sums`):

* **integer data** (bool, uint8/16, int8/16/32): :class:`~normlab.exact.ExactMoments`, exact
  integer sums ``S1 = Σx`` and ``S2 = Σx²`` per reduced element, rounded once at the end:
  any chunking, order or worker split gives the same bits.
* **float data**: :class:`~normlab.shifted.ShiftedMoments`, float64 with a per-element shift
  ``K`` (the first value seen), a two-pass mean/M2 per chunk, and Chan's merge with
  ``δ = (K_b − K_a) + (m_b − m_a)``. Deterministic for a given chunk order.

Beside them, :class:`Extrema` keeps min, max and the counts of non-zero and non-finite values.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from .columns import ColumnBatch
from .errors import (
    DTypeError,
    EmptyDataError,
    FileFormatError,
    FloatOverflowError,
    MergeError,
    NonFiniteError,
    NormlabError,
    ShapeError,
    warn,
)
from .exact import FLOAT64_EXACT, INT64_LIMIT, ExactMoments, copy_flat, exact_dtype
from .io import register
from .layout import GRANULARITIES, Granularity, Layout, check_granularity
from .shifted import ShiftedMoments, check_finite_sums, overflow_message


def load_kernels() -> Any:
    """The numba kernels module, imported on first use (``import normlab`` stays fast)."""
    from . import kernels

    return kernels


Axis = Granularity  # "feature", "channel" or "global"
AXES = GRANULARITIES
NAN_POLICIES = ("raise", "omit")


def value_scale_of(dtype: npt.DTypeLike) -> dict[str, Any]:
    """The value scale a dtype implies: uint8 → 0..255, uint16 → 0..65535, float → as given."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return {"dtype": "bool", "min_value": 0, "max_value": 1}
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return {"dtype": dtype.name, "min_value": int(info.min), "max_value": int(info.max)}
    return {"dtype": "float", "min_value": None, "max_value": None}


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor as numpy, without a copy on CPU; bfloat16 (which numpy lacks) as float32.

    float32 holds every bfloat16 value exactly, so statistics see the stored numbers.
    """
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    return tensor.numpy()


def as_batch(batch: Any, what: str = "batch") -> np.ndarray:
    """A numpy view of a batch ``(n, *sample_shape)``; torch tensors without a copy when on CPU."""
    if type(batch).__module__.startswith("torch"):
        batch = tensor_to_numpy(batch)
    try:
        arr = np.asarray(batch)
    except (TypeError, ValueError) as exc:
        raise DTypeError(
            f"{what}: cannot turn {type(batch).__name__} into an array ({exc})"
        ) from None
    if arr.dtype.kind not in "buif":
        raise DTypeError(
            f"{what}: expected numeric data (bool, integer or float), got dtype {arr.dtype}"
        )
    if arr.dtype == np.bool_ and arr.size and arr.view(np.uint8).max() > 1:
        arr = arr.view(np.uint8) != 0  # bytes other than 0 and 1 (from frombuffer, views): True
    if arr.ndim < 2:
        raise ShapeError(
            f"{what}: expected a batch of shape (n_samples, *sample_shape), got a {arr.ndim}-d "
            f"array of shape {arr.shape}; for one feature per sample use x[:, None]"
        )
    return arr


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    """Weights as int64 when every one is a whole number (the exact path), else float64."""
    if type(sample_weight).__module__.startswith("torch"):
        sample_weight = sample_weight.detach().cpu().numpy()
    try:
        w = np.asarray(sample_weight)
    except (TypeError, ValueError) as exc:
        raise DTypeError(f"sample_weight: cannot turn it into an array ({exc})") from None
    if w.dtype.kind not in "buif":
        raise DTypeError(f"sample_weight: expected numbers, got dtype {w.dtype}")
    if w.ndim == 0:
        w = np.full(n_samples, w)
    if w.shape != (n_samples,):
        raise ShapeError(
            f"sample_weight has shape {w.shape}; expected one weight per sample, ({n_samples},)"
        )
    if w.dtype.kind == "f" and not np.isfinite(w).all():
        raise NonFiniteError("sample_weight holds NaN or inf; weights must be finite numbers ≥ 0")
    if (w < 0).any():
        raise NormlabError(
            f"sample_weight holds negative values (the first at sample {int(np.argmax(w < 0))}); "
            "weights must be ≥ 0"
        )
    if w.dtype.kind in "bui":
        if w.dtype == np.uint64 and w.size and int(w.max()) > INT64_LIMIT:
            raise NormlabError("sample_weight holds values beyond int64; pass them as floats")
        return w.astype(np.int64)
    w = w.astype(np.float64)
    whole = bool(np.all(w == np.floor(w))) and float(w.max(initial=0)) < FLOAT64_EXACT
    return w.astype(np.int64) if whole else w


def repeat_by_weight(X: Any, sample_weight: Any, what: str) -> np.ndarray:
    """Whole-number weights as copies of the samples, for statistics without a weighted form.

    Frequency weights mean exactly that; fractional weights have no such reading and are
    refused, naming ``what`` needs them whole.
    """
    arr = as_batch(X, "X")
    weights = check_sample_weight(sample_weight, arr.shape[0])
    if weights.dtype.kind == "f":
        raise NormlabError(
            f"{what} takes whole-number sample weights only (as copies of the samples); got "
            "fractional ones: round them, or use a per-feature scheme, which takes any weight"
        )
    return np.repeat(arr, weights, axis=0)


class Extrema:
    """Min, max, and the numbers of non-zero and of non-finite values, per reduced element.

    ``min``/``max`` start at ``+inf``/``-inf`` (no value seen); NaN never enters them.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.min = np.full(shape, np.inf)
        self.max = np.full(shape, -np.inf)
        self.n_nonzero = np.zeros(shape, np.int64)
        self.n_nonfinite = np.zeros(shape, np.int64)

    def add(self, low: np.ndarray, high: np.ndarray, n_nonzero: np.ndarray) -> None:
        """Take in the extrema and non-zero count of new values."""
        self.min = np.fmin(self.min, low)
        self.max = np.fmax(self.max, high)
        self.n_nonzero += n_nonzero

    def __iadd__(self, other: Extrema) -> Self:
        self.min = np.fmin(self.min, other.min)
        self.max = np.fmax(self.max, other.max)
        self.n_nonzero = self.n_nonzero + other.n_nonzero
        self.n_nonfinite = self.n_nonfinite + other.n_nonfinite
        return self

    def reduce(self, group_of: Any, reduced: tuple[int, ...]) -> Extrema:
        """Coarser extrema: each row of ``group_of(a)`` becomes one element."""
        out = Extrema(reduced)
        out.min = np.fmin.reduce(group_of(self.min), axis=1).reshape(reduced)
        out.max = np.fmax.reduce(group_of(self.max), axis=1).reshape(reduced)
        out.n_nonzero = group_of(self.n_nonzero).sum(axis=1).reshape(reduced)
        out.n_nonfinite = group_of(self.n_nonfinite).sum(axis=1).reshape(reduced)
        return out

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {
            "min": self.min,
            "max": self.max,
            "n_nonzero": self.n_nonzero,
            "n_nonfinite": self.n_nonfinite,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], shape: tuple[int, ...]) -> Extrema:
        from .io import field

        out = cls(shape)
        out.min = field(tensors, "min", np.float64, shape)
        out.max = field(tensors, "max", np.float64, shape)
        out.n_nonzero = field(tensors, "n_nonzero", np.int64, shape)
        out.n_nonfinite = field(tensors, "n_nonfinite", np.int64, shape)
        return out

    __deepcopy__ = copy_flat


class Statistic:
    """What every mergeable statistic shares (``Moments``, ``CoMoments``, ...).

    ``a + b`` is a copy of ``a`` merged with ``b`` (``+=``); two statistics are equal when
    their saved forms — metadata and tensors — are equal, bit for bit.
    """

    def __add__(self, other: Self) -> Self:
        out = copy.deepcopy(self)
        out += other
        return out

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata of the saved form (each statistic defines its own)."""
        raise NotImplementedError

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The arrays of the saved form (each statistic defines its own)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Statistic):
            return NotImplemented
        mine, theirs = self.to_tensors(), other.to_tensors()
        return (
            self.metadata() == other.metadata()
            and mine.keys() == theirs.keys()
            and all(np.array_equal(mine[k], theirs[k], equal_nan=True) for k in mine)
        )

    # unhashable: mutable and compared by value (typeshed types __hash__ as a method)
    __hash__ = None  # type: ignore[assignment]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically to a safetensors file with JSON metadata (never pickle)."""
        from .io import save_object

        save_object(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Load a file saved by :meth:`save`; a file of another class is an error."""
        from .io import load_as

        return load_as(path, cls, cls._wrong_class_hint)

    @staticmethod
    def _wrong_class_hint(obj: Any) -> str:
        return ""


@register
class Moments(Statistic):
    """Exact streaming statistics per feature, per channel or over all values.

    Parameters
    ----------
    axis : {"feature", "channel", "global"}
        ``feature``: one statistic per element of the sample shape (per pixel for images).
        ``channel``: one per channel (the ``C`` of ``layout``; default: the last dim).
        ``global``: one over every value.
    layout : str or Layout, optional
        Dimension letters of the samples, ``C`` for channels, an optional leading ``N`` for the
        batch: ``"HWC"``, ``"CHW"``, ``"NCHW"``. Default: channels last. See
        :mod:`normlab.layout`.
    channel_axis : int, optional
        Deprecated: ``0`` means ``layout="CHW"``, ``-1`` channels last.
    nan_policy : {"raise", "omit"}
        ``raise`` stops at the first batch with NaN/inf; ``omit`` leaves them out per
        element (counts become per element).

    Examples
    --------
    >>> import numpy as np, normlab
    >>> x = np.arange(12, dtype=np.uint8).reshape(4, 3)
    >>> m = normlab.Moments("feature").update(x[:2])
    >>> m += normlab.Moments("feature").update(x[2:])
    >>> m.mean
    array([4.5, 5.5, 6.5])
    >>> m.var()
    array([11.25, 11.25, 11.25])
    >>> m.reduce("global").mean
    array(5.5)
    """

    def __init__(
        self,
        axis: Axis = "feature",
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
        nan_policy: str = "raise",
    ) -> None:
        self.layout: Layout = Layout.parse(axis, layout=layout, channel_axis=channel_axis)
        if nan_policy not in NAN_POLICIES:
            raise NormlabError(f"nan_policy must be 'raise' or 'omit'; got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.sample_shape: tuple[int, ...] | None = None
        self.value_scale: dict[str, Any] | None = None
        self.exact: bool | None = None  # integer (exact) or float representation
        self.n_samples_seen = 0
        # how the counts relate to n_samples_seen (checked when a file is loaded): every sample
        # gives each statistic the same number of values, unless weights or samples of several
        # shapes (per-channel and global statistics take them) came in
        self.weighted = False
        self.mixed_shapes = False
        # names of the sample's features (flat order; table columns), None when unnamed
        self.feature_names: list[str] | None = None
        # both None until the first values arrive, then both set
        self._sums: ExactMoments | ShiftedMoments | None = None
        self._extrema: Extrema | None = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def sums(self) -> ExactMoments | ShiftedMoments | None:
        """The running sums: exact integers or shifted floats (None before any value)."""
        return self._sums

    @property
    def extrema(self) -> Extrema | None:
        """Min, max, non-zero and non-finite counts (None before any value)."""
        return self._extrema

    # ------------------------------------------------------------------ layout
    @property
    def reduced_shape(self) -> tuple[int, ...]:
        """Shape of every statistic: the sample shape, ``(C,)`` or ``()``."""
        if self._sums is None:
            raise EmptyDataError("no data has been seen yet")
        return self._sums.count.shape

    @property
    def axis(self) -> Axis:
        """The granularity: ``"feature"``, ``"channel"`` or ``"global"``."""
        return self.layout.granularity

    @property
    def channel_axis(self) -> int:
        """Position of the channels in the sample shape (see :attr:`layout`)."""
        return self.layout.channel_axis

    # ------------------------------------------------------------------ update
    def update(self, batch: Any, sample_weight: Any = None) -> Moments:
        """Add a batch of shape ``(n_samples, *sample_shape)``; returns ``self``.

        ``sample_weight`` (one number ≥ 0 per sample, or one for all) weighs each sample as
        that many copies of it: ``count`` becomes the sum of the weights, and the mean and
        variance are weighted ones (``StandardScaler``'s convention). Whole-number weights
        keep integer data on the exact path (same bits for any chunking); fractional
        weights switch the statistics to the float64 representation. Samples of weight 0
        are left out entirely (also of ``min``/``max``); ``n_nonzero`` counts values, not
        weights.
        """
        if isinstance(batch, ColumnBatch) and self._takes_columns(batch, sample_weight):
            return self._update_columns(batch)
        arr = as_batch(batch)
        if not -(arr.ndim - 1) <= self.channel_axis < arr.ndim - 1:
            raise ShapeError(
                f"channel_axis={self.channel_axis} is out of range for samples of shape "
                f"{arr.shape[1:]} ({arr.ndim - 1} dims)"
            )
        weights = None if sample_weight is None else check_sample_weight(sample_weight, len(arr))
        if weights is not None:
            arr, weights = arr[weights > 0], weights[weights > 0]
        sample = tuple(arr.shape[1:])
        self._check_batch(arr, sample)
        if arr.shape[0] == 0 or math.prod(sample) == 0:
            return self
        if weights is not None:
            self.weighted = True
            self._update_weighted(arr, weights)
        elif self.exact:
            self._update_exact(exact_dtype(arr))
        else:  # integer data reach the float representation only after fractional weights
            self._update_float(arr if arr.dtype.kind == "f" else arr.astype(np.float64))
        self.n_samples_seen += arr.shape[0]
        self._cache.clear()
        return self

    def _check_batch(self, arr: np.ndarray, sample: tuple[int, ...]) -> None:
        scale = value_scale_of(arr.dtype)
        if self.value_scale is None or self._sums is None:
            doubt = self.layout.doubtful_channels(sample)
            self.layout = self.layout.bind(sample)
            if doubt is not None:
                warn(doubt)
            self.value_scale = scale
            self.exact = arr.dtype.kind in "bui"
            self.sample_shape = sample
            return
        if scale != self.value_scale:
            raise MergeError(
                f"batch of dtype {arr.dtype} (value scale {_scale_str(scale)}) does not match "
                f"the earlier data (value scale {_scale_str(self.value_scale)})"
            )
        assert self.sample_shape is not None
        if self.axis == "feature" and sample != self.sample_shape:
            raise ShapeError(
                f"sample shape {sample} does not match the earlier samples' "
                f"{self.sample_shape} (sample {self.n_samples_seen}); per-feature statistics "
                "need one shape"
            )
        if self.axis == "channel":
            if len(sample) != len(self.sample_shape):
                raise ShapeError(
                    f"samples of shape {sample} after samples of shape {self.sample_shape}"
                )
            if self.layout.reduced_shape(sample) != self.reduced_shape:
                raise ShapeError(
                    f"{self.layout.reduced_shape(sample)[0]} channels in sample shape {sample}, "
                    f"expected {self.reduced_shape[0]} as in {self.sample_shape}"
                )
        if sample != self.sample_shape:  # per-channel and global statistics take them
            self.mixed_shapes = True
        self.sample_shape = sample if self.axis == "feature" else self.sample_shape

    def _state(
        self, arr: np.ndarray | ColumnBatch
    ) -> tuple[ExactMoments | ShiftedMoments, Extrema]:
        """The sums and extrema, made on the first values (of the representation ``exact``)."""
        if self._sums is None or self._extrema is None:
            reduced = self.layout.reduced_shape(arr.shape[1:])
            self._sums = ExactMoments(reduced) if self.exact else ShiftedMoments(reduced)
            self._extrema = Extrema(reduced)
        return self._sums, self._extrema

    def _update_exact(self, arr: np.ndarray) -> None:
        acb = self.layout.kernel_view(arr)
        sums, extrema = self._state(arr)
        assert isinstance(sums, ExactMoments)
        extrema.add(*sums.update(acb, load_kernels()))

    def _takes_columns(self, batch: ColumnBatch, sample_weight: Any) -> bool:
        """Whether a batch of columns held apart is read where it lies: unweighted float
        columns, one statistic per column."""
        return (
            sample_weight is None
            and batch.dtype.kind == "f"
            and self.layout.granularity == "feature"
            and -1 <= self.channel_axis < 1
        )

    def _update_columns(self, batch: ColumnBatch) -> Self:
        """:meth:`update` with a table's columns, each read where the reader decoded it."""
        head = batch.head()
        self._check_batch(head, head.shape[1:])
        if len(batch) == 0 or batch.shape[1] == 0:
            return self
        assert not self.exact  # float data; integers reach the float sums only with weights
        part = load_kernels().reduce_float_columns(batch.columns)  # see kernels.py
        self._add_float(part, batch)
        self.n_samples_seen += len(batch)
        self._cache.clear()
        return self

    def _update_float(self, arr: np.ndarray) -> None:
        part = load_kernels().reduce_float(self.layout.kernel_view(arr))  # see kernels.py
        self._add_float(part, arr)

    def _add_float(self, part: Any, batch: np.ndarray | ColumnBatch) -> None:
        """Add one batch's float kernel result (blocks, shifts, merge) to the sums."""
        sums, extrema = self._state(batch)
        assert isinstance(sums, ShiftedMoments)
        if part.n_overflow.any():
            raise FloatOverflowError(self._overflow_message(part))
        n_bad = int(part.n_nonfinite.sum())
        if n_bad and self.nan_policy == "raise":
            raise NonFiniteError(self._nonfinite_message(as_batch(batch), n_bad))
        shape = sums.count.shape
        sums.add(
            part.n_finite.reshape(shape),
            part.shift.reshape(shape),
            part.mean_shifted.reshape(shape),
            part.m2.reshape(shape),
        )
        extrema.add(part.min.reshape(shape), part.max.reshape(shape), part.n_nonzero.reshape(shape))
        extrema.n_nonfinite += part.n_nonfinite.reshape(shape)

    def _overflow_message(self, part: Any) -> str:
        where = np.unravel_index(int(np.argmax(part.n_overflow)), self.reduced_shape)
        largest = float(np.nanmax(np.maximum(np.abs(part.min), np.abs(part.max))))
        return overflow_message(tuple(int(i) for i in where), largest, self.axis)

    # ------------------------------------------------------------------ weights
    def _update_weighted(self, arr: np.ndarray, weights: np.ndarray) -> None:
        if weights.dtype.kind == "f" and self.exact:
            if self._sums is None:
                self.exact = False  # the first batch: start in the float representation
            else:
                self._to_float()
        if self.exact:
            self._update_exact_weighted(exact_dtype(arr), weights)
        else:
            self._update_float_weighted(arr, weights)

    def _update_exact_weighted(self, arr: np.ndarray, weights: np.ndarray) -> None:
        acb = self.layout.kernel_view(arr)
        sums, extrema = self._state(arr)
        assert isinstance(sums, ExactMoments)
        shape = sums.count.shape
        sums.update_weighted(acb, np.repeat(weights, acb.shape[0] // arr.shape[0]))
        extrema.add(
            acb.min(axis=(0, 2)).reshape(shape),
            acb.max(axis=(0, 2)).reshape(shape),
            np.count_nonzero(acb, axis=(0, 2)).reshape(shape),
        )

    def _update_float_weighted(self, arr: np.ndarray, weights: np.ndarray) -> None:
        acb = self.layout.kernel_view(arr)
        sums, extrema = self._state(arr)
        assert isinstance(sums, ShiftedMoments)
        shape = sums.count.shape
        rows = np.moveaxis(acb, 1, 2).reshape(-1, acb.shape[1]).astype(np.float64)  # (A·B, C)
        finite = np.isfinite(rows)
        n_bad = rows.size - int(np.count_nonzero(finite))
        if n_bad and self.nan_policy == "raise":
            raise NonFiniteError(self._nonfinite_message(arr, n_bad))
        per_row = np.repeat(weights, rows.shape[0] // arr.shape[0])  # rows are sample-major
        mn, mx = sums.update_weighted(rows, finite, per_row)
        extrema.add(
            mn.reshape(shape),
            mx.reshape(shape),
            np.count_nonzero(finite & (rows != 0), axis=0).reshape(shape),
        )
        extrema.n_nonfinite += (~finite).sum(axis=0).reshape(shape)

    def _to_float(self) -> None:
        """Integer sums → the float64 representation (fractional weights have arrived)."""
        assert isinstance(self._sums, ExactMoments)
        self._sums = self._sums.to_shifted()
        self.exact = False
        self._cache.clear()

    def _nonfinite_message(self, arr: np.ndarray, n_bad: int) -> str:
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1))
        row = int(np.argmax(bad.any(axis=1)))
        where = np.unravel_index(int(np.argmax(bad[row])), arr.shape[1:])
        return (
            f"{n_bad} non-finite value(s) (NaN/inf) in the data; the first in sample "
            f"{self.n_samples_seen + row} at index {tuple(int(i) for i in where)}. "
            "Clean the data or use nan_policy='omit' to leave them out"
        )

    # ------------------------------------------------------------------ merge
    def _check_mergeable(self, other: Moments) -> None:
        if not isinstance(other, Moments):
            raise MergeError(f"cannot merge Moments with {type(other).__name__}")
        if self.axis != other.axis or self.nan_policy != other.nan_policy:
            raise MergeError(
                f"cannot merge Moments(axis={self.axis!r}, nan_policy={self.nan_policy!r}) "
                f"with Moments(axis={other.axis!r}, nan_policy={other.nan_policy!r})"
            )
        check_same_names(self.feature_names, other.feature_names)
        # layouts declared in full (``layout="CHW"``) must agree even on an empty side
        self.layout.check_mergeable(other.layout, _samples_str(self), _samples_str(other))
        if self._sums is None or other._sums is None:
            return
        if self.value_scale != other.value_scale:
            raise MergeError(
                f"cannot merge statistics of value scale {_scale_str(self.value_scale)} with "
                f"{_scale_str(other.value_scale)}"
            )
        if self.reduced_shape != other.reduced_shape or (
            self.axis == "feature" and self.sample_shape != other.sample_shape
        ):
            raise MergeError(
                f"cannot merge statistics of samples {self.sample_shape} (reduced "
                f"{self.reduced_shape}) with {other.sample_shape} (reduced {other.reduced_shape})"
            )

    def __iadd__(self, other: Moments) -> Moments:
        self._check_mergeable(other)
        names = self.feature_names or other.feature_names  # unnamed takes the other's names
        self.feature_names = names
        if other._sums is None:
            return self
        if self._sums is None:
            self.__dict__.update(copy.deepcopy(other).__dict__)
            self.feature_names = names
            return self
        if self.exact and not other.exact:  # fractional weights on one side: merge as floats
            self._to_float()
        elif other.exact and not self.exact:
            other = copy.deepcopy(other)
            other._to_float()
        assert self._sums is not None and self._extrema is not None
        assert other._sums is not None and other._extrema is not None
        self._sums.merge(other._sums)
        self._extrema += other._extrema
        if self.axis == "global" and self.layout != other.layout:
            # a global statistic does not depend on where the channels are: keep one of the
            # two layouts whichever side came first, so that a + b == b + a
            self.layout = min(self.layout, other.layout, key=_layout_order)
        self.n_samples_seen += other.n_samples_seen
        self.weighted = self.weighted or other.weighted
        self.mixed_shapes = (
            self.mixed_shapes or other.mixed_shapes or self.sample_shape != other.sample_shape
        )
        self._cache.clear()
        return self

    __deepcopy__ = copy_flat

    # ------------------------------------------------------------------ results
    def _require(self) -> tuple[ExactMoments | ShiftedMoments, Extrema]:
        if self._sums is None or self._extrema is None:
            raise EmptyDataError("no samples seen: statistics of empty data are undefined")
        if not self._sums.count.any():
            raise EmptyDataError(
                f"no values: every one of the {int(self._extrema.n_nonfinite.sum())} values of "
                f"the {self.n_samples_seen} samples was NaN/inf (left out under "
                "nan_policy='omit'); statistics of no values are undefined"
                if self.n_samples_seen
                else "no samples seen: statistics of empty data are undefined"
            )
        return self._sums, self._extrema

    def exact_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Σx, Σx²)`` per reduced element as Python ints (integer data only)."""
        sums, _ = self._require()
        if not isinstance(sums, ExactMoments):
            raise NormlabError(
                "exact sums exist for integer data (without fractional weights) only"
            )
        return sums.sums()

    @property
    def count(self) -> np.ndarray:
        """Number of values behind each statistic (per element; differs only under ``omit``).

        With ``sample_weight``: the sum of the weights of those values (float64 once a
        fractional weight was seen).
        """
        sums, _ = self._require()
        return sums.count.copy()

    @property
    def mean(self) -> np.ndarray:
        """Mean per reduced element, float64, correctly rounded for integer data."""
        sums, _ = self._require()
        if "mean" not in self._cache:
            with np.errstate(invalid="ignore", divide="ignore"):
                self._cache["mean"] = np.asarray(sums.mean(), dtype=np.float64)
        return self._cache["mean"].copy()

    def var(self, ddof: int = 0) -> np.ndarray:
        """Variance per reduced element (population by default, as ``StandardScaler``)."""
        from .validate import integer

        ddof = integer("ddof", ddof, minimum=0)
        sums, _ = self._require()
        self._check_ddof(sums.count, ddof)
        key = f"var{ddof}"
        if key not in self._cache:
            with np.errstate(over="ignore"):  # M2 / (n − ddof) with a weight sum below 1
                var = np.asarray(sums.var(ddof), dtype=np.float64)
            _, extrema = self._require()
            magnitude = np.fmax(np.abs(extrema.min), np.abs(extrema.max))
            check_finite_sums(np.asarray(sums.count) > 0, magnitude, var, axis=self.axis)
            self._cache[key] = var
        return self._cache[key].copy()

    def _check_ddof(self, count: np.ndarray, ddof: int) -> None:
        """``ddof`` must leave at least one degree of freedom wherever values were seen."""
        short = (count > 0) & (count <= ddof)
        if not short.any():
            return
        flat = int(np.argmax(short.reshape(-1)))
        where = tuple(int(i) for i in np.unravel_index(flat, short.shape))
        have = count.reshape(-1)[flat]
        have_text = f"{int(have)}" if float(have) == int(have) else f"{float(have):g}"
        element = (
            f"feature {where}"
            if self.axis == "feature"
            else f"channel {where[0]}"
            if self.axis == "channel"
            else "the global statistic"
        )
        raise NormlabError(
            f"ddof={ddof} needs more than {ddof} values per statistic, but {element} has only "
            f"{have_text} (from {self.n_samples_seen} samples; "
            f"{int(np.count_nonzero(short))} statistic(s) short): the variance would divide by "
            f"{have_text} - {ddof} ≤ 0. Use a smaller ddof (0: population, 1: sample variance) "
            "or more data"
        )

    def std(self, ddof: int = 0) -> np.ndarray:
        """Standard deviation per reduced element."""
        return np.sqrt(self.var(ddof))

    @property
    def min(self) -> np.ndarray:
        sums, extrema = self._require()
        return np.where(sums.count > 0, extrema.min, np.nan)

    @property
    def max(self) -> np.ndarray:
        sums, extrema = self._require()
        return np.where(sums.count > 0, extrema.max, np.nan)

    @property
    def n_nonzero(self) -> np.ndarray:
        """Number of non-zero (finite) values per reduced element."""
        _, extrema = self._require()
        return extrema.n_nonzero.copy()

    @property
    def n_nonfinite(self) -> np.ndarray:
        """Number of NaN/inf values left out per reduced element (``nan_policy="omit"``)."""
        _, extrema = self._require()
        return extrema.n_nonfinite.copy()

    def no_values(self) -> np.ndarray:
        """Elements that saw no value at all (every one NaN/inf, left out under
        ``nan_policy="omit"``): their mean, std, min and max are NaN, and no normalizer can
        be fitted for them (see :meth:`require_values`)."""
        sums, _ = self._require()
        empty: np.ndarray = np.asarray(sums.count) == 0
        return empty

    def require_values(self, purpose: str) -> None:
        """Raise :class:`NormlabError` naming the elements that saw no value, if any.

        ``purpose`` says what needs them (``"fitting ZScore"``): an element without values
        has no mean, spread or range, so nothing may be made up for it.
        """
        empty = self.no_values()
        if not empty.any():
            return
        idx = np.flatnonzero(empty.reshape(-1))
        shape = empty.shape
        names = self.feature_names if self.axis == "feature" else None
        places = [
            names[i]
            if names is not None
            else str(tuple(int(j) for j in np.unravel_index(i, shape)))
            for i in idx[:8]
        ]
        what = {"feature": "feature", "channel": "channel", "global": "statistic"}[self.axis]
        omitted = int(self.n_nonfinite.reshape(-1)[idx[0]])
        raise NormlabError(
            f"{purpose}: {idx.size} of {empty.size} {what}(s) have no values "
            f"({', '.join(places)}{', ...' if idx.size > 8 else ''}): every value there was "
            f"NaN/inf, left out under nan_policy='omit' ({omitted} at the first). Drop "
            f"those {what}s, fill them, or compute statistics of data that has values there"
        )

    def is_constant(self) -> np.ndarray:
        """Elements whose values are all equal (exact: ``min == max``)."""
        sums, extrema = self._require()
        constant: np.ndarray = (sums.count > 0) & (extrema.min == extrema.max)
        return constant

    # ------------------------------------------------------------------ coarsening
    def reduce(
        self,
        axis: Axis,
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
    ) -> Moments:
        """Coarsen exactly: per-feature → per-channel → global, with no pass over the data.

        ``layout`` (default: this one's) says where the channels are for per-feature
        statistics reduced to per-channel ones.
        """
        check_granularity(axis)
        if layout is None and channel_axis is None:
            target = Layout(axis, self.layout.channel, self.layout.sample_ndim)
        else:
            target = Layout.parse(axis, layout=layout, channel_axis=channel_axis)
        if target.rank < self.layout.rank:
            raise NormlabError(f"cannot refine {self.axis!r} statistics into {axis!r} ones")
        sums, extrema = self._require()
        assert self.sample_shape is not None
        target = target.bind(self.sample_shape)
        out = copy.deepcopy(self)
        if axis == self.axis:
            if axis == "channel" and not self.layout.same_channels(target):
                raise NormlabError(
                    f"these per-channel statistics were kept over {self.layout.letters} samples "
                    f"{self.sample_shape}; they cannot be re-laid as {target.letters}: compute "
                    "per-feature statistics (axis='feature') to choose the channel axis later"
                )
            return out
        out.layout = target
        acb_shape = target.group_shape(self.sample_shape)

        def group_of(a: np.ndarray) -> np.ndarray:
            """One row per statistic of the target, its source statistics along the row."""
            if self.axis == "channel":  # channel -> global: everything in one group
                return a.reshape(1, -1)
            return np.moveaxis(a.reshape(acb_shape[0], acb_shape[1], acb_shape[2]), 1, 0).reshape(
                acb_shape[1], -1
            )

        reduced = group_of(sums.count).shape[:1] if axis == "channel" else ()
        out._sums = sums.reduce(group_of, reduced)
        out._extrema = extrema.reduce(group_of, reduced)
        out._cache = {}
        return out

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "class": "Moments",
            "axis": self.axis,
            "channel_axis": self.channel_axis,
            "nan_policy": self.nan_policy,
            "sample_shape": list(self.sample_shape) if self.sample_shape is not None else None,
            "value_scale": self.value_scale,
            "exact": self.exact,
            "n_samples_seen": self.n_samples_seen,
            "ddof": 0,
        }
        if self.feature_names is not None:  # files without names stay as they were
            meta["feature_names"] = list(self.feature_names)
        for flag in FLAGS:  # saved when set: a file without them is
            if getattr(self, flag):  # checked strictly (count = samples x values per sample)
                meta[flag] = True
        return meta

    def to_tensors(self) -> dict[str, np.ndarray]:
        if self._sums is None or self._extrema is None:
            return {}
        out = {"count": self._sums.count, **self._extrema.to_tensors(), **self._sums.to_tensors()}
        return {k: np.array(v, order="C") for k, v in out.items()}  # keeps 0-d shapes

    @classmethod
    def from_tensors(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> Moments:
        from .io import field

        _check_loaded_meta(meta)
        m = cls(meta["axis"], nan_policy=meta["nan_policy"])
        m.sample_shape = tuple(meta["sample_shape"]) if meta["sample_shape"] is not None else None
        try:
            m.layout = Layout.from_saved(meta["axis"], meta["channel_axis"], m.sample_shape)
        except NormlabError as exc:
            raise FileFormatError(f"invalid statistics layout: {exc}") from None
        m.value_scale = meta["value_scale"]
        m.exact = meta["exact"]
        m.n_samples_seen = int(meta["n_samples_seen"])
        m.weighted = meta.get("weighted", False)
        m.mixed_shapes = meta.get("mixed_shapes", False)
        try:
            m.feature_names = check_feature_names(meta.get("feature_names"), m.sample_shape)
        except NormlabError as exc:
            raise FileFormatError(f"invalid statistics metadata: {exc}") from None
        if not tensors:
            if m.n_samples_seen:
                raise FileFormatError(
                    f"n_samples_seen={m.n_samples_seen} but no statistics in the file"
                )
            return m
        weighted = not m.exact and getattr(tensors.get("count"), "dtype", None) == np.float64
        count = field(tensors, "count", np.float64 if weighted else np.int64)  # Σ weights
        shape = count.shape
        if m.sample_shape is None or m.layout.reduced_shape(m.sample_shape) != shape:
            raise FileFormatError(
                f"statistics of shape {shape} do not fit samples of shape {m.sample_shape} "
                f"with axis={m.axis!r}"
            )
        m._extrema = Extrema.from_tensors(tensors, shape)
        m._sums = (
            ExactMoments.from_tensors(tensors, count)
            if m.exact
            else ShiftedMoments.from_tensors(tensors, count)
        )
        lowest = min(
            count.min(initial=0),
            m._extrema.n_nonzero.min(initial=0),
            m._extrema.n_nonfinite.min(initial=0),
        )
        if lowest < 0:
            raise FileFormatError("negative counts in the statistics")
        from .invariants import check_moments

        check_moments(m)
        return m

    @classmethod
    def from_array(
        cls,
        x: Any,
        axis: Axis = "feature",
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
        nan_policy: str = "raise",
    ) -> Moments:
        """Statistics of one array ``(n_samples, *sample_shape)``."""
        return cls(axis, layout=layout, channel_axis=channel_axis, nan_policy=nan_policy).update(x)

    def summary(self) -> dict[str, Any]:
        """Plain numbers for printing."""
        std = self.std()
        return {
            "axis": self.axis,
            "samples": self.n_samples_seen,
            "reduced_shape": list(self.reduced_shape),
            "value_scale": self.value_scale,
            "mean_range": [float(np.nanmin(self.mean)), float(np.nanmax(self.mean))],
            "std_range": [float(np.nanmin(std)), float(np.nanmax(std))],
            "min": float(np.nanmin(self.min)),
            "max": float(np.nanmax(self.max)),
            "constant": int(self.is_constant().sum()),
            "no_values": int(self.no_values().sum()),
            "nonfinite_omitted": int(self.n_nonfinite.sum()),
        }

    def __repr__(self) -> str:
        if self._sums is None:
            return f"Moments(axis={self.axis!r}, empty)"
        from .display import numpy_text

        head = (
            f"Moments(axis={self.axis!r}, samples={self.n_samples_seen}, "
            f"reduced_shape={self.reduced_shape}, value_scale={_scale_str(self.value_scale)})"
        )
        values = {"mean": self.mean, "std": self.std(), "min": self.min, "max": self.max}
        return "\n".join([head, *(f"  {k:<4} = {numpy_text(v)}" for k, v in values.items())])


def _samples_str(m: Moments) -> str:
    return f" (samples {m.sample_shape})" if m.sample_shape is not None else ""


def _layout_order(layout: Layout) -> tuple[bool, int]:
    return layout.channel is None, layout.channel or 0


def check_feature_names(names: Any, sample_shape: tuple[int, ...] | None) -> list[str] | None:
    """Feature names as a list of strings, one per feature of ``sample_shape`` (flat order)."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise NormlabError(f"feature_names must be a list of strings; got {names!r}")
    names = list(names)
    if sample_shape is not None and len(names) != math.prod(sample_shape):
        raise NormlabError(
            f"{len(names)} feature_names for samples of shape {sample_shape} "
            f"({math.prod(sample_shape)} features); give one name per feature"
        )
    return names


def check_same_names(mine: list[str] | None, theirs: list[str] | None) -> None:
    """Statistics of differently named features never merge (unnamed ones take the names)."""
    if mine is not None and theirs is not None and list(mine) != list(theirs):
        raise MergeError(
            f"cannot merge statistics of features {_names_str(mine)} with statistics of "
            f"features {_names_str(theirs)}: the columns differ (name or order); select the "
            "same columns in the same order"
        )


def _names_str(names: list[str]) -> str:
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return f"[{shown}]"


_SCALES = [
    value_scale_of(d)
    for d in (
        "bool",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float64",
    )
]


FLAGS = ("weighted", "mixed_shapes")  # optional metadata: true when set


def _check_loaded_meta(meta: dict[str, Any]) -> None:
    """Types and consistency of a stats file's metadata, before anything is built from it."""

    def count_like(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    shape = meta["sample_shape"]
    problems = [
        (
            not isinstance(meta["channel_axis"], int) or isinstance(meta["channel_axis"], bool),
            "channel_axis",
        ),
        (
            shape is not None and not (isinstance(shape, list) and all(map(count_like, shape))),
            "sample_shape",
        ),
        (meta["value_scale"] is not None and meta["value_scale"] not in _SCALES, "value_scale"),
        (
            not count_like(meta["n_samples_seen"]) or meta["n_samples_seen"] > INT64_LIMIT,
            "n_samples_seen",
        ),
        *((not isinstance(meta.get(flag, False), bool), flag) for flag in FLAGS),
    ]
    scale = meta["value_scale"]
    if meta["exact"] is not None or scale is not None:
        exact_ok = isinstance(meta["exact"], bool) and scale is not None and scale in _SCALES
        # integer data may sit in the float representation (fractional weights), not the reverse
        problems.append((not exact_ok or (meta["exact"] and scale["max_value"] is None), "exact"))
    bad = [name for wrong, name in problems if wrong]
    if bad:
        raise FileFormatError(
            f"invalid statistics metadata: {', '.join(f'{k}={meta[k]!r}' for k in bad)}"
        )


def _scale_str(scale: dict[str, Any] | None) -> str:
    if not scale:
        return "unknown"
    if scale["max_value"] is None:
        return "float (as given)"
    return f"{scale['dtype']} {scale['min_value']}..{scale['max_value']}"
