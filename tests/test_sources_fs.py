"""fsspec URLs for the path-taking sources: memory://, file://, and s3:// and gs:// on real
servers (moto; the GCS emulator) in subprocesses (the ``store`` fixture runs a test on each)."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import normlab
from normlab.errors import MissingExtraError, NormlabError, SourceError
from normlab.sources.fs import Location, expand, is_url, location, protocol_of
from object_store import Store

fsspec = pytest.importorskip("fsspec")


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture
def memory() -> Iterator[Any]:
    fs = fsspec.filesystem("memory")
    fs.mkdir("/nl")
    yield fs
    fs.rm("/nl", recursive=True)


def test_protocols() -> None:
    assert protocol_of("s3://b/k.npy") == "s3"
    assert protocol_of("/data/x.npy") == "file"
    assert protocol_of("file:///data/x.npy") == "file"
    assert protocol_of("C://x.npy") == "file"  # a drive letter, not a scheme
    assert is_url("gs://b/x") and not is_url("x.npy") and not is_url(3)
    assert location("file:///a/b.NPY").path == "/a/b.NPY"
    assert location("file:///a/b.NPY").suffix == ".npy"
    assert location("https://h/x.parquet?sig=1").suffix == ".parquet"
    loc = location("s3://b/k.npy", {"endpoint_url": "http://h"})
    assert pickle.loads(pickle.dumps(loc)) == loc
    with pytest.raises(NormlabError, match="storage_options must be a dict"):
        location("s3://b/k", "key=1")


def test_memory_npy_and_npz_match_the_array(memory: Any) -> None:
    x = np.random.default_rng(0).integers(-500, 500, (1000, 3), dtype=np.int32)
    memory.pipe("/nl/x.npy", _npy_bytes(x))
    memory.pipe("/nl/x.npz", _npz_bytes(features=x))
    want = normlab.compute_stats(x)
    for url in ("memory://nl/x.npy", "memory://nl/x.npz"):
        got = normlab.compute_stats(url, chunk_size=64)
        assert np.array_equal(got.mean, want.mean) and np.array_equal(got.var(), want.var())
    shards = normlab.compute_stats(["memory://nl/x.npy", "memory://nl/x.npz"])
    assert shards.n_samples_seen == 2000


def test_file_url_is_a_local_path(tmp_path: Path) -> None:
    x = np.arange(60, dtype=np.float64).reshape(20, 3)
    np.save(tmp_path / "x.npy", x)
    got = normlab.compute_stats(f"file://{tmp_path}/x.npy")
    assert np.array_equal(got.mean, x.mean(axis=0))


def test_expand_lists_folders_and_globs(memory: Any) -> None:
    for name in ("b.npy", "a.npy", "sub/c.npy", "_SUCCESS", ".hidden/d.npy", "e.txt"):
        memory.pipe(f"/nl/{name}", b"x")
    found = [loc.url for loc in expand(location("memory://nl"), suffixes=(".npy",))]
    assert found == ["memory:///nl/a.npy", "memory:///nl/b.npy", "memory:///nl/sub/c.npy"]
    globbed = [loc.url for loc in expand(location("memory://nl/*.npy"))]
    assert globbed == ["memory:///nl/a.npy", "memory:///nl/b.npy"]


def test_store_npy_npz_bit_identical_to_local(store: Store, tmp_path: Path) -> None:
    fs = store.filesystem()
    fs.mkdir("arrays")
    x = np.random.default_rng(1).integers(-(1 << 31), 1 << 31, (5000, 4), dtype=np.int64)
    fs.pipe("arrays/x.npy", _npy_bytes(x))
    fs.pipe("arrays/x.npz", _npz_bytes(x=x))
    np.save(tmp_path / "x.npy", x)
    local = normlab.compute_stats(tmp_path / "x.npy", chunk_size=700)
    for url in (store.url("arrays/x.npy"), store.url("arrays/x.npz")):
        remote = normlab.compute_stats(url, chunk_size=700, storage_options=store.options)
        assert remote.n_samples_seen == 5000
        assert np.array_equal(remote.mean, local.mean) and np.array_equal(remote.var(), local.var())


def test_store_errors_name_the_url(store: Store) -> None:
    p = store.protocol
    with pytest.raises(SourceError, match=rf"{p}://arrays/missing\.npy: no such file"):
        normlab.compute_stats(store.url("arrays/missing.npy"), storage_options=store.options)
    with pytest.raises(SourceError, match=rf"{p}://no-bucket/x\.npy: no such file"):
        normlab.compute_stats(store.url("no-bucket/x.npy"), storage_options=store.options)


def test_s3_denied_key_and_unreachable_endpoint() -> None:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from object_store import free_port, s3_server

    with s3_server(auth=True) as options:  # the fake key is unknown: every request is denied
        with pytest.raises(SourceError, match=r"s3://arrays/x\.npy: access denied"):
            normlab.compute_stats("s3://arrays/x.npy", storage_options=options)
    nothing = {
        **options,
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    with pytest.raises(SourceError, match=r"s3://arrays/x\.npy: cannot read .*connect"):
        normlab.compute_stats("s3://arrays/x.npy", storage_options=nothing)


def test_unknown_protocol_and_missing_package() -> None:
    with pytest.raises(SourceError, match=r"nosuch://b/x\.npy"):
        normlab.compute_stats("nosuch://b/x.npy")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"pip install 'normlab\[gcs\]'"):
            normlab.compute_stats("gs://b/x.npy")


@pytest.mark.parametrize(
    ("url", "extra"),
    [("gs://b/x.npy", "gcs"), ("gcs://b/x.npy", "gcs"), ("s3://b/x.npy", "cloud")],
)
def test_a_missing_protocol_package_names_its_extra(url: str, extra: str) -> None:
    """In a fresh interpreter where the protocol's package cannot be imported (gcsfs is in
    its own extra because it pulls in gRPC; s3fs is in ``cloud``)."""
    package = "gcsfs" if extra == "gcs" else "s3fs"
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"
        "import normlab\n"
        "from normlab.errors import MissingExtraError\n"
        "try:\n"
        f"    normlab.compute_stats({url!r}, storage_options={{'endpoint_url': 'http://127.0.0.1:9'}})\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert f"{url}: reading" in done.stdout and f"pip install 'normlab[{extra}]'" in done.stdout


def test_gcs_emulator_endpoints_skip_the_grpc_layout_lookup(monkeypatch: Any) -> None:
    """gcsfs's default filesystem asks a gRPC service (always over TLS) for a bucket's layout;
    a plain-HTTP endpoint (an emulator) gets the JSON-API filesystem instead."""
    from normlab.sources.fs import gcs_endpoint_is_plain_http as plain

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert plain({"endpoint_url": "http://127.0.0.1:9023"})
    assert not plain({"endpoint_url": "https://storage.example"}) and not plain({})
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
    assert plain({}) and not plain({"endpoint_url": "https://storage.example"})
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "default")
    assert not plain({})


def test_gcs_from_the_command_line_and_the_emulator_variable(
    gcs: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    """``normlab stats gs://... --storage-options JSON``; then gcsfs's usual environment
    (``STORAGE_EMULATOR_HOST``) instead of an ``endpoint_url``."""
    from typer.testing import CliRunner

    from normlab.cli import app

    fs = Store("gs", gcs).filesystem()
    fs.mkdir("cli")
    x = np.random.default_rng(3).integers(-1000, 1000, (3000, 3), dtype=np.int32)
    fs.pipe("cli/x.npy", _npy_bytes(x))
    np.save(tmp_path / "x.npy", x)
    local = normlab.compute_stats(tmp_path / "x.npy")
    out = tmp_path / "s.safetensors"
    result = CliRunner().invoke(
        app,
        ["stats", "gs://cli/x.npy", "--storage-options", json.dumps(gcs), "-o", str(out)]
        + ["--quiet"],
    )
    assert result.exit_code == 0, result.output
    loaded = normlab.load(out)
    assert loaded.n_samples_seen == 3000
    assert np.array_equal(loaded.mean, local.mean) and np.array_equal(loaded.var(), local.var())
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs["endpoint_url"].removeprefix("http://"))
    by_env = normlab.compute_stats(
        "gs://cli/x.npy", storage_options={"token": "anon", "skip_instance_cache": True}
    )
    assert np.array_equal(by_env.mean, local.mean) and np.array_equal(by_env.var(), local.var())
    result = CliRunner().invoke(
        app,
        ["stats", "gs://cli/nope.npy", "--storage-options", json.dumps(gcs), "-o", str(out)],
    )
    assert result.exit_code != 0 and "gs://cli/nope.npy: no such file" in result.output


def test_location_reads(memory: Any) -> None:
    memory.pipe("/nl/blob.bin", b"0123456789")
    loc = Location("memory://nl/blob.bin")
    assert loc.size() == 10 and loc.read_bytes() == b"0123456789" and loc.exists()
    with loc.open() as handle:
        handle.seek(3)
        assert handle.read(2) == b"34"


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folders_lists_and_files_from_urls(memory: Any, store: Store, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(7)]
    fs = store.filesystem()
    fs.mkdir("images")
    for k, img in enumerate(images):
        name = f"{'cats' if k % 2 else 'dogs'}/{k}.png"
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(_png_bytes(img))
        memory.pipe(f"/nl/img/{name}", _png_bytes(img))
        fs.pipe(f"images/{name}", _png_bytes(img))
    memory.pipe("/nl/img/readme.md", b"not an image")
    memory.pipe("/nl/list.txt", b"img/cats/1.png\nimg/dogs/0.png\n")
    fs.pipe("images/list.txt", b"cats/1.png\ndogs/0.png\n")
    local = normlab.compute_stats(tmp_path, axis="channel")
    for url, options in (("memory://nl/img", None), (store.url("images"), store.options)):
        remote = normlab.compute_stats(url, axis="channel", storage_options=options)
        assert remote.n_samples_seen == 7
        assert np.array_equal(remote.mean, local.mean) and np.array_equal(remote.var(), local.var())
    both = np.stack([images[1], images[0]])
    for url, options in (
        ("memory://nl/list.txt", None),
        (store.url("images/list.txt"), store.options),
    ):
        listed = normlab.compute_stats(url, axis="channel", storage_options=options)
        assert np.array_equal(listed.mean, both.reshape(-1, 3).mean(axis=0))
    one = normlab.compute_stats(store.url("images/cats/1.png"), storage_options=store.options)
    assert one.n_samples_seen == 1
    missing = store.url("images/cats/9.png")
    with pytest.raises(SourceError, match=rf"{re.escape(missing)}: no such file"):
        normlab.compute_stats([missing], storage_options=store.options)


def test_http_single_files(tmp_path: Path) -> None:
    """``http(s)://`` URLs of single files, from a real HTTP server in a subprocess."""
    pytest.importorskip("aiohttp")
    from object_store import http_server

    x = np.arange(300, dtype=np.int16).reshape(100, 3)
    np.save(tmp_path / "x.npy", x)
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    pq.write_table(pa.table({"a": x[:, 0]}), tmp_path / "t.parquet", row_group_size=30)
    with http_server(str(tmp_path)) as url:
        got = normlab.compute_stats(f"{url}/x.npy", chunk_size=7)
        assert np.array_equal(got.mean, x.mean(axis=0)) and got.n_samples_seen == 100
        table = normlab.compute_stats(f"{url}/t.parquet")
        assert table.exact and np.array_equal(table.mean, got.mean[:1])
        with pytest.raises(SourceError, match=r"/missing\.npy: no such file"):
            normlab.compute_stats(f"{url}/missing.npy")
