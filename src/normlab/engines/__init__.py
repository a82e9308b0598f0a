"""Engines run a source's tasks and merge the per-task statistics **in task order**.

Merging in task order (never completion order) makes float results reproducible bit for
bit; integer results are bit-identical in any order. Every engine has the signature of
:func:`normlab.engines.serial.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NormlabError

ENGINES = ("serial",)


def run_tasks(
    tasks: list[Any],
    make_empty: Callable[[], Any],
    *,
    engine: str = "serial",
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool | None = None,
) -> Any:
    """Map every task to a statistic and merge them in task order."""
    if engine not in ENGINES:
        raise NormlabError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    from . import serial

    return serial.run(tasks, make_empty, progress=progress)


def run_task(task: Any, make_empty: Callable[[], Any]) -> Any:
    """Statistics of one task (the unit every engine ships to a worker)."""
    stats = make_empty()
    for chunk in task.chunks():
        try:
            stats.update(chunk)
        except NormlabError as exc:
            raise type(exc)(f"{task.label}: {exc}") from None
    return stats
