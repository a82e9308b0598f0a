"""Chunked arrays: ``dask.array`` collections, Zarr arrays and HDF5 datasets.

Samples lie along the first axis. A task is a whole row-chunk (every chunk of the other axes
included), so no storage chunk is decoded twice and tasks line up with the storage; Zarr and
HDF5 group runs of small row-chunks until a task holds about :data:`TASK_BYTES`, a Dask array
keeps one task per row-chunk (its blocks may live on different workers).

* **Dask arrays**: with ``engine="dask"`` each task's block is computed on a cluster worker
  and its statistics are taken there (the data never passes through this process); with the
  other engines the blocks are computed in order, in this process or in the pool's workers.
* **Zarr** (a ``zarr.Array``, or a ``.zarr`` store path or URL; ``key=`` picks an array of
  a group) and **HDF5** (an ``h5py.Dataset``, or a ``.h5``/``.hdf5`` path or URL with ``key=``
  the dataset): read directly, in windows of whole storage chunks. URLs take
  ``storage_options`` (see :mod:`normlab.sources.fs`); workers open the data themselves.

Integer statistics are bit-identical to those of the same array in memory; float statistics
are identical for the same task split and agree to about 1e-15 across splits. A chunk that
cannot be read or decoded raises a :class:`~normlab.errors.SourceError` naming its chunk
index and rows; with ``skip_bad=True`` the unreadable chunks are skipped and listed beside the
statistics, the same on every engine (on ``engine="dask"``, a block that fails to compute on
a worker is reported through :meth:`ChunkedTask.failed`, as the other engines report it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload

import numpy as np

from ..errors import DTypeError, NormlabError, ShapeError, SourceError, require
from ..moments import as_batch
from . import Source, register_source, zarr_io
from .arrays import MAX_READ_BYTES, check_row_bytes, rows_per_chunk
from .fs import GCS_PROTOCOLS, Location, gcs_endpoint_is_plain_http, is_path_like, location

TASK_BYTES = 8 * 1024 * 1024  # consecutive row-chunks are grouped into tasks of at least this
MAX_TASKS = 100_000  # tasks of one Zarr/HDF5 array at most: a larger array gets larger tasks
# Values of one array at most: 2**50 (8 PiB of float64) takes about two weeks at a billion
# values a second; a header declaring more is refused rather than read for years.
MAX_VALUES = 2**50
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


class ChunkReader(Protocol):
    """Rows of one chunked array, for the workers (picklable)."""

    name: str

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def identity(self) -> str: ...


@dataclass(frozen=True)
class ChunkGrid:
    """Where the row-chunks of an array start and stop.

    A regular grid (Zarr, HDF5: every chunk ``size`` rows, the last one shorter) is computed,
    never listed: its memory does not grow with the number of chunks, so a declared shape of
    10**15 rows costs nothing until rows are read. A Dask array's chunks are listed by Dask
    already: ``bounds[k]:bounds[k+1]`` is chunk ``first + k``.
    """

    n_rows: int
    size: int = 0  # rows per chunk of a regular grid; 0 for listed bounds
    bounds: tuple[int, ...] = ()
    first: int = 0  # the index of chunk ``bounds[0]:bounds[1]`` in the whole array

    @classmethod
    def regular(cls, n_rows: int, chunk_rows: int) -> ChunkGrid:
        return cls(n_rows, max(1, chunk_rows))

    @classmethod
    def listed(cls, bounds: tuple[int, ...]) -> ChunkGrid:
        return cls(bounds[-1], 0, bounds)

    @property
    def n_chunks(self) -> int:
        if self.size:
            return -(-self.n_rows // self.size)
        return len(self.bounds) - 1

    def chunk_of(self, row: int) -> int:
        if self.size:
            return row // self.size
        return self.first + int(np.searchsorted(self.bounds, row, side="right")) - 1

    def rows_of(self, chunk: int) -> tuple[int, int]:
        if self.size:
            return chunk * self.size, min((chunk + 1) * self.size, self.n_rows)
        return self.bounds[chunk - self.first], self.bounds[chunk - self.first + 1]

    def between(self, start: int, stop: int) -> Iterator[int]:
        """The chunk boundaries strictly between rows ``start`` and ``stop``, in order."""
        if self.size:
            yield from range((start // self.size + 1) * self.size, stop, self.size)
            return
        k = int(np.searchsorted(self.bounds, start, side="right"))
        while k < len(self.bounds) and self.bounds[k] < stop:
            yield self.bounds[k]
            k += 1

    def within(self, start: int, stop: int) -> ChunkGrid:
        """The chunks of rows ``start:stop`` (whole chunks): what one task carries (a regular
        grid is carried whole: it is a few numbers)."""
        if self.size:
            return self
        lo, hi = self.chunk_of(start) - self.first, self.chunk_of(stop - 1) - self.first
        return ChunkGrid(self.bounds[hi + 1], 0, self.bounds[lo : hi + 2], self.first + lo)

    def tasks(self, row_bytes: int, group: bool) -> Sequence[tuple[int, int]]:
        """``(start, stop)`` rows: one task per chunk, or (``group``) runs of whole chunks of at
        least :data:`TASK_BYTES` each; a regular grid makes at most :data:`MAX_TASKS` tasks
        (larger runs for a larger array), computed as they are asked for."""
        if self.size:
            n_chunks = self.n_chunks
            per = 1
            if group:
                chunk_bytes = self.size * row_bytes
                per = -(-TASK_BYTES // chunk_bytes) if chunk_bytes else max(1, n_chunks)
                per = max(per, -(-n_chunks // MAX_TASKS))
            return _Runs(self.n_rows, per * self.size)
        runs: list[tuple[int, int]] = []
        start = self.bounds[0]
        for stop in self.bounds[1:]:
            if not group or (stop - start) * row_bytes >= TASK_BYTES:
                runs.append((start, stop))
                start = stop
        if start < self.bounds[-1]:
            runs.append((start, self.bounds[-1]))
        return runs


class _Runs(Sequence[tuple[int, int]]):
    """Rows ``0:n_rows`` in runs of ``step`` rows (the last shorter), computed on demand."""

    def __init__(self, n_rows: int, step: int) -> None:
        self.n_rows, self.step = n_rows, step
        self._range = range(0, n_rows, step)

    def __len__(self) -> int:
        return len(self._range)

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, int]]: ...
    def __getitem__(self, index: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        start = self._range[index]
        return start, min(start + self.step, self.n_rows)


@dataclass
class ChunkedTask:
    """Rows ``start:stop`` of a chunked array, read in windows of whole chunks."""

    reader: Any  # a ChunkReader
    grid: ChunkGrid
    start: int
    stop: int
    chunk_size: int | None
    row_bytes: int
    skip_bad: bool = False

    @property
    def label(self) -> str:
        first, last = self.grid.chunk_of(self.start), self.grid.chunk_of(self.stop - 1)
        which = f"chunk {first}" if first == last else f"chunks {first}-{last}"
        return f"{self.reader.name} {which} (rows {self.start}:{self.stop})"

    @property
    def n_items(self) -> int:
        return self.stop - self.start

    def windows(self) -> Iterator[tuple[int, int]]:
        """``chunk_size`` rows at a time, or whole chunks up to about 32 MiB by default (a
        row-chunk beyond :data:`MAX_READ_BYTES` in pieces of about 32 MiB); computed as they
        are read, never listed."""
        if self.chunk_size is not None:
            step = rows_per_chunk(self.row_bytes, self.chunk_size)
            for i in range(self.start, self.stop, step):
                yield i, min(i + step, self.stop)
            return
        target = rows_per_chunk(self.row_bytes, None)
        most = max(target, MAX_READ_BYTES // max(1, self.row_bytes))
        begin = self.start
        for bound in itertools.chain(self.grid.between(self.start, self.stop), (self.stop,)):
            while bound - begin > most:  # a row-chunk too large for one read: in pieces
                yield begin, begin + target
                begin += target
            if bound - begin >= target or bound == self.stop:
                yield begin, bound
                begin = bound

    def chunks(self) -> Iterator[np.ndarray]:
        for begin, end in self.windows():
            try:
                data = self.read(begin, end)
            except SourceError:
                if not self.skip_bad:
                    raise
                yield from self._readable_chunks(begin, end)
                continue
            yield data

    def _readable_chunks(self, begin: int, end: int) -> Iterator[np.ndarray]:
        """``skip_bad``: rows ``begin:end`` chunk by chunk, the unreadable chunks recorded."""
        from .tables import skipped

        for k in range(self.grid.chunk_of(begin), self.grid.chunk_of(end - 1) + 1):
            lo, hi = self.grid.rows_of(k)
            lo, hi = max(lo, begin), min(hi, end)
            try:
                data = as_batch(self.reader.read(lo, hi), self.reader.name)
            except (NormlabError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - reported with its chunk
                skipped(
                    f"{self.reader.name} chunk {k} (rows {lo}:{hi})", f"{type(exc).__name__}: {exc}"
                )
                continue
            yield data

    def read(self, begin: int, end: int) -> np.ndarray:
        try:
            return as_batch(self.reader.read(begin, end), self.reader.name)
        except (NormlabError, MemoryError):
            raise
        except Exception as exc:  # a codec, a store or h5py: any failure is this chunk's
            raise self._chunk_error(begin, end, exc) from None

    def _chunk_error(self, begin: int, end: int, exc: Exception) -> SourceError:
        """Name the first chunk of ``begin:end`` that fails on its own (all of them if none)."""
        for k in range(self.grid.chunk_of(begin), self.grid.chunk_of(end - 1) + 1):
            lo, hi = self.grid.rows_of(k)
            lo, hi = max(lo, begin), min(hi, end)
            try:
                self.reader.read(lo, hi)
            except Exception as inner:  # noqa: BLE001 - reported with its chunk
                return SourceError(
                    f"{self.reader.name}: cannot read chunk {k} (rows {lo}:{hi}): "
                    f"{type(inner).__name__}: {inner}"
                )
        return SourceError(
            f"{self.reader.name}: cannot read rows {begin}:{end}: {type(exc).__name__}: {exc}"
        )

    def fingerprint(self) -> str:
        """What identifies this task's data for checkpoints (see the readers' ``identity``)."""
        return f"{self.reader.identity()} rows {self.start}:{self.stop}"

    def failed(self, error: Exception) -> ChunkedTask:
        """This task over a reader whose every read raises ``error``: what a Dask block that
        failed to compute on a worker gives. Run, it raises (or, with ``skip_bad``, skips and
        lists the task's chunks) exactly as the same failure read in this process does."""
        return dataclasses.replace(self, reader=FailedReader(self.reader.name, error))

    @property
    def dask_inputs(self) -> Any:
        """The task's block of a Dask array (None for other arrays): see the Dask engine."""
        return getattr(self.reader, "dask_block", lambda a, b: None)(self.start, self.stop)

    @property
    def bind(self) -> Callable[[np.ndarray], ChunkedTask]:
        """The same task (same windows) over its block once computed, on the worker holding it.

        Picklable without the Dask graph: only the name and the row layout travel.
        """
        return functools.partial(
            _computed_block,
            self.reader.name,
            self.grid,
            self.start,
            self.stop,
            self.chunk_size,
            self.row_bytes,
        )


@dataclass
class MemoryReader:
    """Rows ``offset:offset + len(data)`` of an array, already computed."""

    data: np.ndarray
    offset: int
    name: str

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[start - self.offset : stop - self.offset]

    def identity(self) -> str:
        return f"{self.name} computed"


@dataclass
class FailedReader:
    """Rows that could not be computed: every read raises the error met (see ``failed``)."""

    name: str
    error: Exception

    def read(self, start: int, stop: int) -> np.ndarray:
        raise self.error

    def identity(self) -> str:
        return f"{self.name} failed"


def _computed_block(
    name: str,
    grid: ChunkGrid,
    start: int,
    stop: int,
    chunk_size: int | None,
    row_bytes: int,
    blocks: Any,
) -> ChunkedTask:
    data = np.block(blocks) if _n_blocks(blocks) > 1 else np.asarray(_first_block(blocks))
    reader = MemoryReader(data, start, name)
    return ChunkedTask(reader, grid, start, stop, chunk_size, row_bytes)


def _n_blocks(blocks: Any) -> int:
    return sum(_n_blocks(b) for b in blocks) if isinstance(blocks, list) else 1


def _first_block(blocks: Any) -> Any:
    return _first_block(blocks[0]) if isinstance(blocks, list) else blocks


def check_declared(
    name: str, shape: tuple[int, ...], dtype: np.dtype, chunk_shape: tuple[int, ...] | None
) -> None:
    """Refuse what a header declares but no read could hold, before anything is allocated:
    more than :data:`MAX_VALUES` values, or a sample (row) or a storage chunk of more than
    :data:`MAX_READ_BYTES` bytes (each is decoded whole)."""
    if any(n < 0 for n in shape) or (chunk_shape and any(n < 1 for n in chunk_shape)):
        raise SourceError(f"{name}: corrupt metadata: shape {shape}, chunks {chunk_shape}")
    n_values = math.prod(shape)
    if n_values > MAX_VALUES:
        raise SourceError(
            f"{name}: declares shape {shape} of {dtype}: {n_values} values "
            f"({n_values * dtype.itemsize} bytes); normlab reads at most 2**50 values of one "
            "array (two weeks at a billion values a second). Read a part of it as a Dask "
            "array (dask.array.from_zarr(path)[:n], dask.array.from_array(dataset)[:n])"
        )
    check_row_bytes(name, shape[1:], dtype)
    if chunk_shape:
        chunk_bytes = dtype.itemsize * math.prod(chunk_shape)
        if chunk_bytes > MAX_READ_BYTES:
            raise SourceError(
                f"{name}: declares storage chunks of shape {chunk_shape} of {dtype}: "
                f"{chunk_bytes} bytes each, more than the {MAX_READ_BYTES} bytes normlab decodes "
                "at once (a chunk is decoded whole). Rechunk it into smaller chunks"
            )


def _chunked_source(
    reader: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    grid: ChunkGrid,
    chunk_size: int | None,
    description: str,
    *,
    group: bool = True,
    skip_bad: bool = False,
    chunk_shape: tuple[int, ...] | None = None,
) -> Source:
    if dtype.kind not in "buif":
        raise DTypeError(f"{reader.name}: expected numeric data, got dtype {dtype}")
    if len(shape) < 2:
        raise ShapeError(
            f"{reader.name}: holds an array of shape {shape}; expected "
            "(n_samples, *sample_shape) (for one feature per sample add an axis)"
        )
    if chunk_size is not None:
        rows_per_chunk(1, chunk_size)  # validates it
    check_declared(reader.name, shape, dtype, chunk_shape)
    row_bytes = dtype.itemsize * math.prod(shape[1:])
    tasks = [
        ChunkedTask(
            reader, grid.within(start, stop), start, stop, chunk_size, row_bytes, bool(skip_bad)
        )
        for start, stop in grid.tasks(row_bytes, group)
        if stop > start
    ]
    info = {"shape": shape, "dtype": str(dtype), "n_chunks": grid.n_chunks}
    return Source(tasks, description, info)


# ---------------------------------------------------------------------- Dask
@dataclass
class DaskReader:
    array: Any  # a dask.array.Array
    name: str

    def read(self, start: int, stop: int) -> np.ndarray:
        # synchronous: in a worker process (local engine) this task is the parallel unit
        return np.asarray(self.array[start:stop].compute(scheduler="sync"))

    def identity(self) -> str:
        """Dask names a collection by a token of its graph (a hash of how it is made)."""
        return f"dask {self.array.name} {self.array.shape} {self.array.dtype}"

    def dask_block(self, start: int, stop: int) -> Any:
        """The blocks of rows ``start:stop`` as nested lists of ``Delayed`` (one per chunk of
        the other axes): the worker gets the blocks themselves, with no concatenating task
        (and copy) in between when the row-chunk is one block."""
        return self.array[start:stop].to_delayed(optimize_graph=False).tolist()


def dask_source(
    source: Any, *, chunk_size: int | None = None, skip_bad: bool = False, **_: Any
) -> Source | None:
    if not type(source).__module__.startswith("dask.array") or not hasattr(source, "chunks"):
        return None
    if any(math.isnan(n) for n in source.shape):
        raise ShapeError(
            "dask array of unknown shape (NaN sizes); call .compute_chunk_sizes() on it first"
        )
    shape = tuple(int(n) for n in source.shape)
    grid = ChunkGrid.listed(tuple(int(b) for b in np.cumsum((0, *source.chunks[0]))))
    name = f"dask array {source.name[:24]}"
    return _chunked_source(
        DaskReader(source, name),
        shape,
        np.dtype(source.dtype),
        grid,
        chunk_size,
        f"dask array of shape {shape} and dtype {source.dtype} in {grid.n_chunks} row-chunks",
        group=False,  # blocks may live on different workers: one task each, computed there
        skip_bad=skip_bad,
    )


# ---------------------------------------------------------------------- Zarr
@dataclass
class ZarrReader:
    array: Any  # a zarr.Array (picklable: its store and metadata)
    name: str

    def read(self, start: int, stop: int) -> np.ndarray:
        zarr_io.track(zarr_io.store_fs(self.array))  # a worker's copy opens its own session
        return np.asarray(self.array[start:stop])

    def identity(self) -> str:
        """The store, the array's metadata, and (for a local store) when its chunks last
        changed: the newest modification time of the files and folders under the store."""
        store = str(getattr(self.array, "store", ""))
        newest = 0
        local = store.removeprefix("file://")
        if store.startswith("file://") and os.path.isdir(local):
            for folder, _, names in os.walk(local):  # folders too: a chunk may be deleted
                for name in [".", *names]:
                    newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
        return f"zarr {store} {self.array.name} {self.array.shape} {self.array.dtype} {newest}"


def _is_zarr_path(source: Any) -> bool:
    if not isinstance(source, (str, os.PathLike)):
        return False
    name = os.fspath(source).rstrip("/")
    if name.lower().endswith(".zarr"):
        return True
    return "://" not in name and any((Path(name) / m).is_file() for m in ZARR_MARKERS)


def zarr_source(
    source: Any,
    *,
    key: str | None = None,
    chunk_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
    skip_bad: bool = False,
    **_: Any,
) -> Source | None:
    module = type(source).__module__
    if module.startswith("zarr") and hasattr(source, "chunks"):
        array, name = source, f"zarr array {source.name or ''}".rstrip()
    elif module.startswith("zarr") or _is_zarr_path(source):
        zarr = require("zarr", "zarr")
        node = source
        where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else str(source)
        if not module.startswith("zarr"):
            loc = location(source, storage_options)
            try:
                opened = _zarr_store(zarr, loc)
                zarr_io.track(getattr(opened["store"], "fs", None))
                node = zarr.open(mode="r", **opened)
            except FileNotFoundError:
                raise SourceError(f"{where}: no Zarr array or group there") from None
            except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on bad metadata
                raise SourceError(
                    f"{where}: not a readable Zarr store ({type(exc).__name__}: {exc})"
                ) from None
        if hasattr(node, "array_keys"):  # a group
            names = sorted(node.array_keys())
            if key is None:
                if len(names) != 1:
                    raise SourceError(f"{where}: a Zarr group holding {names}; choose with key=")
                key = names[0]
            if key not in node:
                raise SourceError(f"{where}: no array {key!r}; the group holds {names}")
            node = node[key]
            where = f"{where}[{key}]"
        array, name = node, where
    else:
        return None
    shape = tuple(int(n) for n in array.shape)
    grid = ChunkGrid.regular(shape[0] if shape else 0, int(array.chunks[0]) if shape else 1)
    return _chunked_source(
        ZarrReader(array, name),
        shape,
        np.dtype(array.dtype),
        grid,
        chunk_size,
        f"{name} of shape {shape} and dtype {array.dtype}",
        skip_bad=skip_bad,
        chunk_shape=tuple(int(n) for n in array.chunks) if shape else None,
    )


def _zarr_store(zarr: Any, loc: Location) -> dict[str, Any]:
    """``zarr.open``'s store arguments for a path or URL.

    A ``gs://`` URL with a plain-HTTP endpoint (an emulator) gets gcsfs's JSON-API filesystem,
    as :meth:`Location.filesystem` does (zarr would otherwise open gcsfs's default filesystem,
    whose gRPC bucket-layout lookup cannot reach an emulator and retries for a minute).
    """
    options = loc.storage_options
    if (
        loc.protocol in GCS_PROTOCOLS
        and gcs_endpoint_is_plain_http(options)
        and hasattr(zarr.storage, "FsspecStore")
    ):
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(asynchronous=True, **options)
        path = fs._strip_protocol(loc.url)
        return {"store": zarr.storage.FsspecStore(fs, path=path, read_only=True)}
    if loc.options and hasattr(zarr.storage, "FsspecStore"):  # opened here, to close it at exit
        store = zarr.storage.FsspecStore.from_url(loc.url, storage_options=options, read_only=True)
        return {"store": store}
    if loc.options:
        return {"store": loc.url, "storage_options": options}
    return {"store": loc.path}


# ---------------------------------------------------------------------- HDF5
@dataclass
class H5Reader:
    """An HDF5 dataset by file and dataset name: h5py handles do not pickle, paths do."""

    path: str  # a local path or an fsspec URL
    dataset: str
    name: str
    storage_options: tuple[tuple[str, Any], ...] = ()

    def read(self, start: int, stop: int) -> np.ndarray:
        with open_hdf5(Location(self.path, self.storage_options)) as handle:
            return np.asarray(handle[self.dataset][start:stop])

    def identity(self) -> str:
        state = Location(self.path, self.storage_options).local_state()
        return f"hdf5 {self.path}[{self.dataset}] {state}"


@contextlib.contextmanager
def open_hdf5(loc: Location) -> Iterator[Any]:
    """An HDF5 file: a local one by name, a remote one through its fsspec file object."""
    h5py = require("h5py", "hdf5")
    if loc.is_local:
        with h5py.File(loc.path, "r") as handle:
            yield handle
        return
    with loc.open() as raw, h5py.File(raw, "r") as handle:
        yield handle


def _h5_datasets(handle: Any) -> list[str]:
    found: list[str] = []
    handle.visititems(lambda name, obj: found.append(name) if hasattr(obj, "dtype") else None)
    return found


def hdf5_source(
    source: Any,
    *,
    key: str | None = None,
    chunk_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
    skip_bad: bool = False,
    **_: Any,
) -> Source | None:
    if type(source).__module__.startswith("h5py") and hasattr(source, "dtype"):
        loc, key = location(str(source.file.filename)), str(source.name)
    elif is_path_like(source) and os.fspath(source).lower().endswith(HDF5_SUFFIXES):
        loc = location(source, storage_options)
    else:
        return None
    path = loc.path
    try:
        with open_hdf5(loc) as handle:
            names = _h5_datasets(handle)
            if key is None:
                if len(names) != 1:
                    raise SourceError(f"{path}: holds datasets {names}; choose one with key=")
                key = names[0]
            if key not in handle or not hasattr(handle[key], "dtype"):
                raise SourceError(f"{path}: no dataset {key!r}; it holds {names}")
            ds = handle[key]
            shape, dtype, chunks = tuple(ds.shape), np.dtype(ds.dtype), ds.chunks
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: not a readable HDF5 file ({exc})") from None
    name = f"{path}[{key}]"
    row_bytes = dtype.itemsize * math.prod(shape[1:])
    chunk_rows = int(chunks[0]) if chunks else rows_per_chunk(row_bytes, None)
    return _chunked_source(
        H5Reader(loc.url, key, name, loc.options),
        shape,
        dtype,
        ChunkGrid.regular(shape[0] if shape else 0, chunk_rows),
        chunk_size,
        f"{name} of shape {shape} and dtype {dtype}",
        skip_bad=skip_bad,
        chunk_shape=tuple(int(n) for n in chunks) if chunks else None,
    )


register_source(dask_source)
register_source(zarr_source)
register_source(hdf5_source)
