"""The exact-integer representation: sums of integers that never round, and their arithmetic.

Integer data (bool, uint8/16, int8/16/32) keep exact sums. Hot sums live in int64 and are
flushed into Python integers (object arrays) before they could overflow (:class:`ExactSum`);
results are formed from exact integers and rounded once (:func:`exact_ratio`: Python's
``int / int`` is correctly rounded). Any chunking, order or worker split gives the same bits.

* :class:`ExactSum` — one array of exact sums (hot int64 + cold Python ints), mergeable;
  :class:`~normlab.Moments` keeps ``Σx`` and ``Σx²`` in two, :class:`~normlab.CoMoments` the
  Gram matrix ``Σ x xᵀ`` in one.
* :class:`ExactMoments` — count, ``Σx`` and ``Σx²`` per reduced element, in the style of
  ``river.stats``: ``update``, ``+=``, ``mean()``/``var()``; ``mean = S1/n`` and
  ``var = (n·S2 − S1²)/n²`` from exact integers.

>>> import numpy as np
>>> s = ExactSum((2,))
>>> s.add(np.array([3, 4]), bound=4)
>>> s += ExactSum.of(np.array([2**70, 1], dtype=object))
>>> s.get()
array([1180591620717411303427, 5], dtype=object)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Self

import numpy as np

from .errors import DTypeError, NormlabError

INT64_LIMIT = 2**63 - 1  # the largest int64: hot integer sums must stay below it
FLOAT64_EXACT = 2**53  # every integer up to this converts to float64 exactly
LIMB_BITS = 62  # exact sums are saved as int64 limbs of this many bits, plus a sign
MAX_LIMBS = 4  # |Σx²| < 2**63 · 2**64 (int64 counts of int32 squares): 3 limbs, one spare


def to_object(a: Any) -> np.ndarray:
    """Python-int (exact, unbounded) object array of the same shape.

    numpy integer scalars (``np.int64(3)``: what arithmetic on 0-d arrays returns) become
    Python ints too: kept as numpy scalars inside an object array, they would overflow at
    the first product beyond 64 bits.
    """
    arr = np.asarray(a)
    if arr.dtype.kind in "biu":
        return (arr.astype(np.int64) if arr.dtype.kind == "b" else arr).astype(object)
    if arr.dtype != object:
        return np.asarray(arr.tolist(), dtype=object)
    return arr


def as_int64(a: np.ndarray) -> np.ndarray | None:
    """Exact sums as int64 when every one fits, else None."""
    try:
        return a.astype(np.int64)
    except OverflowError:
        return None


def int64_moments_fit(n: np.ndarray, s2: np.ndarray) -> bool:
    """Whether ``n·S2`` and ``n·(n − ddof)`` stay below 2**63 (checked with margin in float)."""
    return bool(np.all(n.astype(np.float64) * np.abs(s2).astype(np.float64) < 2.0**62)) and bool(
        np.all(n < 2**31)
    )


def exact_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
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


def object_row_sums(a: np.ndarray) -> np.ndarray:
    """Exact sum of each row of a 2-D array of Python ints."""
    out = np.empty(a.shape[0], dtype=object)
    for i, row in enumerate(a):
        total = 0
        for v in row:
            total += v
        out[i] = total
    return out


def exact_dtype(arr: np.ndarray) -> np.ndarray:
    """Integer input on the dtypes of the exact path: bool as uint8; wide ints must fit int32."""
    if arr.dtype.kind == "b":
        return arr.view(np.uint8)
    if arr.dtype.itemsize <= 2 or arr.dtype == np.int32:
        return arr
    low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if low < np.iinfo(np.int32).min or high > np.iinfo(np.int32).max:
        raise DTypeError(
            f"{arr.dtype} values outside the int32 range (found {low}..{high}) are not "
            "supported exactly: exact statistics take integers of at most 32 bits; convert "
            "to float64 first (x.astype(np.float64))"
        )
    return arr.astype(np.int32)


MinMaxNonzero = tuple[np.ndarray, np.ndarray, np.ndarray]  # min, max, number of non-zeros


def wide_int_sums(acb: np.ndarray, kernels: Any) -> tuple[np.ndarray, np.ndarray, MinMaxNonzero]:
    """Exact ``Σx``, ``Σx²`` of 32-bit integers over axes 0 and 2 of ``acb``, and the extrema.

    ``x = hi·2¹⁶ + lo`` keeps every partial sum inside int64. Values that fit 16 bits (a quick
    min/max tells; integer table columns usually do) take the 16-bit kernel of ``kernels``
    instead, whose int64 sums are exact for any batch below 2**33 values.
    """
    if acb.size and acb.shape[0] * acb.shape[2] < 2**33:
        least, most = int(acb.min()), int(acb.max())
        narrow = (
            np.int16 if least >= -(2**15) and most < 2**15 else np.uint16 if least >= 0 else None
        )
        if narrow is not None and most < 2**16:
            s1, s2, mn, mx, nz = kernels.reduce_integer(acb.astype(narrow, order="C"))
            return to_object(s1), to_object(s2), (mn, mx, nz)
    wide = acb.astype(np.int64)
    hi = wide >> 16
    lo = wide & 0xFFFF
    red = (0, 2)
    s_hi, s_lo = to_object(hi.sum(axis=red)), to_object(lo.sum(axis=red))
    s_hh = to_object((hi * hi).sum(axis=red))
    s_hl = to_object((hi * lo).sum(axis=red))
    s_ll = to_object((lo * lo).sum(axis=red))
    s1 = s_hi * (1 << 16) + s_lo
    s2 = s_hh * (1 << 32) + s_hl * (1 << 17) + s_ll
    mn, mx = wide.min(axis=red), wide.max(axis=red)
    nz = np.count_nonzero(wide, axis=red).astype(np.int64)
    return s1, s2, (mn, mx, nz)


def encode_bigints(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """Exact Python ints as int64 limbs (base 2**62) plus a sign, for safetensors."""
    flat = [int(v) for v in values.reshape(-1)]
    n_limbs = max(1, max((abs(v).bit_length() for v in flat), default=0) // LIMB_BITS + 1)
    limbs = np.zeros((len(flat), n_limbs), np.int64)
    sign = np.zeros(len(flat), np.int8)
    mask = (1 << LIMB_BITS) - 1
    for i, v in enumerate(flat):
        sign[i] = v < 0
        v = abs(v)
        for j in range(n_limbs):
            limbs[i, j] = v & mask
            v >>= LIMB_BITS
    return {f"{name}_limbs": limbs, f"{name}_sign": sign}


def decode_bigints(name: str, tensors: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The exact Python ints that :func:`encode_bigints` saved as ``name``, of ``shape``."""
    from .io import field

    size = math.prod(shape)
    limbs = field(tensors, f"{name}_limbs", np.int64)
    sign = field(tensors, f"{name}_sign", np.int8, (size,))
    if limbs.ndim != 2 or limbs.shape[0] != size or (limbs < 0).any():
        raise NormlabError(f"corrupt exact sums {name!r} in the stats file")
    if limbs.shape[1] > MAX_LIMBS:  # decoding is quadratic in the limbs: bound them first
        raise NormlabError(
            f"exact sums {name!r} of {limbs.shape[1]} limbs; sums of int32 data over int64 "
            f"counts need at most {MAX_LIMBS}: corrupt stats file"
        )
    out = np.empty(size, dtype=object)
    for i in range(size):
        v = 0
        for j in reversed(range(limbs.shape[1])):
            v = (v << LIMB_BITS) | int(limbs[i, j])
        out[i] = -v if sign[i] else v
    return out.reshape(shape)


