"""What exports and the PyTorch modules check of a fitted normalizer, in one place.

:mod:`normlab.export` and :mod:`normlab.torch` both ask these (so ``normlab.torch`` never
imports the exports): a fitted normalizer, a fitted whitening, or one affine map.
"""

from __future__ import annotations

from typing import Any

from .errors import NormlabError, NotFittedError
from .normalizers import AffineNormalizer, Identity, Normalizer
from .whitening import Whiten


def fitted(normalizer: Any, target: str) -> Normalizer:
    """The normalizer, if it is a fitted normlab normalizer; else an error naming ``target``."""
    if not isinstance(normalizer, Normalizer):
        raise NormlabError(
            f"exporting to {target} needs a fitted normlab normalizer; got "
            f"{type(normalizer).__name__}"
        )
    if not normalizer.is_fitted:
        raise NotFittedError(
            f"this {type(normalizer).__name__} is not fitted yet: fit it before exporting to "
            f"{target}"
        )
    return normalizer


def fitted_whitening(normalizer: Any, target: str) -> Whiten:
    """The fitted :class:`~normlab.Whiten`, or an error saying what ``target`` needs."""
    normalizer = fitted(normalizer, target)
    if not isinstance(normalizer, Whiten):
        raise NormlabError(
            f"{target} takes a ZCA or PCA whitening (normlab.Whiten); got scheme "
            f"{normalizer.scheme!r} ({type(normalizer).__name__}): use "
            "normlab.torch.Normalize.from_normalizer for per-feature schemes"
        )
    return normalizer


def as_affine(normalizer: Any, target: str, instead: str) -> AffineNormalizer:
    """The normalizer as one affine map, or an error naming what to use instead."""
    normalizer = fitted(normalizer, target)
    if isinstance(normalizer, Identity):
        raise NormlabError(
            f"scheme 'raw' leaves the values unchanged: there is nothing to export to {target} "
            "(use no normalization layer at all)"
        )
    try:  # the contract: affine() raises for schemes that are not one (x − shift) / scale
        normalizer.affine(getattr(normalizer, "sample_shape_", None) or (1,))
        why = "" if isinstance(normalizer, AffineNormalizer) else "no per-feature shift_/scale_"
    except (NormlabError, AttributeError) as exc:
        why = str(exc)
    if why:
        raise NormlabError(
            f"scheme {normalizer.scheme!r} ({type(normalizer).__name__}) is not one per-feature "
            f"affine map (x − shift) / scale ({why}), which is all {target} can express; {instead}"
        )
    return normalizer
