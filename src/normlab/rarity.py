"""When a feature is "rare": the one rule that ``normlab stats`` and ``diagnose`` share.

A feature is rare when it is non-zero in at least one and at most :func:`rare_limit` samples:
``threshold`` samples (5 by default), and never more than a tenth of the samples, so that
"rare" keeps its meaning at any sample count. With fewer than 10 samples no feature is rare
(a feature non-zero in 3 of 5 samples is not rare); the reports say that rarity is not judged.
"""

from __future__ import annotations

RARE_THRESHOLD = 5  # a feature non-zero in at most this many samples is "rare"
RARE_FRACTION = 10  # ... and in at most 1/RARE_FRACTION of the samples


def rare_limit(n_samples: int, threshold: int = RARE_THRESHOLD) -> int:
    """The most samples a rare feature is non-zero in (0: rarity is not judged)."""
    return max(0, min(int(threshold), int(n_samples) // RARE_FRACTION))


def rare_rule(n_samples: int, threshold: int = RARE_THRESHOLD) -> str:
    """The rule as the reports print it."""
    limit = rare_limit(n_samples, threshold)
    if limit == 0:
        return f"not judged at {n_samples} samples; needs {RARE_FRACTION} or more"
    return f"non-zero in 1..{limit} of {n_samples} samples"
