"""The scheme registry: the one source of normalization names, and of what each scheme needs.

Every other part of normlab (the CLI, the convergence lab, the diagnostics, the demo, the
exports) refers to schemes by these names and asks the registry entry — never the name — what
a scheme needs: which statistics (:attr:`Scheme.needs`), at which granularity, and which options
it accepts, and the roles callers ask about (:attr:`Scheme.reference`, ...: see
:func:`where`). Adding a scheme touches one file: the module that defines its normalizer calls
:func:`register` next to the class (:mod:`normlab.normalizers`, :mod:`normlab.whitening`, or
your own module); :func:`unregister` takes it out again.

Examples
--------
>>> import normlab.schemes as schemes
>>> schemes.names()[:4]
['raw', 'max', 'maxabs', 'minmax']
>>> schemes.get("channel", layout="CHW").layout
'CHW'
>>> sorted(schemes.entry("zca").needs), schemes.entry("channel").granularity
(['comoments'], 'channel')
>>> schemes.where(reference=True)
['raw', 'max']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NormlabError, optional_import_failed

if TYPE_CHECKING:
    from .normalizers import Normalizer

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
    reference : bool
        A scheme the others are compared with (predicted and measured speed-ups "vs" it).
    baseline : bool
        The data as they are: the reference the lab measures speed-ups against.
    measured_by_default : bool
        Trained by ``normlab diagnose --measure`` unless the caller names the schemes.
    in_default_set : bool
        Compared by ``normlab compare`` (the lab) unless the caller names the schemes.
    feature_std : bool
        Divides each feature by its own std (rare features can reach ``|z| = √(n−1)``).
    default : bool
        What ``normlab fit`` fits when no ``--scheme`` is named (one scheme).
    """

    name: str
    factory: Callable[..., Normalizer]
    description: str
    needs: frozenset[str] = frozenset({"moments"})
    granularity: str | None = "feature"
    options: tuple[str, ...] = ("dtype",)
    reference: bool = False
    baseline: bool = False
    measured_by_default: bool = False
    in_default_set: bool = False
    feature_std: bool = False
    default: bool = False

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
# Modules that add schemes when imported: the built-in normalizers, then the optional features.
_BUILT_IN = "normlab.normalizers"
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
    reference: bool = False,
    baseline: bool = False,
    measured_by_default: bool = False,
    in_default_set: bool = False,
    feature_std: bool = False,
    default: bool = False,
) -> None:
    """Add a scheme; ``factory(**options)`` returns an unfitted normalizer.

    ``options`` default to the keyword parameters of the normalizer's class, less those the
    name chooses (:data:`CHOSEN_BY_NAME`). The flags are the fields of :class:`Scheme`.
    Registering a name again replaces its entry.
    """
    unknown = set(needs) - set(STATISTICS)
    if unknown:
        raise NormlabError(f"scheme {name!r}: unknown statistics {sorted(unknown)}")
    if options is None:
        options = _keyword_parameters(type(factory()))
    _REGISTRY[name] = Scheme(
        name,
        factory,
        description,
        frozenset(needs),
        granularity,
        options,
        reference=reference,
        baseline=baseline,
        measured_by_default=measured_by_default,
        in_default_set=in_default_set,
        feature_std=feature_std,
        default=default,
    )


def unregister(name: str) -> None:
    """Take scheme ``name`` out of the registry (a plug-in's or a test's own scheme)."""
    entry(name)  # an unknown name is an error that lists the valid ones
    del _REGISTRY[name]


def _keyword_parameters(cls: type) -> tuple[str, ...]:
    import inspect

    # mypy refuses __init__ of a class object in general; it is only read here
    parameters = inspect.signature(cls.__init__).parameters.items()  # type: ignore[misc]
    return tuple(n for n, p in parameters if p.kind is p.KEYWORD_ONLY and n not in CHOSEN_BY_NAME)


def _load_plugins() -> None:
    importlib.import_module(_BUILT_IN)  # core: an error there is never hidden
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


def where(**flags: bool) -> list[str]:
    """The names whose entries have these flag values, in registry order.

    >>> import normlab.schemes as schemes
    >>> schemes.where(in_default_set=True)
    ['raw', 'max', 'global', 'feature']
    """
    _load_plugins()
    fields = set(Scheme.__dataclass_fields__)
    unknown = sorted(set(flags) - fields)
    if unknown:
        raise NormlabError(f"schemes have no field {', '.join(unknown)}")
    return [s.name for s in _REGISTRY.values() if all(getattr(s, k) == v for k, v in flags.items())]


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
