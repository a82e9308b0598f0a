"""The layout of statistics: granularity, channel position and sample rank, in one value.

Every module that needs to know *how* statistics are laid over the samples asks a
:class:`Layout` and never works it out again: validation, the reduced shape, the view the
kernels read, the broadcast shape of ``transform``, whether two statistics may merge, which
granularity is coarser, and the translations for Keras (``axis``) and PyTorch (``CHW``/``HWC``).

Users spell a layout as a string of dimension letters, einops style, with ``C`` for the
channels and an optional leading ``N`` for the batch: ``"HWC"``, ``"CHW"``, ``"NCHW"``,
``"NHWC"``, ``"TC"``. A user with an NCHW batch who asks for per-channel statistics with
``layout="NCHW"`` gets C channels; a layout whose rank does not match the samples is an error,
never per-row statistics. Without a layout, per-channel statistics take the last sample
dimension (channels last), as before.

Examples
--------
>>> from normlab.layout import Layout
>>> lay = Layout.parse("channel", layout="NCHW")
>>> lay.bind((3, 32, 32)).reduced_shape((3, 32, 32))
(3,)
>>> lay.letters, lay.keras_axis
('CHW', 1)
>>> from normlab.errors import ShapeError
>>> try:
...     Layout.parse("channel", layout="NCHW").bind((32, 32))  # gray images: no C
... except ShapeError as exc:
...     print(str(exc)[:40])
layout 'CHW' describes 3-d samples (chan
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np

from .errors import MergeError, NormlabError, ShapeError, warn

Granularity = Literal["feature", "channel", "global"]
GRANULARITIES: tuple[str, ...] = ("feature", "channel", "global")  # finest first
_SPATIAL = "DHW"  # the letters used when a layout is printed


def check_granularity(axis: Any, what: str = "axis") -> Granularity:
    """``axis`` if it names a granularity, else a :class:`NormlabError` listing them."""
    if not isinstance(axis, str) or axis not in GRANULARITIES:
        raise NormlabError(f"{what} must be one of {', '.join(GRANULARITIES)}; got {axis!r}")
    return cast(Granularity, axis)  # one of GRANULARITIES, checked above


def parse_letters(layout: Any) -> tuple[int | None, int]:
    """``(channel position or None, sample rank)`` of a layout string such as ``"NCHW"``."""
    if not isinstance(layout, str) or not layout.isalpha() or not layout:
        raise NormlabError(
            f"layout must be a string of dimension letters with C for channels, such as "
            f"'HWC', 'CHW' or 'NCHW'; got {layout!r}"
        )
    letters = layout.upper()
    if len(letters) > 1 and letters[0] == "N":
        letters = letters[1:]  # the batch dimension
    if len(set(letters)) != len(letters):
        raise NormlabError(f"layout {layout!r} names a dimension twice")
    return (letters.index("C") if "C" in letters else None), len(letters)


@dataclass(frozen=True)
class Layout:
    """How statistics are laid over samples ``(n, *sample_shape)``.

    Attributes
    ----------
    granularity : {"feature", "channel", "global"}
        One statistic per element of the sample shape, per channel, or over every value.
    channel : int or None
        Position of the channels in the *sample* shape (negative until the rank is known);
        None where the user declared a layout without channels (``"HW"``).
    sample_ndim : int or None
        Rank of the samples: declared by a layout string, or fixed by the first batch.
    """

    granularity: Granularity = "feature"
    channel: int | None = -1
    sample_ndim: int | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(
        cls,
        axis: Any = "feature",
        *,
        layout: str | Layout | None = None,
        channel_axis: int | None = None,
    ) -> Layout:
        """The layout users ask for: ``axis`` (granularity) and ``layout`` (``"NCHW"``, ...).

        ``channel_axis`` (deprecated) counted on the *sample* shape; ``0`` (channels first) and
        negative values (counted from the end, the same on sample and batch shapes) still work,
        with a :class:`DeprecationWarning`; positive values are ambiguous and refused.
        """
        granularity = check_granularity(axis)
        if isinstance(layout, Layout):
            return replace(layout, granularity=granularity)
        if channel_axis is not None:
            if layout is not None:
                raise NormlabError("give layout= or the deprecated channel_axis=, not both")
            return cls(granularity, translate_channel_axis(channel_axis), None)
        if layout is None:
            return cls(granularity)
        channel, ndim = parse_letters(layout)
        if channel is None and granularity == "channel":
            raise NormlabError(
                f"per-channel statistics need a C in the layout; {layout!r} has no channels"
            )
        return cls(granularity, channel, ndim)

    @classmethod
    def from_saved(cls, granularity: str, channel_axis: Any, sample_shape: Any = None) -> Layout:
        """The layout of a file (``channel_axis`` counted on the sample shape, any sign)."""
        ndim = None if sample_shape is None else len(sample_shape)
        lay = cls(check_granularity(granularity), channel_axis, None)
        return lay if ndim is None else lay.bind(tuple(sample_shape))

    def bind(self, sample_shape: tuple[int, ...]) -> Layout:
        """This layout fixed to samples of ``sample_shape``: rank checked, channel normalized."""
        ndim = len(sample_shape)
        if self.sample_ndim is not None and self.sample_ndim != ndim:
            raise ShapeError(
                f"layout {self.letters!r} describes {self.sample_ndim}-d samples"
                + (f" (channels at dim {self.channel})" if self.channel is not None else "")
                + f"; these samples have shape {tuple(sample_shape)}"
            )
        if self.granularity == "channel" and ndim < 2:
            raise ShapeError(
                f"axis='channel' needs samples with a channel dimension; these samples have "
                f"shape {tuple(sample_shape)}. Use axis='feature' or 'global', or add a channel "
                "axis (x[..., None])"
            )
        channel = self.channel
        if channel is not None and ndim:
            if not -ndim <= channel < ndim:
                if self.granularity == "channel":
                    raise ShapeError(
                        f"channel dim {channel} is out of range for samples of {ndim} dims"
                    )
                channel = -1  # a per-feature or global layout declares no usable channel
            channel = channel % ndim
        elif channel is not None:
            channel = None  # scalar samples have no dims at all
        return Layout(self.granularity, channel, ndim)

    def doubtful_channels(self, sample_shape: tuple[int, ...]) -> str | None:
        """Why per-channel statistics of an undeclared layout may take the wrong dim, or None.

        Only a layout the user did not spell out (no ``layout=``) is doubted: more than 64
        "channels", or channels-last samples that look channels-first (``(3, H, W)``).
        """
        if self.bound or self.granularity != "channel":
            return None
        ca = self.channel_index(sample_shape)
        shape = tuple(sample_shape)
        if shape[ca] > 64:
            return (
                f"axis='channel' with {shape[ca]} channels (the last dim of sample "
                f"shape {shape}); is this really the channel axis? Gray images "
                "(n, H, W) have none: use x[..., None]; say layout='NCHW' for "
                "channels-first batches"
            )
        image_channels = (1, 3, 4)
        if (
            len(shape) == 3
            and ca == 2
            and shape[0] in image_channels
            and shape[2] not in image_channels
        ):
            return (
                f"axis='channel' takes the last dim of sample shape {shape} as the channels "
                f"({shape[2]} of them), but the samples look channels-first ({shape[0]} "
                "channels, then H and W): say layout='NCHW' for channels-first batches, or "
                "layout='NHWC' to keep channels last and silence this"
            )
        return None

    # ------------------------------------------------------------------ shapes
    @property
    def bound(self) -> bool:
        return self.sample_ndim is not None

    def channel_index(self, sample_shape: tuple[int, ...]) -> int:
        """Position of the channels in ``sample_shape`` (validated)."""
        lay = self.bind(sample_shape)
        if lay.channel is None:
            raise ShapeError(f"layout {self.letters!r} has no channel dimension")
        return lay.channel

    def reduced_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one statistic: the sample shape, ``(C,)`` or ``()``."""
        if self.granularity == "feature":
            self.bind(sample_shape)
            return tuple(sample_shape)
        if self.granularity == "global":
            self.bind(sample_shape)
            return ()
        return (sample_shape[self.channel_index(sample_shape)],)

    def kernel_view(self, arr: np.ndarray) -> np.ndarray:
        """View a batch ``(n, *sample)`` as ``(A, C, B)`` with one statistic per C."""
        n, sample = arr.shape[0], tuple(arr.shape[1:])
        if self.granularity == "feature":
            return arr.reshape(n, -1, 1)
        if self.granularity == "global":
            return arr.reshape(n, 1, -1)
        ca = self.channel_index(sample)
        return arr.reshape(n * math.prod(sample[:ca]), sample[ca], math.prod(sample[ca + 1 :]))

    def group_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(A, C, B)`` of one sample seen through :meth:`kernel_view` (for coarsening)."""
        if self.granularity == "feature":
            return (1, math.prod(sample_shape), 1)
        if self.granularity == "global":
            return (1, 1, math.prod(sample_shape))
        ca = self.channel_index(sample_shape)
        return (
            math.prod(sample_shape[:ca]),
            sample_shape[ca],
            math.prod(sample_shape[ca + 1 :]),
        )

    def broadcast(self, values: np.ndarray, sample_ndim: int) -> np.ndarray:
        """Shape statistics (reduced shape) to broadcast against a batch ``(n, *sample)``."""
        if self.granularity == "channel":
            shape = [1] * (sample_ndim + 1)
            shape[1 + self.channel_index(tuple([1] * sample_ndim))] = values.shape[0]
            return values.reshape(shape)
        return values[None] if self.granularity == "feature" else values

    # ------------------------------------------------------------------ order
    @property
    def rank(self) -> int:
        """0 for per-feature, 1 per-channel, 2 global: larger is coarser."""
        return GRANULARITIES.index(self.granularity)

    def coarser_than(self, other: Layout | str) -> bool:
        other_rank = GRANULARITIES.index(other if isinstance(other, str) else other.granularity)
        return self.rank > other_rank

    def same_channels(self, other: Layout) -> bool:
        """Whether both name the same channel dimension (once bound to one sample rank)."""
        if self.channel is None or other.channel is None:
            return self.channel is other.channel
        ndim = self.sample_ndim or other.sample_ndim
        if ndim is None:
            return self.channel == other.channel
        return self.channel % ndim == other.channel % ndim

    def check_mergeable(self, other: Layout, mine: str = "", theirs: str = "") -> None:
        """A :class:`MergeError` naming both layouts unless statistics of both may merge."""
        if not (self.bound and other.bound):
            return
        # per-feature statistics too: element (i, j, k) is another pixel of HWC and of CHW
        # samples, and the channels decide what a later reduce("channel") groups
        same = (
            self.granularity == other.granularity
            and self.sample_ndim == other.sample_ndim
            and (self.granularity == "global" or self.same_channels(other))
        )
        if not same:
            raise MergeError(
                f"cannot merge statistics laid out as {self.describe()}{mine} with statistics "
                f"laid out as {other.describe()}{theirs}: they cover different sets of values. "
                "Compute both with the same axis and layout"
            )

    # ------------------------------------------------------------------ names
    @property
    def letters(self) -> str:
        """The layout as dimension letters (``"HWC"``, ``"CHW"``; ``?`` where unknown)."""
        if self.sample_ndim is None:
            if self.channel in (0, None):
                return "C..." if self.channel == 0 else "..."
            return "...C" if self.channel == -1 else f"channels at dim {self.channel}"
        ndim = self.sample_ndim
        other = _SPATIAL[-(ndim - 1) :] if 1 < ndim <= len(_SPATIAL) + 1 else ""
        if self.channel is None:
            names = (
                list(_SPATIAL[-ndim:]) if ndim <= len(_SPATIAL) else [f"d{i}" for i in range(ndim)]
            )
            return "".join(names)
        if not other and ndim > 1:
            return "".join("C" if i == self.channel % ndim else f"d{i}" for i in range(ndim))
        names = list(other)
        names.insert(self.channel % ndim, "C")
        return "".join(names)

    def describe(self) -> str:
        """In words, for messages: ``per-channel over CHW samples``."""
        what = {"feature": "per-feature", "channel": "per-channel", "global": "global"}
        if self.sample_ndim is None:
            return what[self.granularity]
        return f"{what[self.granularity]} over {self.letters} samples"

    @property
    def keras_axis(self) -> Any:
        """Keras's ``axis`` (counted on the *batch* shape) for these statistics."""
        if self.granularity == "global":
            return None
        ndim = self.sample_ndim or 1
        if self.granularity == "channel":
            channel = (self.channel or 0) % ndim
            return -1 if channel == ndim - 1 else 1 + channel
        return -1 if ndim == 1 else tuple(range(1, ndim + 1))

    @property
    def torch_layout(self) -> str:
        """``normlab.torch.Normalize``'s layout: ``F``, ``HW``, ``CHW`` or ``HWC``."""
        ndim = self.sample_ndim
        if ndim == 1:
            return "F"
        if ndim == 2:
            return "HW"
        if ndim == 3 and self.channel is not None and self.channel % 3 != 1:
            return "CHW" if self.channel % 3 == 0 else "HWC"
        raise ShapeError(
            f"samples laid out as {self.letters}: normlab.torch.Normalize handles feature "
            "vectors, gray HW images and CHW/HWC images"
        )

    @property
    def channel_axis(self) -> int:
        """The channel position counted on the sample shape (how files store it)."""
        return -1 if self.channel is None else self.channel

    def to_meta(self) -> dict[str, Any]:
        return {"layout": self.letters if self.bound else None}


def translate_channel_axis(channel_axis: Any) -> int:
    """The deprecated ``channel_axis`` (sample-counted) as a channel position, with a warning."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise NormlabError(f"channel_axis must be an integer; got {channel_axis!r}")
    value = int(channel_axis)
    if value > 0:
        raise NormlabError(
            f"channel_axis={value} is ambiguous: it counted on the sample shape (so for an "
            "NCHW batch channel_axis=1 named H, not C); spell the layout instead: "
            "layout='CHW' (or 'NCHW') for channels first, layout='HWC' for channels last"
        )
    hint = "layout='CHW'" if value == 0 else "layout='HWC' (or leave it out: channels last)"
    warn(f"channel_axis={value} is deprecated; use {hint}", DeprecationWarning)
    return value
