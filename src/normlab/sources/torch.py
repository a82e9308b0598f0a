"""PyTorch inputs: map-style and iterable ``Dataset`` objects and ``DataLoader`` batches.

Samples may be tensors, numpy arrays or PIL images, alone or as the first element of a tuple
(``(image, label)``). uint8 tensors stay uint8, so the statistics take the exact integer path.
Tensors are usually CHW: for per-channel statistics ``layout`` must be given
(``"CHW"`` or ``"HWC"``); normlab does not guess.

* A map-style ``Dataset`` is split into tasks of contiguous index ranges (picklable whenever
  the dataset is), and consecutive samples are stacked into batches.
* An ``IterableDataset`` or a ``DataLoader`` is one task, read in its own order.

An item that cannot be read (``__getitem__`` raises) or whose shape or dtype differs from the
first one raises a :class:`~normlab.errors.SourceError` naming its index; ``skip_bad=True``
skips and lists unreadable items instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NormlabError, SourceError
from ..moments import tensor_to_numpy
from ..provenance import recorder
from . import Source, register_source

CHUNK_BYTES = 8 * 1024 * 1024
ITEMS_PER_TASK = 4096


def sample_array(item: Any, where: str) -> np.ndarray:
    """The input of one sample (or batch) as a numpy array: tensors without a copy on CPU."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise SourceError(f"{where}: an empty {type(item).__name__} instead of a sample")
        item = item[0]
    if isinstance(item, dict):
        raise SourceError(
            f"{where}: a dict sample (keys {sorted(item)[:5]}); wrap the dataset so it returns "
            "the input tensor, or (input, label)"
        )
    if type(item).__module__.startswith("torch"):
        item = tensor_to_numpy(item)
    elif type(item).__module__.startswith("PIL"):
        item = np.asarray(item)
    arr = np.asarray(item)
    if arr.dtype.kind not in "buif":
        raise SourceError(f"{where}: expected numeric data, got dtype {arr.dtype}")
    return arr


def _record_kind_and_size(arr: np.ndarray, where: str) -> None:
    """Tell the recorder the kind and size of the samples from ``where`` on."""
    record = recorder()
    record.saw("mode", f"{arr.ndim}-d {arr.dtype}", where, strict=True)
    record.saw("size", "x".join(map(str, arr.shape)) or "scalar", where)


@dataclass
class MapDatasetTask:
    """Indices ``start:stop`` of a map-style dataset, stacked into batches."""

    dataset: Any
    start: int
    stop: int
    chunk_size: int | None
    skip_bad: bool

    @property
    def label(self) -> str:
        return f"dataset indices {self.start}:{self.stop}"

    @property
    def n_items(self) -> int:
        return self.stop - self.start

    def chunks(self) -> Iterator[Any]:
        yield from _stacked(self._samples(), self.chunk_size)

    def _samples(self) -> Iterator[tuple[np.ndarray, str]]:
        for index in range(self.start, self.stop):
            where = f"dataset[{index}]"
            try:
                yield sample_array(self.dataset[index], where), where
            except NormlabError:
                raise
            except Exception as exc:  # a user's __getitem__ may raise anything
                if not self.skip_bad:
                    raise SourceError(
                        f"{where}: could not be read ({type(exc).__name__}: {exc})"
                    ) from None
                recorder().skipped(where, f"{type(exc).__name__}: {exc}")


@dataclass
class IterableTask:
    """An ``IterableDataset`` (samples) or a ``DataLoader`` (batches), read once in order."""

    iterable: Any
    batched: bool
    chunk_size: int | None
    n_items: int = 0

    @property
    def label(self) -> str:
        return "DataLoader" if self.batched else "IterableDataset"

    def chunks(self) -> Iterator[Any]:
        yield from _stacked(self._items(), self.chunk_size, batched=self.batched)

    def _items(self) -> Iterator[tuple[np.ndarray, str]]:
        noun = "batch" if self.batched else "item"
        for index, item in enumerate(self.iterable):
            where = f"{noun} {index}"
            arr = sample_array(item, where)
            if self.batched and arr.ndim < 2:
                raise SourceError(
                    f"{where}: expected a batch (n, *sample_shape), got shape {arr.shape}"
                )
            yield arr, where


def _stacked(
    items: Iterator[tuple[np.ndarray, str]], chunk_size: int | None, *, batched: bool = False
) -> Iterator[Any]:
    """Samples stacked into batches (``batched``: items are batches already, passed on).

    A sample of a new shape or dtype closes the batch, and its kind and size go to the
    recorder (which checks them for consistency).
    """
    batch: list[np.ndarray] = []
    first: np.ndarray | None = None
    limit = chunk_size or 1
    for item in items:
        arr, where = item
        sample = arr[0] if batched else arr
        if first is None or sample.shape != first.shape or arr.dtype != first.dtype:
            if batch:
                yield np.stack(batch)
                batch = []
            _record_kind_and_size(sample, where)
            first = sample
            limit = chunk_size or max(1, CHUNK_BYTES // max(1, sample.nbytes))
        if batched:
            yield arr
            continue
        batch.append(arr)
        if len(batch) >= limit:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def torch_source(
    source: Any, *, chunk_size: int | None = None, skip_bad: bool = False, **_: Any
) -> Source | None:
    """A torch ``Dataset``/``IterableDataset``/``DataLoader``; None for anything else."""
    torch = sys.modules.get("torch")  # a torch object means torch is already imported
    if torch is None or not hasattr(torch, "utils"):
        return None
    data = torch.utils.data
    info = {"kind": "torch", "needs_layout": True}
    if isinstance(source, data.DataLoader):
        n = len(source) if hasattr(source.dataset, "__len__") else 0
        task = IterableTask(source, True, chunk_size, n)
        return Source([task], f"DataLoader over a {type(source.dataset).__name__}", info)
    if isinstance(source, data.IterableDataset):
        task = IterableTask(source, False, chunk_size)
        return Source([task], f"iterable dataset {type(source).__name__}", info)
    if isinstance(source, data.Dataset):
        if not hasattr(source, "__len__"):
            raise SourceError(f"{type(source).__name__}: a map-style Dataset without __len__")
        n = len(source)
        step = ITEMS_PER_TASK
        tasks = [
            MapDatasetTask(source, s, min(s + step, n), chunk_size, bool(skip_bad))
            for s in range(0, n, step)
        ]
        return Source(tasks, f"dataset {type(source).__name__} of {n} samples", info)
    return None


register_source(torch_source)
