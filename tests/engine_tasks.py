"""Tasks for the engine and checkpoint tests: rows of a ``.npy`` file, read slowly, each run
recorded in a marker file.

They follow the public task protocol (``chunks()``, ``n_items``, ``label``; ``path`` for the
checkpoint fingerprint), so the engines run them like any source's tasks; the marker file
lets a test see which tasks ran, in which process, how often. Workers import this module by
name: tests put its folder on ``PYTHONPATH`` (subprocesses) or ``sys.path`` (pytest).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from normlab.sources import Source


@dataclass
class SlowRows:
    path: str
    start: int
    stop: int
    delay: float
    marker: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path} rows {self.start}:{self.stop}"

    @property
    def n_items(self) -> int:
        return self.stop - self.start

    def chunks(self) -> Iterator[np.ndarray]:
        if self.marker:
            with open(self.marker, "a") as handle:  # one short append per run: lines stay whole
                handle.write(f"{self.start}:{self.stop} {os.getpid()}\n")
        time.sleep(self.delay)
        rows = np.load(self.path, mmap_mode="r")[self.start : self.stop]
        for i in range(0, len(rows), 7):
            yield np.array(rows[i : i + 7])


def slow_source(path: str, n_tasks: int, *, delay: float, marker: str | None = None) -> Source:
    n = np.load(path, mmap_mode="r").shape[0]
    bounds = np.linspace(0, n, n_tasks + 1).astype(int)
    tasks = [
        SlowRows(str(path), int(a), int(b), delay, marker)
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    return Source(tasks, f"{path} (slow)")


def executed(marker: str) -> list[str]:
    """The row ranges of the tasks that ran (one entry per run), in order of their start."""
    if not os.path.exists(marker):
        return []
    with open(marker) as handle:
        return [line.split()[0] for line in handle if line.strip()]


@dataclass
class ProcessExit:
    """A task whose process dies (as under the OOM killer)."""

    label: str = "a task that ends its process"
    n_items: int = 1

    def chunks(self) -> Iterator[np.ndarray]:
        os._exit(3)
        yield np.zeros((1, 1))  # pragma: no cover - never reached


def exit_on_block_2(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """A ``map_blocks`` function whose process dies on the third block (as under the OOM
    killer), while the other blocks take a moment, so that several are in flight."""
    assert block_info is not None
    if block_info[0]["chunk-location"][0] == 2:
        os._exit(1)
    time.sleep(0.2)
    return block
