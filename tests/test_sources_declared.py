"""What a Zarr/HDF5 header declares is checked before it is allocated: chunk boundaries are
computed, never listed (a declared shape of 10**15 rows costs nothing), a huge sparse array is
read chunk by chunk in small memory, and a size no read could hold is refused naming the file."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from normlab.errors import SourceError
from normlab.sources import resolve
from normlab.sources.chunked import MAX_TASKS, ChunkGrid

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")

MiB = 1024 * 1024


def peak(make: Callable[[], Any]) -> tuple[Any, int]:
    """``make()`` and the most bytes Python (numpy included) held while it ran."""
    tracemalloc.start()
    try:
        made = make()
        return made, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_regular_grid_memory_does_not_grow_with_the_chunks() -> None:
    grid, used = peak(lambda: ChunkGrid.regular(10**15, 1000))
    assert used < 64 * 1024
    assert grid.n_chunks == 10**12
    assert grid.rows_of(grid.chunk_of(10**15 - 1)) == (10**15 - 1000, 10**15)
    assert grid.rows_of(7) == (7000, 8000)
    assert list(grid.between(999, 3500)) == [1000, 2000, 3000]
    tasks, used = peak(lambda: grid.tasks(8000, True))
    assert used < 64 * 1024
    assert len(tasks) <= MAX_TASKS
    assert tasks[0][0] == 0 and tasks[-1][1] == 10**15
    assert all(tasks[k][1] == tasks[k + 1][0] for k in (0, 1, len(tasks) - 2))


def test_regular_tasks_are_the_runs_of_whole_chunks_as_before() -> None:
    """The computed runs equal what grouping listed chunk bounds gives."""
    for n_rows, size, row_bytes in [(530, 7, 90_000), (10, 3, 8), (0, 4, 8), (9, 9, 10**7)]:
        grid = ChunkGrid.regular(n_rows, size)
        listed = ChunkGrid.listed((*range(0, n_rows, size), n_rows) if n_rows else (0,))
        for group in (True, False):
            assert list(grid.tasks(row_bytes, group)) == list(listed.tasks(row_bytes, group))


def test_huge_sparse_zarr_streams_in_small_memory(tmp_path: Path) -> None:
    """10**12 declared values, no chunk stored: resolving costs no per-chunk memory, and the
    first windows read (fill values) hold about one window (32 MiB), not the array."""
    path = tmp_path / "sparse.zarr"
    zarr.open(str(path), mode="w", shape=(10**11, 10), chunks=(1000, 10), dtype="f8")
    resolve(str(path))  # imports done: what is measured next is the source itself
    source, used = peak(lambda: resolve(str(path)))
    assert used < 48 * MiB  # at most MAX_TASKS tasks of a few hundred bytes, not 10**8 chunks
    assert len(source.tasks) <= MAX_TASKS
    assert sum(t.n_items for t in source.tasks[:3]) > 0
    task = source.tasks[0]

    def first_windows() -> list[tuple[int, float]]:
        chunks = task.chunks()
        return [(len(c), float(np.abs(c).max())) for c, _ in zip(chunks, range(2), strict=False)]

    seen, used = peak(first_windows)
    assert [m for _, m in seen] == [0.0, 0.0]
    assert sum(n for n, _ in seen) * 80 <= 2 * 33 * MiB
    assert used < 80 * MiB


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
def test_declared_sizes_no_read_could_hold_are_refused(tmp_path: Path, kind: str) -> None:
    def make(name: str, shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> str:
        if kind == "zarr":
            path = tmp_path / f"{name}.zarr"
            zarr.open(str(path), mode="w", shape=shape, chunks=chunks or shape, dtype="f8")
            return str(path)
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:  # h5py allocates nothing until written
            f.create_dataset("x", shape=shape, chunks=chunks, dtype="f8")
        return str(path)

    cases = [
        ("values", (10**15, 1000), (1000, 1000), r"2\*\*50 values"),
        ("sample", (4, 10**9), (1, 10**6), "samples of shape"),
    ]
    if kind == "zarr":  # HDF5 itself refuses chunks of 4 GiB and more
        cases.append(("chunk", (10, 10), (10**9, 10**9), "storage chunks of shape"))
    for name, shape, chunks, said in cases:
        path = make(name, shape, chunks)
        with pytest.raises(SourceError, match=said) as info:
            peak(lambda p=path: resolve(p))  # type: ignore[misc]
        assert Path(path).name in str(info.value)
        assert str(shape[0]) in str(info.value) or str(chunks[0]) in str(info.value)


def sparse(path: Path, head: bytes, size: int) -> str:
    """A file of ``size`` bytes starting with ``head``, the rest a hole (no disk used)."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return str(path)


def test_array_files_declaring_samples_no_read_could_hold_are_refused(tmp_path: Path) -> None:
    """A .npy (or .npz member) whose every byte is there, but one sample is 8 GiB: refused
    before a window is sized from it (the window would hold at least one sample)."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f8", "fortran_order": False, "shape": (2, 2**30)}
    )
    path = sparse(tmp_path / "wide.npy", head.getvalue(), len(head.getvalue()) + 2 * 2**33)
    with pytest.raises(SourceError, match=r"wide\.npy: declares samples of shape \(1073741824,\)"):
        peak(lambda: resolve(path))
    with zipfile.ZipFile(tmp_path / "wide.npz", "w") as archive:  # a header, then nothing
        archive.writestr("x.npy", head.getvalue())
    with pytest.raises(SourceError, match=r"wide\.npz\[x\]: .*(declares|holds)"):
        resolve(str(tmp_path / "wide.npz"))


def test_image_files_and_members_larger_than_any_image_are_not_read(tmp_path: Path) -> None:
    """A 5 GiB file named .png, or a shard member declaring 5 GiB, is refused before it is
    read (it was read whole into memory first): an error naming it, or skipped with skip_bad."""
    import tarfile

    import normlab

    pytest.importorskip("cv2")
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.png")
    big = 5 * 2**30
    sparse(folder / "b.png", b"\x89PNG\r\n\x1a\n", big)
    with pytest.raises(SourceError, match=rf"b\.png: {big} bytes: larger than any image"):
        peak(lambda: normlab.compute_stats(str(folder), "channel"))
    stats, used = peak(lambda: normlab.compute_stats(str(folder), "channel", skip_bad=True))
    assert stats.n_samples_seen == 1 and stats.n_skipped == 1 and used < 256 * MiB

    info = tarfile.TarInfo("0000.png")
    info.size = big
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    shard = sparse(tmp_path / "big.tar", header, 512 + big + 1024)  # zero blocks end it
    with pytest.raises(SourceError, match=rf"big\.tar\[0000\.png\]: {big} bytes"):
        peak(lambda: normlab.compute_stats(shard, "channel"))
