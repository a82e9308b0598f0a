"""The shifted-float representation: float64 moments measured from a shift, merged with Chan.

Float data keep, per element, a shift ``K`` (the first value seen), the mean of ``x − K`` and
the sum of squared deviations ``M2``, merged with Chan et al.'s formula with
``δ = (K_b − K_a) + (m_b − m_a)``. Deterministic for a given chunk order.

* :class:`ShiftedMoments` — count, shift, shifted mean and ``M2`` per reduced element
  (:class:`~normlab.Moments` of float data).
* :class:`ShiftedCoMoments` — the shift and shifted mean vectors and the co-moment matrix
  ``C = Σ (x−μ)(x−μ)ᵀ`` (:class:`~normlab.CoMoments` of float data), Chan's merge in matrix
  form: ``C = C_a + C_b + δδᵀ·n_a·n_b/n``.

>>> import numpy as np
>>> a, b = ShiftedMoments((1,)), ShiftedMoments((1,))
>>> a.add(np.array([2]), np.array([1.0]), np.array([0.5]), np.array([0.5]))  # 1, 2
>>> b.add(np.array([1]), np.array([6.0]), np.array([0.0]), np.array([0.0]))  # 6
>>> a += b
>>> a.mean(), a.var(0)
(array([3.]), array([4.66666667]))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Self

import numpy as np

from .errors import FloatOverflowError
from .exact import copy_flat


def overflow_message(where: tuple[int, ...], largest: float, axis: str | None = None) -> str:
    """Why finite float data gave non-finite sums, and what to do (one wording everywhere)."""
    at = f"statistic {where}" + (f" (axis={axis!r})" if axis is not None else "")
    return (
        f"float64 sums overflow at {at}: the values are finite (up to {largest:.3g}), not "
        "NaN/inf, but their squared deviations exceed the float64 range. Rescale the data "
        "first, e.g. x / 1e150"
    )


def check_finite_sums(
    seen: np.ndarray, magnitude: np.ndarray, *sums: np.ndarray, axis: str | None = None
) -> None:
    """Raise :class:`FloatOverflowError` where an element that ``seen`` values has a
    non-finite sum (float64 overflow of finite data); ``magnitude``: the values' size there."""
    bad = np.asarray(seen, bool) & ~np.logical_and.reduce([np.isfinite(s) for s in sums])
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        where = tuple(int(i) for i in np.unravel_index(flat, bad.shape))
        largest = float(np.broadcast_to(magnitude, bad.shape).reshape(-1)[flat])
        raise FloatOverflowError(overflow_message(where, largest, axis))


