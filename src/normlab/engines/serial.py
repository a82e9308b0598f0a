"""The in-process engine: tasks one after another."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import TaskResult, execute


def map_tasks(
    todo: list[tuple[int, Any]],
    make_empty: Callable[[], Any],
    *,
    workers: int | None = None,
    scheduler: Any = None,
    on_finish: Callable[[TaskResult], None],
) -> Iterator[tuple[int, TaskResult]]:
    for index, task in todo:
        result = execute(task, make_empty)
        on_finish(result)
        yield index, result
