"""Hugging Face datasets: image columns decoded by normlab (16-bit kept) with the folder's
statistics, contiguous index-range tasks, saved folders, numeric columns, errors naming the row."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

import normlab
from normlab.errors import SourceError
from normlab.sources import resolve
from normlab.sources.images import FILES_PER_TASK

datasets = pytest.importorskip("datasets")
cv2 = pytest.importorskip("cv2")


def png(arr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", arr)
    assert ok
    return data.tobytes()


def image_dataset(cells: list[bytes], labels: list[int] | None = None) -> object:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {
        "image": [{"bytes": b, "path": None} for b in cells],
        "label": labels or list(range(len(cells))),
    }
    return datasets.Dataset.from_dict(rows, features=features)


def same(a: normlab.Moments, b: normlab.Moments) -> bool:
    return (
        a.n_samples_seen == b.n_samples_seen
        and np.array_equal(a.mean, b.mean)
        and np.array_equal(a.var(), b.var())
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(5)
    arrays = rng.integers(0, 65536, (FILES_PER_TASK + 20, 7, 6, 3), dtype=np.uint16)
    cells = [png(a) for a in arrays]
    folder = root / "folder"
    folder.mkdir()
    for i, data in enumerate(cells):
        (folder / f"{i:04d}.png").write_bytes(data)
    dataset = image_dataset(cells)
    dataset.save_to_disk(str(root / "saved"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(5))}).save_to_disk(
        str(root / "dict")
    )
    return root, dataset, arrays


def test_image_column_gives_the_folder_statistics_16_bit_kept(corpus):
    root, dataset, arrays = corpus
    reference = normlab.compute_stats(root / "folder", "channel")
    for source, key in ((dataset, None), (root / "saved", None), (root / "dict", "train")):
        got = normlab.compute_stats(source, "channel", key=key)
        assert same(got, reference), source
        assert got.value_scale["dtype"] == "uint16"
    expected = arrays[..., ::-1].reshape(-1, 3).astype(np.float64).mean(axis=0)  # cv2: BGR
    np.testing.assert_allclose(reference.mean, expected, rtol=1e-15)
    on_two = normlab.compute_stats(dataset, "channel", engine="local", workers=2)
    assert same(on_two, reference)
    assert same(
        normlab.compute_stats(root / "saved", "channel", engine="local", workers=2), reference
    )


def test_tasks_are_contiguous_index_ranges_and_carry_only_their_rows(corpus):
    _, dataset, _ = corpus
    source = resolve(dataset)
    assert [(t.start, t.stop) for t in source.tasks] == [
        (0, FILES_PER_TASK),
        (FILES_PER_TASK, FILES_PER_TASK + 20),
    ]
    whole = len(pickle.dumps(dataset.with_format("arrow")[:]))
    assert len(pickle.dumps(source.tasks[1])) < whole / 5  # 20 rows of 276, not all of them


def test_dataset_dict_and_bad_cells(corpus, tmp_path):
    root, dataset, _ = corpus
    with pytest.raises(SourceError, match=r"splits \['test', 'train'\]; choose with key="):
        resolve(root / "dict")
    with pytest.raises(SourceError, match="no split 'val'"):
        resolve(root / "dict", key="val")
    good = png(np.zeros((3, 3, 3), np.uint8))
    bad = image_dataset([good, good[:30], good, b"junk", good])
    with pytest.raises(SourceError, match=r"\[1\]\['image'\]: corrupt"):
        normlab.compute_stats(bad)
    stats = normlab.compute_stats(bad, skip_bad=True)
    assert stats.n_samples_seen == 3 and stats.n_skipped == 2
    assert [s["item"].split("[", 1)[1] for s in stats.skipped] == ["1]['image']", "3]['image']"]


def test_image_cells_stored_as_paths(tmp_path):
    arr = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    (tmp_path / "a.png").write_bytes(png(arr))
    features = datasets.Features({"image": datasets.Image()})
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": None, "path": str(tmp_path / "a.png")}]}, features=features
    )
    stats = normlab.compute_stats(dataset)
    np.testing.assert_array_equal(stats.mean, arr[..., ::-1])  # PNG stores BGR for cv2


def test_numeric_columns_as_for_tables(tmp_path):
    pytest.importorskip("normlab.sources.tables")
    x = np.random.default_rng(6).normal(size=(300, 3))
    dataset = datasets.Dataset.from_dict(
        {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "t": ["s"] * 300}
    )
    stats = normlab.compute_stats(dataset, columns=["a", "c"])
    np.testing.assert_allclose(stats.mean, x[:, [0, 2]].mean(axis=0), rtol=1e-12)
    dataset.save_to_disk(str(tmp_path / "num"))
    again = normlab.compute_stats(tmp_path / "num", columns="a,c")
    assert same(again, stats)
    with pytest.raises(SourceError, match="^dataset in memory: no column 'z'; it has a, b, c, t"):
        normlab.compute_stats(dataset, columns=["z"])
    with pytest.raises(SourceError, match=r"num: no column 'z'"):
        normlab.compute_stats(tmp_path / "num", columns="a,z")


def test_checkpoints_tell_datasets_apart(corpus, tmp_path):
    _, dataset, _ = corpus
    first = normlab.compute_stats(dataset, "channel", checkpoint=tmp_path / "ckpt")
    assert same(normlab.compute_stats(dataset, "channel", checkpoint=tmp_path / "ckpt"), first)
    other = dataset.select(list(reversed(range(len(dataset)))))
    with pytest.raises(normlab.NormlabError, match="made for other inputs"):
        normlab.compute_stats(other, "channel", checkpoint=tmp_path / "ckpt")


def test_saved_folders_at_fsspec_urls(corpus, s3):
    """A save_to_disk folder on a real S3-compatible server (and in fsspec's memory filesystem)
    gives the local folder's statistics, on every engine; errors name the URL."""
    import fsspec

    root, dataset, _ = corpus
    reference = normlab.compute_stats(root / "folder", "channel")
    fsspec.filesystem("s3", **s3).mkdir("normlab-hf")
    dataset.save_to_disk("s3://normlab-hf/saved", storage_options=s3)
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(5))}).save_to_disk(
        "s3://normlab-hf/dict", storage_options=s3
    )
    for engine in ({"engine": "serial"}, {"engine": "local", "workers": 2}):
        got = normlab.compute_stats(
            "s3://normlab-hf/saved", "channel", storage_options=s3, **engine
        )
        assert same(got, reference), engine
    split = normlab.compute_stats(
        "s3://normlab-hf/dict", "channel", key="train", storage_options=s3
    )
    assert same(split, reference)
    with pytest.raises(SourceError, match=r"s3://normlab-hf/dict: .*splits \['test', 'train'\]"):
        resolve("s3://normlab-hf/dict", storage_options=s3)
    with pytest.raises(SourceError, match="s3://normlab-hf/nothing: no such file or folder"):
        resolve("s3://normlab-hf/nothing", storage_options=s3)

    dataset.save_to_disk("memory://normlab-hf/saved")
    assert same(normlab.compute_stats("memory://normlab-hf/saved", "channel"), reference)
    x = np.random.default_rng(7).normal(size=(50, 2))
    numeric = datasets.Dataset.from_dict({"a": x[:, 0], "b": x[:, 1]})
    numeric.save_to_disk("memory://normlab-hf/numeric")
    remote = normlab.compute_stats("memory://normlab-hf/numeric")
    assert same(remote, normlab.compute_stats(numeric))


