"""The one error hierarchy of normlab.

Every error on bad input is a :class:`NormlabError` (a ``ValueError``, so code that
catches ``ValueError`` — scikit-learn's checks among it — keeps working). Messages say
what was expected, what was found and where.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class NormlabError(ValueError):
    """Base class of every error normlab raises on bad input."""


class EmptyDataError(NormlabError):
    """The data holds no samples."""


class NonFiniteError(NormlabError):
    """NaN or inf values met under ``nan_policy="raise"``."""


class FloatOverflowError(NormlabError):
    """Finite float input so large (near ±1e308) that float64 sums overflow; not NaN input."""


class ShapeError(NormlabError):
    """Sample shape, channel count or rank does not match."""


class DTypeError(NormlabError):
    """A dtype normlab cannot use (object, strings, complex, ...)."""


class MergeError(NormlabError):
    """Two statistics that describe different things cannot be merged."""


class FileFormatError(NormlabError):
    """A file that is truncated, not a normlab file, or of an unsupported version."""


class NotFittedError(NormlabError):
    """A normalizer was used before it was fitted."""


class SourceError(NormlabError):
    """A data source (file, folder, dataset) could not be read."""


class MissingExtraError(NormlabError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class NormlabWarning(UserWarning):
    """Warnings normlab emits (zero variance, suspicious value range, ...)."""


def warn(message: str, category: type[Warning] = NormlabWarning) -> None:
    """Warn at the user's line: the first caller outside the normlab package, whatever the path.

    ``stacklevel`` counted by hand breaks as soon as an entry point (``fit``, ``partial_fit``,
    ``fit_stats``, the CLI) reaches the warning through another number of frames.
    """
    frame = sys._getframe(1)
    level = 2  # 1 would be this function's own line
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def optional_import_failed(exc: ImportError) -> bool:
    """Whether ``exc`` says an optional third-party dependency is missing (not a bug in normlab).

    Registries skip a plugin whose dependency is absent, and re-raise every other ImportError,
    so a real error inside normlab never makes schemes or sources vanish without a trace.
    """
    missing = exc.name or ""
    return bool(missing) and missing.split(".")[0] != "normlab"


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{module!r} is needed for this; install it with: pip install 'normlab[{extra}]'"
        ) from None
