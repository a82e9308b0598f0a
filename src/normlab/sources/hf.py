"""Hugging Face datasets: a ``datasets.Dataset`` (or ``DatasetDict`` with ``key=`` the split),
or a folder written by ``save_to_disk``.

* **Images**: a column of the ``Image`` feature (found by itself when there is one; pick one
  with ``columns="image"``) is decoded by normlab's own decoders from the stored bytes —
  exactly as the same files in a folder, 16-bit PNGs kept 16-bit — never through Pillow's
  ``decode=True`` path. Image options (``mode``, ``resize``, ``skip_bad``) as for folders.
* **Numeric columns** (every integer, float or bool column, or ``columns=``) are read as a
  table of features: as for Parquet files and Arrow tables (:mod:`normlab.sources.tables`).
* **Tasks** are contiguous index ranges (of at most
  :data:`~normlab.sources.images.FILES_PER_TASK` images). A folder's tasks reopen the folder
  on the worker (memory-mapped); a task over a dataset in memory carries only its rows.
* **Errors** name the dataset, the row and the column (``train[1234]['image']``); with
  ``skip_bad=True`` undecodable images are skipped and listed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceError, require
from . import Source, register_source
from .images import FILES_PER_TASK, BadImage, ImageBatches, ImageOptions, image_options, read_bytes


def _is_saved_dataset(source: Any) -> bool:
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


@functools.lru_cache(maxsize=8)
def _load_folder(folder: str, split: str | None) -> Any:
    """A saved dataset, memory-mapped (once per process: a worker reuses it across tasks)."""
    datasets = require("datasets", "hf")
    try:
        loaded = datasets.load_from_disk(folder)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SourceError(f"{folder}: not a readable saved dataset ({exc})") from None
    return _pick_split(loaded, split, folder)


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
    **extra: Any,
) -> Source | None:
    """A Hugging Face dataset or a ``save_to_disk`` folder; None for other input."""
    folder: str | None = None
    if _is_saved_dataset(source):
        folder = os.fspath(source)
        dataset = _load_folder(folder, key)
        name = folder if key is None else f"{folder}[{key}]"
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
    from . import resolve

    table = dataset.with_format("arrow")[:]  # a view of the (memory-mapped) rows
    found = resolve(table, columns=columns, chunk_size=chunk_size, **options)
    return Source(found.tasks, f"{name}: {found.description}", found.info)


register_source(hf_source)
