"""Hot loops of the statistics: per-element sums, min, max and counts, exact or in float64.

Data arrives as a 3-d view ``(A, C, B)``: statistics are kept per ``C`` and reduced over
``A`` and ``B``. Per-feature statistics of ``(n, F)`` data are ``(n, F, 1)``; per-channel
statistics of HWC images are ``(n·H·W, C, 1)``, of CHW images ``(n, C, H·W)``; global ones
``(n, 1, F)``. Integer sums are exact and order-free, so threads and chunking never change a
single bit of the result.

How the kernel is fast (measured in ``bench/bench_moments.py``):

* **narrow lanes.** uint8 values are summed in uint16 lanes, their squares (computed in 16
  bits: 255² < 2¹⁶) in uint32 lanes, non-zero counts and min/max in uint8 lanes, for a
  bounded number of rows (252); then the lanes are folded into int64. 64 uint8
  columns fit one AVX-512 register, so LLVM's vectoriser works on 32–64 lanes at a time.
  numba widens every integer operation to 64 bits, so the narrow arithmetic is spelled with
  three tiny LLVM intrinsics (``_add``, ``_mul``, ``_as``).
* **four sequential streams.** Each step adds four rows into the lanes, which cuts the
  loads/stores of the lanes by four; the four rows are a quarter of the row range apart, so
  memory is read as four sequential streams. (Four *adjacent* rows were measured at half the
  speed once the data no longer fits the last-level cache: the hardware prefetcher loses
  the pattern.)
* **folding.** Few columns (HWC pixels, global statistics) are folded into wide rows of
  about 1024 values, then the partial results are summed per channel.
* **threads.** The work is cut into tasks (row chunk, channel, column tile); each thread runs
  a contiguous share in a kernel that releases the GIL. Plain Python threads (not numba's
  ``prange``) are used: a waiting thread sleeps instead of spinning, which matters on a
  machine shared with other work, and the kernels compile faster.

The caller guarantees that int64 sums cannot overflow (see ``normlab.exact.ExactMoments.update``).
numba kernels (``cache=True``) run when numba is installed; otherwise numpy does the same
work, slower. This module imports numba: ``normlab`` imports it on first use only.

Float data (:func:`reduce_float`: float32/float64; float16 is widened to float32 exactly) is
summed in float64 from a shift, in one pass at memory speed:

* **blocks on a fixed grid.** The ``(A, K, L)`` view is cut into blocks of 1024 rows ×
  1024 columns; the grid depends on the data's shape only. Each block writes its own
  partial result; threads take contiguous shares of the blocks, so the thread count never
  changes a bit, and every engine that runs the same task split gets the same bits.
* **per-block shift.** A block's values are summed as ``d = x − K`` with ``K`` the block's
  first finite value per column: ``S1 = Σd``, ``S2 = Σd²`` (four rows a quarter of a block
  apart per step, as above), with min, max and non-zero counts in the same pass. The
  block's mean is ``K + S1/n`` and ``M2 = S2 − S1·(S1/n)``. That subtraction cancels when
  ``K`` is far from the block's mean; where ``M2 < S2·2⁻⁶`` (it would lose over six bits)
  the block is summed again from its own mean, a second pass over data still in cache.
  With 1024 rows a block's rounding error stays below about 1024·2⁶·ε·M2 in the worst case
  (the variance of ``1e9 + U(0, 1e-3)`` comes out within 1e-9 of the exact value of the
  stored numbers; ``tests/test_kernels_float.py`` checks hard cases against ``Fraction``).
* **non-finite values.** The first kernel tests no value: NaN or ±inf make the block's
  sums non-finite, and only then does a masked kernel (NaN/±inf add 0 and are counted)
  redo the block, and take over the following blocks of the share (``nan_policy="omit"``
  data tends to hold more). Both kernels give the same bits on finite data. Sums that are
  non-finite although every value was finite are an overflow of float64 (values near
  ±1e308), reported apart (``n_overflow``) so that it is never mistaken for NaN input.
* **merge.** The blocks' ``(n, K, S1/n, M2)`` are merged with Chan et al.'s formula per
  statistic, pairwise in a fixed order (rounding error grows with log₂ of the number of
  blocks), keeping whichever shift is nearer the merged mean. Narrow rows (HWC pixels,
  global statistics, few features) are folded into rows of about 1024 values first, as
  for integers; their partials merge per channel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

try:  # numba is a core dependency, but the numpy fallback keeps a broken install usable
    import numba
    from numba import njit
    from numba.extending import intrinsic

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

_TILE = 2048  # columns per task: a tile's narrow lanes (≤ 18 bytes a column) stay in L1/L2
_FOLD_WIDTH = 1024  # rows narrower than this are folded into rows of about this many values
_SEGMENT_MIN = 256  # (A, C, B) with B at least this is reduced segment by segment

# Input dtype -> (Σx lanes, which also hold one square; Σx² lanes; non-zero count lanes; rows
# per fold). Bounds for 8-bit data over 252 rows (252 ≤ 255 non-zero counts in uint8):
# uint8  uint16: 252·255 < 2¹⁶, 255² < 2¹⁶;  uint32: 252·255² < 2³².
# int8   int16:  |Σx| ≤ 252·128 < 2¹⁵, 128² < 2¹⁵;  int32: 252·128² < 2³¹.
# and for 16-bit data over 32768 rows (counts in uint16):
# uint16 uint32: 32768·65535 < 2³², 65535² < 2³²;  uint64: 32768·65535² < 2⁶³.
# int16  int32:  |Σx| ≤ 32768·32768 = 2³⁰, 32768² = 2³⁰;  int64.
_LANES = {
    np.dtype(np.uint8): (np.uint16, np.uint32, np.uint8, 252),
    np.dtype(np.int8): (np.int16, np.int32, np.uint8, 252),
    np.dtype(np.uint16): (np.uint32, np.uint64, np.uint16, 32768),
    np.dtype(np.int16): (np.int32, np.int64, np.uint16, 32768),
}
_STREAMS = 4  # rows added per step, one from each quarter of the row range
_BYTES_PER_THREAD = 4 << 20  # smaller shares (~0.3 ms of work) are not worth a thread hand-over


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

    @intrinsic
    def _add(typingctx, a, b):  # pragma: no cover - compiled
        """``a + b`` in the operands' own width (numba would widen to 64 bits)."""
        if a != b:
            return None

        def codegen(context, builder, sig, args):
            return builder.add(args[0], args[1])

        return a(a, b), codegen

    @intrinsic
    def _mul(typingctx, a, b):  # pragma: no cover - compiled
        """``a · b`` in the operands' own width."""
        if a != b:
            return None

        def codegen(context, builder, sig, args):
            return builder.mul(args[0], args[1])

        return a(a, b), codegen

    @intrinsic
    def _as(typingctx, value, like):  # pragma: no cover - compiled
        """``value`` converted to the element type of the array ``like``."""
        target = like.dtype

        def codegen(context, builder, sig, args):
            return context.cast(builder, args[0], sig.args[0], target)

        return target(value, like), codegen

    @njit(cache=True, nogil=True)
    def _fold(n1, n2, nz, w1, w2, wz):  # pragma: no cover - compiled
        for c in range(n1.shape[0]):
            w1[c] += _as(n1[c], w1)
            w2[c] += _as(n2[c], w2)
            wz[c] += _as(nz[c], wz)
            n1[c] = 0
            n2[c] = 0
            nz[c] = 0

    @njit(cache=True, nogil=True)
    def _accumulate(
        y, k, r0, r1, c0, c1, steps, n1, n2, nz, mn, mx, w1, w2, wz
    ):  # pragma: no cover
        """Add rows ``r0:r1`` of columns ``c0:c1`` of group ``k`` into the int64 ``w*``."""
        quarter = (r1 - r0) // _STREAMS
        for s0 in range(0, quarter, steps):
            for i in range(s0, min(quarter, s0 + steps)):
                x0 = y[r0 + i, k, c0:c1]
                x1 = y[r0 + quarter + i, k, c0:c1]
                x2 = y[r0 + 2 * quarter + i, k, c0:c1]
                x3 = y[r0 + 3 * quarter + i, k, c0:c1]
                for c in range(c1 - c0):
                    v0 = x0[c]
                    v1 = x1[c]
                    v2 = x2[c]
                    v3 = x3[c]
                    a0 = _as(v0, n1)
                    a1 = _as(v1, n1)
                    a2 = _as(v2, n1)
                    a3 = _as(v3, n1)
                    n1[c] = _add(n1[c], _add(_add(a0, a1), _add(a2, a3)))
                    q0 = _as(_mul(a0, a0), n2)
                    q1 = _as(_mul(a1, a1), n2)
                    q2 = _as(_mul(a2, a2), n2)
                    q3 = _as(_mul(a3, a3), n2)
                    n2[c] = _add(n2[c], _add(_add(q0, q1), _add(q2, q3)))
                    z0 = _as(v0 != 0, nz)
                    z1 = _as(v1 != 0, nz)
                    z2 = _as(v2 != 0, nz)
                    z3 = _as(v3 != 0, nz)
                    nz[c] = _add(nz[c], _add(_add(z0, z1), _add(z2, z3)))
                    mn[c] = min(mn[c], min(min(v0, v1), min(v2, v3)))
                    mx[c] = max(mx[c], max(max(v0, v1), max(v2, v3)))
            _fold(n1, n2, nz, w1, w2, wz)
        for r in range(r0 + _STREAMS * quarter, r1):  # at most three rows left
            x0 = y[r, k, c0:c1]
            for c in range(c1 - c0):
                v0 = x0[c]
                a0 = _as(v0, n1)
                n1[c] = _add(n1[c], a0)
                n2[c] = _add(n2[c], _as(_mul(a0, a0), n2))
                nz[c] = _add(nz[c], _as(v0 != 0, nz))
                mn[c] = min(mn[c], v0)
                mx[c] = max(mx[c], v0)
        _fold(n1, n2, nz, w1, w2, wz)

    @njit(cache=True, nogil=True)
    def _run_tasks(
        y, collapse, steps, lanes, first, last, o1, o2, omn, omx, onz
    ):  # pragma: no cover
        """Tasks ``first:last`` of the sums over axis 0 of ``(A, K, L)``, into ``o*[chunk, k, :]``.

        A task is (row chunk, group k, column tile); its int64 partials go to the outputs'
        own cells (per column, or per tile when ``collapse``), so threads never share a cell.
        """
        n_rows, n_groups, width = y.shape
        row_chunks = o1.shape[0]
        n_tiles = (width + _TILE - 1) // _TILE
        per_chunk = n_groups * n_tiles
        lane1, lane2, lanez = lanes
        for task in range(first, last):
            rc = task // per_chunk
            k = (task % per_chunk) // n_tiles
            tile = task % n_tiles
            r0 = n_rows * rc // row_chunks
            r1 = n_rows * (rc + 1) // row_chunks
            c0 = tile * _TILE
            c1 = min(width, c0 + _TILE)
            n1 = np.zeros(c1 - c0, lane1.dtype)
            n2 = np.zeros(c1 - c0, lane2.dtype)
            nz = np.zeros(c1 - c0, lanez.dtype)
            w1 = np.zeros(c1 - c0, np.int64)
            w2 = np.zeros(c1 - c0, np.int64)
            wz = np.zeros(c1 - c0, np.int64)
            mn = y[r0, k, c0:c1].copy()
            mx = y[r0, k, c0:c1].copy()
            _accumulate(y, k, r0, r1, c0, c1, steps, n1, n2, nz, mn, mx, w1, w2, wz)
            if collapse:
                o1[rc, k, tile] = w1.sum()
                o2[rc, k, tile] = w2.sum()
                onz[rc, k, tile] = wz.sum()
                omn[rc, k, tile] = mn.min()
                omx[rc, k, tile] = mx.max()
            else:
                for c in range(c1 - c0):
                    o1[rc, k, c0 + c] = w1[c]
                    o2[rc, k, c0 + c] = w2[c]
                    onz[rc, k, c0 + c] = wz[c]
                    omn[rc, k, c0 + c] = mn[c]
                    omx[rc, k, c0 + c] = mx[c]


