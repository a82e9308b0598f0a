"""A rich progress bar that stays silent off a terminal, in CI and with ``--quiet``.

It shows items done, items/s, MB/s of data read (decoded arrays) and the time left. Engines
advance it as each task finishes — on Dask, as results arrive from the workers.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any


def wanted(enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    return sys.stderr.isatty() and not os.environ.get("CI")


def rate_text(amount: float, seconds: float | None, unit: str, scale: float = 1.0) -> str:
    """``amount`` per second as text: ``"12.5 MB/s"``; ``"- unit/s"`` before any time passed.

    >>> rate_text(3_000_000, 2.0, "MB", 1e6)
    '1.5 MB/s'
    >>> rate_text(10, 0, "items")
    '- items/s'
    """
    if not seconds:
        return f"- {unit}/s"
    value = amount / scale / seconds
    return f"{value:,.1f} {unit}/s" if value < 100 else f"{value:,.0f} {unit}/s"


def _columns() -> list[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class ItemRate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(
                rate_text(task.completed, task.elapsed, "items"), style="progress.data.speed"
            )

    class ByteRate(ProgressColumn):
        def render(self, task: Any) -> Text:
            n_bytes = task.fields.get("n_bytes", 0)
            return Text(rate_text(n_bytes, task.elapsed, "MB", 1e6), style="progress.data.speed")

    return [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemRate(),
        ByteRate(),
        TimeRemainingColumn(),
    ]


@contextlib.contextmanager
def progress_bar(
    total: int | None, what: str, *, enabled: bool | None = None, console: Any = None
) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n_items, n_bytes=0, more=0)``; shows items/s, MB/s and ETA when enabled.

    ``console`` is a ``rich.console.Console`` (default: standard error).
    """
    if not wanted(enabled):
        yield lambda n_items, n_bytes=0, more=0: None
        return
    from rich.progress import Progress

    with Progress(*_columns(), transient=True, console=console) as bar:
        task_id = bar.add_task(what, total=total, n_bytes=0)
        n_bytes_total = 0

        def advance(n_items: int, n_bytes: int = 0, more: int = 0) -> None:
            """``more`` adds items to the total (work discovered on the way)."""
            nonlocal n_bytes_total
            n_bytes_total += n_bytes
            total_now = bar.tasks[0].total
            if more and total_now is not None:
                bar.update(task_id, total=total_now + more)
            bar.update(task_id, advance=n_items, n_bytes=n_bytes_total)

        yield advance
