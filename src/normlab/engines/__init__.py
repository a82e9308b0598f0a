"""Engines run a source's tasks and merge the per-task statistics **in task order**.

This is the one runner of every statistic (``Moments``, ``ImageStats``, ``CoMoments``, ...):
:func:`run` gives the merged statistic and, beside it, the merged
:class:`~normlab.provenance.Provenance` (what the sources recorded: skipped items, modes,
sizes), both in task order; engines, progress, checkpoints and resume work the same for all.

Merging in task order (never completion order) makes float results reproducible bit for
bit; integer results are bit-identical in any order. An engine module has one function,
``map_tasks(todo, make_empty, *, workers, scheduler, on_finish)``, yielding
``(task_index, TaskResult)`` in task order and calling ``on_finish(result)`` as each task
completes (for progress). :func:`run_tasks` adds the merge, the checkpoints and the bar.

``make_empty`` must be picklable (a class or a ``functools.partial``, not a closure): the
process and Dask engines ship it to the workers with each task.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import EmptyDataError, NonFiniteError, NormlabError, SourceError
from ..provenance import Provenance, recording

ENGINES = ("serial", "local", "dask")


@dataclass
class TaskResult:
    """What a worker sends back: a small statistic, not the data."""

    stats: Any
    n_items: int
    n_bytes: int
    seconds: float
    provenance: Provenance = field(default_factory=Provenance)
    rows: int = 0  # samples read (the rows of the whole input are added up from these)
    nonfinite: NonFinite | None = None  # NaN/inf met: ``stats`` is incomplete, never merged


@dataclass
class Run:
    """What :func:`run` returns: the merged statistic and, beside it, what the sources recorded."""

    stats: Any
    provenance: Provenance

    def nonempty(self, description: str) -> Run:
        """This run, or an :class:`EmptyDataError` naming the source when it saw no sample."""
        if self.stats.n_samples_seen == 0:
            skipped = self.provenance.n_skipped
            more = f" ({skipped} unreadable item(s) skipped)" if skipped else ""
            raise EmptyDataError(f"{description}: no samples{more}")
        return self


def run_tasks(tasks: list[Any], make_empty: Callable[[], Any], **options: Any) -> Any:
    """The merged statistic of :func:`run` (without the provenance)."""
    return run(tasks, make_empty, **options).stats


def granularity_of(stats: Any) -> str:
    """The granularity the provenance checks use for this statistic (co-moments: per feature)."""
    layout = getattr(stats, "layout", None)
    return str(getattr(layout, "granularity", "feature"))


def run(
    tasks: list[Any],
    make_empty: Callable[[], Any],
    *,
    engine: str = "serial",
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_key: str | None = None,
    checkpoint_fingerprint: str = "auto",
) -> Run:
    """Map every task to a statistic and merge them (and their provenance) in task order.

    Parameters
    ----------
    tasks
        A source's tasks (see :mod:`normlab.sources`).
    make_empty
        A picklable factory of the empty statistic (``Moments``, ``CoMoments``, ...).
    engine : {"serial", "local", "dask"}
        In this process; in a pool of ``workers`` processes; on a Dask cluster
        (``scheduler``: an address such as ``"tcp://host:8786"``, a ``distributed.Client``,
        or None for a local cluster of ``workers`` processes).
    progress
        Show a progress bar (default: only on a terminal).
    checkpoint, checkpoint_every
        A folder where the merged state and the finished tasks are saved every
        ``checkpoint_every`` tasks (default 10); a rerun with the same inputs resumes there.
    """
    check_engine(engine, workers, scheduler)
    from ..progress import progress_bar
    from .checkpoint import Checkpoint

    ckpt = None
    total = make_empty()
    record = Provenance(granularity_of(total))
    done: set[int] = set()
    if checkpoint is not None:
        ckpt = Checkpoint(
            checkpoint,
            tasks,
            make_empty,
            every=checkpoint_every,
            key=checkpoint_key,
            fingerprint_mode=checkpoint_fingerprint,
        )
        total, record, done = ckpt.resume(total, record)
    todo = [(i, t) for i, t in enumerate(tasks) if i not in done]
    if engine != "serial" and todo:
        _check_picklable(engine, todo[0][1], make_empty)
    runner = importlib.import_module(f"normlab.engines.{engine}")
    what = f"statistics ({engine}" + (
        f"; resumed after {len(done)} of {len(tasks)} tasks)" if done else ")"
    )
    rows = sum(tasks[i].n_items for i in done)  # rows of the input before the next task
    bad: tuple[int, Any, NonFinite] | None = None  # the first NaN/inf: row, task, where
    count = 0  # non-finite values over the whole input
    with progress_bar(sum(t.n_items for _, t in todo) or None, what, enabled=progress) as advance:
        for index, result in runner.map_tasks(
            todo,
            make_empty,
            workers=workers,
            scheduler=scheduler,
            on_finish=lambda r: advance(r.n_items, r.n_bytes),
        ):
            if result.nonfinite is not None:
                found = result.nonfinite
                bad = bad or (rows + found.first_row, tasks[index], found)
                count += found.count
            rows += result.rows
            if bad is not None:  # past the first bad value: count only, merge and save nothing
                continue
            record += result.provenance  # first: it names the files of mixed modes or sizes
            total += result.stats
            if ckpt is not None:
                ckpt.finished(index, total, record)
    if bad is not None:
        raise NonFiniteError(nonfinite_message(count, rows, *bad, can_omit=_can_omit(total)))
    if ckpt is not None:
        ckpt.save(total, record)
    return Run(total, record)


def check_engine(engine: Any, workers: Any, scheduler: Any) -> None:
    """The one check of ``engine``, ``workers`` and ``scheduler`` (an address must read
    ``tcp://HOST:PORT``), made before any data is read or any cluster is reached."""
    if engine not in ENGINES:
        raise NormlabError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if workers is not None and int(workers) < 1:
        raise NormlabError(f"workers must be a positive number of processes; got {workers}")
    if engine == "serial" and (workers not in (None, 1) or scheduler is not None):
        raise NormlabError(
            "the serial engine takes no workers or scheduler; use engine='local' or 'dask'"
        )
    if engine == "local" and scheduler is not None:
        raise NormlabError("a scheduler is only for engine='dask'")
    if engine == "dask":
        from .dask import check_scheduler

        check_scheduler(scheduler)


class _Sink:
    def write(self, data: Any) -> int:
        return len(data)


def _check_picklable(engine: str, task: Any, make_empty: Callable[[], Any]) -> None:
    """Refuse early, in words, what cannot travel to another process (arrays are not copied)."""
    import pickle

    pickler = pickle.Pickler
    if (
        engine == "dask"
    ):  # Dask ships with cloudpickle, which also takes lambdas and __main__ classes
        pickler = importlib.import_module("cloudpickle").Pickler
    for what, obj in (("task", task), ("statistic factory", make_empty)):
        try:
            pickler(_Sink(), protocol=5, buffer_callback=lambda buffer: None).dump(obj)
        except Exception as exc:  # pickle raises PicklingError, TypeError or AttributeError
            raise NormlabError(
                f"engine {engine!r} runs tasks in other processes, but this {what} "
                f"({type(obj).__name__}) cannot be sent there ({exc}); use engine='serial', "
                "or save the data to .npy files first"
            ) from None


def run_task(task: Any, make_empty: Callable[[], Any]) -> Any:
    """Statistics of one task (the unit every engine ships to a worker)."""
    result = execute(task, make_empty)
    if result.nonfinite is not None:
        message = nonfinite_message(
            result.nonfinite.count,
            result.rows,
            result.nonfinite.first_row,
            task,
            result.nonfinite,
            can_omit=_can_omit(result.stats),
        )
        raise NonFiniteError(message)
    return result.stats


def _rows(chunk: Any) -> int:
    """Samples in a chunk (0 for what is not an array: notes of image tasks)."""
    shape = getattr(chunk, "shape", None)
    return int(shape[0]) if shape else 0


@dataclass(frozen=True)
class NonFinite:
    """Where a task met NaN/inf (with ``nan_policy="raise"``): the runner adds up every task's."""

    count: int  # non-finite values in the whole task
    first_row: int  # the first one's row inside the task
    index: tuple[int, ...]  # and its position inside the sample


def _nonfinite_in(chunk: Any, rest: Iterator[Any], rows_before: int) -> tuple[NonFinite, int]:
    """The task's non-finite values (its remaining chunks read too) and the rows it read."""
    import numpy as np

    from ..moments import as_batch

    arr = as_batch(chunk)
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1))
    row = int(np.argmax(bad.any(axis=1)))
    where = np.unravel_index(int(np.argmax(bad[row])), arr.shape[1:])
    count, rows = int(bad.sum()), rows_before + len(arr)
    for more in rest:
        if not _rows(more):
            continue
        values = as_batch(more)
        if values.dtype.kind == "f":
            count += int(values.size - np.count_nonzero(np.isfinite(values)))
        rows += len(values)
    return NonFinite(count, rows_before + row, tuple(int(i) for i in where)), rows


