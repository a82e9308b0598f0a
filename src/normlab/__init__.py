"""normlab: input normalization you can verify.

Exact, streaming, mergeable statistics; normalizers built on them; diagnostics of what the
data does to gradient descent; a lab that measures it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import schemes
from .comoments import CoMoments, compute_comoments
from .errors import NormlabError, NormlabWarning, NotFittedError
from .imagestats import ImageStats
from .io import load
from .moments import Moments
from .normalizers import Identity, MaxAbs, MaxScale, MinMax, PerImage, ZScore
from .stats import compute_stats
from .whitening import Whiten

__all__ = [
    "CoMoments",
    "Identity",
    "ImageStats",
    "MaxAbs",
    "MaxScale",
    "MinMax",
    "Moments",
    "NormlabError",
    "NormlabWarning",
    "NotFittedError",
    "PerImage",
    "Whiten",
    "ZScore",
    "__version__",
    "compute_comoments",
    "compute_stats",
    "load",
    "schemes",
]
