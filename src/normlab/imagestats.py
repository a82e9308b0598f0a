"""Moments plus what the same pass over images (or a dataset) can also gather.

:class:`ImageStats` is a :class:`~normlab.Moments` (every normalizer and file reader takes it)
that can also keep

* exact :class:`~normlab.histogram.Histogram` counts (percentiles, ``clip-percentile``);
* the **per-image std average** — the common recipe that averages each image's own std. It is
  *not* the dataset std (it leaves out how much image means differ from each other), and is
  kept only to compare with, clearly labelled in the output and the saved file;
* records of skipped unreadable items (``skip_bad``), and the first item of each kind and size
  seen, so mixed modes, depths or sizes are reported by file name even when the tasks ran in
  different processes.

Sources talk to it through :class:`Note` items between their batches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MergeError, NormlabError, ShapeError, SourceError
from .histogram import Histogram
from .io import register
from .moments import AXES, Axis, Moments, as_batch

PER_IMAGE_LABEL = (
    "per-image std average (biased recipe: the mean of each image's own std; NOT the dataset std)"
)
POOLED_LABEL = "std pooled over all values (the dataset std)"
_KEPT_SKIPS = 1000  # skipped items listed in the file; the count is always exact


@dataclass(frozen=True)
class Note:
    """What a source says between batches.

    ``kind="skipped"``: ``where`` could not be read (``value`` is the reason).
    ``kind="mode"``: the next samples from ``where`` have mode/depth ``value``; with
    ``strict``, every item must share one mode. ``kind="size"``: the next samples from
    ``where`` have size ``value``.
    """

    kind: str
    value: Any
    where: str
    strict: bool = False


def _channels_of(mode: str) -> str:
    return mode.split(" ")[0]


@register
class ImageStats(Moments):
    """:class:`~normlab.Moments` with optional histograms, the per-image std average and skip records.

    Parameters
    ----------
    axis, channel_axis, nan_policy
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
        channel_axis: int = -1,
        nan_policy: str = "raise",
        histogram: bool | str | None = None,
        per_image_std_average: bool = False,
    ) -> None:
        super().__init__(axis, channel_axis=channel_axis, nan_policy=nan_policy)
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
            Histogram(histogram, channel_axis=channel_axis) if histogram else None
        )
        self.per_image_std_average_requested = bool(per_image_std_average)
        self._image_std_sum: np.ndarray | None = None
        self._n_images = 0
        self.skipped: list[dict[str, str]] = []
        self.n_skipped = 0
        self.first_of: dict[str, dict[str, str]] = {"mode": {}, "size": {}}
        self.strict_mode = False
        self.source = ""
        self.requested_percentiles: list[float] = []

    # ------------------------------------------------------------------ update
    def update(self, batch: Any) -> ImageStats:
        """Add a batch ``(n_samples, *sample_shape)``, or take a :class:`Note`; returns ``self``."""
        if isinstance(batch, Note):
            self._take_note(batch)
            return self
        arr = as_batch(batch)
        super().update(arr)
        if arr.shape[0] == 0:
            return self
        if self.histogram is not None:
            if self._histogram_auto and self.histogram.counts is None and arr.ndim < 3:
                self.histogram = Histogram("feature")
            self.histogram.update(arr)
        if self.per_image_std_average_requested:
            self._add_image_stds(arr)
        return self

    def _add_image_stds(self, arr: np.ndarray) -> None:
        n = arr.shape[0]
        if self.axis == "global":
            stds = arr.reshape(n, -1).astype(np.float64).std(axis=1)
        else:
            ca = self._channel_index(arr.ndim - 1)
            moved = np.moveaxis(arr, ca + 1, -1)
            stds = moved.reshape(n, -1, moved.shape[-1]).astype(np.float64).std(axis=1)
        total = stds.sum(axis=0)
        self._image_std_sum = total if self._image_std_sum is None else self._image_std_sum + total
        self._n_images += n

    def _take_note(self, note: Note) -> None:
        if note.kind == "skipped":
            self.n_skipped += 1
            if len(self.skipped) < _KEPT_SKIPS:
                self.skipped.append({"item": note.where, "reason": str(note.value)})
            return
        if note.kind not in self.first_of:
            raise NormlabError(f"unknown note {note.kind!r} from a source")
        self.strict_mode = self.strict_mode or (note.kind == "mode" and note.strict)
        seen = self.first_of[note.kind]
        if str(note.value) not in seen and len(seen) < 2:
            seen[str(note.value)] = note.where
            self._check_consistent()

    def _check_consistent(self) -> None:
        """Mixed modes/depths/sizes that the statistics cannot hold: name one item of each."""
        modes = self.first_of["mode"]
        if len(modes) > 1:
            (m1, f1), (m2, f2) = list(modes.items())[:2]
            depth_differs = m1.split(" ")[-1] != m2.split(" ")[-1]
            channels_differ = _channels_of(m1) != _channels_of(m2)
            if depth_differs or self.strict_mode or (channels_differ and self.axis != "global"):
                hint = (
                    "one bit depth per data set: convert the files"
                    if depth_differs
                    else "pass mode='RGB' or mode='L' (CLI: --mode) to convert them"
                    if self.strict_mode
                    else "mixed channel counts need axis='global' or a mode conversion"
                )
                raise SourceError(f"mixed image modes: {f1} is {m1}, {f2} is {m2}; {hint}")
        sizes = self.first_of["size"]
        if len(sizes) > 1 and self.axis == "feature":
            (s1, f1), (s2, f2) = list(sizes.items())[:2]
            raise ShapeError(
                f"per-pixel statistics need one image size: {f1} is {s1}, {f2} is {s2}; pass "
                "resize=(H, W) (CLI: --resize H W), or use axis='channel' or 'global'"
            )

    # ------------------------------------------------------------------ merge
    def __iadd__(self, other: Moments) -> ImageStats:
        if not isinstance(other, ImageStats):
            if self.histogram is not None or self.per_image_std_average_requested:
                raise MergeError("cannot merge plain Moments into ImageStats that keep histograms")
            super().__iadd__(other)
            return self
        mine = {
            "histogram": copy.deepcopy(self.histogram),
            "image_std": (self._image_std_sum, self._n_images),
            "skipped": (list(self.skipped), self.n_skipped),
            "first_of": copy.deepcopy(self.first_of),
            "rest": (self.strict_mode, self.source, self.requested_percentiles),
        }
        self.strict_mode = self.strict_mode or other.strict_mode
        for kind, seen in other.first_of.items():
            for value, where in seen.items():
                self._take_note(Note(kind, value, where))
        merged_first_of = copy.deepcopy(self.first_of)
        super().__iadd__(other)  # an empty self takes a deep copy of other's whole state
        if mine["histogram"] is not None and other.histogram is not None:
            mine["histogram"] += other.histogram
        self.histogram = (
            mine["histogram"] if mine["histogram"] is not None else copy.deepcopy(other.histogram)
        )
        std_sum, n_images = mine["image_std"]
        if other._image_std_sum is not None:
            std_sum = (
                other._image_std_sum.copy() if std_sum is None else std_sum + other._image_std_sum
            )
        self._image_std_sum, self._n_images = std_sum, n_images + other._n_images
        kept, n = mine["skipped"]
        self.skipped = (kept + other.skipped)[:_KEPT_SKIPS]
        self.n_skipped = n + other.n_skipped
        self.first_of = merged_first_of
        self.strict_mode = mine["rest"][0] or other.strict_mode
        self.source = mine["rest"][1] or other.source
        self.requested_percentiles = mine["rest"][2] or other.requested_percentiles
        return self

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

    def reduce(self, axis: Axis, *, channel_axis: int | None = None) -> ImageStats:
        out = super().reduce(axis, channel_axis=channel_axis)
        assert isinstance(out, ImageStats)
        if self.histogram is not None and AXES.index(axis) > AXES.index(self.histogram.axis):
            assert self.sample_shape is not None
            out.histogram = self.histogram.reduce(
                axis, sample_shape=self.sample_shape, channel_axis=channel_axis
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
        meta["skipped"] = {"count": self.n_skipped, "items": self.skipped}
        meta["first_of"] = self.first_of
        meta["strict_mode"] = self.strict_mode
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

        base = Moments.from_tensors(meta, tensors)
        out = cls(meta["axis"], channel_axis=meta["channel_axis"], nan_policy=meta["nan_policy"])
        out.__dict__.update(base.__dict__)
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
        skipped = meta.get("skipped") or {}
        out.n_skipped = int(skipped.get("count", 0))
        out.skipped = list(skipped.get("items", []))
        out.first_of = _checked_first_of(meta.get("first_of"))
        out.strict_mode = bool(meta.get("strict_mode"))
        out.source = meta.get("source", "")
        out.requested_percentiles = [float(q) for q in (meta.get("percentiles") or {})]
        return out


def _checked_first_of(value: Any) -> dict[str, dict[str, str]]:
    """The saved provenance of modes and sizes, validated: ``{"mode": {..}, "size": {..}}``."""
    from .errors import FileFormatError

    first_of = value if value is not None else {"mode": {}, "size": {}}
    valid = (
        isinstance(first_of, dict)
        and set(first_of) == {"mode", "size"}
        and all(
            isinstance(seen, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in seen.items())
            for seen in first_of.values()
        )
    )
    if not valid:
        raise FileFormatError("corrupt image provenance ('first_of') in the statistics file")
    return first_of