class ShiftedMoments:
    """Count, shift, shifted mean and ``M2`` of float64 values per reduced element."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count: np.ndarray = np.zeros(shape, np.int64)  # Σ weights: float64 once fractional
        self.shift = np.full(shape, np.nan)  # the first finite value seen; NaN: none yet
        self.mean_shifted = np.zeros(shape)
        self.m2 = np.zeros(shape)

    def add(
        self, n_b: np.ndarray, shift_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray
    ) -> None:
        """Merge a part: ``n_b`` values of mean ``shift_b + mean_b`` and squared deviations
        ``m2_b`` (Chan et al., both sides measured from their own shift).

        Elements that have not seen a finite value yet take the part's shift.
        """
        shift = np.where(np.isnan(self.shift), shift_b, self.shift)
        n_a = self.count
        n = n_a + n_b
        safe = np.where(n > 0, n, 1)  # counts are sums of weights: they may lie below 1
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, as one error
            delta = np.where(n_b > 0, (shift_b - shift) + (mean_b - self.mean_shifted), 0.0)
            delta = np.where(n_a > 0, delta, 0.0)
            base = np.where(
                n_a > 0, self.mean_shifted, np.where(n_b > 0, mean_b + (shift_b - shift), 0.0)
            )
            mean_shifted = base + delta * (n_b / safe)
            m2 = self.m2 + m2_b + delta**2 * (n_a * (n_b / safe))
            magnitude = np.fmax(np.abs(shift), np.abs(shift_b))
            check_finite_sums(n > 0, magnitude, delta, mean_shifted, m2, shift + mean_shifted)
        # nothing changes before the checks pass: a refused merge leaves these as they were
        self.shift, self.mean_shifted, self.m2 = shift, mean_shifted, m2
        self.count = np.asarray(n)

    def update_weighted(
        self, rows: np.ndarray, finite: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add ``rows`` (one row per weighted value, one column per element); returns min, max.

        ``finite`` marks the values that count; ``weights`` holds one weight per row. A
        weighted shifted two-pass mean and M2, merged with Chan's formula.
        """
        w = np.where(finite, weights[:, None], 0)
        counts = w.sum(axis=0)
        first = np.argmax(finite, axis=0)
        k_new = np.where(finite.any(axis=0), rows[first, np.arange(rows.shape[1])], np.nan)
        shift = self.shift.reshape(-1)
        shift = np.where(np.isnan(shift), k_new, shift)  # first value seen per element
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns; overflow: below
            y = np.where(finite, rows - shift, 0.0)
            mean_c = (w * y).sum(axis=0) / np.where(counts > 0, counts, 1)
            m2_c = (w * (y - mean_c) ** 2).sum(axis=0)
            masked = np.where(finite, rows, np.nan)
            mn, mx = np.nanmin(masked, axis=0), np.nanmax(masked, axis=0)
            magnitude = np.fmax(np.abs(mn), np.abs(mx))
        check_finite_sums(counts > 0, magnitude, mean_c, m2_c)
        shape = self.count.shape
        self.add(
            counts.reshape(shape), shift.reshape(shape), mean_c.reshape(shape), m2_c.reshape(shape)
        )
        return mn, mx

    def merge(self, other: Any) -> None:
        """Merge other shifted moments of the same shape into these (Chan et al.)."""
        assert isinstance(other, ShiftedMoments)
        self.add(other.count, other.shift, other.mean_shifted, other.m2)

    def __iadd__(self, other: Any) -> Self:
        self.merge(other)
        return self

    def mean(self) -> np.ndarray:
        """``K + m`` per element; NaN where no value was seen."""
        out: np.ndarray = np.where(self.count > 0, self.shift + self.mean_shifted, np.nan)
        return out

    def var(self, ddof: int) -> np.ndarray:
        """``M2 / (n − ddof)``; NaN where ``n ≤ ddof``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out: np.ndarray = np.where(self.count > ddof, self.m2 / (self.count - ddof), np.nan)
        return out

    def reduce(
        self, group_of: Callable[[np.ndarray], np.ndarray], reduced: tuple[int, ...]
    ) -> ShiftedMoments:
        """Coarser statistics: each row of ``group_of(a)`` becomes one element (Chan's merge)."""
        n = group_of(self.count).astype(np.float64)
        shift = group_of(self.shift)
        k0 = np.array([row[np.argmax(cnt > 0)] for row, cnt in zip(shift, n, strict=True)])
        total = np.where(n.sum(axis=1) > 0, n.sum(axis=1), 1)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, as one error
            d = np.where(n > 0, (shift - k0[:, None]) + group_of(self.mean_shifted), 0.0)
            mean_shifted = (n * d).sum(axis=1) / total
            m2 = group_of(self.m2).sum(axis=1) + (n * (d - mean_shifted[:, None]) ** 2).sum(axis=1)
            magnitude = np.nanmax(np.where(n > 0, np.abs(shift), 0.0), axis=1)
            check_finite_sums(
                *(a.reshape(reduced) for a in (n.sum(axis=1) > 0, magnitude, mean_shifted, m2)),
                (k0 + mean_shifted).reshape(reduced),
            )
        out = ShiftedMoments(reduced)
        out.count = group_of(self.count).sum(axis=1).reshape(reduced)
        out.shift = k0.reshape(reduced)
        out.mean_shifted = mean_shifted.reshape(reduced)
        out.m2 = m2.reshape(reduced)
        return out

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The float state of the saved form (the count is saved by the caller)."""
        return {"shift": self.shift, "mean_shifted": self.mean_shifted, "m2": self.m2}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], count: np.ndarray) -> ShiftedMoments:
        """The state saved by :meth:`to_tensors`, with its ``count``."""
        from .io import field

        shape = count.shape
        out = cls(shape)
        out.count = count
        out.shift = field(tensors, "shift", np.float64, shape)
        out.mean_shifted = field(tensors, "mean_shifted", np.float64, shape)
        out.m2 = field(tensors, "m2", np.float64, shape)
        return out

    __deepcopy__ = copy_flat


class ShiftedCoMoments:
    """Shift (the first sample), shifted mean vector and co-moment matrix of float64 samples."""

    def __init__(self, first: np.ndarray) -> None:
        d = first.shape[0]
        self.shift = first.astype(np.float64)
        self.mean_shifted = np.zeros(d)
        self.comoment = np.zeros((d, d))

    def update(self, flat: np.ndarray, n_a: int) -> None:
        """Add samples ``flat`` (one per row) to the ``n_a`` samples seen before."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: refused by add
            y = flat.astype(np.float64) - self.shift
            mean_b = y.mean(axis=0)
            y -= mean_b
            comoment_b = y.T @ y
        self.add(n_a, flat.shape[0], mean_b, comoment_b)

    def add(self, n_a: int, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray) -> None:
        """Chan's merge in matrix form; ``mean_b`` is measured from this object's shift."""
        n = n_a + n_b
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, as one error
            delta = mean_b - self.mean_shifted
            mean_shifted = self.mean_shifted + delta * (n_b / n)
            comoment = self.comoment + comoment_b + np.outer(delta, delta) * (n_a * (n_b / n))
            magnitude = np.abs(self.shift) + np.abs(mean_b)
            check_finite_sums(
                np.ones(self.shift.shape, bool),
                magnitude,
                mean_shifted,
                np.diagonal(comoment),
                self.shift + mean_shifted,
            )
            if not np.isfinite(comoment).all():  # the diagonal bounds the rest; rounding aside
                check_finite_sums(np.ones(comoment.shape, bool), magnitude[:, None], comoment)
        self.mean_shifted, self.comoment = mean_shifted, comoment

    def merge(self, n_a: int, other: ShiftedCoMoments, n_b: int) -> None:
        """Merge ``other`` (``n_b`` samples) into this one (``n_a`` samples)."""
        mean_b = (other.shift - self.shift) + other.mean_shifted
        self.add(n_a, n_b, mean_b, other.comoment)

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"shift": self.shift, "mean_shifted": self.mean_shifted, "comoment": self.comoment}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], d: int) -> ShiftedCoMoments:
        """The state saved by :meth:`to_tensors` for ``d`` features."""
        from .io import field

        out = cls(np.zeros(d))
        out.shift = field(tensors, "shift", np.float64, (d,))
        out.mean_shifted = field(tensors, "mean_shifted", np.float64, (d,))
        out.comoment = field(tensors, "comoment", np.float64, (d, d))
        return out

    __deepcopy__ = copy_flat
