"""Moments plus what the same pass over images (or a dataset) can also gather.

:class:`ImageStats` is a :class:`~normlab.Moments` (every normalizer and file reader takes it)
that can also keep

* exact :class:`~normlab.histogram.Histogram` counts (percentiles, ``clip-percentile``);
* the **per-image std average** — the common recipe that averages each image's own std. It is
  *not* the dataset std (it leaves out how much image means differ from each other), and is
  kept only to compare with, clearly labelled in the output and the saved file;
* the :class:`~normlab.provenance.Provenance` of the data: skipped unreadable items
  (``skip_bad``) and the first item of each mode and size seen, so mixed modes, depths or sizes
  are reported by file name even when the tasks ran in different processes.

Sources never talk to it: they record provenance beside the data, and
:func:`~normlab.compute_stats` attaches the merged record to the result.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np

from .errors import FloatOverflowError, MergeError, NormlabError
from .histogram import Histogram
from .io import register
from .layout import Layout
from .moments import AXES, Axis, Moments, as_batch
from .provenance import Provenance, Recorded
from .shifted import overflow_message

PER_IMAGE_LABEL = (
    "per-image std average (biased recipe: the mean of each image's own std; NOT the dataset std)"
)
POOLED_LABEL = "std pooled over all values (the dataset std)"


@register
class ImageStats(Moments, Recorded):
    """:class:`~normlab.Moments` plus optional histograms, per-image std average, skip records.

    Parameters
    ----------
    axis, layout, channel_axis, nan_policy
        As for :class:`~normlab.Moments`.
    histogram : {None, "channel", "global", "feature"} or True
        Keep exact value counts (uint8/uint16 data) at this granularity. ``True``: per channel
        (global for ``axis="global"``; per feature when samples have no channel axis).
    per_image_std_average : bool
        Also keep the average of per-image stds (population std of each image, per channel for
        ``axis="channel"``, over all values for ``axis="global"``) — for comparison only.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((4, 2, 2, 1), np.uint8); x[:2] = 100  # two black, two grey images
    >>> s = ImageStats("channel", per_image_std_average=True, histogram=True).update(x)
    >>> s.std(), s.per_image_std_average    # pooled: 50; each image is uniform: 0
    (array([50.]), array([0.]))
    >>> s.percentile(50)
    array([0.])
    """

    def __init__(
        self,
        axis: Axis = "feature",
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
        nan_policy: str = "raise",
        histogram: bool | str | None = None,
        per_image_std_average: bool = False,
    ) -> None:
        super().__init__(axis, layout=layout, channel_axis=channel_axis, nan_policy=nan_policy)
        # True: per channel for images, per feature for samples without a channel axis (decided
        # at the first batch, when the sample shape is known)
        self._histogram_auto = histogram is True and axis == "feature"
        if histogram is True:
            histogram = "global" if axis == "global" else "channel"
        if histogram not in (None, False, *AXES):
            raise NormlabError(
                f"histogram must be one of {', '.join(AXES)} (or True); got {histogram!r}"
            )
        if histogram and AXES.index(histogram) < AXES.index(axis):
            raise NormlabError(f"a {histogram!r} histogram is finer than {axis!r} statistics")
        if per_image_std_average and axis == "feature":
            raise NormlabError(
                "per_image_std_average compares per-channel or global stds: use axis='channel' "
                "or axis='global'"
            )
        self.histogram: Histogram | None = (
            Histogram(histogram, layout=self.layout) if histogram else None
        )
        self.per_image_std_average_requested = bool(per_image_std_average)
        self._image_std_sum: np.ndarray | None = None
        self._n_images = 0
        self.provenance = Provenance(self.axis)
        self.source = ""
        self.requested_percentiles: list[float] = []

    # ------------------------------------------------------------------ update
    @classmethod
    def of(cls, stats: Moments, provenance: Provenance | None = None) -> ImageStats:
        """``stats`` (plain :class:`~normlab.Moments` or ImageStats) with ``provenance`` beside."""
        if isinstance(stats, ImageStats):
            out = copy.deepcopy(stats)
        else:
            out = cls(stats.axis, layout=stats.layout, nan_policy=stats.nan_policy)
            out.__dict__.update(copy.deepcopy(stats).__dict__)  # the Moments part, whole
        if provenance is not None:
            out.provenance = copy.deepcopy(provenance)
        return out

    # provenance, for reading (the record itself is :attr:`provenance`)
    @property
    def first_of(self) -> dict[str, dict[str, str]]:
        return self.provenance.first_of

    def update(self, batch: Any, sample_weight: Any = None) -> ImageStats:
        """Add a batch ``(n_samples, *sample_shape)``; returns ``self``.

        ``sample_weight`` is not supported (histograms and per-image stds count images): use
        :class:`~normlab.Moments` for weighted statistics.
        """
        if sample_weight is not None:
            raise NormlabError(
                "ImageStats.update takes no sample_weight (its histograms and per-image stds "
                "count images); use normlab.Moments for weighted statistics"
            )
        arr = as_batch(batch)
        super().update(arr)
        if arr.shape[0] == 0:
            return self
        if self.histogram is not None:
            if self._histogram_auto and self.histogram.counts is None and arr.ndim < 3:
                self.histogram = Histogram("feature", layout=self.layout)
            self.histogram.update(arr)
        if self.per_image_std_average_requested:
            self._add_image_stds(arr)
        return self

    def _add_image_stds(self, arr: np.ndarray) -> None:
        n = arr.shape[0]
        if self.axis == "global":
            values = arr.reshape(n, -1, 1).astype(np.float64)
        else:
            ca = self.layout.channel_index(arr.shape[1:])
            moved = np.moveaxis(arr, ca + 1, -1)
            values = moved.reshape(n, -1, moved.shape[-1]).astype(np.float64)
        finite = np.isfinite(values)
        if not finite.all():  # only under nan_policy="omit": Moments.update raised otherwise
            empty = ~finite.any(axis=1)
            if empty.any():
                image, channel = (int(i) for i in np.argwhere(empty)[0])
                raise NormlabError(
                    f"image {self.n_samples_seen - n + image} has no finite value in channel "
                    f"{channel}: its own std, which the per-image std average needs, is "
                    "undefined; drop per_image_std_average (--per-image-std-average) or that "
                    "image"
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow: refused just below
            stds = (
                values.std(axis=1)
                if finite.all()
                else np.nanstd(np.where(finite, values, np.nan), axis=1)
            )
        if not np.isfinite(stds).all():
            raise FloatOverflowError(
                overflow_message((), float(np.nanmax(np.abs(np.where(finite, values, 0)))))
            )
        total = stds[:, 0].sum(axis=0) if self.axis == "global" else stds.sum(axis=0)
        self._image_std_sum = total if self._image_std_sum is None else self._image_std_sum + total
        self._n_images += n

    # ------------------------------------------------------------------ merge
    def __iadd__(self, other: Moments) -> ImageStats:
        if not isinstance(other, ImageStats):
            if self.histogram is not None or self.per_image_std_average_requested:
                raise MergeError("cannot merge plain Moments into ImageStats that keep histograms")
            super().__iadd__(other)
            return self
        self._check_same_extras(other)
        # this side's extras, kept apart: an empty self takes other's whole state below
        my_histogram = copy.deepcopy(self.histogram)
        std_sum, n_images = self._image_std_sum, self._n_images
        my_source, my_percentiles = self.source, self.requested_percentiles
        merged = copy.deepcopy(self.provenance)
        merged += other.provenance
        super().__iadd__(other)  # an empty self takes a deep copy of other's whole state
        if my_histogram is not None and other.histogram is not None:
            my_histogram += other.histogram
        self.histogram = (
            my_histogram if my_histogram is not None else copy.deepcopy(other.histogram)
        )
        if other._image_std_sum is not None:
            std_sum = (
                other._image_std_sum.copy() if std_sum is None else std_sum + other._image_std_sum
            )
        self._image_std_sum, self._n_images = std_sum, n_images + other._n_images
        self.provenance = merged
        self.source = my_source or other.source
        self.requested_percentiles = my_percentiles or other.requested_percentiles
        return self

    def _check_same_extras(self, other: ImageStats) -> None:
        """Extras merge only when both sides kept them over the same samples."""
        if self.sums is None or other.sums is None:
            return
        mine_h, theirs_h = self.histogram, other.histogram
        kept = (mine_h is not None and mine_h.counts is not None) + (
            theirs_h is not None and theirs_h.counts is not None
        )
        if kept == 1:
            raise MergeError(
                "cannot merge statistics that keep a histogram with statistics that do not: "
                "the merged histogram would cover fewer samples than the moments"
            )
        if self.per_image_std_average_requested != other.per_image_std_average_requested:
            raise MergeError(
                "cannot merge statistics that keep the per-image std average with statistics "
                "that do not: the average would cover fewer images than the moments"
            )

    _PROVENANCE = ("source", "first_of", "strict_mode")

    def __eq__(self, other: object) -> bool:
        """Equal statistics (provenance — where the data came from — is not compared)."""
        if not isinstance(other, Moments):
            return NotImplemented
        mine, theirs = self.to_tensors(), other.to_tensors()
        drop = lambda meta: {k: v for k, v in meta.items() if k not in self._PROVENANCE}  # noqa: E731
        return (
            drop(self.metadata()) == drop(other.metadata())
            and mine.keys() == theirs.keys()
            and all(np.array_equal(mine[k], theirs[k], equal_nan=True) for k in mine)
        )

    # unhashable: mutable and compared by value (typeshed types __hash__ as a method)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "ImageStats" + super().__repr__()[len("Moments") :]

    # ------------------------------------------------------------------ results
    @property
    def per_image_std_average(self) -> np.ndarray | None:
        """Average of per-image stds (the biased recipe; ``None`` unless requested)."""
        if self._image_std_sum is None or not self._n_images:
            return None
        return self._image_std_sum / self._n_images

    def percentile(self, q: float) -> np.ndarray:
        """Exact nearest-rank percentile per histogram (see :mod:`normlab.histogram`)."""
        if self.histogram is None:
            raise NormlabError(
                "no histogram was kept: compute the statistics with histogram=True or "
                "percentiles=(...)"
            )
        return self.histogram.percentile(q)

    def reduce(
        self,
        axis: Axis,
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
    ) -> ImageStats:
        out = super().reduce(axis, layout=layout, channel_axis=channel_axis)
        assert isinstance(out, ImageStats)
        if self.histogram is not None and AXES.index(axis) > AXES.index(self.histogram.axis):
            assert self.sample_shape is not None
            out.histogram = self.histogram.reduce(
                axis, sample_shape=self.sample_shape, layout=out.layout
            )
        if axis != self.axis:  # an average of per-image stds cannot be coarsened
            out._image_std_sum, out._n_images = None, 0
            out.per_image_std_average_requested = False
        return out

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.per_image_std_average is not None:
            out[POOLED_LABEL] = np.atleast_1d(self.std()).tolist()
            out[PER_IMAGE_LABEL] = np.atleast_1d(self.per_image_std_average).tolist()
        if self.histogram is not None and self.histogram.counts is not None:
            out["histogram"] = f"{self.histogram.axis}, {self.histogram.counts.shape[-1]} bins"
            for q in self.requested_percentiles:
                out[f"percentile {q:g} (nearest rank)"] = np.atleast_1d(self.percentile(q)).tolist()
        if self.n_skipped:
            out["skipped (unreadable)"] = self.n_skipped
        return out

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["class"] = "ImageStats"
        meta["source"] = self.source
        meta.update(self.provenance.metadata())  # skipped, first_of, strict_mode
        meta["histogram"] = self.histogram.metadata() if self.histogram is not None else None
        meta["percentiles"] = (
            {
                f"{q:g}": np.atleast_1d(self.percentile(q)).tolist()
                for q in self.requested_percentiles
            }
            if self.histogram is not None and self.histogram.counts is not None
            else {}
        )
        meta["per_image_std_average"] = {
            "requested": self.per_image_std_average_requested,
            "label": PER_IMAGE_LABEL,
            "n_images": self._n_images,
            "values": None
            if self.per_image_std_average is None
            else np.atleast_1d(self.per_image_std_average).tolist(),
        }
        return meta

    def to_tensors(self) -> dict[str, np.ndarray]:
        out = super().to_tensors()
        if self.histogram is not None and self.histogram.counts is not None:
            out["histogram"] = np.ascontiguousarray(self.histogram.counts)
        if self._image_std_sum is not None:
            out["per_image_std_sum"] = np.array(self._image_std_sum, dtype=np.float64)
        return out

    @classmethod
    def from_tensors(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> ImageStats:
        from .io import field

        out = cls.of(Moments.from_tensors(meta, tensors))
        hist_meta = meta.get("histogram")
        if hist_meta is not None:
            counts = field(tensors, "histogram", np.int64) if "histogram" in tensors else None
            out.histogram = Histogram.from_parts(hist_meta, counts)
            from .invariants import check_histogram

            check_histogram(out, out.histogram)
        pis = meta.get("per_image_std_average") or {}
        out.per_image_std_average_requested = bool(pis.get("requested"))
        out._n_images = int(pis.get("n_images") or 0)
        if "per_image_std_sum" in tensors:
            out._image_std_sum = field(tensors, "per_image_std_sum", np.float64)
        _check_image_stds(out)
        out.provenance = Provenance.from_metadata(meta, out.axis)
        out.source = meta.get("source", "")
        out.requested_percentiles = [float(q) for q in (meta.get("percentiles") or {})]
        return out


def _check_image_stds(stats: ImageStats) -> None:
    """Loaded per-image stds: one per image seen, each within half the range of its values."""
    from .errors import FileFormatError

    n, kept = stats._n_images, stats._image_std_sum
    expected = stats.n_samples_seen if stats.per_image_std_average_requested else 0
    if n != expected or (kept is None) != (n == 0):
        raise FileFormatError(
            f"per-image std average of {n} images (sums {'absent' if kept is None else 'kept'}) "
            f"for {stats.n_samples_seen} samples: corrupt n_images"
        )
    if kept is None or stats.sums is None:
        return
    if kept.shape != tuple(stats.reduced_shape):
        raise FileFormatError(f"per_image_std_sum of shape {kept.shape}: corrupt statistics")
    with np.errstate(invalid="ignore", over="ignore"):
        half_range = (stats.max - stats.min) / 2 * n * (1 + 1e-9)
        bad = ~np.isfinite(kept) | (kept < 0) | (kept > half_range)
    if bad.any():
        raise FileFormatError(
            "per_image_std_sum outside [0, n_images × (max − min) / 2]: corrupt statistics"
        )
