"""Argument checks shared by every public constructor and function.

Each returns the value in its canonical type or raises :class:`~normlab.errors.NormlabError`
naming the argument, what it takes and what it got — never a raw ``TypeError`` or
``ValueError`` from deep inside numpy.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import NormlabError


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """A whole number (bools refused), optionally within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise NormlabError(f"{name} must be an integer; got {_got(value)}")
    out = int(value)
    if abs(out) >= 2**62:
        raise NormlabError(f"{name}={out} is out of range")
    if minimum == 1 and out < 1:
        raise NormlabError(f"{name} must be a positive integer; got {out}")
    if minimum is not None and out < minimum:
        raise NormlabError(f"{name} must be at least {minimum}; got {out}")
    if maximum is not None and out > maximum:
        raise NormlabError(f"{name} must be at most {maximum}; got {out}")
    return out


def optional_integer(name: str, value: Any, *, minimum: int | None = None) -> int | None:
    return None if value is None else integer(name, value, minimum=minimum)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise NormlabError(f"{name} must be True or False; got {_got(value)}")
    return bool(value)


def real(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    normal: bool = False,
) -> float:
    """A finite real number; ``positive``/``nonnegative``; ``normal``: not subnormal."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NormlabError(f"{name} must be a number; got {_got(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise NormlabError(f"{name} must be a finite number; got {out}")
    if positive and not out > 0:
        raise NormlabError(f"{name} must be positive; got {out}")
    if nonnegative and out < 0:
        raise NormlabError(f"{name} must not be negative; got {out}")
    if normal and out != 0 and abs(out) < np.finfo(np.float64).tiny:
        raise NormlabError(
            f"{name}={out} is subnormal: its reciprocal overflows float64; rescale the data"
        )
    return out


def optional_real(name: str, value: Any, **kwargs: Any) -> float | None:
    return None if value is None else real(name, value, **kwargs)


def choice(name: str, value: Any, options: Any) -> Any:
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise NormlabError(
            f"{name} must be one of {', '.join(repr(o) for o in options)}; got {_got(value)}"
        )
    return value


def float_dtype(name: str, value: Any) -> np.dtype | None:
    """None or a float dtype (float16, float32, float64)."""
    if value is None:
        return None
    try:
        dt = np.dtype(value)
    except (TypeError, ValueError):
        raise NormlabError(
            f"{name} must be a float dtype (float16, float32, float64); got {_got(value)}"
        ) from None
    if dt.kind != "f" or dt.itemsize > 8:
        raise NormlabError(f"{name} must be float16, float32 or float64; got {dt}")
    return dt


def real_pair(name: str, value: Any, *, increasing: bool = True) -> tuple[float, float]:
    """Two finite numbers ``(low, high)`` with ``low < high`` and a finite ``high − low``."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise NormlabError(f"{name} must be two numbers (low, high); got {_got(value)}") from None
    low, high = real(f"{name}[0]", low), real(f"{name}[1]", high)
    if increasing and not high > low:
        raise NormlabError(f"{name} must be increasing (low < high); got ({low}, {high})")
    if not math.isfinite(high - low):
        raise NormlabError(f"{name}: high − low = {high - low} is not a finite number")
    return low, high


def optional_string(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise NormlabError(f"{name} must be a string; got {_got(value)}")
    return value


def path_like(name: str, value: Any, *, optional: bool = False) -> Any:
    """A ``str`` or ``os.PathLike`` (or None when ``optional``)."""
    import os

    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise NormlabError(f"{name} must be a path (str or pathlib.Path); got {_got(value)}")
    return value


def run_options(
    *,
    chunk_size: Any = None,
    workers: Any = None,
    channel_axis: Any = None,
    checkpoint: Any = None,
    checkpoint_every: Any = None,
    key: Any = None,
    engine: Any = None,
    scheduler: Any = None,
) -> None:
    """The options every pass over data takes, checked before anything is read."""
    optional_integer("chunk_size", chunk_size, minimum=1)
    optional_integer("workers", workers, minimum=1)
    if engine is not None:  # engine, workers and scheduler together (a scheduler's address)
        from .engines import check_engine

        check_engine(engine, workers, scheduler)
    optional_integer("channel_axis", channel_axis)
    path_like("checkpoint", checkpoint, optional=True)
    optional_integer("checkpoint_every", checkpoint_every, minimum=1)
    optional_string("key", key)
