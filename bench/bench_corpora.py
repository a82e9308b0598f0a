"""Corpora: WebDataset shards against the same images in a folder; a Zarr array on a Dask
cluster against the local engine. One run, side by side, interleaved rounds (best of each).

* **Shards**: the benchmark's 2,000 JPEGs (224x224, see ``bench_images.py``) packed into 8
  ``.tar`` shards; per-channel statistics of the shards and of the folder, serial and on the
  local engine with 2 workers. Target: shards ≥ 0.9x the folder's throughput.
* **Zarr**: a uint16 array of ``--zarr-gb`` GB (default 2) in 64 MB chunks; statistics
  (``--zarr-axis``, default global) of ``dask.array.from_zarr`` on a 2-worker
  ``LocalCluster`` (start excluded) against the Zarr store on ``engine="local"`` with 2
  workers. Target: within 20 %.

Run: ``python bench/bench_corpora.py`` (``--zarr-gb 0.5 --rounds 2`` on a loaded machine).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import normlab  # noqa: E402
from bench_images import make_bench_images  # noqa: E402

N_SHARDS = 8
CHUNK_BYTES = 64 * 1024 * 1024


def make_shards(jpeg_dir: Path, root: Path) -> str:
    """The folder's JPEGs as ``N_SHARDS`` WebDataset shards (with .cls labels), once."""
    marker = root / ".complete"
    pattern = str(root / f"shard-{{000..{N_SHARDS - 1:03d}}}.tar")
    if marker.exists():
        return pattern
    root.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in jpeg_dir.iterdir() if p.suffix == ".jpg")
    per_shard = -(-len(files) // N_SHARDS)
    for shard in range(N_SHARDS):
        with tarfile.open(root / f"shard-{shard:03d}.tar", "w") as tar:
            for i, path in enumerate(files[shard * per_shard : (shard + 1) * per_shard]):
                tar.add(path, arcname=path.name)
                label = tarfile.TarInfo(path.stem + ".cls")
                label.size = 1
                tar.addfile(label, io.BytesIO(b"%d" % (i % 10)))
    marker.touch()
    return pattern


def make_zarr(root: Path, gigabytes: float) -> Path:
    import zarr

    rows_per_chunk = CHUNK_BYTES // (512 * 512 * 2)
    n_rows = int(gigabytes * 2**30) // (512 * 512 * 2)
    path = root / f"volume-{n_rows}.zarr"
    if (path / ".complete").exists():
        return path
    z = zarr.open(
        str(path),
        mode="w",
        shape=(n_rows, 512, 512),
        chunks=(rows_per_chunk, 512, 512),
        dtype=np.uint16,
    )
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, rows_per_chunk):
        stop = min(start + rows_per_chunk, n_rows)
        z[start:stop] = rng.integers(0, 4096, (stop - start, 512, 512), dtype=np.uint16)
    (path / ".complete").touch()
    return path


def best_of(rounds: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Interleaved rounds (each run once per round), best time of each."""
    best = {name: float("inf") for name in runs}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    first = next(iter(results.values()))
    for name, stats in results.items():  # every way of reading gives the same statistics
        assert np.array_equal(stats.mean, first.mean), name  # type: ignore[attr-defined]
    return best


def bench_shards(rounds: int) -> None:
    jpeg_dir, _ = make_bench_images()
    pattern = make_shards(jpeg_dir, Path(tempfile.gettempdir()) / "normlab-bench-shards")
    n = 2000
    runs = {
        "folder serial": lambda: normlab.compute_stats(jpeg_dir, "channel", progress=False),
        "shards serial": lambda: normlab.compute_stats(pattern, "channel", progress=False),
        "folder local x2": lambda: normlab.compute_stats(
            jpeg_dir, "channel", engine="local", workers=2, progress=False
        ),
        "shards local x2": lambda: normlab.compute_stats(
            pattern, "channel", engine="local", workers=2, progress=False
        ),
    }
    best = best_of(rounds, runs)
    index_rates = bench_indexing(pattern, rounds)
    print(f"2,000 JPEGs 224x224, {N_SHARDS} shards vs folder (best of {rounds}):")
    print(
        f"  listing the shards' members: normlab's header reader {index_rates[0]:,.0f} "
        f"members/s, tarfile {index_rates[1]:,.0f} members/s"
    )
    for name, seconds in best.items():
        print(f"  {name:18s} {seconds:7.2f} s  {n / seconds:8.0f} images/s")
    for engine in ("serial", "local x2"):
        ratio = best[f"folder {engine}"] / best[f"shards {engine}"]
        print(f"  shards / folder throughput, {engine}: {ratio:.2f}x (target >= 0.9x)")


def bench_indexing(pattern: str, rounds: int) -> tuple[float, float]:
    """Members listed per second: normlab's tar header reader against ``tarfile``."""
    from normlab.sources.webdataset import expand_braces, index_shard

    shards = expand_braces(pattern)
    ours = theirs = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        n = sum(len(index_shard(s)[0]) for s in shards)
        ours = min(ours, time.perf_counter() - start)
        start = time.perf_counter()
        for shard in shards:
            with tarfile.open(shard) as tar:
                tar.getmembers()
        theirs = min(theirs, time.perf_counter() - start)
    return n / ours, n / theirs


def bench_zarr(rounds: int, gigabytes: float, axis: str) -> None:
    import dask.array as da
    import distributed

    root = Path(tempfile.gettempdir()) / "normlab-bench-zarr"
    path = make_zarr(root, gigabytes)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        import zarr

        # the store opened as the Zarr source opens it (a LocalStore: da.from_zarr(str) goes
        # through an fsspec wrapper), held in each chunk's task (no single key every read
        # depends on)
        array = da.from_zarr(zarr.open(str(path), mode="r"), inline_array=True)
        runs = {
            "zarr, engine=local x2": lambda: normlab.compute_stats(
                str(path), axis, engine="local", workers=2, progress=False
            ),
            "dask.array, engine=dask (2 workers)": lambda: normlab.compute_stats(
                array, axis, engine="dask", scheduler=client, progress=False
            ),
            "zarr, engine=dask (2 workers)": lambda: normlab.compute_stats(
                str(path), axis, engine="dask", scheduler=client, progress=False
            ),
        }
        best = best_of(rounds, runs)
    nbytes = array.nbytes / 2**30
    print(
        f"Zarr uint16 {array.shape}, {nbytes:.2f} GB in {array.numblocks[0]} chunks of 64 MB "
        f"({size:.2f} GB on disk, zstd), axis={axis!r}, best of {rounds}:"
    )
    for name, seconds in best.items():
        print(f"  {name:36s} {seconds:7.2f} s  {nbytes / seconds:6.3f} GB/s")
    for name in ("dask.array, engine=dask (2 workers)", "zarr, engine=dask (2 workers)"):
        ratio = best[name] / best["zarr, engine=local x2"]
        print(f"  {name} / local engine time: {ratio:.2f} (target within 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--zarr-gb", type=float, default=2.0)
    parser.add_argument("--only", choices=("shards", "zarr"))
    parser.add_argument(
        "--zarr-axis",
        default="global",
        help="global (reading dominates: what the comparison is about) or feature/channel",
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "shards"):
        bench_shards(args.rounds)
    if args.only in (None, "zarr"):
        bench_zarr(args.rounds, args.zarr_gb, args.zarr_axis)


if __name__ == "__main__":
    main()