def _can_omit(statistic: Any) -> bool:
    """Whether the statistic being computed can leave NaN/inf out (co-moments cannot)."""
    return hasattr(statistic, "nan_policy")


def nonfinite_message(
    count: int,
    rows: int,
    first_row: int,
    task: Any,
    found: NonFinite,
    *,
    can_omit: bool = True,
) -> str:
    """The one message of non-finite input, the same from every engine.

    ``count`` and ``rows`` are over the whole input; ``first_row`` is the first bad value's row
    in the whole input, ``task`` the task that holds it (its label names the file and rows).
    ``can_omit``: whether to offer ``nan_policy='omit'`` (co-moments need whole samples).
    """
    start = getattr(task, "start", None)
    in_file = start + found.first_row if isinstance(start, int) else None
    inside = f", row {in_file} there" if in_file is not None and in_file != first_row else ""
    names = getattr(task, "feature_names", None)
    where = f"at index {found.index}"
    if names is not None and len(found.index) == 1:  # a table: the column, not its position
        where = f"in column {names[found.index[0]]!r}"
    return (
        f"{count} non-finite value(s) (NaN/inf) in the input ({rows} rows read); the first in "
        f"row {first_row} of the input ({task.label}{inside}) {where}. "
        + (
            "Clean the data or use nan_policy='omit' to leave them out"
            if can_omit
            else "Co-moments need whole samples: drop or impute the samples with NaN/inf first"
        )
    )


