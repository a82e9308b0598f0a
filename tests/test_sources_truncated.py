"""A file cut short is an error naming it, never fewer samples read silently: every container
(npy, npz, Parquet, HDF5, a Zarr chunk, images, tar shards, saved Arrow files) cut at several
points. The tar and Arrow cuts between members/batches are in their own tests."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import normlab
from normlab.errors import SourceError

X = np.random.default_rng(11).normal(size=(3000, 6))
FRACTIONS = (0.1, 0.5, 0.9, 0.999)


def write_npy(path: Path) -> Path:
    np.save(path / "a.npy", X)
    return path / "a.npy"


def write_npz(path: Path) -> Path:
    np.savez_compressed(path / "a.npz", x=X)
    return path / "a.npz"


def write_parquet(path: Path) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({f"c{j}": X[:, j] for j in range(X.shape[1])})
    pq.write_table(table, path / "a.parquet", row_group_size=500)
    return path / "a.parquet"


def write_hdf5(path: Path) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path / "a.h5", "w") as f:
        f.create_dataset("x", data=X, chunks=(500, 6))
    return path / "a.h5"


@pytest.mark.parametrize("write", [write_npy, write_npz, write_parquet, write_hdf5])
def test_array_files_cut_anywhere_are_refused(tmp_path: Path, write: Callable[[Path], Path]):
    whole = write(tmp_path).read_bytes()
    assert normlab.compute_stats(str(write(tmp_path))).n_samples_seen == len(X)
    cut = tmp_path / ("cut" + write(tmp_path).suffix)
    for fraction in FRACTIONS:
        cut.write_bytes(whole[: int(len(whole) * fraction)])
        with pytest.raises(SourceError, match=cut.name):
            normlab.compute_stats(str(cut))


def test_a_zarr_chunk_cut_short_is_named(tmp_path: Path):
    zarr = pytest.importorskip("zarr")
    for compressors in ("auto", None):
        store = tmp_path / f"z{compressors}.zarr"
        z = zarr.create_array(
            str(store), shape=X.shape, chunks=(500, 6), dtype="f8", compressors=compressors
        )
        z[:] = X
        chunk = store / "c" / "2" / "0"
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
        with pytest.raises(SourceError, match=r"cannot read chunk 2 \(rows 1000:1500\)"):
            normlab.compute_stats(str(store))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"])
def test_images_cut_anywhere_are_refused_or_skipped(tmp_path: Path, fmt: str):
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("cv2")
    rng = np.random.default_rng(12)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    whole = buffer.getvalue()
    for fraction in FRACTIONS[:3]:
        folder = tmp_path / f"{fmt}{fraction}"
        folder.mkdir()
        (folder / f"a.{fmt.lower()}").write_bytes(whole)
        (folder / f"b.{fmt.lower()}").write_bytes(whole[: int(len(whole) * fraction)])
        with pytest.raises(SourceError, match=rf"b\.{fmt.lower()}"):
            normlab.compute_stats(str(folder), "channel")
        stats = normlab.compute_stats(str(folder), "channel", skip_bad=True)
        assert stats.n_samples_seen == 1 and stats.n_skipped == 1
