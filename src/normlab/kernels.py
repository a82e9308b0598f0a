"""Hot loops of the exact integer path: per-element sums Σx, Σx², min, max and non-zero counts.

Data arrives as a 3-d view ``(A, C, B)``: statistics are kept per ``C`` and reduced over
``A`` and ``B``. Per-feature statistics of ``(n, F)`` data are ``(n, F, 1)``; per-channel
statistics of HWC images are ``(n·H·W, C, 1)``, of CHW images ``(n, C, H·W)``; global ones
``(n, 1, F)``. Integer sums are exact and order-free, so the threads of a numba kernel never
change a single bit of the result.

numba kernels (``cache=True``) run when numba is installed; otherwise numpy does the same
work, slower. The caller guarantees that the int64 sums cannot overflow (see
``moments._rows_per_flush``).
"""

from __future__ import annotations

import numpy as np

try:  # numba is a core dependency, but the numpy fallback keeps a broken install usable
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

_BLOCK_ROWS = 4096  # rows per thread task: big enough to amortise, small enough to balance


def _reduce_numpy(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Reference implementation (also the fallback): exact int64 sums per C of ``(A, C, B)``."""
    wide = x.astype(np.int64, copy=False)
    s1 = wide.sum(axis=(0, 2))
    s2 = np.einsum("acb,acb->c", wide, wide) if wide.size else np.zeros(x.shape[1], np.int64)
    if x.shape[0] * x.shape[2] == 0:
        empty = np.zeros(x.shape[1], np.int64)
        return s1, s2, empty, empty, empty
    mn = wide.min(axis=(0, 2))
    mx = wide.max(axis=(0, 2))
    nnz = np.count_nonzero(x, axis=(0, 2)).astype(np.int64)
    return s1, s2, mn, mx, nnz


if HAVE_NUMBA:

    @njit(cache=True, parallel=True, nogil=True)
    def _reduce_rows(x):  # pragma: no cover - compiled
        rows, cols = x.shape
        nblocks = (rows + _BLOCK_ROWS - 1) // _BLOCK_ROWS
        p1 = np.zeros((nblocks, cols), np.int64)
        p2 = np.zeros((nblocks, cols), np.int64)
        pmn = np.empty((nblocks, cols), np.int64)
        pmx = np.empty((nblocks, cols), np.int64)
        pnz = np.zeros((nblocks, cols), np.int64)
        for blk in prange(nblocks):
            start = blk * _BLOCK_ROWS
            stop = min(rows, start + _BLOCK_ROWS)
            a1 = p1[blk]
            a2 = p2[blk]
            amn = pmn[blk]
            amx = pmx[blk]
            anz = pnz[blk]
            for c in range(cols):
                v = np.int64(x[start, c])
                amn[c] = v
                amx[c] = v
            for r in range(start, stop):
                row = x[r]
                for c in range(cols):
                    v = np.int64(row[c])
                    a1[c] += v
                    a2[c] += v * v
                    amn[c] = min(amn[c], v)
                    amx[c] = max(amx[c], v)
                    anz[c] += v != 0
        s1 = p1.sum(axis=0)
        s2 = p2.sum(axis=0)
        mn = pmn[0].copy()
        mx = pmx[0].copy()
        nz = pnz.sum(axis=0)
        for blk in range(1, nblocks):
            for c in range(cols):
                mn[c] = min(mn[c], pmn[blk, c])
                mx[c] = max(mx[c], pmx[blk, c])
        return s1, s2, mn, mx, nz

    @njit(cache=True, parallel=True, nogil=True)
    def _reduce_inner(x):  # pragma: no cover - compiled
        outer, cols, inner = x.shape
        p1 = np.zeros((outer, cols), np.int64)
        p2 = np.zeros((outer, cols), np.int64)
        pmn = np.empty((outer, cols), np.int64)
        pmx = np.empty((outer, cols), np.int64)
        pnz = np.zeros((outer, cols), np.int64)
        for a in prange(outer):
            for c in range(cols):
                seg = x[a, c]
                t1 = np.int64(0)
                t2 = np.int64(0)
                tmn = np.int64(seg[0])
                tmx = tmn
                tnz = np.int64(0)
                for b in range(inner):
                    v = np.int64(seg[b])
                    t1 += v
                    t2 += v * v
                    tmn = min(tmn, v)
                    tmx = max(tmx, v)
                    tnz += v != 0
                p1[a, c] = t1
                p2[a, c] = t2
                pmn[a, c] = tmn
                pmx[a, c] = tmx
                pnz[a, c] = tnz
        mn = pmn[0].copy()
        mx = pmx[0].copy()
        for a in range(1, outer):
            for c in range(cols):
                mn[c] = min(mn[c], pmn[a, c])
                mx[c] = max(mx[c], pmx[a, c])
        return p1.sum(axis=0), p2.sum(axis=0), mn, mx, pnz.sum(axis=0)


def reduce_integer(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Exact ``(Σx, Σx², min, max, nnz)`` per C of an integer ``(A, C, B)`` array, all int64.

    ``A·B`` must be at least 1. The caller bounds ``A·B·max|x|²`` below 2**63.
    """
    if not HAVE_NUMBA or x.dtype.itemsize > 2 or x.size == 0:
        return _reduce_numpy(x)
    if x.shape[2] == 1:
        return _reduce_narrow_rows(np.ascontiguousarray(x[:, :, 0]))
    return _reduce_inner(np.ascontiguousarray(x))


def _reduce_narrow_rows(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of a few columns (HWC pixels) are folded into wide rows, then folded back.

    ``(A, C)`` with small ``C`` is viewed as ``(A/g, g·C)``: the inner loop becomes long and
    vectorises, and the ``g`` partial results per channel are summed exactly.
    """
    rows, cols = x.shape
    group = max(1, 1024 // cols)
    if cols >= 64 or rows < 2 * group:
        return _reduce_rows(x)
    main = rows - rows % group
    wide = _reduce_rows(x[:main].reshape(main // group, group * cols))
    parts = [tuple(r.reshape(group, cols) for r in wide)]
    if main < rows:
        parts.append(tuple(r[None] for r in _reduce_rows(x[main:])))
    s1 = sum(p[0].sum(axis=0) for p in parts)
    s2 = sum(p[1].sum(axis=0) for p in parts)
    mn = np.min([p[2].min(axis=0) for p in parts], axis=0)
    mx = np.max([p[3].max(axis=0) for p in parts], axis=0)
    nz = sum(p[4].sum(axis=0) for p in parts)
    return s1, s2, mn, mx, nz


def set_threads(n: int | None) -> None:
    """Limit numba's threads (the local engine runs one per worker process)."""
    if HAVE_NUMBA and n:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
