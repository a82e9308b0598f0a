"""Hot loops of the exact integer path: per-element sums Σx, Σx², min, max and non-zero counts.

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

The caller guarantees that int64 sums cannot overflow (see ``moments.Moments._update_exact``).
numba kernels (``cache=True``) run when numba is installed; otherwise numpy does the same
work, slower.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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


def _helpers(n: int) -> ThreadPoolExecutor:
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
    helpers = [
        _helpers(shares - 1).submit(
            _run_tasks, y, collapse, steps, lanes, cuts[i], cuts[i + 1], *outs
        )
        for i in range(1, shares)
    ]
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
    return _threads or numba.config.NUMBA_NUM_THREADS


# ----------------------------------------------------------------------------- float rows
if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _float_rows(x, shift):  # pragma: no cover - compiled
        """Two passes over ``(R, C)`` rows; Neumaier-compensated float64 sums in both."""
        rows, cols = x.shape
        s = np.zeros(cols)
        sc = np.zeros(cols)  # compensation of s
        mn = np.full(cols, np.inf)
        mx = np.full(cols, -np.inf)
        nz = np.zeros(cols, np.int64)
        bad = 0
        for r in range(rows):
            row = x[r]
            for c in range(cols):
                v = np.float64(row[c])
                if v - v != 0.0:  # NaN or ±inf: the caller falls back to the masked path
                    bad += 1
                d = v - shift[c]
                t = s[c] + d
                if abs(s[c]) >= abs(d):
                    sc[c] += (s[c] - t) + d
                else:
                    sc[c] += (d - t) + s[c]
                s[c] = t
                mn[c] = min(mn[c], v)
                mx[c] = max(mx[c], v)
                nz[c] += v != 0.0
        mean = (s + sc) / rows
        m2 = np.zeros(cols)
        mc = np.zeros(cols)
        for r in range(rows):
            row = x[r]
            for c in range(cols):
                d = (np.float64(row[c]) - shift[c]) - mean[c]
                q = d * d
                t = m2[c] + q
                mc[c] += (m2[c] - t) + q  # m2[c] ≥ 0 and q ≥ 0: t ≥ both, one branch suffices
                m2[c] = t
        return mean, m2 + mc, mn, mx, nz, bad


FLOAT_KERNEL_MIN_COLUMNS = 16  # fewer columns (HWC channels, global) keep numpy's vectorised path


def float_rows(x: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Per-column ``(mean of x − shift, M2, min, max, nnz)`` of finite ``(R, C)`` float rows.

    Returns None where the numpy path is the better (or the only) choice: no numba, few
    columns, float16 input, or any NaN/inf in the rows (the caller's masked path handles
    those, with their count and position).
    """
    if not HAVE_NUMBA or x.ndim != 2 or x.shape[1] < FLOAT_KERNEL_MIN_COLUMNS or x.shape[0] == 0:
        return None
    if x.dtype not in (np.float32, np.float64):
        return None
    mean, m2, mn, mx, nz, bad = _float_rows(x, np.ascontiguousarray(shift, dtype=np.float64))
    if bad:
        return None
    return mean, m2, mn, mx, nz
