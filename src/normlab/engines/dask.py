"""The Dask engine: tasks on a ``dask.distributed`` cluster, merged here in task order.

``scheduler`` is an address (``"tcp://host:8786"``), a ``distributed.Client``, or None for
a ``LocalCluster`` of ``workers`` processes with one thread each. Before any task runs, every
worker must run the same normlab version as this process. Tasks of a worker that dies are
rescheduled by Dask on the others; a task that fails raises here with its file named. A task
over a Dask collection whose block fails to compute on a worker is reported as the other
engines report the same failure (``task.failed``): named, or skipped and listed under
``skip_bad=True``.
The connection timeout is Dask's ``distributed.comm.timeouts.connect`` setting.
"""

from __future__ import annotations

import functools
import itertools
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
        )
        client = distributed.Client(cluster)

        def release() -> None:
            client.close()
            cluster.close()

        return client, release
    if not isinstance(scheduler, str):
        raise NormlabError(
            f"scheduler must be an address like 'tcp://host:8786' or a distributed.Client; "
            f"got a {type(scheduler).__name__}"
        )
    import dask

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise NormlabError(
            f"no Dask scheduler answered at {scheduler} within {timeout} ({type(exc).__name__}); "
            "start one with `dask scheduler` and workers with `dask worker ADDRESS`"
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
