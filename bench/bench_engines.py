"""Engines: serial vs a local pool of 2 processes vs a Dask LocalCluster of 2 workers.

Same work, same files, one run: per-channel statistics of (1) a large ``.npy`` of uint8
images and (2) the JPEG folder of ``bench_images.py`` (decoding is the work there). The
``local`` pool starts on its first run and stays up for the next ones (both times are
printed); the Dask cluster is started once, before timing (its start time is printed).
Per-task overhead: the marginal time of a tiny task, from runs of few and of many tasks.
Every engine's result is checked to be bit-identical to the serial one.

Run: ``python bench/bench_engines.py`` (``--quick``: smaller data, two repeats).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import normlab

WORKERS = 2


def make_npy(n_images: int) -> Path:
    """uint8 images 64x64x3 (12 KiB each), written once and reused."""
    path = Path(tempfile.gettempdir()) / f"normlab-bench-engines-{n_images}.npy"
    if not path.exists():
        rng = np.random.default_rng(0)
        arr = np.lib.format.open_memmap(
            path.with_suffix(".tmp.npy"), "w+", np.uint8, (n_images, 64, 64, 3)
        )
        for s in range(0, n_images, 4096):
            arr[s : s + 4096] = rng.integers(0, 256, arr[s : s + 4096].shape, dtype=np.uint8)
        arr.flush()
        del arr
        path.with_suffix(".tmp.npy").rename(path)
    return path


def timed(source, engine: str, repeat: int, **options) -> tuple[list[float], normlab.Moments]:
    times, stats = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        stats = normlab.compute_stats(source, "channel", engine=engine, progress=False, **options)
        times.append(time.perf_counter() - start)
    return times, stats


def compare(name: str, source, client, repeat: int, n_bytes: int, **options) -> list[str]:
    """Best of ``repeat`` runs each; ``local`` also its first run (which starts the workers)."""
    t_serial, serial = timed(source, "serial", repeat, **options)
    t_local, local = timed(source, "local", repeat, workers=WORKERS, **options)
    t_dask, dask = timed(source, "dask", repeat, scheduler=client, **options)
    assert local == serial and dask == serial, "engines disagree"
    serial_s, local_s, dask_s = min(t_serial), min(t_local), min(t_dask)
    return [
        f"{name:<36} serial {serial_s:6.2f} s ({n_bytes / 1e6 / serial_s:5.0f} MB/s) | "
        f"local x{WORKERS} {local_s:6.2f} s = {serial_s / local_s:4.2f}x serial "
        f"(first run, starting workers: {t_local[0]:5.2f} s) | "
        f"dask x{WORKERS} {dask_s:6.2f} s = {dask_s / local_s:4.2f}x local's time"
    ]


def task_overhead(client) -> list[str]:
    """Wall time per task of tasks that do almost nothing (8 rows of 4 float64 values each):
    the marginal time from a run of few and a run of many such tasks, and the fixed cost of a
    run."""
    few, many = 16, 512
    parts = {}
    for n_tasks in (few, many):
        parts[n_tasks] = Path(tempfile.gettempdir()) / f"normlab-bench-engines-tiny-{n_tasks}.npy"
        np.save(parts[n_tasks], np.random.default_rng(0).normal(size=(8 * n_tasks, 4)))
    lines = []
    for engine, options in (
        ("serial", {}),
        ("local", {"workers": WORKERS}),
        ("dask", {"scheduler": client}),
    ):
        times = {}
        for n_tasks, part in parts.items():
            start = time.perf_counter()  # chunk_size=1: tasks of 8 one-row chunks (TASK_CHUNKS)
            normlab.compute_stats(str(part), chunk_size=1, engine=engine, progress=False, **options)
            times[n_tasks] = time.perf_counter() - start
        per_task = (times[many] - times[few]) / (many - few)
        fixed = times[few] - few * per_task
        lines.append(
            f"tiny tasks, {engine:<7} {per_task * 1e3:7.2f} ms/task wall, "
            f"fixed cost per run {fixed:5.2f} s"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, two repeats")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    repeat = 2 if args.quick else args.repeat
    n_images = 8_000 if args.quick else 40_000
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = Client(cluster)
    print(
        f"Dask LocalCluster ({WORKERS} workers, 1 thread each) started in "
        f"{time.perf_counter() - start:.1f} s"
    )
    try:
        path = make_npy(n_images)
        warm = np.load(path, mmap_mode="r")[:64]
        for engine in ("serial", "dask"):  # compile (or load) the kernels here and on the workers
            normlab.compute_stats(
                np.array(warm),
                "channel",
                engine=engine,
                scheduler=client if engine == "dask" else None,
            )
        lines = compare(  # 512-image chunks: 4096-image (48 MiB) tasks
            f".npy uint8 {n_images}x64x64x3",
            str(path),
            client,
            repeat,
            path.stat().st_size,
            chunk_size=512,
        )
        try:
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_images import make_bench_images

            jpeg_dir, _ = make_bench_images()
            files = sorted(str(p) for p in jpeg_dir.iterdir() if p.suffix == ".jpg")
            if args.quick:
                files = files[:512]
            n_bytes = len(files) * 224 * 224 * 3
            lines += compare(
                f"{len(files)} JPEGs 224x224 (decoded MB)", files, client, repeat, n_bytes
            )
        except ImportError as exc:
            lines.append(f"(JPEG folder skipped: {exc})")
        lines += task_overhead(client)
    finally:
        client.close()
        cluster.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