def test_saved_folder_at_a_url_from_the_command_line(corpus):
    import json

    from typer.testing import CliRunner

    from normlab.cli import app

    root, dataset, _ = corpus
    dataset.save_to_disk("memory://normlab-hf-cli/saved")
    out = root / "cli.safetensors"
    options = json.dumps({"skip_instance_cache": True})
    result = CliRunner().invoke(
        app,
        ["stats", "memory://normlab-hf-cli/saved", "--axis", "channel", "-o", str(out)]
        + ["--storage-options", options, "--quiet"],
    )
    assert result.exit_code == 0, result.output
    loaded = normlab.load(out)
    assert same(loaded, normlab.compute_stats(root / "folder", "channel"))


def test_a_saved_arrow_file_cut_between_record_batches_is_truncated(tmp_path):
    """An Arrow stream cut exactly between record batches reads as a shorter dataset: the file
    must end with the end-of-stream marker, or the folder is refused naming the file and byte."""
    import pyarrow as pa

    rng = np.random.default_rng(8)
    dataset = datasets.Dataset.from_dict({"x": rng.normal(size=5000).tolist()})
    dataset.save_to_disk(str(tmp_path / "saved"), num_shards=1)
    (arrow,) = (tmp_path / "saved").glob("*.arrow")
    whole = arrow.read_bytes()
    reader = pa.BufferReader(whole)
    batch_ends = [reader.tell() for _ in pa.ipc.open_stream(reader)]
    assert len(batch_ends) > 2
    assert normlab.compute_stats(str(tmp_path / "saved")).n_samples_seen == 5000
    for length in (batch_ends[0], batch_ends[-2], batch_ends[-1]):
        cut = tmp_path / f"cut{length}"  # a new folder: a loaded one stays memory-mapped
        shutil.copytree(tmp_path / "saved", cut)
        (cut / arrow.name).write_bytes(whole[:length])
        with pytest.raises(SourceError, match=rf"{arrow.name} is truncated.* {length}\b"):
            normlab.compute_stats(str(cut))
