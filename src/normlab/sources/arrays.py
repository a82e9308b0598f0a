"""Arrays in memory and on disk: ndarrays, ``.npy`` read in windows, ``.npz``, shard lists,
and plain iterables of batches."""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SourceError
from ..moments import as_batch
from . import Source, is_iterable_of_batches, register_source
from .fs import Location, errors_named, location_of

DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024  # a window: big enough for the kernels, small for RAM
TASK_CHUNKS = 8  # chunks per task: tasks are the unit of parallel work and of checkpoints
# The most bytes one read may hold: a sample (one row) of an array file, a storage chunk, an
# image file. What a header declares beyond this is refused before anything is allocated.
MAX_READ_BYTES = 2**32


def check_row_bytes(label: str, sample: tuple[int, ...], dtype: np.dtype) -> int:
    """The bytes of one sample, refused beyond :data:`MAX_READ_BYTES` (a sample is read whole)."""
    row_bytes = dtype.itemsize * math.prod(sample)
    if row_bytes > MAX_READ_BYTES:
        raise SourceError(
            f"{label}: declares samples of shape {sample} of {dtype}: {row_bytes} bytes each, "
            f"more than the {MAX_READ_BYTES} bytes normlab reads at once (a sample is read "
            "whole). Put more of the axes in the first (samples) axis"
        )
    return row_bytes


