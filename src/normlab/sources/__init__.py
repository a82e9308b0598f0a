"""Data sources: each turns user input into a list of independent *tasks* yielding arrays.

The task/source protocol
------------------------
**An adapter** is a function ``adapter(source, **options) -> Source | None`` registered with
:func:`register_source`: it returns None for input that is not its kind, and a
:class:`Source` (the tasks, a description, an ``info`` dict) for input that is. Options it does
not know arrive in ``**_`` and are ignored; options it knows are validated before any task runs.

**A task** is a small picklable object (it may travel to a worker process or a Dask worker) with

* ``label: str`` — where the task reads (file and rows, slice of files), for error messages;
* ``n_items: int`` — items it reads, for the progress bar (0 when unknown);
* ``chunks() -> Iterator[np.ndarray]`` — batches of shape ``(n, *sample_shape)``, **arrays
  only**. A chunk may be a view of a reused buffer: it is valid until the next one is asked for.

Optional: ``start: int`` (the task's first row in its file) and ``feature_names`` (the names of
the features, tables' columns): messages name the row in the file and the column with them.

**Provenance travels beside the data, never in the stream.** What a task wants kept — an item it
skipped (``skip_bad``), the mode/bit depth or size of the samples it reads from some file on — it
reports to :func:`normlab.provenance.recorder` while it yields::

    from normlab.provenance import recorder

    def chunks(self):
        record = recorder()
        for path in self.files:
            try:
                arr = read(path)
            except BadFile as exc:
                record.skipped(path, exc)       # left out, listed in the results
                continue
            record.saw("mode", "RGB 8-bit", path)  # first item of each mode/size is kept
            yield arr[None]

The engine opens a fresh record around each task, sends it back beside the task's statistic, and
the runner (:func:`normlab.engines.run`) merges the records in task order, checking that modes,
bit depths and sizes can share one statistic (the error names one file of each). Every statistic
(``Moments``, ``ImageStats``, ``CoMoments``, histograms) therefore reads every source, and
:func:`~normlab.compute_stats` returns the record with the statistics (``ImageStats.provenance``:
``skipped``, ``n_skipped``, ``first_of``). Outside an engine the recorder is a throwaway.

Errors: raise :class:`~normlab.errors.SourceError` (or another ``NormlabError``) naming the file
and item; the engine prefixes the task's label when the message lacks it. ``OSError`` becomes a
``SourceError`` naming the task.

``info`` keys the runner reads: ``needs_layout`` (samples may be CHW or HWC: per-channel
statistics need ``layout=`` said, not guessed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import EmptyDataError, SourceError, optional_import_failed


class Task(Protocol):
    """What engines run (see the module's description)."""

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
    from ..validate import boolean, optional_string

    # options several adapters read, checked once here (an adapter that ignores one would
    # let a wrong type through, or fail on it inside with a raw TypeError)
    optional_string("glob", options.get("glob"))
    boolean("skip_bad", options.get("skip_bad", False))
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
            f"iterable of batches){_unavailable()}"
        )
    raise SourceError(f"cannot read statistics from a {type(source).__name__}{_unavailable()}")


def _unavailable() -> str:
    """The adapters missing an optional dependency, for messages (empty when none)."""
    return "".join(f"; the {n} reader is unavailable ({why})" for n, why in UNAVAILABLE.items())


UNAVAILABLE: dict[str, str] = {}  # built-in adapters whose optional dependency is missing


def _load_adapters() -> None:
    """Import the built-in adapters once (each registers itself)."""
    import importlib

    for name in ("arrays", "tables", "chunked", "images", "webdataset", "hf", "torch"):
        try:
            importlib.import_module(f"normlab.sources.{name}")
        except ImportError as exc:
            if not optional_import_failed(exc):
                raise  # a real error inside normlab: never hide it
            UNAVAILABLE[name] = str(exc)


def is_iterable_of_batches(source: Any) -> bool:
    return isinstance(source, Iterable) and not isinstance(source, (str, bytes, os.PathLike))