_threads = 0  # 0: numba's default (all cores); set by set_threads
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, size, pool)


_compiled: set[tuple[Any, ...]] = set()  # kernel signatures this process has already run


def _compile_first(key: tuple[Any, ...], shares: int) -> bool:
    """Whether this thread must run its share alone first, before the helpers start.

    numba compiles (or loads from its cache) a kernel on its first call with new argument
    types; helper threads that call it while that is under way can fail with "no compiled
    object yet". So the first call of each signature in a process runs in this thread alone.
    """
    if key in _compiled:
        return False
    _compiled.add(key)
    return shares > 1


def helper_pool(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` helper threads (the calling thread does a share of the work too).

    A forked child gets a new pool: the parent's threads do not exist there.
    """
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), n):
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)
        _pool = (
            os.getpid(),
            n,
            ThreadPoolExecutor(max_workers=n, thread_name_prefix="normlab-kernel"),
        )
    return _pool[2]


def _axis0(y: np.ndarray, collapse: bool) -> tuple[np.ndarray, ...]:
    """Run the kernel on a C-contiguous ``(A, K, L)`` array; results ``(K, L or tiles)``.

    The tasks are split into one contiguous share per thread. The kernel releases the GIL,
    so plain Python threads run the shares in parallel; waiting threads sleep rather than
    spin, which keeps a machine shared with other work usable.
    """
    lane1, lane2, lanez, rows_per_fold = _LANES[y.dtype]
    n_rows, n_groups, width = y.shape
    threads = get_threads()
    n_tiles = -(-width // _TILE)
    enough_tasks = n_groups * n_tiles >= 4 * threads
    row_chunks = 1 if enough_tasks else max(1, min(threads, n_rows // 256))
    shape = (row_chunks, n_groups, n_tiles if collapse else width)
    outs = [np.zeros(shape, np.int64) for _ in range(5)]
    lanes = (np.zeros(1, lane1), np.zeros(1, lane2), np.zeros(1, lanez))
    n_tasks = row_chunks * n_groups * n_tiles
    shares = min(threads, n_tasks, max(1, y.nbytes // _BYTES_PER_THREAD))
    cuts = [n_tasks * i // shares for i in range(shares + 1)]
    steps = rows_per_fold // _STREAMS
    first = _compile_first(("integer", y.dtype, collapse), shares)
    if first:
        _run_tasks(y, collapse, steps, lanes, cuts[0], cuts[1], *outs)
    helpers = [
        helper_pool(shares - 1).submit(
            _run_tasks, y, collapse, steps, lanes, cuts[i], cuts[i + 1], *outs
        )
        for i in range(1, shares)
    ]
    if not first:
        _run_tasks(y, collapse, steps, lanes, cuts[0], cuts[1], *outs)
    for done in helpers:
        done.result()
    o1, o2, omn, omx, onz = outs
    return o1.sum(axis=0), o2.sum(axis=0), omn.min(axis=0), omx.max(axis=0), onz.sum(axis=0)


def _combine(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Per-C results of several pieces of the data, each ``(G, C, B)``, reduced over G and B."""
    red = (0, 2)
    return (
        sum(p[0].sum(axis=red) for p in parts),
        sum(p[1].sum(axis=red) for p in parts),
        np.min([p[2].min(axis=red) for p in parts], axis=0),
        np.max([p[3].max(axis=red) for p in parts], axis=0),
        sum(p[4].sum(axis=red) for p in parts),
    )


def reduce_integer(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Exact ``(Σx, Σx², min, max, nnz)`` per C of an integer ``(A, C, B)`` array, all int64.

    ``A·B`` must be at least 1. The caller bounds ``A·B·max|x|²`` below 2**63.

    Examples
    --------
    >>> x = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    >>> [r.tolist() for r in reduce_integer(x)]
    [[76, 92, 108], [1084, 1420, 1820], [0, 2, 4], [19, 21, 23], [7, 8, 8]]
    """
    if not HAVE_NUMBA or x.dtype not in _LANES or x.size == 0:
        return _reduce_numpy(x)
    x = np.ascontiguousarray(x)
    n, n_channels, inner = x.shape
    if n_channels == 1:  # global: one run of values
        x = x.reshape(-1, 1, 1)
        n, inner = x.shape[0], 1
    if inner >= _SEGMENT_MIN:  # long contiguous segments (CHW images): reduce each segment
        return _combine([tuple(r.reshape(1, n_channels, -1) for r in _axis0(x, True))])
    width = n_channels * inner
    rows = x.reshape(n, width)
    group = max(1, _FOLD_WIDTH // width)
    main = n - n % group
    parts = []
    if main:
        wide = rows[:main].reshape(main // group, 1, group * width)
        parts.append(tuple(r.reshape(group, n_channels, inner) for r in _axis0(wide, False)))
    if main < n:
        rest = rows[main:].reshape(n - main, 1, width)
        parts.append(tuple(r.reshape(1, n_channels, inner) for r in _axis0(rest, False)))
    return _combine(parts)


def set_threads(n: int | None) -> None:
    """Threads the kernels use (``None`` or 0: all cores; the local engine uses 1 per worker)."""
    global _threads
    _threads = max(0, int(n or 0))


def get_threads() -> int:
    """Threads the kernels use now (1 without numba)."""
    if not HAVE_NUMBA:
        return 1
    # numba.config sets its options from the environment at import: invisible to mypy
    return _threads or numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- float statistics
_FLOAT_BLOCK_ROWS = 1024  # rows of one block of the fixed grid (the n·ε bound of a block's sums)
_FLOAT_TILE = 1024  # columns of one block: seven float64 accumulators of a tile stay in L1/L2
_SECOND_PASS = 2.0**-6  # M2 < Σd²·2⁻⁶: the shift was far from the block's mean, redo shifted by it


class FloatSums(NamedTuple):
    """Per-C statistics of float data; mean and M2 are measured from ``shift``.

    ``n_finite`` counts the finite values, ``n_nonfinite`` the NaN/±inf ones (left out of every
    other field); ``n_overflow`` counts the finite values of elements whose float64 sums
    overflowed (finite input near ±1e308): their mean and M2 are not usable. ``shift`` is NaN
    where ``n_finite`` is 0.
    """

    n_finite: np.ndarray
    shift: np.ndarray
    mean_shifted: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    n_nonzero: np.ndarray
    n_nonfinite: np.ndarray
    n_overflow: np.ndarray


def _reduce_float_numpy(x: np.ndarray) -> FloatSums:
    """Reference implementation (also the fallback without numba): one block per C."""
    rows = np.moveaxis(x, 1, 2).reshape(-1, x.shape[1]).astype(np.float64)
    finite = np.isfinite(rows)
    count = finite.sum(axis=0)
    first = rows[np.argmax(finite, axis=0), np.arange(rows.shape[1])]
    shift = np.where(count > 0, first, np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.where(finite, rows - np.where(count > 0, shift, 0.0), 0.0)
        mean = d.sum(axis=0) / np.maximum(count, 1)
        m2 = (np.where(finite, d - mean, 0.0) ** 2).sum(axis=0)
    overflow = np.where(np.isfinite(mean) & np.isfinite(m2), 0, count)
    return FloatSums(
        count.astype(np.int64),
        shift,
        mean,
        m2,
        np.where(finite, rows, np.inf).min(axis=0),
        np.where(finite, rows, -np.inf).max(axis=0),
        np.count_nonzero(finite & (rows != 0), axis=0).astype(np.int64),
        (rows.shape[0] - count).astype(np.int64),
        overflow.astype(np.int64),
    )


if HAVE_NUMBA:

    @njit(cache=True, nogil=True, inline="always")
    def _one(flag):  # pragma: no cover - compiled
        """1.0 or 0.0: float64 counters share the sums' vector lanes."""
        return 1.0 if flag else 0.0

    @njit(cache=True, nogil=True, inline="always")
    def _lower(value, low):  # pragma: no cover - compiled
        """``min(value, low)``, keeping ``low`` when ``value`` is NaN (the compare is false)."""
        return value if value < low else low

    @njit(cache=True, nogil=True, inline="always")
    def _higher(value, high):  # pragma: no cover - compiled
        """``max(value, high)``, keeping ``high`` when ``value`` is NaN."""
        return value if value > high else high

    @njit(cache=True, nogil=True)
    def _float_block(y, k, r0, r1, c0, shift, masked, s1, s2, nz, bad, mn, mx):  # pragma: no cover
        """Sums of rows ``r0:r1`` of group ``k``, columns ``c0:c0+len(shift)``, from ``shift``.

        Four rows, a quarter of the block apart, are added per step: four sequential
        streams, and the accumulators are loaded and stored once per four values.
        ``masked``: NaN/±inf count into ``bad`` and add 0 to the sums. Otherwise no value is
        tested (about 1.5× faster): the caller checks that the sums came out finite, which
        they do only if every value was. Both give the same bits on finite data. min and
        max keep the input's dtype and skip NaN (``v < m`` is false); ±inf, which they do
        not skip, are fixed up by :func:`_finite_extrema`. ``nz`` counts ``v != 0``, true
        for NaN and ±inf too: the caller subtracts ``bad``.
        """
        width = shift.shape[0]
        for c in range(width):
            s1[c] = 0.0
            s2[c] = 0.0
            nz[c] = 0.0
            bad[c] = 0.0
            mn[c] = np.inf
            mx[c] = -np.inf
        quarter = (r1 - r0) // 4
        for i in range(quarter):
            x0 = y[r0 + i, k, c0 : c0 + width]
            x1 = y[r0 + quarter + i, k, c0 : c0 + width]
            x2 = y[r0 + 2 * quarter + i, k, c0 : c0 + width]
            x3 = y[r0 + 3 * quarter + i, k, c0 : c0 + width]
            if masked:
                for c in range(width):
                    v0, v1, v2, v3 = x0[c], x1[c], x2[c], x3[c]
                    f0 = v0 - v0 == 0  # False for NaN and ±inf
                    f1 = v1 - v1 == 0
                    f2 = v2 - v2 == 0
                    f3 = v3 - v3 == 0
                    d0 = np.float64(v0) - shift[c] if f0 else 0.0
                    d1 = np.float64(v1) - shift[c] if f1 else 0.0
                    d2 = np.float64(v2) - shift[c] if f2 else 0.0
                    d3 = np.float64(v3) - shift[c] if f3 else 0.0
                    s1[c] += (d0 + d1) + (d2 + d3)
                    s2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                    nz[c] += (_one(v0 != 0) + _one(v1 != 0)) + (_one(v2 != 0) + _one(v3 != 0))
                    bad[c] += (_one(not f0) + _one(not f1)) + (_one(not f2) + _one(not f3))
                    mn[c] = _lower(v3, _lower(v2, _lower(v1, _lower(v0, mn[c]))))
                    mx[c] = _higher(v3, _higher(v2, _higher(v1, _higher(v0, mx[c]))))
            else:
                for c in range(width):
                    v0, v1, v2, v3 = x0[c], x1[c], x2[c], x3[c]
                    d0 = np.float64(v0) - shift[c]
                    d1 = np.float64(v1) - shift[c]
                    d2 = np.float64(v2) - shift[c]
                    d3 = np.float64(v3) - shift[c]
                    s1[c] += (d0 + d1) + (d2 + d3)
                    s2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                    nz[c] += (_one(v0 != 0) + _one(v1 != 0)) + (_one(v2 != 0) + _one(v3 != 0))
                    mn[c] = _lower(v3, _lower(v2, _lower(v1, _lower(v0, mn[c]))))
                    mx[c] = _higher(v3, _higher(v2, _higher(v1, _higher(v0, mx[c]))))
        for r in range(r0 + 4 * quarter, r1):  # at most three rows left
            x0 = y[r, k, c0 : c0 + width]
            for c in range(width):
                v0 = x0[c]
                f0 = v0 - v0 == 0
                d0 = np.float64(v0) - shift[c] if f0 else 0.0
                s1[c] += d0
                s2[c] += d0 * d0
                nz[c] += _one(v0 != 0)
                bad[c] += _one(not f0)
                mn[c] = _lower(v0, mn[c])
                mx[c] = _higher(v0, mx[c])

    @njit(cache=True, nogil=True)
    def _finite_extrema(y, k, r0, r1, c0, bad, mn, mx):  # pragma: no cover - compiled
        """Recompute min and max without ±inf where a column of the block holds any."""
        for c in range(mn.shape[0]):
            if bad[c] > 0 and (mn[c] == -np.inf or mx[c] == np.inf):
                mn[c] = np.inf
                mx[c] = -np.inf
                for r in range(r0, r1):
                    v = y[r, k, c0 + c]
                    if v - v == 0:
                        mn[c] = min(mn[c], v)
                        mx[c] = max(mx[c], v)

    @njit(cache=True, nogil=True)
    def _float_tasks(y, first, last, outs, n_overflow):  # pragma: no cover - compiled
        """Blocks ``first:last`` of ``(A, K, L)``; their results go to ``outs[:, block, k, l]``.

        A block is (row range, group k, column tile) of the fixed grid. Its shift is the
        first finite value of each column. The unmasked kernel runs first; if a sum comes
        out non-finite the masked one redoes the block (and runs first on the next blocks
        of this share: data with NaN tends to hold more). Where the one-pass M2 would lose
        more than six bits to cancellation (M2 < Σd²·2⁻⁶) or Σd² overflows, the block is
        summed again from its own mean (a second pass, over data still in cache).
        """
        n_rows, n_groups, width = y.shape
        n_tiles = (width + _FLOAT_TILE - 1) // _FLOAT_TILE
        per_block = n_groups * n_tiles
        masked = False
        for task in range(first, last):
            rb = task // per_block
            k = (task % per_block) // n_tiles
            c0 = (task % n_tiles) * _FLOAT_TILE
            r0 = rb * _FLOAT_BLOCK_ROWS
            r1 = min(n_rows, r0 + _FLOAT_BLOCK_ROWS)
            w = min(width, c0 + _FLOAT_TILE) - c0
            shift = np.zeros(w)
            for c in range(w):
                for r in range(r0, r1):
                    v = np.float64(y[r, k, c0 + c])
                    if v - v == 0.0:
                        shift[c] = v
                        break
            s1 = np.empty(w)
            s2 = np.empty(w)
            nz = np.empty(w)
            bad = np.empty(w)
            mn = np.empty(w, y.dtype)
            mx = np.empty(w, y.dtype)
            _float_block(y, k, r0, r1, c0, shift, masked, s1, s2, nz, bad, mn, mx)
            if not masked and not (np.isfinite(s1.sum()) and np.isfinite(s2.sum())):
                masked = True
                _float_block(y, k, r0, r1, c0, shift, masked, s1, s2, nz, bad, mn, mx)
            again = False
            for c in range(w):
                n = (r1 - r0) - bad[c]
                if n > 0:
                    m2 = s2[c] - s1[c] * (s1[c] / n)
                    if not (np.isfinite(s2[c]) and m2 >= s2[c] * _SECOND_PASS):
                        if np.isfinite(s1[c]):
                            shift[c] += s1[c] / n
                            again = True
            if again:  # the other columns keep their shift and get the same bits again
                _float_block(y, k, r0, r1, c0, shift, masked, s1, s2, nz, bad, mn, mx)
            _finite_extrema(y, k, r0, r1, c0, bad, mn, mx)
            for c in range(w):
                n = (r1 - r0) - bad[c]
                mean = s1[c] / n if n > 0 else 0.0
                # inf − inf (squared deviations beyond float64) is NaN: an overflow, never 0
                m2 = s2[c] - s1[c] * mean if n > 0 else 0.0
                ok = np.isfinite(mean) and np.isfinite(m2)
                if ok and m2 < 0.0:
                    m2 = 0.0
                outs[0, rb, k, c0 + c] = n
                outs[1, rb, k, c0 + c] = shift[c] if n > 0 else np.nan
                outs[2, rb, k, c0 + c] = mean if ok else 0.0
                outs[3, rb, k, c0 + c] = m2 if ok else 0.0
                outs[4, rb, k, c0 + c] = mn[c]
                outs[5, rb, k, c0 + c] = mx[c]
                outs[6, rb, k, c0 + c] = nz[c] - bad[c]
                outs[7, rb, k, c0 + c] = bad[c]
                n_overflow[rb, k, c0 + c] = 0 if ok else n

    @njit(cache=True, nogil=True)
    def _merge_pairwise(count, shift, mean, m2):  # pragma: no cover - compiled
        """Merge the partials ``[:, j]`` of each row into ``[:, 0]``, pairwise in a fixed order.

        Chan et al.'s merge with both sides measured from their own shift:
        ``δ = (K_b − K_a) + (m_b − m_a)``, ``M2 = M2_a + M2_b + δ²·n_a·n_b/n`` and the mean
        ``K_a + (m_a + δ·n_b/n)`` or ``K_b + (m_b − δ·n_a/n)``, whichever shift is nearer
        (a far shift, such as an outlier's, would cost the mean's low digits). Pairs (0,1),
        (2,3), … then (0,2), … keep the rounding error growing with log₂ of the number of
        partials.
        """
        rows, parts = count.shape
        for t in range(rows):
            step = 1
            while step < parts:
                for i in range(0, parts - step, 2 * step):
                    j = i + step
                    n_b = count[t, j]
                    if n_b == 0:
                        continue
                    n_a = count[t, i]
                    if n_a == 0:
                        count[t, i] = n_b
                        shift[t, i] = shift[t, j]
                        mean[t, i] = mean[t, j]
                        m2[t, i] = m2[t, j]
                        continue
                    n = n_a + n_b
                    delta = (shift[t, j] - shift[t, i]) + (mean[t, j] - mean[t, i])
                    frac = n_b / n
                    from_a = mean[t, i] + delta * frac
                    from_b = mean[t, j] - delta * (n_a / n)
                    if abs(from_b) < abs(from_a):  # keep the shift nearer the merged mean
                        shift[t, i] = shift[t, j]
                        mean[t, i] = from_b
                    else:
                        mean[t, i] = from_a
                    m2[t, i] += m2[t, j] + delta * delta * (n_a * frac)
                    count[t, i] = n
                step *= 2


if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _float_column_tasks(columns, main, outs, n_overflow, first, last):  # pragma: no cover
        """Rows ``first:last`` of ``(C, n)``: each row's first ``main`` values folded into
        ``(main / _FOLD_WIDTH, 1, _FOLD_WIDTH)``, run by :func:`_float_tasks` into its cells."""
        rows = main // _FOLD_WIDTH
        n_blocks = (rows + _FLOAT_BLOCK_ROWS - 1) // _FLOAT_BLOCK_ROWS
        for c in range(first, last):
            y = columns[c, :main].reshape(rows, 1, _FOLD_WIDTH)
            _float_tasks(y, 0, n_blocks, outs[c], n_overflow[c])


def _float_blocks(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the float kernel over every block of a C-contiguous ``(A, K, L)`` array.

    Returns the eight block results ``(8, blocks, K, L)`` (float64: count, shift, mean, M2,
    min, max, non-zero and non-finite counts) and the overflow counts ``(blocks, K, L)``.
    The blocks are a fixed grid of the data's shape, split into one contiguous share per
    thread; every block writes its own cells, so the thread count never changes a bit.
    """
    n_rows, n_groups, width = y.shape
    n_blocks = -(-n_rows // _FLOAT_BLOCK_ROWS)
    outs = np.empty((8, n_blocks, n_groups, width))
    n_overflow = np.zeros((n_blocks, n_groups, width), np.int64)
    n_tasks = n_blocks * n_groups * -(-width // _FLOAT_TILE)
    shares = min(get_threads(), n_tasks, max(1, y.nbytes // _BYTES_PER_THREAD))
    cuts = [n_tasks * i // shares for i in range(shares + 1)]
    first = _compile_first(("float", y.dtype), shares)
    if first:
        _float_tasks(y, cuts[0], cuts[1], outs, n_overflow)
    helpers = [
        helper_pool(shares - 1).submit(_float_tasks, y, cuts[i], cuts[i + 1], outs, n_overflow)
        for i in range(1, shares)
    ]
    if not first:
        _float_tasks(y, cuts[0], cuts[1], outs, n_overflow)
    for done in helpers:
        done.result()
    return outs, n_overflow


def reduce_float(x: np.ndarray) -> FloatSums:
    """Per-C statistics of a float ``(A, C, B)`` array (float16/32/64), accumulated in float64.

    The result depends only on the array's shape and values: never on the thread count.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]]).reshape(3, 2, 1)
    >>> r = reduce_float(x)
    >>> (r.shift + r.mean_shifted).tolist(), (r.m2 / r.n_finite).tolist(), r.n_nonfinite.tolist()
    ([3.0, 4.0], [2.6666666666666665, 4.0], [0, 1])
    """
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64)  # float16: exact
    if not HAVE_NUMBA or x.size == 0:
        return _reduce_float_numpy(x)
    n, n_channels, inner = x.shape
    if inner == 1 and n_channels > 1 and n > 1 and x.strides[0] == x.itemsize:
        return _reduce_float_columns(x[:, :, 0].T)  # column-major (tables): no transposing copy
    x = np.ascontiguousarray(x)
    if n_channels == 1:  # global: one run of values
        x = x.reshape(-1, 1, 1)
        n, inner = x.shape[0], 1
    parts = []  # (8 fields + overflow, targets C, partials) per piece of the data
    if inner > 1:  # segments (CHW images): every column of group k belongs to target k
        outs, over = _float_blocks(x)
        parts.append((outs.transpose(0, 2, 1, 3), over.transpose(1, 0, 2)))
    else:  # rows of C values, folded into rows of about _FOLD_WIDTH values when narrow
        rows = x.reshape(n, n_channels)
        group = max(1, _FOLD_WIDTH // n_channels)
        if group >= 16:  # folded rows of a multiple of 16 values start on 64-byte lines
            group -= group % 16
        main = n - n % group
        pieces = [(rows[:main].reshape(main // group, 1, group * n_channels), group)]
        pieces.append((rows[main:].reshape(n - main, 1, n_channels), 1))
        for piece, folds in pieces:
            if piece.shape[0]:
                outs, over = _float_blocks(piece)
                outs = outs.reshape(8, -1, folds, n_channels)  # column j → target j mod C
                parts.append((outs.transpose(0, 3, 1, 2), over.reshape(-1, n_channels).T))
    return _merge_parts(parts, n_channels)


def _reduce_float_columns(columns: np.ndarray | Sequence[np.ndarray]) -> FloatSums:
    """Per-row statistics of a ``(C, n)`` array, or of C equal-length 1-D arrays: a table's
    columns.

    Each row gets the bits :func:`reduce_float` gives that row alone (``row.reshape(-1, 1, 1)``:
    folded into rows of ``_FOLD_WIDTH`` values, the same fixed grid of blocks), so a column's
    statistics never depend on which other columns are read with it, nor on whether they come
    as one array or apart. No transposing copy: the columns arrive column-major from Arrow,
    and turning them into rows cost more than the kernel. Rows that are contiguous each but
    not one block of memory (a slice of a column-major array, Arrow's buffers) are read where
    they lie, one kernel call per row.
    """
    if isinstance(columns, np.ndarray):
        if columns.flags.c_contiguous:
            return _columns_of(columns, columns.shape[1], _float_column_tasks)
        columns = list(columns)
    rows = [_read_only(c) for c in columns]  # one compiled signature for every row
    return _columns_of(rows, len(rows[0]), _float_row_tasks)


def _read_only(column: np.ndarray) -> np.ndarray:
    """A contiguous read-only view (a copy only where the column is strided)."""
    view = np.ascontiguousarray(column).view()
    view.flags.writeable = False
    return view


def reduce_float_columns(columns: Sequence[np.ndarray]) -> FloatSums:
    """Per-column statistics of equal-length 1-D float arrays of one dtype: the bits
    :func:`reduce_float` gives their stack ``(n, C, 1)``, read without stacking them.

    Examples
    --------
    >>> a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, np.nan, 6.0])
    >>> r = reduce_float_columns([a, b])
    >>> (r.shift + r.mean_shifted).tolist(), r.n_nonfinite.tolist()
    ([2.0, 5.0], [0, 1])
    """
    if not HAVE_NUMBA or not len(columns) or not len(columns[0]):
        return reduce_float(np.stack(columns, axis=1)[:, :, None])
    return _reduce_float_columns(columns)


def _columns_of(columns: Any, n: int, tasks: Callable[..., None]) -> FloatSums:
    """:func:`_reduce_float_columns` of rows that ``tasks`` reads from ``columns``."""
    n_channels = len(columns)
    main = n - n % _FOLD_WIDTH
    parts = []
    if main:
        outs, over = _float_column_blocks(columns, main, tasks)
        parts.append((outs.transpose(0, 2, 1, 3), over.transpose(1, 0, 2)))
    if main < n:  # fewer than _FOLD_WIDTH values of each column: a small copy
        tail = np.stack([c[main:] for c in columns], axis=1)
        outs, over = _float_blocks(tail[:, :, None])
        parts.append((outs.transpose(0, 2, 1, 3), over.transpose(1, 0, 2)))
    return _merge_parts(parts, n_channels)


def _float_row_tasks(
    rows: Sequence[np.ndarray],
    main: int,
    outs: np.ndarray,
    n_overflow: np.ndarray,
    first: int,
    last: int,
) -> None:
    """:func:`_float_column_tasks` of rows held apart: one GIL-free kernel call per row."""
    folded = main // _FOLD_WIDTH
    n_blocks = -(-folded // _FLOAT_BLOCK_ROWS)
    for c in range(first, last):
        y = rows[c][:main].reshape(folded, 1, _FOLD_WIDTH)
        _float_tasks(y, 0, n_blocks, outs[c], n_overflow[c])


def _float_column_blocks(
    columns: Any, main: int, tasks: Callable[..., None]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_float_blocks` of each row's first ``main`` values folded into ``_FOLD_WIDTH``
    columns, all rows at once: ``(8, blocks, C, _FOLD_WIDTH)`` and ``(blocks, C, _FOLD_WIDTH)``.
    Threads take contiguous shares of the rows (``tasks`` runs a share); every row writes
    its own cells."""
    n_channels = len(columns)
    dtype = columns[0].dtype
    n_blocks = -(-(main // _FOLD_WIDTH) // _FLOAT_BLOCK_ROWS)
    outs = np.empty((n_channels, 8, n_blocks, 1, _FOLD_WIDTH))  # one C-contiguous part a row
    n_overflow = np.zeros((n_channels, n_blocks, 1, _FOLD_WIDTH), np.int64)
    nbytes = main * n_channels * dtype.itemsize
    shares = min(get_threads(), n_channels, max(1, nbytes // _BYTES_PER_THREAD))
    cuts = [n_channels * i // shares for i in range(shares + 1)]
    args = (columns, main, outs, n_overflow)
    first = _compile_first(("float columns", tasks, dtype), shares)
    if first:
        tasks(*args, cuts[0], cuts[1])
    helpers = [
        helper_pool(shares - 1).submit(tasks, *args, cuts[i], cuts[i + 1]) for i in range(1, shares)
    ]
    if not first:
        tasks(*args, cuts[0], cuts[1])
    for done in helpers:
        done.result()
    return outs[:, :, :, 0].transpose(1, 2, 0, 3), n_overflow[:, :, 0].transpose(1, 0, 2)


def _merge_parts(parts: list[tuple[np.ndarray, np.ndarray]], n_channels: int) -> FloatSums:
    """The partial results of every piece, ``(8, C, partials)``, merged per C."""
    fields = np.concatenate([p[0].reshape(8, n_channels, -1) for p in parts], axis=2)
    n_overflow = np.concatenate([p[1].reshape(n_channels, -1) for p in parts], axis=1)
    count = fields[0].astype(np.int64)
    shift, mean, m2 = (np.ascontiguousarray(f) for f in fields[1:4])
    _merge_pairwise(count, shift, mean, m2)
    return FloatSums(
        count[:, 0].copy(),
        np.where(count[:, 0] > 0, shift[:, 0], np.nan),
        mean[:, 0].copy(),
        m2[:, 0].copy(),
        fields[4].min(axis=1),
        fields[5].max(axis=1),
        fields[6].sum(axis=1).astype(np.int64),
        fields[7].sum(axis=1).astype(np.int64),
        n_overflow.sum(axis=1),
    )
