"""What a source records while it reads, kept beside the statistics (never in the data stream).

A task's ``chunks()`` yields arrays only. While an engine runs a task it opens a
:class:`Provenance` recorder (:func:`recording`); the task's code reports what it wants kept
through :func:`recorder` — ``recorder().skipped(where, reason)`` for an unreadable item,
``recorder().saw("mode", "RGB 8-bit", where)`` for the kind or size of the next samples. The
engine sends the record back beside the task's statistic, and the runner merges the records in
task order, so the same inputs give the same record on every engine.

Mixed modes, bit depths or sizes that the statistics cannot hold are refused here, naming one
file of each, as soon as the second one is seen (in the task, or when two tasks' records merge).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import FileFormatError, ShapeError, SourceError

KEPT_SKIPS = 1000  # skipped items listed in a record; the count is always exact
KINDS = ("mode", "size")


def _channels_of(mode: str) -> str:
    return mode.split(" ")[0]


@dataclass
class Provenance:
    """Skipped items and the first item of each mode and size, for messages and files.

    ``granularity`` (``"feature"``, ``"channel"`` or ``"global"``) decides which mixtures are
    errors: per-pixel statistics need one size, per-channel ones one channel count.
    """

    granularity: str = "feature"
    skips: list[dict[str, str]] = field(default_factory=list)
    n_skipped: int = 0
    first_of: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})
    strict_mode: bool = False

    # ------------------------------------------------------------------ recording
    def skipped(self, where: str, reason: Any) -> None:
        """Item ``where`` could not be read (``reason``) and was left out."""
        self.n_skipped += 1
        if len(self.skips) < KEPT_SKIPS:
            self.skips.append({"item": str(where), "reason": str(reason)})

    def saw(self, kind: str, value: Any, where: str, *, strict: bool = False) -> None:
        """The samples from ``where`` on have mode/depth (``kind="mode"``) or size ``value``.

        ``strict``: every item must share one mode (no conversion was asked for).
        """
        if kind not in KINDS:
            raise SourceError(f"unknown provenance kind {kind!r} (known: {', '.join(KINDS)})")
        self.strict_mode = self.strict_mode or (kind == "mode" and strict)
        seen = self.first_of[kind]
        if str(value) not in seen and len(seen) < 2:
            seen[str(value)] = str(where)
            self.check()

    def check(self) -> None:
        """Mixed modes/depths/sizes that the statistics cannot hold: name one item of each."""
        modes = self.first_of["mode"]
        if len(modes) > 1:
            (m1, f1), (m2, f2) = list(modes.items())[:2]
            depth_differs = m1.split(" ")[-1] != m2.split(" ")[-1]
            channels_differ = _channels_of(m1) != _channels_of(m2)
            if (
                depth_differs
                or self.strict_mode
                or (channels_differ and self.granularity != "global")
            ):
                hint = (
                    "one bit depth per data set: convert the files"
                    if depth_differs
                    else "pass mode='RGB' or mode='L' (CLI: --mode) to convert them"
                    if self.strict_mode
                    else "mixed channel counts need axis='global' or a mode conversion"
                )
                raise SourceError(f"mixed image modes: {f1} is {m1}, {f2} is {m2}; {hint}")
        sizes = self.first_of["size"]
        if len(sizes) > 1 and self.granularity == "feature":
            (s1, f1), (s2, f2) = list(sizes.items())[:2]
            raise ShapeError(
                f"per-pixel statistics need one image size: {f1} is {s1}, {f2} is {s2}; pass "
                "resize=(H, W) (CLI: --resize H W), or use axis='channel' or 'global'"
            )

    # ------------------------------------------------------------------ merging
    def __iadd__(self, other: Provenance) -> Provenance:
        """Append ``other`` (the record of a later task)."""
        self.strict_mode = self.strict_mode or other.strict_mode
        for kind, seen in other.first_of.items():
            for value, where in seen.items():
                self.saw(kind, value, where)
        self.skips = (self.skips + other.skips)[:KEPT_SKIPS]
        self.n_skipped += other.n_skipped
        return self

    @property
    def empty(self) -> bool:
        """Whether the source recorded nothing at all."""
        return not self.n_skipped and not any(self.first_of.values())

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        return {
            "skipped": {"count": self.n_skipped, "items": list(self.skips)},
            "first_of": {k: dict(v) for k, v in self.first_of.items()},
            "strict_mode": self.strict_mode,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], granularity: str = "feature") -> Provenance:
        """The record saved by :meth:`metadata` (in a statistics file or a checkpoint)."""
        skipped = meta.get("skipped") or {}
        try:
            out = cls(
                granularity,
                list(skipped.get("items", [])),
                int(skipped.get("count", 0)),
                _checked_first_of(meta.get("first_of")),
                bool(meta.get("strict_mode")),
            )
        except (TypeError, ValueError, AttributeError):
            raise FileFormatError("corrupt provenance (skipped items) in the file") from None
        return out


class Recorded:
    """Read access to the :class:`Provenance` a statistic carries beside its numbers
    (``self.provenance``): shared by :class:`~normlab.CoMoments` and
    :class:`~normlab.ImageStats`."""

    provenance: Provenance

    @property
    def skipped(self) -> list[dict[str, str]]:
        """The skipped unreadable items (the first 1000): ``{"item": ..., "reason": ...}``."""
        return self.provenance.skips

    @property
    def n_skipped(self) -> int:
        """How many items were skipped as unreadable (``skip_bad``), all of them counted."""
        return self.provenance.n_skipped


def _checked_first_of(value: Any) -> dict[str, dict[str, str]]:
    """The saved provenance of modes and sizes, validated: ``{"mode": {..}, "size": {..}}``."""
    first_of = value if value is not None else {k: {} for k in KINDS}
    valid = (
        isinstance(first_of, dict)
        and set(first_of) == set(KINDS)
        and all(
            isinstance(seen, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in seen.items())
            for seen in first_of.values()
        )
    )
    if not valid:
        raise FileFormatError("corrupt image provenance ('first_of') in the statistics file")
    return {k: dict(v) for k, v in first_of.items()}


_CURRENT: contextvars.ContextVar[Provenance | None] = contextvars.ContextVar(
    "normlab_provenance", default=None
)


@contextlib.contextmanager
def recording(granularity: str = "feature") -> Iterator[Provenance]:
    """A fresh record that :func:`recorder` returns until the block ends."""
    record = Provenance(granularity)
    token = _CURRENT.set(record)
    try:
        yield record
    finally:
        _CURRENT.reset(token)


def recorder() -> Provenance:
    """The record of the task being run (a throwaway one when no engine is recording)."""
    current = _CURRENT.get()
    return current if current is not None else Provenance("global")
