"""A rich progress bar that stays silent off a terminal, in CI and with ``--quiet``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


def wanted(enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def progress_bar(total: int | None, what: str, *, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; shows items/s and ETA when enabled."""
    if not wanted(enabled):
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True) as bar:
        task_id = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task_id, n)
