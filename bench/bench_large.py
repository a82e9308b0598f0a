"""Larger than RAM: exact statistics of a 30 GB stream and of a 4 GB ``.npy`` in bounded memory.

Usage::

    python bench/bench_large.py            # 30 GB stream + 4 GB file, prints the table
    python bench/bench_large.py --ci       # the same, and exits 1 if a memory bound is broken
    python bench/bench_large.py --stream-gb 5 --file-gb 1 --dir /big/disk

Every measurement runs in a fresh child process, which reports its peak resident memory
(``VmHWM`` from ``/proc/self/status``, or ``ru_maxrss``) and its resident memory before the
work started. The checks (``--ci``) are memory bounds only, never times, so a slow machine
passes:

* the stream: ``compute_stats`` over ≥ 30 GB of uint8 samples from a generator that yields one
  pre-made 48 MB block again and again; peak RSS < 1 GiB;
* the file: ``compute_stats`` reads a ≥ 4 GB ``.npy`` in 32 MiB windows; its RSS grows by at
  most four windows + 64 MiB. A ``np.load(mmap_mode="r")`` pass over the same file, for
  comparison, keeps every page it touched resident: its RSS grows towards the file size.

The ``.npy`` goes to ``--dir`` (default: the system temporary folder) and is deleted afterwards;
when the disk lacks the space, that part is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

RUN_BY_DEFAULT = False  # 34 GB of data: run with `python bench/run.py --only large`
SAMPLE_SHAPE = (32, 32, 3)  # CIFAR-sized images; per-pixel statistics: 3072 features
BLOCK_ROWS = 16384  # 48 MiB of uint8 samples, tiled to make the stream
WINDOW_BYTES = (
    32 * 1024 * 1024
)  # normlab's default .npy window (sources.arrays.DEFAULT_CHUNK_BYTES)
STREAM_PEAK_LIMIT = 1024**3
WINDOW_GROWTH_LIMIT = 4 * WINDOW_BYTES + 64 * 1024**2
GB = 1e9
MIB = 1024**2


# ------------------------------------------------------------------------- child side
def _rss_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def _block() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (BLOCK_ROWS, *SAMPLE_SHAPE), dtype=np.uint8)


def _child_stream(total_bytes: int) -> dict:
    import normlab

    block = _block()
    repeats = -(-total_bytes // block.nbytes)
    normlab.compute_stats(block[:2])  # compile the kernels before measuring
    baseline = _rss_bytes("VmRSS")

    def stream():
        for _ in range(repeats):
            yield block

    start = time.perf_counter()
    stats = normlab.compute_stats(stream(), axis="feature", progress=False)
    seconds = time.perf_counter() - start
    exact = normlab.Moments.from_array(block)  # the stream is `repeats` copies of the block
    assert stats.n_samples_seen == repeats * BLOCK_ROWS
    assert np.array_equal(stats.mean, exact.mean) and np.array_equal(stats.var(), exact.var())
    return {
        "bytes": repeats * block.nbytes,
        "seconds": seconds,
        "baseline": baseline,
        "peak": _rss_bytes("VmHWM"),
    }


def _child_numpy_stream(total_bytes: int) -> dict:
    """The usual alternative per chunk: float64 sums of x and x² with numpy."""
    block = _block()
    flat = block.reshape(len(block), -1)
    repeats = -(-total_bytes // block.nbytes)
    baseline = _rss_bytes("VmRSS")
    s1 = np.zeros(flat.shape[1])
    s2 = np.zeros(flat.shape[1])
    start = time.perf_counter()
    for _ in range(repeats):
        wide = flat.astype(np.float64)
        s1 += wide.sum(axis=0)
        s2 += (wide * wide).sum(axis=0)
    seconds = time.perf_counter() - start
    return {
        "bytes": repeats * block.nbytes,
        "seconds": seconds,
        "baseline": baseline,
        "peak": _rss_bytes("VmHWM"),
    }


def _child_file(path: str) -> dict:
    import normlab

    normlab.compute_stats(_block()[:2])
    baseline = _rss_bytes("VmRSS")
    start = time.perf_counter()
    stats = normlab.compute_stats(path, axis="feature", progress=False)
    seconds = time.perf_counter() - start
    assert np.array_equal(stats.mean, normlab.Moments.from_array(_block()).mean)
    return {
        "bytes": os.path.getsize(path),
        "seconds": seconds,
        "baseline": baseline,
        "peak": _rss_bytes("VmHWM"),
    }


def _child_memmap(path: str) -> dict:
    import normlab

    normlab.compute_stats(_block()[:2])
    data = np.load(path, mmap_mode="r")
    rows = WINDOW_BYTES // (data.itemsize * int(np.prod(data.shape[1:])))
    baseline = _rss_bytes("VmRSS")
    start = time.perf_counter()
    stats = normlab.Moments("feature")
    for i in range(0, len(data), rows):
        stats.update(data[i : i + rows])
    seconds = time.perf_counter() - start
    return {
        "bytes": os.path.getsize(path),
        "seconds": seconds,
        "baseline": baseline,
        "peak": _rss_bytes("VmHWM"),
    }


CHILDREN = {
    "stream": _child_stream,
    "numpy-stream": _child_numpy_stream,
    "file": _child_file,
    "memmap": _child_memmap,
}


# ------------------------------------------------------------------------ parent side
def _measure(kind: str, arg: str) -> dict:
    """Run one measurement in a fresh child process and return its report."""
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind, arg],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the kernel's own account of the child, as a cross-check of what it printed
    report["peak_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return report


def _write_npy(path: str, total_bytes: int) -> int:
    """A ``.npy`` of ≥ ``total_bytes``: the block written again and again (plain writes)."""
    block = _block()
    repeats = -(-total_bytes // block.nbytes)
    header = {
        "descr": "|u1",
        "fortran_order": False,
        "shape": (repeats * BLOCK_ROWS, *SAMPLE_SHAPE),
    }
    raw = block.tobytes()
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for _ in range(repeats):
            handle.write(raw)
    return os.path.getsize(path)


def _row(name: str, r: dict, reference: dict | None = None) -> str:
    speed = r["bytes"] / r["seconds"] / GB
    ratio = (
        f"{reference['seconds'] / r['seconds'] * r['bytes'] / reference['bytes']:.2f}x"
        if reference
        else "1.00x"
    )
    return (
        f"{name:<38} {r['bytes'] / GB:8.2f} {r['seconds']:8.2f} {speed:7.2f} {ratio:>7} "
        f"{r['baseline'] / MIB:9.0f} {r['peak'] / MIB:9.0f} "
        f"{(r['peak'] - r['baseline']) / MIB:8.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="exit 1 when a memory bound is broken")
    parser.add_argument(
        "--stream-gb", type=float, default=30.0, help="size of the generated stream"
    )
    parser.add_argument("--file-gb", type=float, default=4.0, help="size of the .npy file")
    parser.add_argument(
        "--compare-gb", type=float, default=1.0, help="stream size for the numpy pass"
    )
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the .npy")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, arg = args.child
        print(json.dumps(CHILDREN[kind](int(arg) if kind.endswith("stream") else arg)))
        return

    print(
        f"{'what':<38} {'GB':>8} {'s':>8} {'GB/s':>7} {'speed':>7} "
        f"{'RSS0 MiB':>9} {'peak MiB':>9} {'+MiB':>8}"
    )
    failures = []
    started = time.perf_counter()
    stream = _measure("stream", str(int(args.stream_gb * GB)))
    numpy_stream = _measure("numpy-stream", str(int(args.compare_gb * GB)))
    print(_row("compute_stats, generator stream", stream))
    print(_row("numpy float64 Σx, Σx² (the alternative)", numpy_stream, stream))
    if stream["peak"] >= STREAM_PEAK_LIMIT:
        failures.append(f"stream: peak RSS {stream['peak'] / MIB:.0f} MiB ≥ 1024 MiB")

    file_bytes = int(args.file_gb * GB)
    free = shutil.disk_usage(args.dir).free
    if free < file_bytes + 1024**3:
        print(
            f"skipped the {args.file_gb:g} GB .npy: {free / GB:.1f} GB free in {args.dir}, "
            f"need {file_bytes / GB + 1:.1f} GB (choose another folder with --dir)"
        )
    else:
        fd, path = tempfile.mkstemp(prefix="normlab-large-", suffix=".npy", dir=args.dir)
        os.close(fd)
        try:
            _write_npy(path, file_bytes)
            windowed = _measure("file", path)
            mapped = _measure("memmap", path)
        finally:
            os.unlink(path)
        print(_row("compute_stats, .npy in 32 MiB windows", windowed))
        print(_row("np.load(mmap_mode='r') + update", mapped, windowed))
        growth = windowed["peak"] - windowed["baseline"]
        if growth > WINDOW_GROWTH_LIMIT:
            failures.append(
                f"file: RSS grew by {growth / MIB:.0f} MiB, "
                f"more than {WINDOW_GROWTH_LIMIT / MIB:.0f} "
                "MiB (four windows + 64 MiB)"
            )
    print(
        f"(total {time.perf_counter() - started:.0f} s; peak RSS of any child by getrusage: "
        f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB)"
    )
    for failure in failures:
        print("MEMORY BOUND BROKEN:", failure)
    if failures and args.ci:
        raise SystemExit(1)
    if args.ci:
        print("memory bounds hold: stream peak < 1 GiB; windowed .npy growth ≤ 4 windows + 64 MiB")


if __name__ == "__main__":
    main()
