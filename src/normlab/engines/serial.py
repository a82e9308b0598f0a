"""The in-process engine: tasks one after another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..progress import progress_bar
from . import run_task


def run(tasks: list[Any], make_empty: Callable[[], Any], *, progress: bool | None = None) -> Any:
    total = make_empty()
    with progress_bar(sum(t.n_items for t in tasks) or None, "statistics", enabled=progress) as advance:
        for task in tasks:
            total += run_task(task, make_empty)
            advance(task.n_items)
    return total
