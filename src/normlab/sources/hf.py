"""Hugging Face datasets: a ``datasets.Dataset`` (or ``DatasetDict`` with ``key=`` the split),
or a folder written by ``save_to_disk``.

* **Images**: a column of the ``Image`` feature (found by itself when there is one; pick one
  with ``columns="image"``) is decoded by normlab's own decoders from the stored bytes —
  exactly as the same files in a folder, 16-bit PNGs kept 16-bit — never through Pillow's
  ``decode=True`` path. Image options (``mode``, ``resize``, ``skip_bad``) as for folders.
* **Numeric columns** (every integer, float or bool column, or ``columns=``) are read as a
  table of features: as for Parquet files and Arrow tables (:mod:`normlab.sources.tables`).
* **Tasks** are contiguous index ranges (of at most
  :data:`~normlab.sources.images.FILES_PER_TASK` images). A local folder's tasks reopen the
  folder on the worker (memory-mapped); a task over a dataset in memory carries only its rows.
* **Remote folders**: a ``save_to_disk`` folder at an fsspec URL (``s3://bucket/saved`` with
  ``storage_options``, ``memory://...``) is opened by ``datasets.load_from_disk``, which copies
  it once into its temporary cache (removed when the process ends); its tasks then carry their
  rows, as for a dataset in memory, so no worker downloads the folder again.
* **Errors** name the dataset, the row and the column (``train[1234]['image']``); with
  ``skip_bad=True`` undecodable images are skipped and listed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import SourceError, require
from . import Source, register_source
from .fs import Location, errors_named, is_path_like, location
from .images import (
    FILES_PER_TASK,
    IMAGE_SUFFIXES,
    BadImage,
    ImageBatches,
    ImageOptions,
    image_options,
    read_bytes,
)

SAVED_MARKERS = (("dataset_dict.json",), ("state.json", "dataset_info.json"))


def saved_folder(source: Any, storage_options: Any = None) -> Location | None:
    """The :class:`Location` of a ``save_to_disk`` folder (local or at a URL); None otherwise."""
    if not is_path_like(source):
        return None
    loc = location(source, storage_options)
    if loc.suffix in IMAGE_SUFFIXES:  # an image at a URL: spare the requests
        return None
    if loc.is_local:
        folder = Path(loc.path)
        found = any(all((folder / m).is_file() for m in ms) for ms in SAVED_MARKERS)
        return loc if found else None
    fs, inside = loc.filesystem()
    with errors_named(loc):
        found = any(all(fs.isfile(f"{inside.rstrip('/')}/{m}") for m in ms) for ms in SAVED_MARKERS)
    return loc if found else None


@functools.lru_cache(maxsize=8)
def _load_folder(folder: str, split: str | None) -> Any:
    """A local saved dataset, memory-mapped (once per process: a worker reuses it)."""
    return open_saved(Location(folder), split)


def open_saved(loc: Location, split: str | None) -> Any:
    """A saved dataset (or one split of a saved ``DatasetDict``) at a local path or a URL."""
    datasets = require("datasets", "hf")
    remote = {} if loc.is_local else {"storage_options": loc.storage_options}
    with errors_named(loc):
        try:
            loaded = datasets.load_from_disk(loc.path if loc.is_local else loc.url, **remote)
        except PermissionError:
            raise  # errors_named names the credentials
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise SourceError(f"{loc.path}: not a readable saved dataset ({exc})") from None
    picked = _pick_split(loaded, split, loc.path)
    for cached in getattr(picked, "cache_files", []):
        check_arrow_end(cached["filename"], loc.path)
    return picked


ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an Arrow IPC stream's end-of-stream marker


def check_arrow_end(path: str, where: str) -> None:
    """Refuse an Arrow file cut short: a stream cut between record batches reads as a shorter
    dataset, so the file must end with the end-of-stream marker (``datasets`` writes it on
    closing) or, for the IPC file format, the ``ARROW1`` magic."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - len(ARROW_EOS)))
            tail = handle.read()
    except OSError as exc:
        raise SourceError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    if tail != ARROW_EOS and not tail.endswith(b"ARROW1"):
        raise SourceError(
            f"{where}: {os.path.basename(path)} is truncated: it ends at byte {size} without "
            "the Arrow end-of-stream marker, so the record batches after the cut are lost. "
            "Save the dataset again (save_to_disk)"
        )


def _pick_split(dataset: Any, split: str | None, where: str) -> Any:
    if not hasattr(dataset, "column_names") or isinstance(dataset.column_names, dict):
        splits = sorted(dataset)  # a DatasetDict
        if split is None:
            if len(splits) != 1:
                raise SourceError(f"{where}: a DatasetDict with splits {splits}; choose with key=")
            split = splits[0]
        if split not in dataset:
            raise SourceError(f"{where}: no split {split!r}; it has {splits}")
        return dataset[split]
    return dataset


