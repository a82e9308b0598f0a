"""What zarr leaves open on its event loop, closed by normlab at exit.

Zarr reads remote stores (``s3://``, ``gs://``, ...) on an event loop of its own, through
asynchronous fsspec filesystems that nothing closes (zarr-python issue 2901): at exit aiohttp
prints ``Unclosed client session``, and requests still pending when opening a store failed
(zarr asks for several metadata keys at once and raises at the first error) are destroyed with
the loop, each printing ``Exception ignored in: <coroutine object StorePath.get ...>`` and a
traceback after normlab's error line. :func:`track` registers, once per process, an exit hook
that runs on zarr's loop before zarr stops it: it cancels the requests still pending (each ends
in its own context, so aiobotocore's cleanup works) and closes the sessions of the filesystems
normlab opened.
"""

from __future__ import annotations

import asyncio
import atexit
import os
from typing import Any

_FILESYSTEMS: list[Any] = []  # the asynchronous filesystems of the stores opened here
_HOOKED_IN: list[int] = []  # the process that registered the exit hook (not a forked copy)
_CLOSE_WAIT_S = 5.0  # at most this long at exit


def track(fs: Any) -> None:
    """Close ``fs`` (an asynchronous fsspec filesystem zarr reads through) at exit."""
    if fs is None or not getattr(fs, "asynchronous", False):
        return
    if os.getpid() not in _HOOKED_IN:
        _FILESYSTEMS.clear()  # a forked copy's list names the parent's filesystems
        _HOOKED_IN[:] = [os.getpid()]
        atexit.register(close_all)  # after zarr's own hook: runs before it, with the loop up
    if not any(known is fs for known in _FILESYSTEMS):
        _FILESYSTEMS.append(fs)


def store_fs(array: Any) -> Any:
    """The fsspec filesystem of a zarr array's or group's store, or None."""
    store = getattr(getattr(array, "store_path", None), "store", None) or getattr(
        array, "store", None
    )
    return getattr(store, "fs", None)


async def _close(filesystems: list[Any]) -> None:
    this = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not this and not task.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for fs in filesystems:
        try:
            client = getattr(fs, "_s3", None)  # s3fs: an aiobotocore client
            if client is not None:
                await client.close()
            session = getattr(fs, "_session", None)  # gcsfs, http: an aiohttp session
            if session is not None and not getattr(session, "closed", True):
                await session.close()
        except Exception:  # noqa: BLE001, S112 - at exit: close what can be closed
            continue


def close_all() -> None:
    """Cancel zarr's pending requests and close the tracked filesystems' sessions."""
    if os.getpid() not in _HOOKED_IN:
        return
    try:
        from zarr.core.sync import loop as zarr_loop
    except ImportError:  # pragma: no cover - zarr 2 runs no loop of its own
        return
    loop = zarr_loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    filesystems, _FILESYSTEMS[:] = list(_FILESYSTEMS), []
    future = asyncio.run_coroutine_threadsafe(_close(filesystems), loop)
    try:
        future.result(timeout=_CLOSE_WAIT_S)
    except Exception:  # noqa: BLE001 - at exit, a server that does not answer: give up
        future.cancel()
