"""The local engine: a pool of worker processes on this machine.

Workers start with ``forkserver`` (``spawn`` where there is none): a fork of a process that
already runs numba or rich threads is unsafe. Each worker runs one numba thread (and one
BLAS thread), so ``workers`` processes use ``workers`` cores, and loads the cached numba
kernels once when it starts. The pool stays up for the next run in the same process
(:func:`pool`). Workers whose parent is gone (killed with SIGKILL) exit by themselves.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import NormlabError
from . import TaskResult, execute, in_order

_WATCH_PARENT_S = 1.0  # how often a worker checks that the parent process still lives


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # the fork server imports these once; every worker forked from it starts warm
    context.set_forkserver_preload(["normlab.moments", "normlab.imagestats", "normlab.engines"])
    return context


# What each worker process runs, on a board shared with this process: three integers a worker
# (its pid, the serial number of its task, the state of that task). A worker that dies leaves
# its task marked running; the others, stopped by the broken pool, mark theirs stopped. So a
# death is blamed on the task that was running in the process that died, never on a guess.
_FIELDS = 3
_IDLE, _RUNNING, _STOPPED = 0, 1, 2
_board: Any = None  # in a worker: the pool's board, and the worker's row in it
_row = -1


def init_worker(parent_pid: int, board: Any = None) -> None:
    """One numba and BLAS thread per worker, warm kernels, exit when the parent is gone."""
    import numpy as np

    from .. import kernels

    kernels.set_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    kernels.reduce_integer(np.zeros((8, 1, 1), np.uint8))  # loads the cached kernels once
    if board is not None:
        _join_board(board)

    def watch() -> None:
        while True:
            time.sleep(_WATCH_PARENT_S)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - the pid was reused by another user
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="normlab-parent-watch").start()


def _join_board(board: Any) -> None:
    """Take a free row of the board; mark this worker's task stopped when the pool stops it."""
    global _board, _row
    with board.get_lock():
        for row in range(len(board) // _FIELDS):
            if board[row * _FIELDS] == 0:
                board[row * _FIELDS] = os.getpid()
                _board, _row = board, row
                break
    if _board is None:  # pragma: no cover - more workers than rows: nothing is recorded
        return

    def stopped(signum: int, frame: Any) -> None:  # a broken pool terminates its workers
        if _board[_row * _FIELDS + 2] == _RUNNING:
            _board[_row * _FIELDS + 2] = _STOPPED
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stopped)


def execute_marked(serial: int, task: Any, make_empty: Callable[[], Any]) -> TaskResult:
    """:func:`~normlab.engines.execute`, with the task marked running on the board meanwhile."""
    if _board is None:
        return execute(task, make_empty)
    at = _row * _FIELDS
    _board[at + 1], _board[at + 2] = serial, _RUNNING
    try:
        return execute(task, make_empty)
    finally:
        _board[at + 2] = _IDLE


_POOLS: dict[tuple[int, int], tuple[cf.ProcessPoolExecutor, Any]] = {}
_SERIALS = itertools.count(1)  # task numbers on the boards: unique in this process


def pool(n_workers: int) -> cf.ProcessPoolExecutor:
    """A pool of ``n_workers`` warm processes, kept for the next run in this process.

    Starting workers (importing numba, loading the kernels) costs about a second; a session
    that computes statistics many times pays it once. Python shuts the pools down at exit.
    """
    return _pool(n_workers)[0]


def _pool(n_workers: int) -> tuple[cf.ProcessPoolExecutor, Any]:
    key = (os.getpid(), n_workers)
    if key not in _POOLS:
        if not _POOLS:
            atexit.register(shutdown_pools)
        context = _context()
        board = context.Array("q", _FIELDS * n_workers)  # zeros; an RLock guards it
        executor = cf.ProcessPoolExecutor(
            n_workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(os.getpid(), board),
        )
        _POOLS[key] = executor, board
    return _POOLS[key]


