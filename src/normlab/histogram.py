"""Exact value histograms of 8- and 16-bit data, nearest-rank percentiles, and ``clip-percentile``.

A :class:`Histogram` counts every value of uint8 data in 256 bins (uint16: 65,536 bins) per
channel, per pixel or over all values, in the same pass as the moments. Counts are integers, so
merging is exact and order-free, and every percentile read from them is exact.

Percentiles use the **nearest-rank** definition: the ``q``-th percentile of ``N`` values is the
smallest value ``v`` such that at least ``⌈q/100 · N⌉`` values are ``≤ v`` (at least one), so
``q=0`` gives the minimum, ``q=50`` the lower median and ``q=100`` the maximum. It is always one
of the data's values (numpy's ``method="inverted_cdf"``), with no interpolation.

The ``clip-percentile`` scheme (:class:`~normlab.normalizers.ClipPercentile`) clips each
channel to its ``[low, high]`` percentiles and maps that range onto ``[0, 1]`` — what
medical-imaging pipelines do after keeping every intensity in a list for a second pass.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import numpy as np

from .errors import DTypeError, MergeError, NormlabError, ShapeError
from .layout import Granularity, Layout
from .moments import AXES, as_batch

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
    layout : str or Layout, optional
        Dimension letters of the samples (``"HWC"``, ``"CHW"``, ``"NCHW"``); default channels
        last. ``channel_axis`` is its deprecated spelling.

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

    def __init__(
        self,
        axis: str = "channel",
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
    ) -> None:
        if axis not in AXES:
            raise NormlabError(f"histogram axis must be one of {', '.join(AXES)}; got {axis!r}")
        self.layout = Layout.parse(axis, layout=layout, channel_axis=channel_axis)
        self.dtype: str | None = None
        self.counts: np.ndarray | None = None

    @property
    def axis(self) -> str:
        return self.layout.granularity

    @property
    def channel_axis(self) -> int:
        return self.layout.channel_axis

    def _grouped(self, arr: np.ndarray) -> np.ndarray:
        """``(groups, values)``: one row of values per histogram, through the layout's view."""
        acb = self.layout.kernel_view(arr)
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
        if self.counts is None:
            self.layout = self.layout.bind(arr.shape[1:])
        rows = self._grouped(arr)
        n_bins = BINS[name]
        reduced = self.layout.reduced_shape(arr.shape[1:])
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

    def __iadd__(self, other: Histogram) -> Histogram:
        if other.counts is None:
            return self
        if self.counts is None:  # empty: take the other's layout too
            self.layout = other.layout
            self.dtype, self.counts = other.dtype, other.counts.copy()
            return self
        self.layout.check_mergeable(
            other.layout, f" (histogram of {self.dtype})", f" (histogram of {other.dtype})"
        )
        if (self.dtype, self.counts.shape) != (other.dtype, other.counts.shape):
            raise MergeError(
                f"cannot merge a {self.layout.describe()} histogram of {self.dtype} "
                f"{self.counts.shape} with a {other.layout.describe()} histogram of "
                f"{other.dtype} {other.counts.shape}"
            )
        self.counts = self.counts + other.counts
        return self

    def __add__(self, other: Histogram) -> Histogram:
        out = copy.deepcopy(self)
        out += other
        return out

    def reduce(
        self,
        axis: Granularity,
        *,
        sample_shape: tuple[int, ...],
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
    ) -> Histogram:
        """Coarsen exactly (per pixel → per channel → global) by adding counts."""
        if AXES.index(axis) < AXES.index(self.axis):
            raise NormlabError(f"cannot refine a {self.axis!r} histogram into a {axis!r} one")
        if layout is None and channel_axis is None:
            target = Layout(axis, self.layout.channel, self.layout.sample_ndim)
        else:
            target = Layout.parse(axis, layout=layout, channel_axis=channel_axis)
        out = Histogram(axis, layout=target.bind(tuple(sample_shape)))
        out.dtype = self.dtype
        if axis == self.axis == "channel" and not self.layout.same_channels(out.layout):
            raise NormlabError(
                f"a per-channel histogram kept over {self.layout.letters} samples cannot be "
                f"re-laid as {out.layout.letters}: count per pixel (histogram='feature')"
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
        return {
            "axis": self.axis,
            "channel_axis": self.channel_axis,
            "sample_shape": None,
            "dtype": self.dtype,
        }

    @classmethod
    def from_parts(cls, meta: dict[str, Any], counts: np.ndarray | None) -> Histogram:
        h = cls(meta["axis"])
        h.layout = Layout.from_saved(meta["axis"], meta["channel_axis"], meta.get("sample_shape"))
        h.dtype = meta["dtype"]
        if counts is not None:
            if h.dtype not in BINS or counts.shape[-1:] != (BINS[h.dtype],) or (counts < 0).any():
                raise NormlabError(f"corrupt histogram of shape {counts.shape} for {h.dtype} data")
            h.counts = counts
        return h

    def __repr__(self) -> str:
        shape = None if self.counts is None else self.counts.shape
        return f"Histogram(axis={self.axis!r}, dtype={self.dtype}, counts={shape})"


def __getattr__(name: str) -> Any:
    """``ClipPercentile`` moved to :mod:`normlab.normalizers` (the old import path still works)."""
    if name == "ClipPercentile":
        from .normalizers import ClipPercentile

        return ClipPercentile
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
