"""Chunked arrays (Dask, Zarr, HDF5): the same statistics as in memory, chunk-aligned tasks, Dask
blocks computed where they live, errors naming the chunk."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import normlab
from normlab.errors import DTypeError, MissingExtraError, ShapeError, SourceError
from normlab.sources import resolve

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def ints() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 65536, (530, 6, 5, 3), dtype=np.uint16)


@pytest.fixture(scope="module")
def floats() -> np.ndarray:
    rng = np.random.default_rng(4)
    return rng.normal(1e3, 1e-2, (470, 9)) * rng.choice([1.0, 1e5], (1, 9))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, ints, floats):
    folder = tmp_path_factory.mktemp("chunked")
    z = zarr.open(
        str(folder / "ints.zarr"),
        mode="w",
        shape=ints.shape,
        chunks=(64, 3, 5, 3),
        dtype=ints.dtype,
    )
    z[:] = ints
    zf = zarr.open(
        str(folder / "floats.zarr"),
        mode="w",
        shape=floats.shape,
        chunks=(50, 9),
        dtype=floats.dtype,
    )
    zf[:] = floats
    group = zarr.open_group(str(folder / "group.zarr"), mode="w")
    group.create_array("images", shape=ints.shape, chunks=(100, 6, 5, 3), dtype=ints.dtype)[:] = (
        ints
    )
    group.create_array("labels", shape=(len(ints), 1), dtype=np.int64)[:] = 1
    with h5py.File(folder / "data.h5", "w") as handle:
        handle.create_dataset("images", data=ints, chunks=(40, 6, 5, 3))
        handle.create_dataset("extra/floats", data=floats)  # contiguous
    return folder


def same(a: normlab.Moments, b: normlab.Moments) -> bool:
    return (
        a.n_samples_seen == b.n_samples_seen
        and np.array_equal(a.mean, b.mean)
        and np.array_equal(a.var(), b.var())
    )


@pytest.mark.parametrize("axis", ["feature", "channel"])
def test_integer_statistics_are_bit_identical_to_memory(stores, ints, axis):
    reference = normlab.compute_stats(ints, axis=axis)
    with h5py.File(stores / "data.h5", "r") as handle:
        sources = [
            str(stores / "ints.zarr"),
            zarr.open(str(stores / "ints.zarr"), mode="r"),
            (str(stores / "group.zarr"), "images"),
            (str(stores / "data.h5"), "images"),
            handle["images"],
            da.from_zarr(str(stores / "ints.zarr")),
            da.from_array(ints, chunks=(77, 2, 5, 3)),
        ]
        for source in sources:
            path, key = source if isinstance(source, tuple) else (source, None)
            got = normlab.compute_stats(path, axis=axis, key=key)
            assert same(got, reference), source


def test_float_statistics_same_split_identical_other_splits_close(stores, floats):
    path = str(stores / "floats.zarr")
    direct = normlab.compute_stats(path)
    assert same(direct, normlab.compute_stats(zarr.open(path, mode="r")))
    through_dask = normlab.compute_stats(da.from_zarr(path))
    assert same(through_dask, normlab.compute_stats(da.from_array(floats, chunks=(50, 3))))
    in_memory = normlab.compute_stats(floats)
    for other in (in_memory, through_dask, normlab.compute_stats(path, chunk_size=7)):
        np.testing.assert_allclose(other.mean, direct.mean, rtol=1e-12)
        np.testing.assert_allclose(other.var(), direct.var(), rtol=1e-12)


def test_tasks_are_whole_row_chunks(stores, ints, tmp_path):
    source = resolve(da.from_array(ints, chunks=(64, 3, 5, 3)))
    assert [(t.start, t.stop) for t in source.tasks][:2] == [(0, 64), (64, 128)]
    assert sum(t.n_items for t in source.tasks) == len(ints)
    for task in resolve(str(stores / "data.h5"), key="images").tasks:
        assert task.start % 40 == 0 and (task.stop % 40 == 0 or task.stop == len(ints))
        assert "chunk" in task.label and "data.h5[images]" in task.label
    # small storage chunks are grouped (a task holds a few MiB at least), at chunk boundaries
    tiny = tmp_path / "tiny.zarr"
    zarr.open(str(tiny), mode="w", shape=(200000, 100), chunks=(1000, 100), dtype=np.uint8)[:] = 1
    grouped = resolve(str(tiny))
    assert 1 < len(grouped.tasks) < 10 and all(t.start % 1000 == 0 for t in grouped.tasks)
    assert "chunks 84-167 (rows 84000:168000)" in grouped.tasks[1].label


def test_engines_give_the_same_bits(stores, dask_client):
    path = str(stores / "floats.zarr")
    h5 = (str(stores / "data.h5"), "extra/floats")
    for source, key in ((path, None), (da.from_zarr(path), None), h5):
        serial = normlab.compute_stats(source, key=key)
        assert same(normlab.compute_stats(source, key=key, engine="local", workers=2), serial)
        on_dask = normlab.compute_stats(source, key=key, engine="dask", scheduler=dask_client)
        assert same(on_dask, serial)


def _on_worker_only(i: int, rows: int) -> np.ndarray:
    """A block that can only be made on a Dask worker (get_worker raises elsewhere)."""
    distributed.get_worker()
    return np.full((rows, 4), i, dtype=np.int16)


def test_dask_engine_computes_each_block_on_a_worker(dask_client):
    import dask

    blocks = [
        da.from_delayed(dask.delayed(_on_worker_only)(i, 30), shape=(30, 4), dtype=np.int16)
        for i in range(5)
    ]
    x = da.concatenate(blocks)
    with pytest.raises(SourceError, match="chunk 0"):  # not on a worker: fails, named
        normlab.compute_stats(x)
    stats = normlab.compute_stats(x, engine="dask", scheduler=dask_client)
    assert stats.n_samples_seen == 150 and stats.mean[0] == 2.0


def _broken_block(i: int) -> np.ndarray:
    if i == 2:
        raise ValueError("checksum mismatch in block 2")
    return np.zeros((10, 3), np.uint8)


def test_a_failing_dask_block_is_named_on_every_engine(dask_client):
    import dask

    x = da.concatenate(
        [
            da.from_delayed(dask.delayed(_broken_block)(i), shape=(10, 3), dtype=np.uint8)
            for i in range(4)
        ]
    )
    for engine, scheduler in (("serial", None), ("dask", dask_client)):
        with pytest.raises(SourceError, match=r"chunk 2 \(rows 20:30\).*checksum mismatch"):
            normlab.compute_stats(x, engine=engine, scheduler=scheduler)


def test_dask_engine_runs_statistics_where_persisted_blocks_live(dask_client, ints):
    x = dask_client.persist(da.from_array(ints, chunks=(60, 6, 5, 3)))
    distributed.wait(x)
    holders = {key[1]: workers for key, workers in dask_client.who_has(x).items()}
    with distributed.get_task_stream(dask_client) as stream:
        stats = normlab.compute_stats(x, axis="channel", engine="dask", scheduler=dask_client)
    assert same(stats, normlab.compute_stats(ints, axis="channel"))
    ran = {r["key"]: r["worker"] for r in stream.data if str(r["key"]).startswith("normlab-")}
    in_task_order = sorted(ran, key=lambda key: int(key.rsplit("-", 1)[1]))
    assert len(in_task_order) == len(holders) == 9
    for block, key in enumerate(in_task_order):
        assert ran[key] in holders[block]  # block n's statistics ran where block n lives


def test_a_corrupt_chunk_is_named(tmp_path, ints):
    path = tmp_path / "bad.zarr"
    z = zarr.open(str(path), mode="w", shape=ints.shape, chunks=(64, 6, 5, 3), dtype=ints.dtype)
    z[:] = ints
    (path / "c" / "3" / "0" / "0" / "0").write_bytes(b"not zstd at all")
    with pytest.raises(SourceError, match=r"bad.zarr: cannot read chunk 3 \(rows 192:256\)"):
        normlab.compute_stats(str(path))
    with pytest.raises(SourceError, match=r"chunk 3 \(rows 192:256\)"):
        normlab.compute_stats(str(path), engine="local", workers=2)


def test_bad_inputs_are_refused_in_words(stores, tmp_path):
    with pytest.raises(SourceError, match=r"holding \[.images., .labels.\]; choose with key="):
        resolve(str(stores / "group.zarr"))
    with pytest.raises(SourceError, match="no array 'nope'"):
        resolve(str(stores / "group.zarr"), key="nope")
    with pytest.raises(SourceError, match=r"holds datasets \['extra/floats', 'images'\]"):
        resolve(str(stores / "data.h5"))
    with pytest.raises(SourceError, match="no dataset 'nope'"):
        resolve(str(stores / "data.h5"), key="nope")
    with pytest.raises(SourceError, match="no such file"):
        resolve(str(tmp_path / "missing.h5"))
    (tmp_path / "fake.h5").write_bytes(b"hello")
    with pytest.raises(SourceError, match="not a readable HDF5 file"):
        resolve(str(tmp_path / "fake.h5"))
    with pytest.raises(ShapeError, match=r"shape \(10,\)"):
        resolve(da.zeros(10, chunks=5))
    with pytest.raises(DTypeError, match="expected numeric data"):
        resolve(da.from_array(np.array([["a"], ["b"]])))
    unknown = da.zeros((10, 2), chunks=5)
    with pytest.raises(ShapeError, match="compute_chunk_sizes"):
        resolve(unknown[unknown[:, 0] > 0])


def test_missing_extra_names_it(stores, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtraError, match=r"normlab\[hdf5\]"):
        resolve(str(stores / "data.h5"), key="images")


def test_zarr_and_hdf5_at_fsspec_urls(stores, ints):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe("/normlab-chunked/data.h5", (stores / "data.h5").read_bytes())
    reference = normlab.compute_stats(ints, axis="channel")
    remote = normlab.compute_stats("memory://normlab-chunked/data.h5", axis="channel", key="images")
    assert same(remote, reference)
    z = zarr.open(
        "memory://normlab-chunked/ints.zarr",
        mode="w",
        shape=ints.shape,
        chunks=(64, 6, 5, 3),
        dtype=ints.dtype,
    )
    z[:] = ints
    assert same(
        normlab.compute_stats("memory://normlab-chunked/ints.zarr", axis="channel"), reference
    )


def test_zarr_and_hdf5_on_an_s3_server(ints, tmp_path, s3):
    """On a real S3-compatible server: worker processes open the data themselves; a corrupt
    chunk is named by the URL and chunk, or skipped and listed."""
    import fsspec

    fs = fsspec.filesystem("s3", **s3)
    fs.mkdir("normlab-chunked")
    z = zarr.open(
        "s3://normlab-chunked/ints.zarr",
        mode="w",
        shape=ints.shape,
        chunks=(64, 6, 5, 3),
        dtype=ints.dtype,
        storage_options=s3,
    )
    z[:] = ints
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle.create_dataset("images", data=ints, chunks=(40, 6, 5, 3))
    fs.put(str(tmp_path / "data.h5"), "normlab-chunked/data.h5")
    reference = normlab.compute_stats(ints, axis="channel")
    for url in ("s3://normlab-chunked/ints.zarr", "s3://normlab-chunked/data.h5"):
        for engine in ({"engine": "serial"}, {"engine": "local", "workers": 2}):
            got = normlab.compute_stats(url, axis="channel", storage_options=s3, **engine)
            assert same(got, reference), (url, engine)
    fs.pipe("normlab-chunked/ints.zarr/c/3/0/0/0", b"not zstd at all")
    with pytest.raises(SourceError, match=r"ints.zarr: cannot read chunk 3 \(rows 192:256\)"):
        normlab.compute_stats("s3://normlab-chunked/ints.zarr", storage_options=s3)
    skipping = normlab.compute_stats(
        "s3://normlab-chunked/ints.zarr",
        axis="channel",
        storage_options=s3,
        skip_bad=True,
        engine="local",
        workers=2,
    )
    assert same(skipping, normlab.compute_stats(np.delete(ints, slice(192, 256), 0), "channel"))
    assert skipping.skipped[0]["item"] == "s3://normlab-chunked/ints.zarr chunk 3 (rows 192:256)"


def test_zarr_and_hdf5_on_the_gcs_emulator(ints, tmp_path, gcs):
    """gs:// on the GCS emulator: a Zarr store and an HDF5 file, in this process and in worker
    processes that open them themselves; a missing store is named by its URL."""
    from gcsfs.core import GCSFileSystem

    fs = GCSFileSystem(**gcs)
    fs.mkdir("normlab-chunked")
    z = zarr.open(
        str(tmp_path / "ints.zarr"),
        mode="w",
        shape=ints.shape,
        chunks=(64, 6, 5, 3),
        dtype=ints.dtype,
    )
    z[:] = ints
    fs.put(str(tmp_path / "ints.zarr"), "normlab-chunked/ints.zarr", recursive=True)
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle.create_dataset("images", data=ints, chunks=(40, 6, 5, 3))
    fs.put(str(tmp_path / "data.h5"), "normlab-chunked/data.h5")
    reference = normlab.compute_stats(ints, axis="channel")
    for url in ("gs://normlab-chunked/ints.zarr", "gs://normlab-chunked/data.h5"):
        for engine in ({"engine": "serial"}, {"engine": "local", "workers": 2}):
            got = normlab.compute_stats(url, axis="channel", storage_options=gcs, **engine)
            assert same(got, reference), (url, engine)
    with pytest.raises(SourceError, match=r"gs://normlab-chunked/nope\.zarr: no Zarr"):
        normlab.compute_stats("gs://normlab-chunked/nope.zarr", storage_options=gcs)


def test_checkpoints_notice_a_changed_store(tmp_path, ints):
    path = str(tmp_path / "ckpt.zarr")
    z = zarr.open(path, mode="w", shape=ints.shape, chunks=(64, 6, 5, 3), dtype=ints.dtype)
    z[:] = ints
    first = normlab.compute_stats(path, checkpoint=tmp_path / "ckpt")
    assert same(normlab.compute_stats(path, checkpoint=tmp_path / "ckpt"), first)
    z[:64] = 0
    with pytest.raises(normlab.NormlabError, match="made for other inputs"):
        normlab.compute_stats(path, checkpoint=tmp_path / "ckpt")
    x = da.from_array(ints, chunks=(100, 6, 5, 3))
    normlab.compute_stats(x, checkpoint=tmp_path / "ckpt-dask")
    with pytest.raises(normlab.NormlabError, match="made for other inputs"):
        normlab.compute_stats(x + 1, checkpoint=tmp_path / "ckpt-dask")


def test_skip_bad_skips_and_lists_a_corrupt_chunk(tmp_path, ints):
    path = tmp_path / "bad.zarr"
    z = zarr.open(str(path), mode="w", shape=ints.shape, chunks=(64, 6, 5, 3), dtype=ints.dtype)
    z[:] = ints
    (path / "c" / "3" / "0" / "0" / "0").write_bytes(b"not zstd at all")
    if importlib.util.find_spec("normlab.provenance") is None:
        # until skips can be recorded beside the statistics, they are refused
        with pytest.raises(SourceError, match=r"chunk 3 \(rows 192:256\)"):
            normlab.compute_stats(str(path), skip_bad=True)
        return
    stats = normlab.compute_stats(str(path), axis="channel", skip_bad=True)
    good = np.concatenate([ints[:192], ints[256:]])
    assert same(stats, normlab.compute_stats(good, axis="channel"))
    assert stats.n_skipped == 1 and "chunk 3 (rows 192:256)" in stats.skipped[0]["item"]
