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
import multiprocessing
import os
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


def init_worker(parent_pid: int) -> None:
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


_POOLS: dict[tuple[int, int], cf.ProcessPoolExecutor] = {}


def pool(n_workers: int) -> cf.ProcessPoolExecutor:
    """A pool of ``n_workers`` warm processes, kept for the next run in this process.

    Starting workers (importing numba, loading the kernels) costs about a second; a session
    that computes statistics many times pays it once. Python shuts the pools down at exit.
    """
    key = (os.getpid(), n_workers)
    if key not in _POOLS:
        if not _POOLS:
            atexit.register(shutdown_pools)
        _POOLS[key] = cf.ProcessPoolExecutor(
            n_workers, mp_context=_context(), initializer=init_worker, initargs=(os.getpid(),)
        )
    return _POOLS[key]


def shutdown_pools() -> None:
    """Stop the kept pools (at exit: before Python tears its modules down under them)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)
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
    executor = pool(n_workers)
    submitted: list[cf.Future] = []

    def submit(task: Any) -> cf.Future:
        submitted.append(executor.submit(execute, task, make_empty))
        return submitted[-1]

    try:
        yield from in_order(
            todo,
            submit=submit,
            wait_any=lambda fs: cf.wait(fs, return_when=cf.FIRST_COMPLETED).done,
            outcome=_outcome,
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


def _outcome(future: cf.Future, task: Any) -> TaskResult:
    try:
        return future.result()
    except cf.process.BrokenProcessPool:
        shutdown_pools()  # a broken pool takes no more work: the next run starts a new one
        raise NormlabError(
            _unguarded_main()
            or f"a worker process died while running {task.label} (killed, or out of memory); "
            "rerun with checkpoint='FOLDER' to keep finished work"
        ) from None


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
