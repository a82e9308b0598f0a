"""``skip_bad=True`` is one behaviour on every engine: the same bad input (a corrupt tar member,
an undecodable file, a corrupt Zarr or HDF5 chunk, a Dask block that fails to compute, an
undecodable dataset cell) gives, serially, in a pool of processes and on a Dask cluster, the
same statistics, equal to those of the data without the bad part, and the same skipped list,
each entry naming the place (shard and member, file, chunk index, row)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import normlab
from normlab.errors import SourceError

cv2 = pytest.importorskip("cv2")
zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
datasets = pytest.importorskip("datasets")


def png(arr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", arr)
    assert ok
    return data.tobytes()


def on_every_engine(dask_client: Any, source: Any, **options: Any) -> list[Any]:
    """The statistics of ``source`` serially, on 2 local processes and on the Dask cluster."""
    return [
        normlab.compute_stats(source, engine="serial", **options),
        normlab.compute_stats(source, engine="local", workers=2, **options),
        normlab.compute_stats(source, engine="dask", scheduler=dask_client, **options),
    ]


def same(a: Any, b: Any) -> bool:
    return (
        a.n_samples_seen == b.n_samples_seen
        and np.array_equal(a.mean, b.mean)
        and np.array_equal(a.var(), b.var())
    )


def check(dask_client: Any, bad: Any, clean: Any, places: list[str], **options: Any) -> None:
    """``bad`` under skip_bad: on every engine the statistics of ``clean`` and the same skipped
    list, naming ``places`` (in task order); without skip_bad every engine names the first."""
    reference = normlab.compute_stats(clean, **options)
    runs = on_every_engine(dask_client, bad, skip_bad=True, **options)
    for engine, stats in zip(("serial", "local", "dask"), runs, strict=True):
        assert same(stats, reference), engine
        assert stats.skipped == runs[0].skipped, engine
        assert stats.n_skipped == len(places), engine
        for entry, place in zip(stats.skipped, places, strict=True):
            assert place in entry["item"], (engine, entry)
            assert entry["reason"], (engine, entry)
    for engine in ("serial", "local", "dask"):
        where = {"dask": {"scheduler": dask_client}, "local": {"workers": 2}}.get(engine, {})
        with pytest.raises(SourceError, match=re.escape(places[0])):
            normlab.compute_stats(bad, engine=engine, **where, **options)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return list(np.random.default_rng(11).integers(0, 256, (7, 6, 5, 3), dtype=np.uint8))


def test_a_corrupt_tar_member(dask_client, images, tmp_path):
    encoded = [png(a) for a in images]
    encoded[3] = encoded[3][:50]  # truncated
    clean = tmp_path / "clean"
    clean.mkdir()
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard}.tar", "w") as tar:
            for i in range(shard * 4, min(shard * 4 + 4, len(encoded))):
                info = tarfile.TarInfo(f"{i:03d}.png")
                info.size = len(encoded[i])
                tar.addfile(info, io.BytesIO(encoded[i]))
                if i != 3:
                    (clean / f"{i:03d}.png").write_bytes(encoded[i])
    check(
        dask_client,
        str(tmp_path / "shard-{0..1}.tar"),
        clean,
        ["shard-0.tar[003.png]"],
        axis="channel",
    )


def test_an_undecodable_file_in_a_folder(dask_client, images, tmp_path):
    bad, clean = tmp_path / "bad", tmp_path / "clean"
    bad.mkdir()
    clean.mkdir()
    for i, arr in enumerate(images):
        (bad / f"{i:03d}.png").write_bytes(png(arr) if i != 5 else b"\x89PNG not really")
        if i != 5:
            (clean / f"{i:03d}.png").write_bytes(png(arr))
    check(dask_client, bad, clean, [str(Path("bad") / "005.png")], axis="channel")


@pytest.fixture(scope="module")
def ints() -> np.ndarray:
    return np.random.default_rng(12).integers(0, 65536, (300, 4, 3), dtype=np.uint16)


def corrupt_zarr(path: Path, ints: np.ndarray) -> None:
    z = zarr.open(str(path), mode="w", shape=ints.shape, chunks=(64, 4, 3), dtype=ints.dtype)
    z[:] = ints
    (path / "c" / "2" / "0" / "0").write_bytes(b"not zstd at all")  # rows 128:192


def test_a_corrupt_zarr_chunk(dask_client, ints, tmp_path):
    corrupt_zarr(tmp_path / "bad.zarr", ints)
    clean = np.concatenate([ints[:128], ints[192:]])
    check(dask_client, str(tmp_path / "bad.zarr"), clean, ["chunk 2 (rows 128:192)"])
    skipped = normlab.compute_stats(str(tmp_path / "bad.zarr"), skip_bad=True).skipped
    assert skipped[0]["item"].endswith("bad.zarr chunk 2 (rows 128:192)")


def test_a_corrupt_hdf5_chunk(dask_client, ints, tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=ints, chunks=(50, 4, 3), compression="gzip")
    with h5py.File(path, "r") as handle:
        info = handle["x"].id.get_chunk_info(3)  # rows 150:200
    data = bytearray(path.read_bytes())
    data[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(data))
    clean = np.concatenate([ints[:150], ints[200:]])
    check(dask_client, str(path), clean, ["chunk 3 (rows 150:200)"])
    skipped = normlab.compute_stats(str(path), skip_bad=True).skipped
    assert skipped[0]["item"].endswith("bad.h5[x] chunk 3 (rows 150:200)")


def _block(i: int) -> np.ndarray:
    if i == 1:
        raise ValueError("checksum mismatch in block 1")
    return np.full((10, 3), i, dtype=np.int32)


def test_dask_blocks_that_fail_to_compute(dask_client, ints, tmp_path):
    """On engine='dask' a Dask block is computed on a worker before its statistics: its failure
    is skipped and listed there as on the engines that compute it in the task."""
    import dask

    corrupt_zarr(tmp_path / "bad.zarr", ints)
    over_zarr = da.from_zarr(str(tmp_path / "bad.zarr"))
    clean = np.concatenate([ints[:128], ints[192:]])
    check(dask_client, over_zarr, clean, ["chunk 2 (rows 128:192)"])
    made = da.concatenate(
        [da.from_delayed(dask.delayed(_block)(i), shape=(10, 3), dtype=np.int32) for i in range(4)]
    )
    clean_made = np.concatenate([np.full((10, 3), i, np.int32) for i in (0, 2, 3)])
    check(dask_client, made, clean_made, ["chunk 1 (rows 10:20)"])
    runs = on_every_engine(dask_client, made, skip_bad=True)
    assert all("ValueError: checksum mismatch in block 1" in r.skipped[0]["reason"] for r in runs)


def test_an_undecodable_dataset_cell(dask_client, images):
    features = datasets.Features({"image": datasets.Image()})
    cells = [png(a) for a in images]
    bad_cells = [*cells[:4], b"junk", *cells[4:]]

    def dataset(rows: list[bytes]) -> Any:
        return datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b in rows]}, features=features
        )

    check(dask_client, dataset(bad_cells), dataset(cells), ["[4]['image']"], axis="channel")


class BrokenStatistic:
    """A statistic with a bug: its update raises what no data can cause."""

    n_samples_seen = 0

    def update(self, chunk: Any) -> None:
        raise RuntimeError("a bug in the statistic, not in the data")

    def __iadd__(self, other: Any) -> BrokenStatistic:
        return self


def test_a_failing_statistic_is_never_skipped_as_bad_data(dask_client):
    """skip_bad skips what the data did; on the Dask engine a failure of the statistics task
    itself (after its block was computed) is raised, as on the other engines."""
    from normlab.engines import run
    from normlab.sources import resolve

    tasks = resolve(da.zeros((40, 3), chunks=(10, 3)), skip_bad=True).tasks
    for engine in ({"engine": "serial"}, {"engine": "dask", "scheduler": dask_client}):
        with pytest.raises(RuntimeError, match="a bug in the statistic"):
            run(tasks, BrokenStatistic, **engine)