def copy_flat(obj: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of ``obj`` whose arrays are copied flat.

    The Python ints of exact sums are immutable, and ``copy.deepcopy`` would visit each of
    them (milliseconds per merge for 784 features).
    """
    out = object.__new__(type(obj))
    for name, value in obj.__dict__.items():
        if isinstance(value, np.ndarray):
            out.__dict__[name] = value.copy()
        else:
            out.__dict__[name] = copy.deepcopy(value, memo)
    return out


class ExactSum:
    """Exact integer sums of one shape: int64 while they fit, Python ints beyond.

    ``add`` takes int64 partial sums with a bound of their magnitude; the hot int64 sums are
    flushed into the cold Python-int sums before the bound could pass 2**63. ``get()`` is
    exact whatever was added, in any order.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.hot = np.zeros(shape, np.int64)
        self.hot_bound = 0  # an upper bound of |every entry| added to ``hot`` since the flush
        self.cold: np.ndarray | None = None  # Python ints (object array); None: all zero

    @classmethod
    def of(cls, values: np.ndarray) -> ExactSum:
        """Sums that start at ``values`` (exact integers of any size)."""
        out = cls(np.shape(values))
        out.cold = to_object(values)
        return out

    def add(self, values: np.ndarray, bound: int) -> None:
        """Add int64 ``values`` whose entries are at most ``bound`` in magnitude."""
        if self.hot_bound + bound > INT64_LIMIT:
            self.flush()
        self.hot += values
        self.hot_bound += bound

    def add_exact(self, values: Any) -> None:
        """Add exact integers of any size (Python ints or an integer array)."""
        cold = self.cold if self.cold is not None else 0
        self.cold = to_object(cold + to_object(values))

    def flush(self) -> None:
        """Move the hot int64 sums into the Python-int sums."""
        if self.hot_bound:
            self.add_exact(self.hot)
            self.hot[...] = 0
            self.hot_bound = 0

    def get(self) -> np.ndarray:
        """The exact sums, as Python ints (object array)."""
        if self.cold is None:
            return to_object(self.hot)
        return to_object(self.cold + to_object(self.hot))

    def int64(self) -> np.ndarray:
        """The sums as int64; only where the caller knows they fit."""
        return self.hot if self.cold is None else self.get().astype(np.int64)

    def __iadd__(self, other: ExactSum) -> Self:
        if other is self:  # s += s: read the other side before this one changes
            other = copy.deepcopy(other)
        if other.cold is not None:
            self.add_exact(other.cold)
        if other.hot_bound:
            self.add(other.hot, other.hot_bound)
        return self

    __deepcopy__ = copy_flat


class ExactMoments:
    """Count, ``Σx`` and ``Σx²`` of integers per reduced element, exact.

    ``update`` reads the ``(A, C, B)`` kernel view of a batch (see :mod:`normlab.layout`):
    one statistic per ``C``, summed over ``A`` and ``B``.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = np.zeros(shape, np.int64)
        self.s1 = ExactSum(shape)
        self.s2 = ExactSum(shape)

    def update(self, acb: np.ndarray, kernels: Any) -> MinMaxNonzero:
        """Add the values of ``acb`` (integers of the exact path); returns their extrema."""
        shape = self.count.shape
        per_element = acb.shape[0] * acb.shape[2]
        rest: MinMaxNonzero | None = None
        if acb.dtype.itemsize > 2:
            s1, s2, rest = wide_int_sums(acb, kernels)
            self.s1.add_exact(s1.reshape(shape))
            self.s2.add_exact(s2.reshape(shape))
        else:
            info = np.iinfo(acb.dtype)
            top = max(abs(int(info.min)), int(info.max))
            limit = INT64_LIMIT // (top * top)  # values one int64 sum of squares can hold
            step = max(1, limit // max(1, acb.shape[2]))
            for start in range(0, acb.shape[0], step):
                part = acb[start : start + step]
                n_part = part.shape[0] * part.shape[2]
                s1, s2, mn, mx, nz = kernels.reduce_integer(part)
                self.s1.add(s1.reshape(shape), n_part * top)
                self.s2.add(s2.reshape(shape), n_part * top * top)
                rest = _combine_extrema(rest, (mn, mx, nz))
        assert rest is not None  # the batch is not empty (checked by the caller)
        self.count += per_element
        mn, mx, nz = (r.reshape(shape) for r in rest)
        return mn, mx, nz

    def update_weighted(self, acb: np.ndarray, weights: np.ndarray) -> None:
        """Exact ``Σw·x`` and ``Σw·x²`` with whole-number ``weights`` (one per row of ``acb``).

        int64 where the bound allows, Python ints elsewhere.
        """
        shape = self.count.shape
        added = float(weights.sum(dtype=np.float64)) * acb.shape[2]
        if float(self.count.max(initial=0)) + added >= 2.0**62:
            raise NormlabError(
                f"the sample weights sum to {added:.3g} values per statistic, beyond the exact "
                "integer counts (2**62); scale the weights down or pass them as floats"
            )
        if acb.dtype.itemsize <= 2:  # |x| ≤ 2**16: the per-row sums are exact in int64
            x = acb.astype(np.int64)
        else:  # 32-bit values: x² alone may take 62 bits
            x = acb.astype(object)
        r1, r2 = x.sum(axis=2), (x * x).sum(axis=2)
        # |r1| ≤ r2 for integers, so max(w)·Σ r2 < 2**62 keeps both dot products inside int64
        bound = float(weights.max()) * float(r2.sum(axis=0).astype(np.float64).max(initial=0))
        if r2.dtype != object and bound < 2.0**62:
            s1, s2 = weights @ r1, weights @ r2
        else:
            w_obj = to_object(weights)
            s1, s2 = w_obj @ to_object(r1), w_obj @ to_object(r2)
        self.s1.add_exact(to_object(s1).reshape(shape))
        self.s2.add_exact(to_object(s2).reshape(shape))
        self.count += int(weights.sum()) * acb.shape[2]

    def merge(self, other: Any) -> None:
        """Merge other exact moments of the same shape into these."""
        assert isinstance(other, ExactMoments)
        self.s1 += other.s1
        self.s2 += other.s2
        self.count = np.asarray(self.count + other.count)  # 0-d stays an array

    def __iadd__(self, other: Any) -> Self:
        self.merge(other)
        return self

    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Σx, Σx²)`` as Python ints (object arrays)."""
        return self.s1.get(), self.s2.get()

    def mean(self) -> np.ndarray:
        """``S1/n``, correctly rounded; NaN where no value was seen."""
        s1 = self.s1.get()
        i1 = as_int64(s1)
        return exact_ratio(s1 if i1 is None else i1, self.count)

    def var(self, ddof: int) -> np.ndarray:
        """``(n·S2 − S1²) / (n·(n − ddof))``, from exact integers, rounded once."""
        s1, s2 = self.sums()
        i1, i2, n = as_int64(s1), as_int64(s2), self.count
        if i1 is not None and i2 is not None and int64_moments_fit(n, i2):
            # n·S2 < 2**63 and S1² ≤ n·S2 (Cauchy-Schwarz): exact in int64
            return exact_ratio(n * i2 - i1 * i1, n * (n - ddof))
        n = to_object(n)
        num = to_object(n * s2 - s1 * s1)  # n² · population variance, exactly
        return exact_ratio(num, to_object(n * (n - ddof)))

    def reduce(
        self, group_of: Callable[[np.ndarray], np.ndarray], reduced: tuple[int, ...]
    ) -> ExactMoments:
        """Coarser statistics: each row of ``group_of(a)`` becomes one element, exactly."""
        s1, s2 = self.sums()
        out = ExactMoments(reduced)
        out.count = group_of(self.count).sum(axis=1).reshape(reduced)
        out.s1 = ExactSum.of(object_row_sums(group_of(s1)).reshape(reduced))
        out.s2 = ExactSum.of(object_row_sums(group_of(s2)).reshape(reduced))
        return out

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The exact sums of the saved form (the count is saved by the caller)."""
        s1, s2 = self.sums()
        return {**encode_bigints("s1", s1), **encode_bigints("s2", s2)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], count: np.ndarray) -> ExactMoments:
        """The sums saved by :meth:`to_tensors`, with their ``count``."""
        shape = count.shape
        out = cls(shape)
        out.count = count
        out.s1 = ExactSum.of(decode_bigints("s1", tensors, shape))
        out.s2 = ExactSum.of(decode_bigints("s2", tensors, shape))
        return out

    def to_shifted(self) -> Any:
        """The same moments in the float64 representation (fractional weights have arrived)."""
        from .shifted import ShiftedMoments

        seen = self.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean, m2 = self.mean(), self.var(0) * self.count
        out = ShiftedMoments(self.count.shape)
        out.count = self.count
        out.shift = np.where(seen, mean, np.nan)
        out.m2 = np.where(seen, m2, 0.0)
        return out

    __deepcopy__ = copy_flat


def _combine_extrema(acc: MinMaxNonzero | None, new: MinMaxNonzero) -> MinMaxNonzero:
    if acc is None:
        return new
    return (np.minimum(acc[0], new[0]), np.maximum(acc[1], new[1]), acc[2] + new[2])
