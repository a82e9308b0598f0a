"""Data sources: each turns user input into a list of independent *tasks* yielding chunks.

A task is a small picklable object with ``chunks()`` (an iterator of ``(n, *sample_shape)``
arrays), ``n_items`` (for progress) and ``label`` (for error messages). Engines run tasks
anywhere — in-process, in worker processes, on Dask — and merge the per-task statistics
in task order. New kinds of input register an adapter with :func:`register_source`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import EmptyDataError, SourceError


class Task(Protocol):
    label: str
    n_items: int

    def chunks(self) -> Iterator[Any]: ...


@dataclass
class Source:
    """What an adapter returns: the tasks, and a description for messages and metadata."""

    tasks: list[Any]
    description: str
    info: dict[str, Any] = field(default_factory=dict)
    # column groups read apart (tables: integer columns exact, float columns float): each
    # part's info["positions"] says where its features go; `tasks` read every column at once
    parts: list[Source] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return sum(t.n_items for t in self.tasks)


Adapter = Callable[..., "Source | None"]
_ADAPTERS: list[Adapter] = []
_GENERIC: list[Adapter] = []
_FALLBACKS: list[Adapter] = []


def register_source(adapter: Adapter, *, generic: bool = False, fallback: bool = False) -> Adapter:
    """Register ``adapter(source, **options) -> Source | None`` (None: not mine).

    Adapters of one format (a Zarr store, a tar shard) are tried first, in registration order;
    ``generic`` ones (any folder of image files) after them, whatever the import order, so a
    folder that is a store of a known format never reads as a folder of files; ``fallback``
    ones (the generic "iterable of batches") last.
    """
    if generic and fallback:
        raise ValueError("an adapter is generic or a fallback, not both")
    (_FALLBACKS if fallback else _GENERIC if generic else _ADAPTERS).append(adapter)
    return adapter


def resolve(source: Any, **options: Any) -> Source:
    """Turn any accepted input into a :class:`Source`."""
    _load_adapters()
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        from ..io import check_regular

        check_regular(source, folder_ok=True)
    for adapter in [*_ADAPTERS, *_GENERIC, *_FALLBACKS]:
        found = adapter(source, **options)
        if found is not None:
            if not found.tasks:
                raise EmptyDataError(f"{found.description}: no data found")
            return found
    if isinstance(source, (str, os.PathLike)):
        from .fs import location

        loc = location(source, options.get("storage_options"))
        if not loc.exists():
            raise SourceError(f"{loc.path}: no such file or folder")
        raise SourceError(
            f"{loc.path}: cannot read this kind of input (accepted: .npy, .npz, Parquet, Zarr, "
            "HDF5, WebDataset .tar shards, a saved Hugging Face dataset, an "
            "image folder, a list of such files, an array, a table, a PyTorch dataset or an "
            "iterable of batches)"
        )
    raise SourceError(f"cannot read statistics from a {type(source).__name__}")


def _load_adapters() -> None:
    """Import the built-in adapters once (each registers itself)."""
    import importlib

    for name in ("arrays", "tables", "chunked", "images", "webdataset", "hf", "torch"):
        try:
            importlib.import_module(f"normlab.sources.{name}")
        except ImportError:
            pass


def is_iterable_of_batches(source: Any) -> bool:
    return isinstance(source, Iterable) and not isinstance(source, (str, bytes, os.PathLike))
