"""The scheme registry: the one source of normalization names, and of what each scheme needs.

Every other part of normlab (the CLI, the convergence lab, the diagnostics, the demo, the
exports) refers to schemes by these names and asks the registry entry — never the name — what
a scheme needs: which statistics (:attr:`Scheme.needs`), at which granularity, and which options
it accepts. Adding a scheme touches one file: the module that defines its normalizer calls
:func:`register`.

Examples
--------
>>> import normlab.schemes as schemes
>>> schemes.names()[:4]
['raw', 'max', 'maxabs', 'minmax']
>>> schemes.get("channel", layout="CHW").layout
'CHW'
>>> sorted(schemes.entry("zca").needs), schemes.entry("channel").granularity
(['comoments'], 'channel')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import NormlabError, optional_import_failed
from .normalizers import (
    ClipPercentile,
    Identity,
    MaxAbs,
    MaxScale,
    MinMax,
    Normalizer,
    PerImage,
    ZScore,
)

STATISTICS = ("moments", "comoments", "histogram")
# Constructor parameters that a scheme's name chooses (``center`` is ZScore(with_std=False),
# ``zca`` is Whiten(method="zca")): never options of the scheme.
CHOSEN_BY_NAME = frozenset({"method", "with_mean", "with_std"})


@dataclass(frozen=True)
class Scheme:
    """One registry entry.

    Attributes
    ----------
    name, factory, description
        ``factory(**options)`` returns an unfitted normalizer.
    needs : frozenset of {"moments", "comoments", "histogram"}
        The statistics it is fitted from (empty: nothing to fit).
    granularity : {"feature", "channel", "global"} or None
        The granularity of those statistics by default (``axis=`` may change it).
    options : tuple of str
        The keyword options ``factory`` accepts.
    """

    name: str
    factory: Callable[..., Normalizer]
    description: str
    needs: frozenset[str] = frozenset({"moments"})
    granularity: str | None = "feature"
    options: tuple[str, ...] = ("dtype",)

    def takes_layout(self) -> bool:
        """Whether the scheme reads per-channel layouts (accepts ``layout=``)."""
        return "layout" in self.options

    def unusable_for(self, sample_shape: tuple[int, ...] | None) -> str | None:
        """Why the scheme does not apply to samples of ``sample_shape`` by default (or None)."""
        if self.granularity == "channel" and len(sample_shape or ()) != 3:
            return (
                f"samples of shape {sample_shape} have no channel axis (H, W, C): per-channel "
                "statistics would z-score each column"
            )
        return None

    def statistics_from(self, stats: Any) -> Any:
        """The part of loaded statistics the scheme is fitted from (co-moments or moments)."""
        from .comoments import CoMoments

        if "comoments" not in self.needs and isinstance(stats, CoMoments):
            return stats.moments
        return stats

    def compute_statistics(self, normalizer: Normalizer, source: Any, **options: Any) -> Any:
        """What ``normalizer`` (of this scheme) is fitted from, in one pass over ``source``.

        ``options``: those of :func:`~normlab.compute_stats` (layout, reading, engine, ...).
        """
        if "comoments" in self.needs:
            from .comoments import compute_comoments

            for name in ("layout", "channel_axis"):
                options.pop(name, None)  # whitening works on the flattened sample
            return compute_comoments(source, **options)
        from .stats import compute_stats

        if "histogram" in self.needs:
            options.setdefault("histogram", True)
        return compute_stats(source, normalizer.stats_axis, **options)


_REGISTRY: dict[str, Scheme] = {}
# Modules that add schemes when imported (optional features register themselves here).
_PLUGINS = ("normlab.whitening",)
_UNAVAILABLE: dict[str, str] = {}  # plugin -> why it could not be imported


def register(
    name: str,
    factory: Callable[..., Normalizer],
    description: str,
    *,
    needs: tuple[str, ...] = ("moments",),
    granularity: str | None = "feature",
    options: tuple[str, ...] | None = None,
) -> None:
    """Add a scheme; ``factory(**options)`` returns an unfitted normalizer.

    ``options`` default to the keyword parameters of the normalizer's class, less those the
    name chooses (:data:`CHOSEN_BY_NAME`).
    """
    unknown = set(needs) - set(STATISTICS)
    if unknown:
        raise NormlabError(f"scheme {name!r}: unknown statistics {sorted(unknown)}")
    if options is None:
        options = _keyword_parameters(type(factory()))
    _REGISTRY[name] = Scheme(name, factory, description, frozenset(needs), granularity, options)


def _keyword_parameters(cls: type) -> tuple[str, ...]:
    import inspect

    # mypy refuses __init__ of a class object in general; it is only read here
    parameters = inspect.signature(cls.__init__).parameters.items()  # type: ignore[misc]
    return tuple(n for n, p in parameters if p.kind is p.KEYWORD_ONLY and n not in CHOSEN_BY_NAME)


def _load_plugins() -> None:
    for module in _PLUGINS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if not optional_import_failed(exc):
                raise  # a real error inside normlab: never hide it
            _UNAVAILABLE[module] = str(exc)


def names() -> list[str]:
    """Every registered scheme name, in registry order."""
    _load_plugins()
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    """``{name: one-line description}``."""
    _load_plugins()
    return {s.name: s.description for s in _REGISTRY.values()}


def entry(name: str) -> Scheme:
    """The registry entry of ``name``; unknown names list the valid ones."""
    _load_plugins()
    if name not in _REGISTRY:
        missing = "".join(f"; {m} is unavailable ({why})" for m, why in _UNAVAILABLE.items())
        raise NormlabError(
            f"unknown scheme {name!r}; choose one of: {', '.join(_REGISTRY)}{missing}"
        )
    return _REGISTRY[name]


def get(name: str, **options: Any) -> Normalizer:
    """An unfitted normalizer for scheme ``name``; options it does not take are named."""
    scheme = entry(name)
    unknown = sorted(set(options) - set(scheme.options) - CHOSEN_BY_NAME)
    if unknown:
        raise NormlabError(
            f"scheme {name!r} takes no option {', '.join(unknown)}; it takes: "
            f"{', '.join(scheme.options) or 'none'}"
        )
    try:
        return scheme.factory(**options)
    except TypeError as exc:  # e.g. with_std for "center", which the name already chooses
        raise NormlabError(f"scheme {name!r}: bad options {sorted(options)} ({exc})") from None


def fit_stats(name: str, stats: Any, **options: Any) -> Normalizer:
    """A normalizer of scheme ``name`` fitted from statistics (no pass over the data)."""
    scheme = entry(name)
    return get(name, **options).fit_stats(scheme.statistics_from(stats))


def from_stats(name: str, stats: Any, **options: Any) -> Normalizer:
    """Same as :func:`fit_stats` (kept: a module function cannot be taken for a constructor)."""
    return fit_stats(name, stats, **options)


def _zscore(axis: str, **fixed: Any) -> Callable[..., Normalizer]:
    def factory(**options: Any) -> Normalizer:
        return ZScore(axis=options.pop("axis", axis), **fixed, **options)

    return factory


register(
    "raw", Identity, "nothing: the values as they are (the baseline)", needs=(), granularity=None
)
register(
    "max",
    MaxScale,
    "divide by the value scale's maximum (255 for uint8); NOT a z-score: outputs stay all-positive",
    granularity="global",
)
register(
    "maxabs",
    MaxAbs,
    "divide each feature by its largest |x|",
)
register(
    "minmax",
    MinMax,
    "map each feature's [min, max] onto feature_range (0..1)",
)
register(
    "center",
    _zscore("feature", with_std=False),
    "subtract the per-feature mean only",
)
register(
    "scale",
    _zscore("feature", with_mean=False),
    "divide by the per-feature std only",
)
register(
    "global",
    _zscore("global"),
    "z-score with one mean and one std over all values",
    granularity="global",
)
register(
    "channel",
    _zscore("channel"),
    "z-score per channel (torchvision's Normalize)",
    granularity="channel",
)
register(
    "feature",
    _zscore("feature"),
    "z-score per feature (per pixel): each input's own mean/std",
)
register(
    "per-image",
    PerImage,
    "standardize each sample by its own mean/std (std ≥ 1/√N)",
    needs=(),
    granularity=None,
)
register(
    "clip-percentile",
    ClipPercentile,
    "clip each channel to its exact [0.5, 99.5] percentiles (nearest rank, 8/16-bit data), then "
    "scale that range onto 0..1",
    needs=("moments", "histogram"),
    granularity="channel",
)
