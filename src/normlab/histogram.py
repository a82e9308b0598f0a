"""Exact value histograms of 8- and 16-bit data, nearest-rank percentiles, and ``clip-percentile``.

A :class:`Histogram` counts every value of uint8 data in 256 bins (uint16: 65,536 bins) per
channel, per pixel or over all values, in the same pass as the moments. Counts are integers, so
merging is exact and order-free, and every percentile read from them is exact.

Percentiles use the **nearest-rank** definition: the ``q``-th percentile of ``N`` values is the
smallest value ``v`` such that at least ``⌈q/100 · N⌉`` values are ``≤ v`` (at least one), so
``q=0`` gives the minimum, ``q=50`` the lower median and ``q=100`` the maximum. It is always one
of the data's values (numpy's ``method="inverted_cdf"``), with no interpolation.

The ``clip-percentile`` scheme (:class:`ClipPercentile`) clips each channel to its
``[low, high]`` percentiles and maps that range onto ``[0, 1]`` — what medical-imaging pipelines
do after keeping every intensity in a list for a second pass.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import numpy as np

from . import schemes
from .errors import DTypeError, MergeError, NormlabError, ShapeError
from .io import register
from .moments import AXES, Moments, as_batch, repeat_by_weight
from .normalizers import AffineNormalizer, safe_scale

BINS = {"uint8": 256, "uint16": 65536}
_FEATURE_BINS_LIMIT = 256  # per-pixel histograms: 256 bins × every pixel is already large


def nearest_rank(counts: np.ndarray, q: float) -> np.ndarray:
    """The nearest-rank ``q``-th percentile (0 ≤ q ≤ 100) of each histogram row (last axis).

    >>> nearest_rank(np.array([0, 3, 0, 1]), 50)
    array(1.)
    >>> nearest_rank(np.array([0, 3, 0, 1]), 80)
    array(3.)
    """
    q_exact = Fraction(repr(float(q)))  # the decimal the user wrote: 99.9 is 999/10 exactly
    if not 0 <= q_exact <= 100:
        raise NormlabError(f"percentiles must lie in [0, 100]; got {q}")
    cum = np.cumsum(counts, axis=-1)
    total = cum[..., -1]
    ranks = np.empty(total.shape, dtype=np.int64)
    for idx, n in np.ndenumerate(total):
        ranks[idx] = max(1, math.ceil(q_exact * int(n) / 100))
    value = np.argmax(cum >= ranks[..., None], axis=-1).astype(np.float64)
    return np.where(total > 0, value, np.nan)


class Histogram:
    """Exact value counts of uint8 (256 bins) or uint16 (65,536 bins) data.

    Parameters
    ----------
    axis : {"channel", "global", "feature"}
        One histogram per channel, one over all values, or one per feature (pixel; uint8 only:
        256 counts per pixel, 38.5 million for a 224×224×3 image, about 300 MB).
    channel_axis : int
        Channel axis of a sample (``-1`` HWC, ``0`` CHW).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[0, 10]], [[255, 10]], [[7, 30]]], dtype=np.uint8)  # 3 samples, 1x2
    >>> h = Histogram("channel").update(x)
    >>> h.counts.shape
    (2, 256)
    >>> h.percentile(50)
    array([ 7., 10.])
    """

    def __init__(self, axis: str = "channel", *, channel_axis: int = -1) -> None:
        if axis not in AXES:
            raise NormlabError(f"histogram axis must be one of {', '.join(AXES)}; got {axis!r}")
        self.axis = axis
        self.channel_axis = int(channel_axis)
        self.dtype: str | None = None
        self.counts: np.ndarray | None = None

    def _grouped(self, arr: np.ndarray) -> np.ndarray:
        """``(groups, values)``: one row of values per histogram, via Moments' own layout."""
        layout = Moments(self.axis, channel_axis=self.channel_axis)
        layout.sample_shape = arr.shape[1:]
        acb = layout._as_acb(arr)
        return np.moveaxis(acb, 1, 0).reshape(acb.shape[1], -1)

    def update(self, batch: Any) -> Histogram:
        """Count the values of a batch ``(n_samples, *sample_shape)``; returns ``self``."""
        arr = as_batch(batch, "histogram batch")
        name = arr.dtype.name
        if name not in BINS:
            raise DTypeError(
                f"exact histograms need uint8 or uint16 data; got {arr.dtype} (compute "
                "statistics without histogram/percentiles, or convert the data)"
            )
        if self.axis == "feature" and BINS[name] > _FEATURE_BINS_LIMIT:
            raise NormlabError(
                f"per-pixel histograms are for uint8 data; {name} would need {BINS[name]} bins per "
                "pixel: use a per-channel or global histogram"
            )
        if self.dtype is not None and name != self.dtype:
            raise MergeError(f"histogram of {self.dtype} data cannot count {name} values")
        rows = self._grouped(arr)
        n_bins = BINS[name]
        reduced = self._reduced_shape(arr.shape[1:])
        if self.counts is None:
            self.dtype = name
            self.counts = np.zeros((*reduced, n_bins), np.int64)
        elif self.counts.shape[:-1] != reduced:
            raise ShapeError(
                f"histogram of shape {self.counts.shape[:-1]} cannot count samples of shape "
                f"{arr.shape[1:]}"
            )
        flat = self.counts.reshape(-1, n_bins)
        if rows.shape[0] == 1 or self.axis != "feature":
            for g in range(rows.shape[0]):
                flat[g] += np.bincount(rows[g], minlength=n_bins)
        else:  # per feature: one bincount over (feature · 256 + value)
            offsets = np.arange(rows.shape[0], dtype=np.int64)[:, None] * n_bins
            step = max(1, (1 << 22) // max(1, rows.shape[0]))
            for start in range(0, rows.shape[1], step):
                part = rows[:, start : start + step].astype(np.int64) + offsets
                flat += np.bincount(part.ravel(), minlength=flat.size).reshape(flat.shape)
        return self

    def _reduced_shape(self, sample: tuple[int, ...]) -> tuple[int, ...]:
        layout = Moments(self.axis, channel_axis=self.channel_axis)
        layout.sample_shape = tuple(sample)
        return layout._reduced_from(tuple(sample))

    def __iadd__(self, other: Histogram) -> Histogram:
        if other.counts is None:
            return self
        if self.counts is None:  # empty: take the other's layout too
            self.axis, self.channel_axis = other.axis, other.channel_axis
            self.dtype, self.counts = other.dtype, other.counts.copy()
            return self
        mine = (self.axis, self.dtype, self.counts.shape)
        if mine != (other.axis, other.dtype, other.counts.shape) or (
            self.axis == "channel" and self.channel_axis != other.channel_axis
        ):
            raise MergeError(
                f"cannot merge a {self.axis} histogram of {self.dtype} {self.counts.shape} "
                f"(channel_axis {self.channel_axis}) with a {other.axis} histogram of "
                f"{other.dtype} {other.counts.shape} (channel_axis {other.channel_axis})"
            )
        self.counts = self.counts + other.counts
        return self

    def __add__(self, other: Histogram) -> Histogram:
        out = copy.deepcopy(self)
        out += other
        return out

    def reduce(
        self, axis: str, *, sample_shape: tuple[int, ...], channel_axis: int | None = None
    ) -> Histogram:
        """Coarsen exactly (per pixel → per channel → global) by adding counts."""
        if AXES.index(axis) < AXES.index(self.axis):
            raise NormlabError(f"cannot refine a {self.axis!r} histogram into a {axis!r} one")
        out = Histogram(
            axis, channel_axis=self.channel_axis if channel_axis is None else channel_axis
        )
        out.dtype = self.dtype
        if axis == self.axis == "channel" and out.channel_axis % len(
            sample_shape
        ) != self.channel_axis % len(sample_shape):
            raise NormlabError(
                f"a per-channel histogram kept along channel_axis={self.channel_axis} cannot be "
                f"re-laid along channel_axis={out.channel_axis}: count per pixel (histogram='feature')"
            )
        if self.counts is None or axis == self.axis:
            out.counts = None if self.counts is None else self.counts.copy()
            return out
        n_bins = self.counts.shape[-1]
        if self.axis == "channel" or axis == "global":
            out.counts = self.counts.reshape(-1, n_bins).sum(axis=0)
            return out
        grouped = out._grouped(np.moveaxis(self.counts, -1, 0).reshape(n_bins, *sample_shape))
        out.counts = grouped.reshape(grouped.shape[0], n_bins, -1).sum(axis=2)
        return out

    def percentile(self, q: float) -> np.ndarray:
        """The exact nearest-rank ``q``-th percentile per histogram (see the module docs)."""
        if self.counts is None:
            raise NormlabError("the histogram is empty: no data has been counted")
        return nearest_rank(self.counts, q)

    def median(self) -> np.ndarray:
        """The lower median (nearest rank, q = 50)."""
        return self.percentile(50)

    def metadata(self) -> dict[str, Any]:
        return {"axis": self.axis, "channel_axis": self.channel_axis, "dtype": self.dtype}

    @classmethod
    def from_parts(cls, meta: dict[str, Any], counts: np.ndarray | None) -> Histogram:
        h = cls(meta["axis"], channel_axis=meta["channel_axis"])
        h.dtype = meta["dtype"]
        if counts is not None:
            if h.dtype not in BINS or counts.shape[-1:] != (BINS[h.dtype],) or (counts < 0).any():
                raise NormlabError(f"corrupt histogram of shape {counts.shape} for {h.dtype} data")
            h.counts = counts
        return h

    def __repr__(self) -> str:
        shape = None if self.counts is None else self.counts.shape
        return f"Histogram(axis={self.axis!r}, dtype={self.dtype}, counts={shape})"


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
    stats_options = {"histogram": True}

    def __init__(
        self,
        *,
        low: float = 0.5,
        high: float = 99.5,
        axis: str = "channel",
        channel_axis: int = -1,
        dtype: Any = None,
    ) -> None:
        super().__init__(channel_axis=channel_axis, dtype=dtype)
        self.low = low
        self.high = high
        self.axis = axis

    @property
    def stats_axis(self) -> str:  # type: ignore[override]
        return self.axis

    def partial_fit(
        self, X: Any, y: Any = None, *, sample_weight: Any = None, nan_policy: str = "raise"
    ) -> ClipPercentile:
        from .imagestats import ImageStats

        if nan_policy != "raise":
            raise NormlabError(
                "clip-percentile needs histograms of finite data: drop or impute the samples "
                "with NaN first"
            )
        if sample_weight is not None:
            X = repeat_by_weight(X, sample_weight, "clip-percentile")

        batch = ImageStats(
            self.stats_axis, channel_axis=self.channel_axis, histogram=self.stats_axis
        ).update(X)
        stats = self.stats_ + batch if hasattr(self, "stats_") else batch
        self._fit_from(stats)
        return self

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
            if AXES.index(histogram.axis) > AXES.index(self.axis):
                raise NormlabError(
                    f"clip-percentile with axis={self.axis!r} needs {self.axis} histograms or finer; "
                    f"these statistics keep {histogram.axis} ones: compute them with "
                    f"histogram={self.axis!r}, or use axis={histogram.axis!r}"
                )
            histogram = histogram.reduce(
                self.axis, sample_shape=tuple(stats.sample_shape), channel_axis=self.channel_axis
            )
        self.low_ = histogram.percentile(self.low)
        self.high_ = histogram.percentile(self.high)
        span = self.high_ - self.low_
        scale = safe_scale(span, ~(span > 0), what="equal low and high percentiles", stacklevel=6)
        self._set_affine(np.where(np.isnan(self.low_), 0.0, self.low_), scale)
        self._upper = np.where(span > 0, 1.0, 0.0)

    def transform(self, X: Any) -> np.ndarray:
        """Clip to ``[low_, high_]`` and scale onto ``[0, 1]``."""
        out = super().transform(X)
        upper = self._broadcast(self._upper.astype(out.dtype), out.ndim - 1)
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
)
