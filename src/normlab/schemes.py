"""The scheme registry: the one source of normalization names.

Every other part of normlab (the CLI, the convergence lab, the diagnostics, the exports)
refers to schemes by these names.

>>> import normlab.schemes as schemes
>>> schemes.names()[:4]
['raw', 'max', 'maxabs', 'minmax']
>>> schemes.get("channel", channel_axis=0)
ZScore(axis='channel', channel_axis=0, with_mean=True, with_std=True, ddof=0, std_floor=None, dtype=None)
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import NormlabError
from .moments import Moments
from .normalizers import Identity, MaxAbs, MaxScale, MinMax, Normalizer, PerImage, ZScore


@dataclass(frozen=True)
class Scheme:
    name: str
    factory: Callable[..., Normalizer]
    description: str


_REGISTRY: dict[str, Scheme] = {}
# Modules that add schemes when imported (optional features register themselves here).
_PLUGINS = ("normlab.whitening", "normlab.histogram")


def register(name: str, factory: Callable[..., Normalizer], description: str) -> None:
    """Add a scheme; ``factory(**options)`` returns an unfitted normalizer."""
    _REGISTRY[name] = Scheme(name, factory, description)


def _load_plugins() -> None:
    for module in _PLUGINS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def names() -> list[str]:
    """Every registered scheme name, in registry order."""
    _load_plugins()
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    """``{name: one-line description}``."""
    _load_plugins()
    return {s.name: s.description for s in _REGISTRY.values()}


def get(name: str, **options: Any) -> Normalizer:
    """An unfitted normalizer for scheme ``name``; unknown names list the valid ones."""
    _load_plugins()
    if name not in _REGISTRY:
        raise NormlabError(f"unknown scheme {name!r}; choose one of: {', '.join(_REGISTRY)}")
    try:
        return _REGISTRY[name].factory(**options)
    except TypeError as exc:
        raise NormlabError(f"scheme {name!r}: bad options {sorted(options)} ({exc})") from None


def from_stats(name: str, stats: Moments, **options: Any) -> Normalizer:
    """A normalizer of scheme ``name`` fitted from statistics (no pass over the data)."""
    return get(name, **options).from_stats(stats)


def _zscore(axis: str, **fixed: Any) -> Callable[..., Normalizer]:
    def factory(**options: Any) -> Normalizer:
        return ZScore(axis=options.pop("axis", axis), **fixed, **options)

    return factory


register("raw", Identity, "nothing: the values as they are (the baseline)")
register(
    "max",
    MaxScale,
    "divide by the value scale's maximum (255 for uint8); NOT a z-score: outputs stay all-positive",
)
register("maxabs", MaxAbs, "divide each feature by its largest |x|")
register("minmax", MinMax, "map each feature's [min, max] onto feature_range (0..1)")
register("center", _zscore("feature", with_std=False), "subtract the per-feature mean only")
register("scale", _zscore("feature", with_mean=False), "divide by the per-feature std only")
register("global", _zscore("global"), "z-score with one mean and one std over all values")
register("channel", _zscore("channel"), "z-score per channel (torchvision's Normalize)")
register(
    "feature", _zscore("feature"), "z-score per feature (per pixel): each input's own mean/std"
)
register("per-image", PerImage, "standardize each sample by its own mean/std (std ≥ 1/√N)")