def shutdown_pools() -> None:
    """Stop the kept pools (at exit: before Python tears its modules down under them)."""
    while _POOLS:
        _POOLS.popitem()[1][0].shutdown(wait=True, cancel_futures=True)
    atexit.unregister(shutdown_pools)


def map_tasks(
    todo: list[tuple[int, Any]],
    make_empty: Callable[[], Any],
    *,
    workers: int | None = None,
    scheduler: Any = None,
    on_finish: Callable[[TaskResult], None],
) -> Iterator[tuple[int, TaskResult]]:
    if not todo:
        return
    n_workers = int(workers or default_workers())
    executor, board = _pool(n_workers)
    submitted: list[cf.Future] = []
    labels: dict[int, str] = {}  # serial -> label, of this run's tasks

    def submit(task: Any) -> cf.Future:
        serial = next(_SERIALS)
        labels[serial] = str(task.label)
        submitted.append(executor.submit(execute_marked, serial, task, make_empty))
        return submitted[-1]

    def unfinished() -> list[str]:  # after a break: the tasks the broken pool gave up
        return [
            label
            for future, label in zip(submitted, labels.values(), strict=True)
            if future.done()
            and not future.cancelled()
            and isinstance(future.exception(), cf.process.BrokenProcessPool)
        ]

    def outcome(future: cf.Future, task: Any) -> TaskResult:
        try:
            return future.result()
        except cf.process.BrokenProcessPool:
            shutdown_pools()  # a broken pool takes no more work: the next run starts a new one
            raise NormlabError(_unguarded_main() or _died(board, labels, unfinished())) from None

    try:
        yield from in_order(
            todo,
            submit=submit,
            wait_any=lambda fs: cf.wait(fs, return_when=cf.FIRST_COMPLETED).done,
            outcome=outcome,
            on_finish=on_finish,
            window=4 * n_workers,
        )
    except cf.process.BrokenProcessPool:  # raised by submit: a worker died between two runs
        shutdown_pools()
        raise NormlabError(
            _unguarded_main()
            or "a worker process of the pool died (killed, or out of memory); rerun"
        ) from None
    finally:
        for future in submitted:  # after an error: tasks not started yet never start
            future.cancel()


def _died(board: Any, labels: dict[int, str], unfinished: list[str]) -> str:
    """Which task killed its worker, read from the board once every worker has stopped.

    The task still marked running is the one whose process died (killed, out of memory,
    ``os._exit``): it is named. If that cannot be known (the process died between two
    tasks), the unfinished tasks are listed as the candidates, never one of them as the cause.
    """
    rows = [tuple(board[i : i + _FIELDS]) for i in range(0, len(board), _FIELDS)]
    running = [labels[s] for _, s, state in rows if state == _RUNNING and s in labels]
    rerun = "rerun with checkpoint='FOLDER' to keep finished work"
    if len(running) == 1:
        return (
            f"a worker process died while running {running[0]} (killed, or out of memory); {rerun}"
        )
    if running:
        return (
            f"worker processes died while running {'; '.join(running)} (killed, or out of "
            f"memory); {rerun}"
        )
    listed = "; ".join(unfinished[:8]) + (
        f"; and {len(unfinished) - 8} more" if len(unfinished) > 8 else ""
    )
    return (
        "a worker process died (killed, or out of memory) between tasks, so which task it ran "
        f"cannot be told; the tasks in flight were: {listed or 'none'}; {rerun}"
    )


def _unguarded_main() -> str | None:
    """The likely cause when workers die at start: a script without a ``__main__`` guard.

    Worker processes import the main script again; without ``if __name__ == "__main__":``
    each of them starts the run anew, which multiprocessing refuses, and they die.
    """
    import re
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            source = handle.read(1 << 20)
    except OSError:
        return None
    if re.search(r"""if\s+__name__\s*==\s*['"]__main__['"]""", source):
        return None
    return (
        f"the worker processes of engine='local' died at start: {path} has no "
        '`if __name__ == "__main__":` guard. Workers import the script again, and without '
        "the guard each one starts the whole run anew, which Python's multiprocessing "
        "refuses. Put the script's work under the guard, or use engine='serial'"
    )