def _ipc_table(data: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()


@dataclass
class Rows:
    """Where a task's rows come from: a saved folder (reopened by the worker) or the rows."""

    folder: str | None
    split: str | None
    table: Any  # the task's rows as an Arrow table, when not from a folder

    def read(self, start: int, stop: int, column: str) -> list[Any]:
        if self.folder is not None:
            dataset = _load_folder(self.folder, self.split)
            table = dataset.with_format("arrow")[start:stop]
        else:
            table = self.table
        return list(table.column(column).to_pylist())

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for a worker: a folder by name; rows in memory as Arrow IPC, only the
        task's rows (pickling an Arrow slice would copy every buffer it views whole)."""
        if self.table is None:
            return (Rows, (self.folder, self.split, None))
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.table.schema) as writer:
            writer.write_table(self.table)
        return (_rows_from_ipc, (sink.getvalue().to_pybytes(),))


def _rows_from_ipc(data: bytes) -> Rows:
    return Rows(None, None, _ipc_table(data))


def _cell_bytes(cell: Any) -> bytes:
    """An ``Image`` cell's bytes: stored in the dataset, or the file its path names."""
    if cell is None:
        raise BadImage("missing image (null)")
    data, path = cell.get("bytes"), cell.get("path")
    if data:
        return bytes(data)
    if path:
        return read_bytes(path)
    raise BadImage("an Image cell with neither bytes nor a path")


@dataclass
class HFImageTask(ImageBatches):
    """Rows ``start:stop`` of an image column."""

    rows: Rows
    start: int
    stop: int
    column: str
    options: ImageOptions
    name: str
    dataset_fingerprint: str = ""  # what datasets hashes every transform into
    extra: ClassVar[str] = "hf"

    def fingerprint(self) -> str:
        return f"{self.name} {self.dataset_fingerprint} rows {self.start}:{self.stop}"

    # mypy: a read-only property overrides the base's class attribute (ignored below)
    @property
    def n_items(self) -> int:  # type: ignore[override]
        return self.stop - self.start

    @property
    def label(self) -> str:
        return f"{self.name} rows {self.start}:{self.stop}"

    def members(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        cells = self.rows.read(self.start, self.stop, self.column)
        for offset, cell in enumerate(cells):
            where = f"{self.name}[{self.start + offset}][{self.column!r}]"
            yield where, functools.partial(_cell_bytes, cell)


def _image_columns(features: Any) -> list[str]:
    return [name for name, kind in features.items() if type(kind).__name__ == "Image"]


def hf_source(
    source: Any,
    *,
    key: str | None = None,
    columns: Any = None,
    mode: str | None = None,
    resize: Any = None,
    interpolation: str = "bilinear",
    skip_bad: bool = False,
    chunk_size: int | None = None,
    storage_options: Any = None,
    **extra: Any,
) -> Source | None:
    """A Hugging Face dataset or a ``save_to_disk`` folder; None for other input."""
    folder: str | None = None  # a local folder, which workers reopen
    saved = saved_folder(source, storage_options)
    if saved is not None:
        if saved.is_local:
            folder = saved.path
            dataset = _load_folder(folder, key)
        else:
            dataset = open_saved(saved, key)
        name = saved.path if key is None else f"{saved.path}[{key}]"
    elif type(source).__module__.split(".")[0] == "datasets" and hasattr(source, "features"):
        dataset = source
        name = "dataset " + (source.info.dataset_name or "in memory")
    elif type(source).__module__.split(".")[0] == "datasets" and hasattr(source, "keys"):
        dataset = _pick_split(source, key, "DatasetDict")
        name = f"DatasetDict[{key}]" if key else "DatasetDict"
    else:
        return None
    images = _image_columns(dataset.features)
    wanted = [columns] if isinstance(columns, str) and "," not in columns else columns
    if wanted is None and images:
        if len(images) > 1:
            raise SourceError(f"{name}: image columns {images}; choose one with columns=")
        wanted = images
    if wanted is not None and any(c in images for c in wanted):
        if len(wanted) != 1:
            raise SourceError(
                f"{name}: columns {list(wanted)} mix an image column with others; statistics "
                "read one image column, or numeric columns"
            )
        options = image_options(mode, resize, interpolation, skip_bad, chunk_size)
        return _image_source(dataset, folder, key, wanted[0], name, options)
    return _numeric_source(dataset, name, columns, chunk_size, extra)


def _image_source(
    dataset: Any,
    folder: str | None,
    split: str | None,
    column: str,
    name: str,
    options: ImageOptions,
) -> Source:
    n = len(dataset)
    arrow = None if folder is not None else dataset.with_format("arrow")
    tasks = []
    for start in range(0, n, FILES_PER_TASK):
        stop = min(start + FILES_PER_TASK, n)
        rows = Rows(folder, split, None if arrow is None else arrow[start:stop].select([column]))
        identity = str(getattr(dataset, "_fingerprint", ""))
        tasks.append(HFImageTask(rows, start, stop, column, options, name, identity))
    info = {"kind": "images", "n_files": n, "ignored_files": 0}
    return Source(tasks, f"{n} images in column {column!r} of {name}", info)


def _numeric_source(
    dataset: Any, name: str, columns: Any, chunk_size: int | None, options: dict[str, Any]
) -> Source:
    from .tables import table_source

    table = dataset.with_format("arrow")[:]  # a view of the (memory-mapped) rows
    found = table_source(table, columns=columns, chunk_size=chunk_size, table_name=name)
    assert found is not None  # an Arrow table is always one
    return found


register_source(hf_source)
