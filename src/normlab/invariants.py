"""Load-time checks: every invariant a statistics file has, so that a file no data can produce
is a :class:`~normlab.errors.FileFormatError` at load, not a wrong number later.

Checked, per reduced element (feature, channel or the one global value):

* counts: ``0 ≤ n_nonzero ≤ count`` (unweighted), ``n_nonfinite ≥ 0`` (0 for integer data and
  under ``nan_policy="raise"``); and against
  ``n_samples_seen`` (below 2**63): every sample gives each statistic the same number of
  values, so ``count + n_nonfinite = n_samples_seen × values per sample`` (per feature: 1;
  per channel: the sample's size over the channels; global: its size), and at least
  ``n_samples_seen`` where samples of several shapes came in (per-channel statistics: the
  same for every channel); weighted statistics: counts are sums of weights, and any count
  needs a sample; and no statistic counts more than 2**62 values;
* an element with count 0 has sums 0; one with values has ``min ≤ max``, both finite
  (integers: whole numbers);
* exact sums (integer data): ``count·min ≤ Σx ≤ count·max`` and
  ``count·Σx² − (Σx)² ≥ 0`` (Cauchy–Schwarz: the variance is not negative), ``Σx² ≥ 0``;
* float moments: ``0 ≤ m2 ≤ count·(max − min)²`` (finite) and ``min ≤ mean ≤ max`` up to
  rounding.

All checks are vectorised or linear in the number of elements: load time stays linear in the
file size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import FileFormatError
from .exact import INT64_LIMIT

COUNT_LIMIT = 2**62  # values per statistic: exabytes of data; exact weighted counts stop here
_ROUNDING = 64 * np.finfo(np.float64).eps  # mean within [min, max] up to this relative slack


def _first(mask: np.ndarray) -> str:
    idx = np.argwhere(np.asarray(mask))
    where = tuple(int(i) for i in idx[0]) if idx.size else ()
    return f"{int(np.count_nonzero(mask))} element(s), first at {where or 'the only one'}"


def check_moments(m: Any) -> None:
    """Raise FileFormatError when the loaded statistics ``m`` break an invariant."""
    from .exact import ExactMoments

    sums, extrema = m.sums, m.extrema
    if sums is None or extrema is None:
        return
    count = sums.count
    weighted = count.dtype.kind == "f"
    if weighted and not np.isfinite(count).all():
        raise FileFormatError("non-finite sample weights in the statistics")
    nnz, nonfinite = extrema.n_nonzero, extrema.n_nonfinite
    if (count < 0).any() or (nnz < 0).any() or (nonfinite < 0).any():
        raise FileFormatError("negative counts in the statistics")
    if m.n_samples_seen < 0:
        raise FileFormatError(f"negative n_samples_seen ({m.n_samples_seen})")
    _check_counts(m, count, nonfinite)
    if not weighted:
        if (nnz > count).any():
            raise FileFormatError(
                f"more non-zero values than values ({_first(nnz > count)}): corrupt statistics"
            )
    seen = count > 0
    lo, hi = extrema.min, extrema.max
    if not (np.isfinite(lo[seen]).all() and np.isfinite(hi[seen]).all()):
        raise FileFormatError("non-finite min or max of features that saw values")
    if (lo[seen] > hi[seen]).any():
        raise FileFormatError(f"min > max ({_first(seen & (lo > hi))}): corrupt statistics")
    if isinstance(sums, ExactMoments):
        _check_exact(sums, count, lo, hi, seen)
    else:
        _check_float(sums, lo, hi, seen)


def _check_counts(m: Any, count: np.ndarray, nonfinite: np.ndarray) -> None:
    """``count`` and ``n_nonfinite`` against ``n_samples_seen`` (see the module's description)."""
    n = int(m.n_samples_seen)
    if n > INT64_LIMIT:
        raise FileFormatError(f"n_samples_seen={n} is beyond int64: corrupt statistics")
    if count.size and n == 0 and bool((count > 0).any()):
        raise FileFormatError(
            f"n_samples_seen=0 but count holds values ({_first(count > 0)}): corrupt statistics"
        )
    if (m.nan_policy == "raise" or m.exact) and bool((nonfinite != 0).any()):
        why = "integer data have none" if m.exact else "nan_policy='raise' stops at the first"
        raise FileFormatError(
            f"n_nonfinite holds NaN/inf counts ({_first(nonfinite != 0)}), but {why}: "
            "corrupt n_nonfinite"
        )
    if m.weighted and count.dtype.kind == "f":
        return  # sums of fractional weights: no relation to the number of samples
    # Python ints: a corrupt count near 2**63 plus n_nonfinite must not wrap around
    total = np.asarray(count.astype(object) + nonfinite.astype(object), dtype=object)
    if count.size and max(total.reshape(-1)) > COUNT_LIMIT:
        raise FileFormatError(
            f"count + n_nonfinite of {max(total.reshape(-1))} values at one statistic "
            f"({_first(np.asarray(total > COUNT_LIMIT, dtype=bool))}): beyond 2**62, more "
            "than any data set (and than exact weighted counts allow); corrupt count"
        )
    if count.size and min(total.reshape(-1)) < n:
        low = np.asarray(total < n, dtype=bool)
        raise FileFormatError(
            f"count + n_nonfinite below n_samples_seen={n} ({_first(low)}, "
            f"{min(total.reshape(-1))} values): every sample gives each statistic a value; "
            "corrupt count"
        )
    if m.weighted:
        return  # whole-number weights: at least one value per sample, no upper bound
    if m.mixed_shapes:
        if m.axis == "channel" and len(set(total.reshape(-1).tolist())) > 1:
            raise FileFormatError(
                "count + n_nonfinite differ between channels; every sample gives each channel "
                "as many values: corrupt count"
            )
        return
    sample = m.sample_shape
    per = math.prod(sample) // max(1, math.prod(count.shape)) if sample is not None else 1
    expected = n * per
    wrong = np.asarray(total != expected, dtype=bool)
    if wrong.any():
        first = total.reshape(-1)[int(np.argmax(wrong.reshape(-1)))]
        raise FileFormatError(
            f"count + n_nonfinite is {first} ({_first(wrong)}), but n_samples_seen={n} samples "
            f"of shape {tuple(sample or ())} give {expected} values to each {m.axis} statistic: "
            "corrupt count or n_samples_seen"
        )


def _check_exact(sums: Any, count: np.ndarray, lo: np.ndarray, hi: np.ndarray, seen: Any) -> None:
    if not (np.floor(lo[seen]) == lo[seen]).all() or not (np.floor(hi[seen]) == hi[seen]).all():
        raise FileFormatError("integer statistics with a min or max that is not a whole number")
    s1, s2 = (s.reshape(-1) for s in sums.sums())
    n = count.reshape(-1)
    lo_f, hi_f, seen_f = lo.reshape(-1), hi.reshape(-1), np.asarray(seen).reshape(-1)
    for i in range(n.size):  # Python ints: exact, linear in the number of elements
        a, b, k = int(s1[i]), int(s2[i]), int(n[i])
        if not seen_f[i]:
            if a or b:
                raise FileFormatError(f"element {i}: sums {a}, {b} without any value")
            continue
        low, high = int(lo_f[i]), int(hi_f[i])
        if b < 0 or not k * low <= a <= k * high or k * b - a * a < 0:
            raise FileFormatError(
                f"element {i}: exact sums Σx={a}, Σx²={b} of {k} values in [{low}, {high}] "
                "are impossible (mean outside [min, max] or negative variance): corrupt statistics"
            )
        if b > k * max(low * low, high * high):
            raise FileFormatError(
                f"element {i}: Σx²={b} exceeds {k}·max(min², max²): corrupt statistics"
            )


def _check_float(sums: Any, lo: np.ndarray, hi: np.ndarray, seen: Any) -> None:
    m2, shift, mean_shifted = sums.m2, sums.shift, sums.mean_shifted
    with np.errstate(invalid="ignore", over="ignore"):
        if (m2[seen] < 0).any() or np.isnan(m2[seen]).any():
            raise FileFormatError(f"negative variance sums ({_first(seen & ~(m2 >= 0))})")
        # every squared deviation is at most (max − min)²: M2 ≤ count·(max − min)²
        bound = sums.count * (hi - lo) ** 2 * (1 + 1e-9)
        above = seen & ((m2 > bound) | ~np.isfinite(m2))
        if above.any():
            raise FileFormatError(
                f"variance sums m2 beyond count·(max − min)² ({_first(above)}): corrupt m2"
            )
        mean = shift + mean_shifted
        slack = _ROUNDING * np.fmax(np.abs(lo), np.abs(hi))
        bad = seen & ((mean < lo - slack) | (mean > hi + slack) | ~np.isfinite(mean))
    if bad.any():
        raise FileFormatError(f"mean outside [min, max] ({_first(bad)}): corrupt statistics")


def check_histogram(stats: Any, hist: Any) -> None:
    """A histogram kept beside the statistics: its shape and totals match them.

    When both describe the same elements (same axis and channel axis), each element's
    counts sum to its count and no value is counted below its min or above its max.
    """
    counts = hist.counts
    if counts is None or stats.sums is None or stats.extrema is None:
        return
    count, extrema = stats.sums.count, stats.extrema
    if counts.ndim < 1:
        raise FileFormatError(f"histogram of shape {counts.shape}")
    same = hist.axis == stats.axis and (
        stats.axis != "channel" or hist.channel_axis == stats.channel_axis
    )
    if not same:
        return
    if counts.shape[:-1] != tuple(count.shape):
        raise FileFormatError(
            f"histogram of shape {counts.shape} for statistics of shape {count.shape}"
        )
    if count.dtype.kind == "i" and (counts.sum(axis=-1) != count).any():
        raise FileFormatError("histogram totals differ from the statistics' counts")
    if hist.dtype in ("uint8", "uint16"):  # bin i counts the value i
        seen = count > 0
        bins = np.arange(counts.shape[-1])
        lo = np.where(seen, extrema.min, 0)[..., None]
        hi = np.where(seen, extrema.max, -1)[..., None]
        outside = (counts > 0) & ((bins < lo) | (bins > hi))
        if outside.any():
            raise FileFormatError("histogram counts values outside the statistics' [min, max]")