def execute(task: Any, make_empty: Callable[[], Any]) -> TaskResult:
    """Run one task; errors name the task (its file and rows, or its slice of files).

    Non-finite values are not an error here: the task counts them (reading to its end) and
    the runner adds up every task's, so the message covers the whole input.
    """
    start = time.perf_counter()
    stats = make_empty()
    n_bytes = 0
    rows = 0
    found: NonFinite | None = None
    chunks = iter(task.chunks())
    try:
        with recording(granularity_of(stats)) as record:
            for chunk in chunks:
                n_bytes += int(getattr(chunk, "nbytes", 0))
                try:
                    stats.update(chunk)
                except NonFiniteError:
                    found, rows = _nonfinite_in(chunk, chunks, rows)
                    break
                rows += _rows(chunk)
    except NormlabError as exc:
        message = str(exc)
        label = str(task.label)
        # a one-item task whose message already names that item ("x.png: corrupt …") needs
        # no "x.png [0:1]: " in front of it
        named = label in message or (
            int(getattr(task, "n_items", 0)) == 1
            and message.startswith(label.split(" [", 1)[0] + ":")
        )
        raise type(exc)(message if named else f"{label}: {message}") from None
    except OSError as exc:  # a file that vanished or cannot be read on this worker
        raise SourceError(f"{task.label}: {type(exc).__name__}: {exc}") from None
    seconds = time.perf_counter() - start
    return TaskResult(stats, int(task.n_items), n_bytes, seconds, record, rows, found)


def in_order(
    todo: Iterable[tuple[int, Any]],
    submit: Callable[[Any], Any],
    wait_any: Callable[[set[Any]], set[Any]],
    outcome: Callable[[Any, Any], TaskResult],
    on_finish: Callable[[TaskResult], None],
    window: int,
) -> Iterator[tuple[int, TaskResult]]:
    """Keep ``window`` tasks in flight; yield results in task order, report them as they end.

    ``submit(task) -> future``; ``wait_any(futures)`` returns the finished ones;
    ``outcome(future, task)`` is the future's :class:`TaskResult` (or raises). At most
    ``window`` results wait for an earlier task, so memory stays O(window · statistic).
    """
    queue = list(todo)
    flying: dict[Any, int] = {}  # future -> position in queue
    ready: dict[int, TaskResult] = {}
    next_submit = next_yield = 0
    while next_yield < len(queue):
        while next_submit < len(queue) and next_submit - next_yield < window:
            flying[submit(queue[next_submit][1])] = next_submit
            next_submit += 1
        for future in wait_any(set(flying)):
            pos = flying.pop(future)
            ready[pos] = outcome(future, queue[pos][1])
            on_finish(ready[pos])
        while next_yield in ready:
            yield queue[next_yield][0], ready.pop(next_yield)
            next_yield += 1
