"""Exact, streaming, mergeable first and second moments (plus min, max, counts).

One class, :class:`Moments`, in the style of ``river.stats``: ``update`` a batch, merge
with ``+=`` (Chan et al.), read ``mean``/``var()``/``std()``.

Two internal representations, chosen by the data's dtype:

* **integer data** (bool, uint8/16, int8/16/32): exact integer sums ``S1 = Σx`` and
  ``S2 = Σx²`` per reduced element. Hot sums live in int64 and are flushed into Python
  integers (object arrays) before they could overflow; ``mean = S1/n`` and
  ``var = (n·S2 − S1²)/n²`` are computed in exact integer arithmetic and rounded once
  (Python's ``int / int`` is correctly rounded). Any chunking, order or worker split gives
  the same bits.
* **float data**: float64 with a per-element shift ``K`` (the first value seen), a
  two-pass mean/M2 per chunk, and Chan's merge with ``δ = (K_b − K_a) + (m_b − m_a)``.
  Deterministic for a given chunk order.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Any, Self

import numpy as np
import numpy.typing as npt

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
from .io import register
from .layout import GRANULARITIES, Granularity, Layout, check_granularity


def load_kernels() -> Any:
    """The numba kernels module, imported on first use (``import normlab`` stays fast)."""
    from . import kernels

    return kernels


Axis = Granularity  # "feature", "channel" or "global"
AXES = GRANULARITIES
NAN_POLICIES = ("raise", "omit")
INT64_LIMIT = 2**63 - 1  # the largest int64: hot integer sums must stay below it
FLOAT64_EXACT = 2**53  # every integer up to this converts to float64 exactly


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


def _exact_dtype(arr: np.ndarray) -> np.ndarray:
    """Map integer input onto the dtypes of the exact path; wide ints must fit int32."""
    if arr.dtype.kind == "b":
        return arr.view(np.uint8)
    if arr.dtype.itemsize <= 2 or arr.dtype == np.int32:
        return arr
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise DTypeError(
            f"{arr.dtype} values outside the int32 range are not supported exactly; "
            "convert to float64 first"
        )
    return arr.astype(np.int32)


def _to_object(a: Any) -> np.ndarray:
    """Python-int (exact, unbounded) object array of the same shape."""
    if isinstance(a, np.ndarray) and a.dtype.kind in "iu":
        return a.astype(object)  # Python ints, element by element in C (no nested lists)
    if isinstance(a, np.ndarray) and a.dtype != object:
        a = a.tolist()
    return np.asarray(a, dtype=object)


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
        # names of the sample's features (flat order; table columns), None when unnamed
        self.feature_names: list[str] | None = None
        self._count: np.ndarray | None = None
        # integer representation: hot int64 sums + cold Python-int sums
        self._s1: np.ndarray | None = None
        self._s2: np.ndarray | None = None
        self._cold1: np.ndarray | None = None
        self._cold2: np.ndarray | None = None
        self._hot_count = 0
        # float representation
        self._shift: np.ndarray | None = None
        self._mean_shifted: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._nnz: np.ndarray | None = None
        self._nonfinite: np.ndarray | None = None
        self._cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ layout
    @property
    def reduced_shape(self) -> tuple[int, ...]:
        """Shape of every statistic: the sample shape, ``(C,)`` or ``()``."""
        if self._count is None:
            raise EmptyDataError("no data has been seen yet")
        return self._count.shape

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
            self._update_weighted(arr, weights)
        elif self.exact:
            self._update_exact(_exact_dtype(arr))
        else:  # integer data reach the float representation only after fractional weights
            self._update_float(arr if arr.dtype.kind == "f" else arr.astype(np.float64))
        self.n_samples_seen += arr.shape[0]
        self._cache.clear()
        return self

    def _check_batch(self, arr: np.ndarray, sample: tuple[int, ...]) -> None:
        scale = value_scale_of(arr.dtype)
        if self.value_scale is None or self._count is None:
            declared = self.layout.bound
            self.layout = self.layout.bind(sample)
            if self.axis == "channel" and not declared:
                ca = self.layout.channel_index(sample)
                if sample[ca] > 64:
                    warn(
                        f"axis='channel' with {sample[ca]} channels (the last dim of sample "
                        f"shape {sample}); is this really the channel axis? Gray images "
                        "(n, H, W) have none: use x[..., None]; say layout='NCHW' for "
                        "channels-first batches"
                    )
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
        self.sample_shape = sample if self.axis == "feature" else self.sample_shape

    def _init_state(self, reduced: tuple[int, ...]) -> None:
        self._count = np.zeros(reduced, np.int64)
        self._nnz = np.zeros(reduced, np.int64)
        self._nonfinite = np.zeros(reduced, np.int64)
        self._min = np.full(reduced, np.inf)
        self._max = np.full(reduced, -np.inf)
        if self.exact:
            self._s1 = np.zeros(reduced, np.int64)
            self._s2 = np.zeros(reduced, np.int64)
            self._cold1 = _to_object(np.zeros(reduced, np.int64))
            self._cold2 = _to_object(np.zeros(reduced, np.int64))
        else:
            self._shift = np.full(reduced, np.nan)
            self._mean_shifted = np.zeros(reduced)
            self._m2 = np.zeros(reduced)

    def _flush(self) -> None:
        """Move the hot int64 sums into the exact Python-int sums."""
        if self._hot_count:
            assert self._s1 is not None and self._s2 is not None
            self._cold1, self._cold2 = self._exact_sums()
            self._s1[...] = 0
            self._s2[...] = 0
            self._hot_count = 0

    def _update_exact(self, arr: np.ndarray) -> None:
        acb = self.layout.kernel_view(arr)
        if self._count is None:
            self._init_state(self.layout.reduced_shape(arr.shape[1:]))
        assert self._count is not None and self._nnz is not None
        assert self._min is not None and self._max is not None
        assert self._s1 is not None and self._s2 is not None
        per_element = acb.shape[0] * acb.shape[2]
        rest: _Extrema | None = None
        if arr.dtype.itemsize > 2:
            sums = _wide_int_sums(acb)
            self._cold1 = _to_object(self._cold1 + sums[0].reshape(self._count.shape))
            self._cold2 = _to_object(self._cold2 + sums[1].reshape(self._count.shape))
            rest = sums[2:]
        else:
            info = np.iinfo(arr.dtype)
            square = max(abs(int(info.min)), int(info.max)) ** 2
            limit = INT64_LIMIT // square  # values one int64 sum of squares can hold
            step = max(1, limit // max(1, acb.shape[2]))
            for start in range(0, acb.shape[0], step):
                part = acb[start : start + step]
                n_part = part.shape[0] * part.shape[2]
                if self._hot_count + n_part > limit:
                    self._flush()
                s1, s2, mn, mx, nz = load_kernels().reduce_integer(part)
                self._s1 += s1.reshape(self._count.shape)
                self._s2 += s2.reshape(self._count.shape)
                self._hot_count += n_part
                rest = _combine_extrema(rest, (mn, mx, nz))
        assert rest is not None  # the batch is not empty (checked in update)
        mn, mx, nz = (r.reshape(self._count.shape) for r in rest)
        self._min = np.minimum(self._min, mn)
        self._max = np.maximum(self._max, mx)
        self._nnz += nz
        self._count += per_element

    def _update_float(self, arr: np.ndarray) -> None:
        acb = self.layout.kernel_view(arr)
        if self._count is None:
            self._init_state(self.layout.reduced_shape(arr.shape[1:]))
        assert self._count is not None and self._shift is not None
        assert self._min is not None and self._max is not None
        assert self._nnz is not None and self._nonfinite is not None
        part = load_kernels().reduce_float(acb)  # blocks, shifts, merge: see kernels.py
        if part.n_overflow.any():
            raise FloatOverflowError(self._overflow_message(part))
        n_bad = int(part.n_nonfinite.sum())
        if n_bad and self.nan_policy == "raise":
            raise NonFiniteError(self._nonfinite_message(arr, n_bad))
        shape = self._count.shape
        shift_b = part.shift.reshape(shape)
        self._shift = np.where(np.isnan(self._shift), shift_b, self._shift)  # first value seen
        self._merge_float(
            part.n_finite.reshape(shape),
            shift_b,
            part.mean_shifted.reshape(shape),
            part.m2.reshape(shape),
        )
        self._min = np.fmin(self._min, part.min.reshape(shape))
        self._max = np.fmax(self._max, part.max.reshape(shape))
        self._nnz += part.n_nonzero.reshape(shape)
        self._nonfinite += part.n_nonfinite.reshape(shape)

    def _overflow_message(self, part: Any) -> str:
        assert self._count is not None
        where = np.unravel_index(int(np.argmax(part.n_overflow)), self._count.shape)
        largest = float(np.nanmax(np.maximum(np.abs(part.min), np.abs(part.max))))
        return (
            f"float64 sums overflow at statistic {tuple(int(i) for i in where)} (axis="
            f"{self.axis!r}): the values are finite (up to {largest:.3g}), not NaN/inf, but "
            "their squared deviations exceed the float64 range. Rescale the data first, "
            "e.g. x / 1e150"
        )

    def _merge_float(
        self, n_b: np.ndarray, shift_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray
    ) -> None:
        """Chan et al.'s merge, with both sides measured from their own shift."""
        assert self._count is not None and self._shift is not None
        assert self._mean_shifted is not None and self._m2 is not None
        n_a = self._count
        n = n_a + n_b
        safe = np.where(n > 0, n, 1)  # counts are sums of weights: they may lie below 1
        delta = np.where(n_b > 0, (shift_b - self._shift) + (mean_b - self._mean_shifted), 0.0)
        delta = np.where(n_a > 0, delta, 0.0)
        base = np.where(
            n_a > 0, self._mean_shifted, np.where(n_b > 0, mean_b + (shift_b - self._shift), 0.0)
        )
        self._mean_shifted = base + delta * (n_b / safe)
        self._m2 = self._m2 + m2_b + delta**2 * (n_a * (n_b / safe))
        self._count = n

    # ------------------------------------------------------------------ weights
    def _update_weighted(self, arr: np.ndarray, weights: np.ndarray) -> None:
        if weights.dtype.kind == "f" and self.exact:
            if self._count is None:
                self.exact = False  # the first batch: start in the float representation
            else:
                self._to_float()
        if self.exact:
            self._update_exact_weighted(_exact_dtype(arr), weights)
        else:
            self._update_float_weighted(arr, weights)

    def _update_exact_weighted(self, arr: np.ndarray, weights: np.ndarray) -> None:
        """Exact ``Σw·x`` and ``Σw·x²``: int64 where the bound allows, Python ints elsewhere."""
        acb = self.layout.kernel_view(arr)
        if self._count is None:
            self._init_state(self.layout.reduced_shape(arr.shape[1:]))
        assert self._count is not None and self._nnz is not None
        assert self._min is not None and self._max is not None
        shape = self._count.shape
        w = np.repeat(weights, acb.shape[0] // arr.shape[0])  # one weight per row of acb
        added = float(w.sum(dtype=np.float64)) * acb.shape[2]
        if float(self._count.max(initial=0)) + added >= 2.0**62:
            raise NormlabError(
                f"the sample weights sum to {added:.3g} values per statistic, beyond the exact "
                "integer counts (2**62); scale the weights down or pass them as floats"
            )
        if arr.dtype.itemsize <= 2:  # |x| ≤ 2**16: the per-row sums are exact in int64
            x = acb.astype(np.int64)
            r1, r2 = x.sum(axis=2), (x * x).sum(axis=2)
        else:  # 32-bit values: x² alone may take 62 bits
            x = acb.astype(object)
            r1, r2 = x.sum(axis=2), (x * x).sum(axis=2)
        # |r1| ≤ r2 for integers, so max(w)·Σ r2 < 2**62 keeps both dot products inside int64
        bound = float(w.max()) * float(r2.sum(axis=0).astype(np.float64).max(initial=0))
        if r2.dtype != object and bound < 2.0**62:
            s1, s2 = w @ r1, w @ r2
        else:
            w_obj = _to_object(w)
            s1, s2 = w_obj @ _to_object(r1), w_obj @ _to_object(r2)
        self._cold1 = _to_object(self._cold1 + _to_object(s1).reshape(shape))
        self._cold2 = _to_object(self._cold2 + _to_object(s2).reshape(shape))
        self._count += int(w.sum()) * acb.shape[2]
        self._min = np.minimum(self._min, acb.min(axis=(0, 2)).reshape(shape))
        self._max = np.maximum(self._max, acb.max(axis=(0, 2)).reshape(shape))
        self._nnz += np.count_nonzero(acb, axis=(0, 2)).reshape(shape)

    def _update_float_weighted(self, arr: np.ndarray, weights: np.ndarray) -> None:
        """Weighted shifted two-pass mean and M2 of the batch, merged with Chan's formula."""
        acb = self.layout.kernel_view(arr)
        if self._count is None:
            self._init_state(self.layout.reduced_shape(arr.shape[1:]))
        assert self._count is not None and self._shift is not None
        assert self._min is not None and self._max is not None
        assert self._nnz is not None and self._nonfinite is not None
        shape = self._count.shape
        rows = np.moveaxis(acb, 1, 2).reshape(-1, acb.shape[1]).astype(np.float64)  # (A·B, C)
        finite = np.isfinite(rows)
        n_bad = rows.size - int(np.count_nonzero(finite))
        if n_bad and self.nan_policy == "raise":
            raise NonFiniteError(self._nonfinite_message(arr, n_bad))
        per_row = np.repeat(weights, rows.shape[0] // arr.shape[0])  # rows are sample-major
        w = np.where(finite, per_row[:, None], 0)
        counts = w.sum(axis=0)
        first = np.argmax(finite, axis=0)
        k_new = np.where(finite.any(axis=0), rows[first, np.arange(rows.shape[1])], np.nan)
        shift = self._shift.reshape(-1)
        shift = np.where(np.isnan(shift), k_new, shift)  # first value seen per element
        y = np.where(finite, rows - shift, 0.0)
        mean_c = (w * y).sum(axis=0) / np.where(counts > 0, counts, 1)
        m2_c = (w * (y - mean_c) ** 2).sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            masked = np.where(finite, rows, np.nan)
            mn, mx = np.nanmin(masked, axis=0), np.nanmax(masked, axis=0)
        self._shift = shift.reshape(shape)
        self._merge_float(
            counts.reshape(shape), self._shift, mean_c.reshape(shape), m2_c.reshape(shape)
        )
        self._min = np.fmin(self._min, mn.reshape(shape))
        self._max = np.fmax(self._max, mx.reshape(shape))
        self._nnz += np.count_nonzero(finite & (rows != 0), axis=0).reshape(shape)
        self._nonfinite += (~finite).sum(axis=0).reshape(shape)

    def _to_float(self) -> None:
        """Integer sums → the float64 representation (fractional weights have arrived)."""
        count = self._count
        assert count is not None
        seen = count > 0
        with np.errstate(invalid="ignore"):
            mean, m2 = self.mean, self.var() * count
        self._shift = np.where(seen, mean, np.nan)
        self._mean_shifted = np.zeros(count.shape)
        self._m2 = np.where(seen, m2, 0.0)
        self._s1 = self._s2 = self._cold1 = self._cold2 = None
        self._hot_count = 0
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
        if self._count is None or other._count is None:
            return
        self.layout.check_mergeable(
            other.layout, f" (samples {self.sample_shape})", f" (samples {other.sample_shape})"
        )
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
        if other._count is None:
            return self
        if self._count is None:
            self.__dict__.update(copy.deepcopy(other).__dict__)
            self.feature_names = names
            return self
        if self.exact and not other.exact:  # fractional weights on one side: merge as floats
            self._to_float()
        elif other.exact and not self.exact:
            other = copy.deepcopy(other)
            other._to_float()
        assert self._min is not None and self._max is not None
        assert other._min is not None and other._max is not None
        assert self._nnz is not None and other._nnz is not None
        assert self._nonfinite is not None and other._nonfinite is not None
        if self.exact:
            self._flush()
            o1, o2 = other._exact_sums()
            self._cold1 = _to_object(self._cold1 + o1)
            self._cold2 = _to_object(self._cold2 + o2)
            self._count = self._count + other._count
        else:
            # elements this side has not seen a finite value of yet take the other's shift
            assert self._shift is not None and other._shift is not None
            assert other._count is not None and other._mean_shifted is not None
            assert other._m2 is not None
            self._shift = np.where(np.isnan(self._shift), other._shift, self._shift)
            self._merge_float(other._count, other._shift, other._mean_shifted, other._m2)
        self._min = np.fmin(self._min, other._min)
        self._max = np.fmax(self._max, other._max)
        self._nnz = self._nnz + other._nnz
        self._nonfinite = self._nonfinite + other._nonfinite
        self.n_samples_seen += other.n_samples_seen
        self._cache.clear()
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Moments:
        # Arrays are copied flat: the Python ints of the exact sums are immutable, and
        # copy.deepcopy would visit each of them (milliseconds per merge for 784 features).
        out = object.__new__(type(self))
        for name, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                out.__dict__[name] = value.copy()
            else:
                out.__dict__[name] = copy.deepcopy(value, memo)
        return out

    # ------------------------------------------------------------------ results
    def _require(self) -> None:
        if self._count is None or not self._count.any():
            raise EmptyDataError("no samples seen: statistics of empty data are undefined")

    def _exact_sums(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._cold1 is not None and self._cold2 is not None
        return (
            _to_object(self._cold1 + _to_object(self._s1)),
            _to_object(self._cold2 + _to_object(self._s2)),
        )

    @property
    def count(self) -> np.ndarray:
        """Number of values behind each statistic (per element; differs only under ``omit``).

        With ``sample_weight``: the sum of the weights of those values (float64 once a
        fractional weight was seen).
        """
        self._require()
        assert self._count is not None
        return self._count.copy()

    @property
    def mean(self) -> np.ndarray:
        """Mean per reduced element, float64, correctly rounded for integer data."""
        self._require()
        assert self._count is not None
        if "mean" not in self._cache:
            with np.errstate(invalid="ignore", divide="ignore"):
                if self.exact:
                    s1, _ = self._exact_sums()
                    i1 = _as_int64(s1)
                    out = _ratio(s1 if i1 is None else i1, self._count)
                else:
                    assert self._shift is not None and self._mean_shifted is not None
                    out = np.where(self._count > 0, self._shift + self._mean_shifted, np.nan)
            self._cache["mean"] = np.asarray(out, dtype=np.float64)
        return self._cache["mean"].copy()

    def var(self, ddof: int = 0) -> np.ndarray:
        """Variance per reduced element (population by default, as ``StandardScaler``)."""
        from .validate import integer

        ddof = integer("ddof", ddof, minimum=0)
        self._require()
        assert self._count is not None
        key = f"var{ddof}"
        if key not in self._cache:
            if self.exact:
                s1, s2 = self._exact_sums()
                i1, i2, n = _as_int64(s1), _as_int64(s2), self._count
                if i1 is not None and i2 is not None and _int64_moments_fit(n, i2):
                    # n·S2 < 2**63 and S1² ≤ n·S2 (Cauchy-Schwarz): exact in int64
                    out = _ratio(n * i2 - i1 * i1, n * (n - ddof))
                else:
                    n = _to_object(n)
                    num = _to_object(n * s2 - s1 * s1)  # n² · population variance, exactly
                    out = _ratio(num, _to_object(n * (n - ddof)))
            else:
                assert self._m2 is not None
                with np.errstate(invalid="ignore", divide="ignore"):
                    out = np.where(self._count > ddof, self._m2 / (self._count - ddof), np.nan)
            self._cache[key] = np.asarray(out, dtype=np.float64)
        return self._cache[key].copy()

    def std(self, ddof: int = 0) -> np.ndarray:
        """Standard deviation per reduced element."""
        return np.sqrt(self.var(ddof))

    @property
    def min(self) -> np.ndarray:
        self._require()
        assert self._count is not None and self._min is not None
        return np.where(self._count > 0, self._min, np.nan)

    @property
    def max(self) -> np.ndarray:
        self._require()
        assert self._count is not None and self._max is not None
        return np.where(self._count > 0, self._max, np.nan)

    @property
    def n_nonzero(self) -> np.ndarray:
        """Number of non-zero (finite) values per reduced element."""
        self._require()
        assert self._nnz is not None
        return self._nnz.copy()

    @property
    def n_nonfinite(self) -> np.ndarray:
        """Number of NaN/inf values left out per reduced element (``nan_policy="omit"``)."""
        self._require()
        assert self._nonfinite is not None
        return self._nonfinite.copy()

    def is_constant(self) -> np.ndarray:
        """Elements whose values are all equal (exact: ``min == max``)."""
        self._require()
        assert self._count is not None and self._min is not None and self._max is not None
        constant: np.ndarray = (self._count > 0) & (self._min == self._max)
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
        self._require()
        assert self.sample_shape is not None and self._count is not None
        assert self._min is not None and self._max is not None
        assert self._nnz is not None and self._nonfinite is not None
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

        groups = group_of(self._count)
        reduced = groups.shape[:1] if axis == "channel" else ()
        out._count = groups.sum(axis=1).reshape(reduced)
        out._min = np.fmin.reduce(group_of(self._min), axis=1).reshape(reduced)
        out._max = np.fmax.reduce(group_of(self._max), axis=1).reshape(reduced)
        out._nnz = group_of(self._nnz).sum(axis=1).reshape(reduced)
        out._nonfinite = group_of(self._nonfinite).sum(axis=1).reshape(reduced)
        if self.exact:
            s1, s2 = self._exact_sums()
            out._cold1 = _obj_sum(group_of(s1)).reshape(reduced)
            out._cold2 = _obj_sum(group_of(s2)).reshape(reduced)
            out._s1 = np.zeros(reduced, np.int64)
            out._s2 = np.zeros(reduced, np.int64)
            out._hot_count = 0
        else:
            assert self._shift is not None and self._mean_shifted is not None
            assert self._m2 is not None
            n = group_of(self._count).astype(np.float64)
            shift = group_of(self._shift)
            k0 = np.array([row[np.argmax(cnt > 0)] for row, cnt in zip(shift, n, strict=True)])
            d = np.where(n > 0, (shift - k0[:, None]) + group_of(self._mean_shifted), 0.0)
            total = np.where(n.sum(axis=1) > 0, n.sum(axis=1), 1)
            mean_shifted = (n * d).sum(axis=1) / total
            m2 = group_of(self._m2).sum(axis=1) + (n * (d - mean_shifted[:, None]) ** 2).sum(axis=1)
            out._shift = k0.reshape(reduced)
            out._mean_shifted = mean_shifted.reshape(reduced)
            out._m2 = m2.reshape(reduced)
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
        return meta

    def to_tensors(self) -> dict[str, np.ndarray]:
        if self._count is None:
            return {}
        out = {
            "count": self._count,
            "min": self._min,
            "max": self._max,
            "n_nonzero": self._nnz,
            "n_nonfinite": self._nonfinite,
        }
        if self.exact:
            s1, s2 = self._exact_sums()
            out.update(_encode_bigints("s1", s1))
            out.update(_encode_bigints("s2", s2))
        else:
            out.update({"shift": self._shift, "mean_shifted": self._mean_shifted, "m2": self._m2})
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
        try:
            m.feature_names = check_feature_names(meta.get("feature_names"), m.sample_shape)
        except NormlabError as exc:
            raise FileFormatError(f"invalid statistics metadata: {exc}") from None
        if not tensors:
            return m
        weighted = not m.exact and getattr(tensors.get("count"), "dtype", None) == np.float64
        m._count = field(tensors, "count", np.float64 if weighted else np.int64)  # Σ weights
        shape = m._count.shape
        if m.sample_shape is None or m.layout.reduced_shape(m.sample_shape) != shape:
            raise FileFormatError(
                f"statistics of shape {shape} do not fit samples of shape {m.sample_shape} "
                f"with axis={m.axis!r}"
            )
        m._min = field(tensors, "min", np.float64, shape)
        m._max = field(tensors, "max", np.float64, shape)
        m._nnz = field(tensors, "n_nonzero", np.int64, shape)
        m._nonfinite = field(tensors, "n_nonfinite", np.int64, shape)
        if m.exact:
            m._cold1 = _decode_bigints("s1", tensors, shape)
            m._cold2 = _decode_bigints("s2", tensors, shape)
            m._s1 = np.zeros(shape, np.int64)
            m._s2 = np.zeros(shape, np.int64)
        else:
            m._shift = field(tensors, "shift", np.float64, shape)
            m._mean_shifted = field(tensors, "mean_shifted", np.float64, shape)
            m._m2 = field(tensors, "m2", np.float64, shape)
        if min(m._count.min(initial=0), m._nnz.min(initial=0), m._nonfinite.min(initial=0)) < 0:
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
            "nonfinite_omitted": int(self.n_nonfinite.sum()),
        }

    def __repr__(self) -> str:
        if self._count is None:
            return f"Moments(axis={self.axis!r}, empty)"
        from .display import numpy_text

        head = (
            f"Moments(axis={self.axis!r}, samples={self.n_samples_seen}, "
            f"reduced_shape={self.reduced_shape}, value_scale={_scale_str(self.value_scale)})"
        )
        values = {"mean": self.mean, "std": self.std(), "min": self.min, "max": self.max}
        return "\n".join([head, *(f"  {k:<4} = {numpy_text(v)}" for k, v in values.items())])


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
        (not count_like(meta["n_samples_seen"]), "n_samples_seen"),
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


_Extrema = tuple[np.ndarray, np.ndarray, np.ndarray]  # min, max, number of non-zeros


def _combine_extrema(acc: _Extrema | None, new: _Extrema) -> _Extrema:
    if acc is None:
        return new
    return (np.minimum(acc[0], new[0]), np.maximum(acc[1], new[1]), acc[2] + new[2])


def _as_int64(a: np.ndarray) -> np.ndarray | None:
    """The exact sums as int64 when every one fits, else None."""
    try:
        return a.astype(np.int64)
    except OverflowError:
        return None


def _int64_moments_fit(n: np.ndarray, s2: np.ndarray) -> bool:
    """Whether ``n·S2`` and ``n·(n − ddof)`` stay below 2**63 (checked with margin in float)."""
    return bool(np.all(n.astype(np.float64) * np.abs(s2).astype(np.float64) < 2.0**62)) and bool(
        np.all(n < 2**31)
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` of exact integers, correctly rounded to float64; NaN where ``den ≤ 0``.

    Where both are below 2**53 they convert to float64 exactly and one IEEE division rounds
    correctly; elsewhere Python's ``int / int`` (also correctly rounded) does it.
    """
    shape = np.shape(num)
    num, den = np.asarray(num).reshape(-1), np.asarray(den).reshape(-1)
    out = np.full(num.shape, math.nan)
    if num.dtype == np.int64 and den.dtype == np.int64:
        fast = (den > 0) & (den < FLOAT64_EXACT) & (num > -FLOAT64_EXACT) & (num < FLOAT64_EXACT)
        out[fast] = num[fast].astype(np.float64) / den[fast].astype(np.float64)
        slow = np.flatnonzero(~fast & (den > 0))
    else:
        slow = np.flatnonzero([d > 0 for d in den])
    for i in slow:
        out[i] = int(num[i]) / int(den[i])
    return out.reshape(shape)


def _obj_sum(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape[0], dtype=object)
    for i, row in enumerate(a):
        total = 0
        for v in row:
            total += v
        out[i] = total
    return out


def _wide_int_sums(
    acb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact sums of 32-bit integers: x = hi·2¹⁶ + lo keeps every partial sum inside int64.

    Values that fit 16 bits (a quick min/max tells; integer table columns usually do) take
    the 16-bit kernel instead, whose int64 sums are exact for any batch below 2**33 values.
    """
    if acb.size and acb.shape[0] * acb.shape[2] < 2**33:
        least, most = int(acb.min()), int(acb.max())
        narrow = (
            np.int16 if least >= -(2**15) and most < 2**15 else np.uint16 if least >= 0 else None
        )
        if narrow is not None and most < 2**16:
            s1, s2, mn, mx, nz = load_kernels().reduce_integer(acb.astype(narrow, order="C"))
            return _to_object(s1), _to_object(s2), mn, mx, nz
    wide = acb.astype(np.int64)
    hi = wide >> 16
    lo = wide & 0xFFFF
    red = (0, 2)
    s_hi, s_lo = _to_object(hi.sum(axis=red)), _to_object(lo.sum(axis=red))
    s_hh = _to_object((hi * hi).sum(axis=red))
    s_hl = _to_object((hi * lo).sum(axis=red))
    s_ll = _to_object((lo * lo).sum(axis=red))
    s1 = s_hi * (1 << 16) + s_lo
    s2 = s_hh * (1 << 32) + s_hl * (1 << 17) + s_ll
    mn, mx = wide.min(axis=red), wide.max(axis=red)
    nz = np.count_nonzero(wide, axis=red).astype(np.int64)
    return s1, s2, mn, mx, nz


_LIMB_BITS = 62
_MAX_LIMBS = 4  # |Σx²| < 2**63 · 2**64 (int64 counts of int32 squares): 3 limbs, one spare


def _encode_bigints(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """Exact Python ints as int64 limbs (base 2**62) plus a sign, for safetensors."""
    flat = [int(v) for v in values.reshape(-1)]
    n_limbs = max(1, max((abs(v).bit_length() for v in flat), default=0) // _LIMB_BITS + 1)
    limbs = np.zeros((len(flat), n_limbs), np.int64)
    sign = np.zeros(len(flat), np.int8)
    mask = (1 << _LIMB_BITS) - 1
    for i, v in enumerate(flat):
        sign[i] = v < 0
        v = abs(v)
        for j in range(n_limbs):
            limbs[i, j] = v & mask
            v >>= _LIMB_BITS
    return {f"{name}_limbs": limbs, f"{name}_sign": sign}


def _decode_bigints(
    name: str, tensors: dict[str, np.ndarray], shape: tuple[int, ...]
) -> np.ndarray:
    from .io import field

    size = math.prod(shape)
    limbs = field(tensors, f"{name}_limbs", np.int64)
    sign = field(tensors, f"{name}_sign", np.int8, (size,))
    if limbs.ndim != 2 or limbs.shape[0] != size or (limbs < 0).any():
        raise NormlabError(f"corrupt exact sums {name!r} in the stats file")
    if limbs.shape[1] > _MAX_LIMBS:  # decoding is quadratic in the limbs: bound them first
        raise NormlabError(
            f"exact sums {name!r} of {limbs.shape[1]} limbs; sums of int32 data over int64 "
            f"counts need at most {_MAX_LIMBS}: corrupt stats file"
        )
    out = np.empty(size, dtype=object)
    for i in range(size):
        v = 0
        for j in reversed(range(limbs.shape[1])):
            v = (v << _LIMB_BITS) | int(limbs[i, j])
        out[i] = -v if sign[i] else v
    return out.reshape(shape)
