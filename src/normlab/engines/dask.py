"""The Dask engine: tasks on a ``dask.distributed`` cluster, merged here in task order.

``scheduler`` is an address (``"tcp://host:8786"``), a ``distributed.Client``, or None for
a ``LocalCluster`` of ``workers`` processes with one thread each. Before any task runs, every
worker must run the same normlab version as this process. Tasks of a worker that dies are
rescheduled by Dask on the others; a task that fails raises here with its file named. A task
over a Dask collection whose block fails to compute on a worker is reported as the other
engines report the same failure (``task.failed``): named, or skipped and listed under
``skip_bad=True``.
The connection timeout is Dask's ``distributed.comm.timeouts.connect`` setting: it bounds the
connection and Dask's handshake, so a port where something else listens fails in words too.
While a run lasts, Dask's own log output is silenced: a failure is reported once, by normlab.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import NormlabError, require
from . import TaskResult, execute, in_order


def run_on_worker(task: Any, make_empty: Callable[[], Any]) -> TaskResult:
    """:func:`~normlab.engines.execute` with one numba thread (one task per worker thread)."""
    from .. import kernels

    kernels.set_threads(1)
    return execute(task, make_empty)


def worker_version() -> str:
    import normlab

    return normlab.__version__


_SCHEMES = ("tcp", "tls")  # the schemes of a scheduler that other machines reach


def scheduler_address(scheduler: str) -> str:
    """``scheduler`` as Dask reads it (``tcp://HOST:PORT``; ``HOST:PORT`` means tcp), or a
    :class:`NormlabError` naming the expected form. Needs no Dask: checked before any data."""
    from urllib.parse import urlsplit

    text = scheduler.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    expected = (
        "expected tcp://HOST:PORT (or tls://HOST:PORT), e.g. tcp://127.0.0.1:8786, the "
        "address `dask scheduler` prints"
    )
    if scheme.lower() not in _SCHEMES:
        raise NormlabError(
            f"scheduler {scheduler!r} is not a Dask scheduler address: the scheme "
            f"{scheme + '://'!r} is not one Dask workers listen on; {expected}"
        )
    try:
        parts = urlsplit(f"{scheme.lower()}://{rest}")
        port = parts.port
    except ValueError as exc:
        raise NormlabError(
            f"scheduler {scheduler!r} is not a Dask scheduler address ({exc}); {expected}"
        ) from None
    if not parts.hostname or port is None or port == 0 or parts.path.strip("/") or parts.query:
        missing = "a host" if not parts.hostname else "a port" if not port else "HOST:PORT alone"
        raise NormlabError(
            f"scheduler {scheduler!r} is not a Dask scheduler address (it needs {missing}); "
            f"{expected}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def check_scheduler(scheduler: Any) -> None:
    """Refuse a scheduler that is neither an address nor a ``distributed.Client``, early."""
    if scheduler is None or isinstance(scheduler, str):
        if scheduler is not None:
            scheduler_address(scheduler)
        return
    if type(scheduler).__name__ == "Client" and type(scheduler).__module__.startswith(
        "distributed"
    ):
        return
    raise NormlabError(
        f"scheduler must be an address like 'tcp://host:8786' or a distributed.Client; "
        f"got a {type(scheduler).__name__}"
    )


def connect_timeout() -> tuple[float, str]:
    """Dask's ``distributed.comm.timeouts.connect``: in seconds, and as written."""
    import dask
    from dask.utils import parse_timedelta

    written = dask.config.get("distributed.comm.timeouts.connect")
    return float(parse_timedelta(written, default="s")), str(written)


@contextlib.contextmanager
def quiet_distributed() -> Iterator[None]:
    """Silence the log handlers of ``distributed`` in this process while a run lasts.

    A task that fails is reported once, by normlab, in words; Dask's own log records of the
    same failure (``Compute Failed`` with a traceback, heartbeats failing at shutdown) would
    print it again before that line. The handlers are restored afterwards.
    """
    changed: list[tuple[logging.Handler, int]] = []
    for name in ("distributed", "bokeh", "tornado"):
        for handler in logging.getLogger(name).handlers:
            changed.append((handler, handler.level))
            handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in changed:
            handler.setLevel(level)


def _run_in_new_loop(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end on an event loop of its own (in a thread: the caller may
    already run a loop, as in Jupyter)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="normlab-probe") as one:
        return one.submit(asyncio.run, coroutine).result()


async def _handshake(address: str, seconds: float, connection_args: dict[str, Any]) -> None:
    """Connect to ``address`` and exchange Dask's handshake, all within ``seconds``.

    ``distributed.Client(address, timeout=...)`` bounds the connection but not the handshake
    that follows it: a port that accepts connections and never answers (not a Dask scheduler,
    or a hung one) would make it wait forever. This does the same two steps under one
    deadline and always closes the connection. Raises ``TimeoutError`` or ``OSError``
    when nothing answered as Dask does.
    """
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend

    scheme, location = parse_address(address)
    connector = get_backend(scheme).get_connector()
    deadline = time.monotonic() + seconds
    async with asyncio.timeout(seconds):
        while True:  # a scheduler that is starting refuses connections for a moment
            try:
                comm = await connector.connect(location, deserialize=False, **connection_args)
                break
            except OSError:
                if time.monotonic() > deadline - 0.2:
                    raise
                await asyncio.sleep(0.1)
        try:
            await comm.write(comm.handshake_info())
            answer = await comm.read()
        finally:
            comm.abort()
    if not isinstance(answer, dict) or "pickle-protocol" not in answer:
        raise OSError(f"the answer is not Dask's handshake ({type(answer).__name__})")


def connect(scheduler: Any, workers: int | None) -> tuple[Any, Callable[[], None]]:
    """A client for ``scheduler`` and a function that releases what was made here."""
    distributed = require("distributed", "dask")
    if isinstance(scheduler, distributed.Client):
        return scheduler, lambda: None
    if scheduler is None:
        from .local import default_workers

        cluster = distributed.LocalCluster(
            n_workers=int(workers or default_workers()),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,  # its workers' logs: normlab reports failures
        )
        client = distributed.Client(cluster)

        def release() -> None:
            client.close()
            cluster.close()

        return client, release
    check_scheduler(scheduler)
    address = scheduler_address(scheduler)
    seconds, written = connect_timeout()
    hint = "start one with `dask scheduler` and workers with `dask worker ADDRESS`"
    try:
        args = distributed.Security().get_connection_args("client")
        _run_in_new_loop(_handshake(address, seconds, args))
        client = distributed.Client(address, timeout=written)
    except (OSError, TimeoutError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise NormlabError(
            f"no Dask scheduler answered at {scheduler} within {written} ({reason}); {hint}"
        ) from None
    except Exception as exc:  # an answer, but not a scheduler's (a Dask worker's port)
        raise NormlabError(
            f"the server at {scheduler} did not answer as a Dask scheduler "
            f"({type(exc).__name__}: {exc}); {hint}"
        ) from None
    return client, client.close


def check_workers(client: Any) -> int:
    """The number of workers, after checking that each runs this normlab version."""
    import dask

    import normlab

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:  # workers started with the scheduler may still be registering
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise NormlabError(
            f"the Dask scheduler at {client.scheduler.address} has no workers (waited {timeout}); "
            "start some with `dask worker ADDRESS`"
        ) from None
    try:
        versions = client.run(worker_version)
    except Exception as exc:  # a worker without normlab fails to unpickle the function
        raise NormlabError(
            f"a Dask worker cannot run normlab ({type(exc).__name__}: {exc}); install "
            f"normlab {normlab.__version__} on every worker"
        ) from None
    other = {w: v for w, v in versions.items() if v != normlab.__version__}
    if other:
        listed = ", ".join(f"{w} has {v}" for w, v in sorted(other.items()))
        raise NormlabError(
            f"Dask workers run another normlab version than this process "
            f"({normlab.__version__}): {listed}; install the same version everywhere"
        )
    return len(versions)


def map_tasks(
    todo: list[tuple[int, Any]],
    make_empty: Callable[[], Any],
    *,
    workers: int | None = None,
    scheduler: Any = None,
    on_finish: Callable[[TaskResult], None],
) -> Iterator[tuple[int, TaskResult]]:
    with quiet_distributed():
        yield from _map_tasks(
            todo, make_empty, workers=workers, scheduler=scheduler, on_finish=on_finish
        )


def _map_tasks(
    todo: list[tuple[int, Any]],
    make_empty: Callable[[], Any],
    *,
    workers: int | None,
    scheduler: Any,
    on_finish: Callable[[TaskResult], None],
) -> Iterator[tuple[int, TaskResult]]:
    client, release = connect(scheduler, workers)
    try:
        n_workers = check_workers(client)
        if not todo:
            return
        distributed = require("distributed", "dask")
        run_id = uuid.uuid4().hex[:12]  # keys unique per run: no result of an old run is reused
        serial = itertools.count()
        yield from in_order(
            todo,
            submit=lambda task: submit(
                client, task, make_empty, f"normlab-{run_id}-{next(serial)}"
            ),
            wait_any=lambda fs: distributed.wait(fs, return_when="FIRST_COMPLETED").done,
            outcome=functools.partial(_outcome, make_empty=make_empty),
            on_finish=on_finish,
            window=4 * n_workers,
        )
    finally:
        release()


def submit(client: Any, task: Any, make_empty: Callable[[], Any], key: str) -> Any:
    """A future of the task's :class:`TaskResult`, computed on a worker.

    A task over a Dask collection (``task.dask_inputs``: its slice of a ``dask.array``) runs
    where that slice is computed: the slice is a dependency of the statistics task in the
    cluster's graph, so the scheduler places the two together and the data never passes
    through this process. ``task.bind(data)`` is the same task over the computed data, and
    ``task.failed(error)`` the same task when its slice failed to compute.
    """
    inputs = getattr(task, "dask_inputs", None)
    if inputs is None:
        return client.submit(run_on_worker, task, make_empty, pure=False, key=key)
    import dask

    call = dask.delayed(run_bound_on_worker, pure=False)
    return client.compute(call(task.bind, inputs, make_empty, dask_key_name=key))


class StatisticsFailed(Exception):
    """What the statistics task itself raised on a worker (``args[0]``): told apart from a
    failure of the Dask block it depends on, which is the data's and may be skipped."""


def run_bound_on_worker(
    bind: Callable[[Any], Any], data: Any, make_empty: Callable[[], Any]
) -> TaskResult:
    try:
        return run_on_worker(bind(data), make_empty)
    except NormlabError:
        raise
    except Exception as exc:
        raise StatisticsFailed(exc) from None


def _outcome(future: Any, task: Any, make_empty: Callable[[], Any]) -> TaskResult:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        raise NormlabError(
            f"{task.label}: Dask workers died while running this task, too often to retry ({exc})"
        ) from None
    except NormlabError:
        raise
    except StatisticsFailed as exc:  # never the data's fault: not skipped
        raise exc.args[0] from None
    except Exception as exc:  # a task's Dask block failed to compute, before its statistics
        if getattr(task, "dask_inputs", None) is None:
            raise
        # in this process, as the serial engine meets it: named, or skipped under skip_bad
        return execute(task.failed(exc), make_empty)