def rows_per_chunk(row_bytes: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise SourceError(f"chunk_size must be a positive number of samples; got {chunk_size}")
        return int(chunk_size)
    return max(1, DEFAULT_CHUNK_BYTES // max(1, row_bytes))


def _take_batch(item: Any) -> Any:
    """A batch, or the inputs of an ``(inputs, labels)`` pair.

    A tuple, or a list of arrays (as a DataLoader collates), is a pair; a list of lists is a
    batch written as nested lists (``[[1, 2], [3, 4]]``: two samples), never a pair.
    """
    if isinstance(item, tuple) and item and not np.isscalar(item[0]):
        return item[0]
    if isinstance(item, list) and item and not np.isscalar(item[0]):
        if not isinstance(item[0], (list, tuple)):
            return item[0]
    return item


@dataclass
class ArrayTask:
    array: np.ndarray
    start: int
    stop: int
    chunk_rows: int
    label: str

    @property
    def n_items(self) -> int:
        return self.stop - self.start

    def chunks(self) -> Iterator[np.ndarray]:
        for i in range(self.start, self.stop, self.chunk_rows):
            yield self.array[i : min(i + self.chunk_rows, self.stop)]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for a worker: only this task's rows travel, not the whole array."""
        rows = np.ascontiguousarray(self.array[self.start : self.stop])
        return (ArrayTask, (rows, 0, len(rows), self.chunk_rows, self.label))


def _row_tasks(n_rows: int, chunk_rows: int, make: Callable[[int, int], Any]) -> list[Any]:
    per_task = chunk_rows * TASK_CHUNKS
    return [make(s, min(s + per_task, n_rows)) for s in range(0, n_rows, per_task)]


def array_source(source: Any, *, chunk_size: int | None = None, **_: Any) -> Source | None:
    if not isinstance(source, np.ndarray) and not type(source).__module__.startswith("torch"):
        return None
    if type(source).__module__.startswith("torch") and not hasattr(source, "numpy"):
        return None  # a torch Dataset: the torch adapter's job
    arr = as_batch(source, "array")
    row_bytes = arr.itemsize * math.prod(arr.shape[1:])
    chunk_rows = rows_per_chunk(row_bytes, chunk_size)
    tasks = _row_tasks(
        arr.shape[0], chunk_rows, lambda s, e: ArrayTask(arr, s, e, chunk_rows, f"rows {s}:{e}")
    )
    return Source(tasks, f"array of shape {arr.shape} and dtype {arr.dtype}", {"shape": arr.shape})


@dataclass
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int


def read_npy_header(handle: Any, label: str) -> NpyHeader:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except Exception as exc:  # numpy parses the header with tokenize/ast: any error means corrupt
        raise SourceError(f"{label}: not a valid .npy file ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise SourceError(f"{label}: holds Python objects (dtype {dtype}); normlab never unpickles")
    if fortran and len(shape) > 1:
        raise SourceError(f"{label}: Fortran-ordered arrays cannot be read in row windows")
    if any(d < 0 for d in shape) or math.prod(max(d, 1) for d in shape) * dtype.itemsize >= 2**62:
        raise SourceError(f"{label}: corrupt .npy header (shape {shape} of {dtype})")
    offset = handle.tell() if hasattr(handle, "tell") else 0
    return NpyHeader(tuple(shape), dtype, fortran, offset)


@dataclass
class NpyTask:
    path: str  # a local path or a URL
    header: NpyHeader
    start: int
    stop: int
    chunk_rows: int
    storage_options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.path} rows {self.start}:{self.stop}"

    @property
    def n_items(self) -> int:
        return self.stop - self.start

    def chunks(self) -> Iterator[np.ndarray]:
        """Windows of rows, read with plain reads into one reused buffer.

        Resident memory is one window (a memmap's resident pages grow to the file size), and
        reusing the buffer avoids faulting in fresh pages for every window. A chunk is valid
        until the next one is requested: consumers (the engines, ``apply_file``) use each
        chunk before asking for the next.
        """
        sample = self.header.shape[1:]
        row_bytes = self.header.dtype.itemsize * math.prod(sample)
        window = np.empty(min(self.chunk_rows, self.n_items) * row_bytes, dtype=np.uint8)
        loc = Location(self.path, self.storage_options)
        opened: Any = open(self.path, "rb", buffering=0) if loc.is_local else loc.open()
        with opened as handle, errors_named(loc):
            for i in range(self.start, self.stop, self.chunk_rows):
                rows = min(self.chunk_rows, self.stop - i)
                handle.seek(self.header.offset + i * row_bytes)
                view = window[: rows * row_bytes]
                got = handle.readinto(view.data)  # a memoryview of the window
                while got and got < view.size:  # readinto may return short counts
                    more = handle.readinto(view[got:].data)
                    if not more:
                        break
                    got += more
                if got != view.size:
                    raise SourceError(
                        f"{self.path}: truncated; rows {i}:{i + rows} lie past the end of the file"
                    )
                yield view.view(self.header.dtype).reshape(rows, *sample)


def load_npy(path: str | os.PathLike[str], what: str, *, mmap: bool = False) -> np.ndarray:
    """A whole ``.npy`` file, checked before anything is allocated.

    Refuses special files, object dtypes, and a header whose declared size the file does not
    hold (``np.load`` would allocate the declared size first).
    """
    from ..io import check_regular

    check_regular(path)
    label = f"{what} {os.fspath(path)}".strip()
    try:
        with open(path, "rb") as handle:
            header = read_npy_header(handle, label)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise SourceError(f"{label}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if header.fortran and len(header.shape) > 1:
        raise SourceError(f"{label}: Fortran-ordered arrays are not supported")
    expected = header.offset + math.prod(header.shape) * header.dtype.itemsize
    if size < expected:
        raise SourceError(
            f"{label}: truncated: the header promises {expected} bytes, the file has {size}"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{label}: cannot read as a .npy array ({exc})") from None


def npy_source(
    source: Any,
    *,
    chunk_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
    **_: Any,
) -> Source | None:
    loc = location_of(source, storage_options, (".npy",))
    if loc is None:
        return None
    path = loc.path
    with loc.open() as handle:
        header = read_npy_header(handle, path)
    if len(header.shape) < 2:
        raise SourceError(
            f"{path}: holds an array of shape {header.shape}; expected (n_samples, *sample_shape)"
        )
    row_bytes = check_row_bytes(path, header.shape[1:], header.dtype)
    expected = header.offset + header.shape[0] * row_bytes
    size = loc.size()
    if size < expected:
        raise SourceError(
            f"{path}: truncated: the header promises {expected} bytes, the file has {size}"
        )
    chunk_rows = rows_per_chunk(row_bytes, chunk_size)
    tasks = _row_tasks(
        header.shape[0],
        chunk_rows,
        lambda s, e: NpyTask(path, header, s, e, chunk_rows, loc.options),
    )
    return Source(tasks, path, {"shape": header.shape, "dtype": str(header.dtype)})


# What zipfile raises on damaged archives: a flipped bit can name an unknown compression method
# (NotImplementedError), an encrypted member (RuntimeError) or break a stream (zlib.error, EOF).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
)


@dataclass
class NpzTask:
    path: str  # a local path or a URL
    member: str
    chunk_size: int | None

    @property
    def label(self) -> str:
        return f"{self.path}[{self.member}]"

    n_items: int = 0
    storage_options: tuple[tuple[str, Any], ...] = ()

    def chunks(self) -> Iterator[np.ndarray]:
        try:
            with (
                Location(self.path, self.storage_options).open() as raw,
                zipfile.ZipFile(raw) as zf,
                zf.open(self.member) as handle,
            ):
                header = read_npy_header(handle, self.label)
                sample = header.shape[1:]
                row_bytes = check_row_bytes(self.label, sample, header.dtype)
                chunk_rows = rows_per_chunk(row_bytes, self.chunk_size)
                for i in range(0, header.shape[0], chunk_rows):
                    rows = min(chunk_rows, header.shape[0] - i)
                    buf = handle.read(rows * row_bytes)
                    if len(buf) != rows * row_bytes:
                        raise SourceError(f"{self.label}: truncated at row {i}")
                    yield np.frombuffer(buf, dtype=header.dtype).reshape(rows, *sample)
        except _ZIP_ERRORS as exc:
            raise SourceError(f"{self.label}: corrupt .npz ({type(exc).__name__}: {exc})") from None


def npz_source(
    source: Any,
    *,
    key: str | None = None,
    chunk_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
    **_: Any,
) -> Source | None:
    loc = location_of(source, storage_options, (".npz",))
    if loc is None:
        return None
    path = loc.path
    try:
        with loc.open() as raw, zipfile.ZipFile(raw) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            if key is None:
                if len(names) != 1:
                    raise SourceError(f"{path}: holds arrays {names}; choose one with key=")
                key = names[0]
            if key not in names:
                raise SourceError(f"{path}: no array {key!r}; it holds {names}")
            with zf.open(key + ".npy") as handle:
                header = read_npy_header(handle, f"{path}[{key}]")
            declared = header.offset + math.prod(header.shape) * header.dtype.itemsize
            stored = zf.getinfo(key + ".npy").file_size
    except _ZIP_ERRORS as exc:
        raise SourceError(f"{path}: not a valid .npz file ({type(exc).__name__}: {exc})") from None
    if declared > stored:  # read in windows, but a lying header must not size one
        raise SourceError(
            f"{path}[{key}]: corrupt: the header declares {declared} bytes, the archive holds "
            f"{stored}"
        )
    if len(header.shape) < 2:
        raise SourceError(
            f"{path}[{key}]: shape {header.shape}; expected (n_samples, *sample_shape)"
        )
    check_row_bytes(f"{path}[{key}]", header.shape[1:], header.dtype)
    task = NpzTask(path, key + ".npy", chunk_size, header.shape[0], loc.options)
    return Source([task], f"{path}[{key}]", {"shape": header.shape, "dtype": str(header.dtype)})


def shard_list_source(source: Any, **options: Any) -> Source | None:
    """A list of ``.npy``/``.npz`` paths: their tasks, in list order."""
    if not isinstance(source, (list, tuple)) or not source:
        return None
    if not all(isinstance(s, (str, os.PathLike)) for s in source):
        return None
    if not any(os.fspath(s).lower().endswith((".npy", ".npz")) for s in source):
        return None  # e.g. a list of image files: the image adapter's job
    from . import resolve

    parts = [resolve(s, **options) for s in source]
    return Source(
        [t for p in parts for t in p.tasks], f"{len(parts)} shards ({parts[0].description}, ...)"
    )


@dataclass
class IterableTask:
    iterable: Any
    label: str = "iterable of batches"
    n_items: int = 0

    def chunks(self) -> Iterator[Any]:
        for item in self.iterable:
            yield _take_batch(item)


def iterable_source(source: Any, **_: Any) -> Source | None:
    if not is_iterable_of_batches(source) or isinstance(source, (dict, np.ndarray)):
        return None
    n = len(source) if hasattr(source, "__len__") else 0
    return Source([IterableTask(source, n_items=n)], "iterable of batches")


register_source(array_source)
register_source(npy_source)
register_source(npz_source)
register_source(shard_list_source)
register_source(iterable_source, fallback=True)
