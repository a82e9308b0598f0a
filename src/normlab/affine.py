"""The affine apply step ``y = (x − shift) / scale``, rounded once to the output dtype.

Computing ``x·(1/s) − m/s`` in float32 cancels: for ``x ≈ 1e8`` the two terms are near
``1e8/s`` and their float32 roundings differ from the exact ones by more than the result.
Here each value is converted to float64, the shift is subtracted there (exact or within
half a float64 ulp), multiplied by ``1/scale`` (or divided by ``scale`` when the reciprocal
overflows) and rounded once to the output dtype: within one output ulp of the exact value
for every integer and float input (64-bit integers are split into a 53-bit high part and
an exact remainder so that their conversion loses nothing before the subtraction).

One pass over the data, no float64 temporary: a numba kernel, run on row shares in plain
threads for large inputs. Without numba, numpy does the same in float64 blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .finite import refuse_non_finite, refuse_overflow

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

_EXACT = 2**53  # integers up to this convert to float64 exactly
_BLOCK = 1 << 16  # values per block of the numpy fallback
_BYTES_PER_THREAD = 8 << 20


if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _rows(x, shift, mult, out, start, stop):  # pragma: no cover - compiled
        """Returns the number of rows with a non-finite output (checked while in cache)."""
        flagged = 0
        for i in range(start, stop):
            xi, oi = x[i], out[i]
            for j in range(xi.shape[0]):
                oi[j] = (np.float64(xi[j]) - shift[j]) * mult[j]
            for j in range(xi.shape[0]):
                if not np.isfinite(oi[j]):
                    flagged += 1
                    break
        return flagged

    @njit(cache=True, nogil=True)
    def _rows_div(x, shift, scale, out, start, stop):  # pragma: no cover - compiled
        flagged = 0
        for i in range(start, stop):
            xi, oi = x[i], out[i]
            for j in range(xi.shape[0]):
                oi[j] = (np.float64(xi[j]) - shift[j]) / scale[j]
            for j in range(xi.shape[0]):
                if not np.isfinite(oi[j]):
                    flagged += 1
                    break
        return flagged

    @njit(cache=True, nogil=True)
    def _rows_int64(x, shift, mult, out, start, stop):  # pragma: no cover - compiled
        for i in range(start, stop):
            xi, oi = x[i], out[i]
            for j in range(xi.shape[0]):
                v = xi[j]
                if -_EXACT <= v <= _EXACT:  # exact in float64 as it is
                    d = np.float64(v) - shift[j]
                else:  # 53 significant bits, exact in float64, and the remainder 0..2047
                    hi = (v >> 11) << 11
                    d = (np.float64(hi) - shift[j]) + np.float64(v - hi)
                oi[j] = d * mult[j]
        return 1  # 64-bit integers: checked afterwards

    @njit(cache=True, nogil=True)
    def _rows_int64_div(x, shift, scale, out, start, stop):  # pragma: no cover - compiled
        for i in range(start, stop):
            xi, oi = x[i], out[i]
            for j in range(xi.shape[0]):
                v = xi[j]
                if -_EXACT <= v <= _EXACT:
                    d = np.float64(v) - shift[j]
                else:
                    hi = (v >> 11) << 11
                    d = (np.float64(hi) - shift[j]) + np.float64(v - hi)
                oi[j] = d / scale[j]
        return 1


def _numpy_rows(
    x: np.ndarray, shift: np.ndarray, scale: np.ndarray, divide: bool, out: np.ndarray
) -> None:
    """The same in float64 blocks (no numba)."""
    rows = max(1, _BLOCK // max(1, x.shape[1]))
    mult = None if divide else 1.0 / scale
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, x.shape[0], rows):
            block = x[i : i + rows]
            if block.dtype.kind in "iu" and block.dtype.itemsize == 8:
                hi = (block >> 11) << 11
                wide = (hi.astype(np.float64) - shift) + (block - hi).astype(np.float64)
                small = block.astype(np.float64) - shift
                d = np.where(np.abs(block.astype(np.float64)) <= _EXACT, small, wide)
            else:
                d = block.astype(np.float64) - shift
            out[i : i + rows] = d / scale if mult is None else d * mult


def apply_affine(
    x: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    out_dtype: np.dtype,
    *,
    nan_policy: str = "raise",
    names: list[str] | None = None,
) -> np.ndarray:
    """``(x − shift) / scale`` of ``x (n, *sample)``; ``shift``/``scale`` broadcast to ``x[:1]``.

    Raises :class:`NormlabError` when finite inputs give outputs beyond ``out_dtype``'s range,
    and :class:`~normlab.errors.NonFiniteError` on NaN/inf inputs under ``nan_policy="raise"``
    (see :mod:`normlab.finite`; ``names``: the features' names for the message).
    """
    out_dtype = np.dtype(out_dtype)
    n = x.shape[0]
    sample = x.shape[1:]
    width = int(np.prod(sample, dtype=np.int64))
    shift_f = np.ascontiguousarray(np.broadcast_to(shift, (1, *sample)), np.float64).reshape(-1)
    scale_f = np.ascontiguousarray(np.broadcast_to(scale, (1, *sample)), np.float64).reshape(-1)
    with np.errstate(divide="ignore", over="ignore"):
        mult = 1.0 / scale_f
    divide = not bool(np.isfinite(mult).all() and (mult != 0).all())
    work = np.dtype(np.float32) if out_dtype == np.float16 else out_dtype
    out = np.empty((n, width), work)
    flat = np.ascontiguousarray(x).reshape(n, width)
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)  # any non-zero byte is True
        flat = flat != 0
    if n == 0 or width == 0:
        pass
    elif HAVE_NUMBA and flat.dtype.kind in "biuf" and flat.dtype != np.float16:
        wide_int = flat.dtype.kind in "iu" and flat.dtype.itemsize == 8
        kernels = (_rows_int64, _rows_int64_div) if wide_int else (_rows, _rows_div)
        kernel, factor = (kernels[1], scale_f) if divide else (kernels[0], mult)
        shares = max(1, min(_threads(), flat.nbytes // _BYTES_PER_THREAD, n))
        cuts = [n * i // shares for i in range(shares + 1)]
        jobs: list[Any] = []
        if shares > 1:
            from .kernels import helper_pool

            pool = helper_pool(shares - 1)
            jobs = [
                pool.submit(kernel, flat, shift_f, factor, out, cuts[k], cuts[k + 1])
                for k in range(1, shares)
            ]
        flagged = kernel(flat, shift_f, factor, out, cuts[0], cuts[1])
        flagged += sum(job.result() for job in jobs)
        checked = work == out_dtype and kernel in (_rows, _rows_div)
        if checked and not flagged:
            return out.reshape(n, *sample)
    else:
        _numpy_rows(flat, shift_f, scale_f, divide, out)
    if work != out_dtype:
        with np.errstate(over="ignore"):
            out = out.astype(out_dtype)
    if not _may_overflow(flat.dtype, shift_f, scale_f, out_dtype) or np.isfinite(out).all():
        return out.reshape(n, *sample)
    # Some outputs are not finite: NaN/inf inputs, |x − shift| beyond float64 (computed again
    # as x/scale − shift/scale), or results beyond out_dtype.
    if nan_policy == "raise":
        refuse_non_finite(flat, sample, names=names)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(out) & (np.isfinite(flat) if flat.dtype.kind == "f" else True)
        if flat.dtype.kind == "f" and bad.any():
            rows, cols = np.nonzero(bad)
            v = flat[rows, cols].astype(np.float64)
            out[rows, cols] = v / scale_f[cols] - shift_f[cols] / scale_f[cols]
            bad = ~np.isfinite(out) & np.isfinite(flat)
    refuse_overflow(bad, sample, out_dtype, names=names)
    return out.reshape(n, *sample)


def _may_overflow(
    dtype: np.dtype, shift: np.ndarray, scale: np.ndarray, out_dtype: np.dtype
) -> bool:
    """False when no value of ``dtype`` can give a non-finite output (small integer types)."""
    if dtype.kind == "b":
        lo, hi = 0.0, 1.0
    elif dtype.kind in "iu" and dtype.itemsize <= 4:
        lo, hi = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        reach = np.maximum(np.abs(lo - shift), np.abs(hi - shift)) / scale
    return not bool((reach < 0.5 * float(np.finfo(out_dtype).max)).all())


def _threads() -> int:
    from .kernels import get_threads

    return get_threads()
