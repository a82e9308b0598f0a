"""Statistics of every column of a Parquet file: normlab against polars, DuckDB and
``pyarrow.compute``, and the cost of reading the same file from an S3 server.

The file: ``--rows`` rows (default 1,000,000) of 32 float64 columns (normal) and 8 int64
columns (0..999), snappy-compressed, row groups of 131,072 rows, in a temporary folder.
Every contender computes mean, population variance, min and max of all 40 columns:

* normlab: ``compute_stats(path)`` (serial engine; the 8 integer columns take the exact
  path and the 32 float columns the float path, each group reading only its own columns);
* polars: ``scan_parquet`` + ``mean``, ``var(ddof=0)``, ``min``, ``max`` in one ``select``;
* DuckDB: ``avg``, ``var_pop``, ``min``, ``max`` over ``read_parquet``;
* pyarrow: ``read_table`` + ``pyarrow.compute.mean``/``variance``/``min_max`` per column.

polars and DuckDB use every core of the machine (as they come); normlab's kernels use the
numba thread count. Times are the best of ``--repeat`` runs after a warm-up. Then the file is
put on a moto S3 server (a subprocess on 127.0.0.1, the one the tests use) and
``compute_stats("s3://...")`` is timed against the local file: the overhead of the object
store through s3fs (the server is local, so this is protocol and copy cost, not network).

Then the same statistics of the file read into memory: normlab on a pandas and a polars
DataFrame against polars' ``select`` and pandas' ``mean``/``var``/``min``/``max``.

Run: ``python bench/run.py --only parquet`` (``python bench/bench_parquet.py --rows 200000``
for a quick run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

N_FLOAT, N_INT = 32, 8


def best_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = math.inf
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def write_file(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    columns = {f"f{k}": rng.normal(k, 1 + k, rows) for k in range(N_FLOAT)}
    columns.update({f"i{k}": rng.integers(0, 1000, rows) for k in range(N_INT)})
    pq.write_table(pa.table(columns), path, row_group_size=131_072)


def contenders(path: str) -> dict[str, Callable[[], object]]:
    import duckdb
    import polars as pl
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import normlab

    names = [f"f{k}" for k in range(N_FLOAT)] + [f"i{k}" for k in range(N_INT)]

    def run_normlab() -> object:
        return normlab.compute_stats(path, progress=False)

    def run_polars() -> object:
        everything = pl.all()
        return (
            pl.scan_parquet(path)
            .select(
                everything.mean().name.suffix("_mean"),
                everything.var(ddof=0).name.suffix("_var"),
                everything.min().name.suffix("_min"),
                everything.max().name.suffix("_max"),
            )
            .collect()
        )

    query = ", ".join(
        f"avg({n}), var_pop({n}), min({n}), max({n})" for n in names
    )  # one pass over the file
    connection = duckdb.connect()

    def run_duckdb() -> object:
        return connection.execute(f"SELECT {query} FROM read_parquet('{path}')").fetchall()

    def run_pyarrow() -> object:
        table = pq.read_table(path)
        return [
            (pc.mean(c), pc.variance(c, ddof=0), pc.min_max(c))
            for c in (table.column(n) for n in names)
        ]

    return {
        "normlab compute_stats": run_normlab,
        "polars scan_parquet": run_polars,
        "duckdb read_parquet": run_duckdb,
        "pyarrow.compute": run_pyarrow,
    }


def check_agreement(path: str) -> float:
    """Largest relative difference of normlab's means and variances from DuckDB's."""
    import duckdb

    import normlab

    names = [f"f{k}" for k in range(N_FLOAT)] + [f"i{k}" for k in range(N_INT)]
    m = normlab.compute_stats(path, progress=False)
    query = ", ".join(f"avg({n}), var_pop({n})" for n in names)
    row = np.array(duckdb.sql(f"SELECT {query} FROM read_parquet('{path}')").fetchall()[0])
    ref_mean, ref_var = row[0::2], row[1::2]
    return float(
        max(
            np.max(np.abs(m.mean - ref_mean) / np.abs(ref_mean)),
            np.max(np.abs(m.var() - ref_var) / ref_var),
        )
    )


def frames(path: str, repeat: int) -> dict[str, float]:
    """Seconds for the same statistics of the file read into memory: normlab on a pandas and a
    polars DataFrame against polars' and pandas' own mean/var/min/max (all columns)."""
    import polars as pl
    import pyarrow.parquet as pq

    import normlab

    pandas_frame = pq.read_table(path).to_pandas()
    polars_frame = pl.read_parquet(path)
    everything = pl.all()
    return {
        "normlab on pandas": best_time(
            lambda: normlab.compute_stats(pandas_frame, progress=False), repeat
        ),
        "normlab on polars": best_time(
            lambda: normlab.compute_stats(polars_frame, progress=False), repeat
        ),
        "polars select": best_time(
            lambda: polars_frame.select(
                everything.mean().name.suffix("_mean"),
                everything.var(ddof=0).name.suffix("_var"),
                everything.min().name.suffix("_min"),
                everything.max().name.suffix("_max"),
            ),
            repeat,
        ),
        "pandas agg": best_time(
            lambda: (
                pandas_frame.mean(),
                pandas_frame.var(ddof=0),
                pandas_frame.min(),
                pandas_frame.max(),
            ),
            repeat,
        ),
    }


def s3_overhead(path: Path, repeat: int) -> tuple[float, float, float]:
    """Seconds of compute_stats on the local file and on the same file on a moto S3 server,
    and of ``s3fs``'s ``cat`` of the whole file (what the server gives at best)."""
    import s3fs

    import normlab

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from object_store import s3_server

    with s3_server() as options:
        options.pop("skip_instance_cache")  # one client for every call, as in real use
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("bench")
        fs.put(str(path), "bench/data.parquet")
        url = "s3://bench/data.parquet"
        local = best_time(lambda: normlab.compute_stats(path, progress=False), repeat)
        remote = best_time(
            lambda: normlab.compute_stats(url, storage_options=options, progress=False), repeat
        )
        transfer = best_time(lambda: fs.cat(url), repeat)
    return local, remote, transfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the object-store part")
    parser.add_argument("--no-frames", action="store_true", help="skip the DataFrame part")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.parquet"
        start = time.perf_counter()
        write_file(path, args.rows)
        size = os.path.getsize(path)
        print(
            f"{args.rows} rows x ({N_FLOAT} float64 + {N_INT} int64) columns, "
            f"{size / 2**20:.0f} MiB on disk, written in {time.perf_counter() - start:.1f} s; "
            f"{os.cpu_count()} cores"
        )
        print(f"normlab vs DuckDB, largest relative difference: {check_agreement(str(path)):.1e}")
        times = {name: best_time(fn, args.repeat) for name, fn in contenders(str(path)).items()}
        ours = times["normlab compute_stats"]
        print(f"\n{'method':<24} {'time ms':>9} {'÷ normlab':>10}  (ratio > 1: normlab is faster)")
        for name, seconds in times.items():
            print(f"{name:<24} {seconds * 1e3:>9.0f} {seconds / ours:>10.2f}")
        if not args.no_frames:
            in_memory = frames(str(path), args.repeat)
            ours = in_memory["normlab on pandas"]
            print(f"\n{'in memory':<24} {'time ms':>9} {'÷ normlab':>10}  (normlab on pandas)")
            for name, seconds in in_memory.items():
                print(f"{name:<24} {seconds * 1e3:>9.0f} {seconds / ours:>10.2f}")
            print(
                "same frame, other tool ÷ normlab: polars "
                f"{in_memory['polars select'] / in_memory['normlab on polars']:.2f}, pandas "
                f"{in_memory['pandas agg'] / in_memory['normlab on pandas']:.2f}"
            )
        if not args.no_s3:
            local, remote, transfer = s3_overhead(path, args.repeat)
            print(
                f"\nS3 (moto on 127.0.0.1) vs local file: {remote * 1e3:.0f} ms vs "
                f"{local * 1e3:.0f} ms, ratio {remote / local:.2f} "
                f"(overhead {(remote - local) * 1e3:.0f} ms, "
                f"{size / 2**20 / remote:.0f} MiB/s from the server)\n"
                f"s3fs cat of the whole file from the same server: {transfer * 1e3:.0f} ms "
                f"({size / 2**20 / transfer:.0f} MiB/s); compute_stats ÷ cat: "
                f"{remote / transfer:.2f}"
            )


if __name__ == "__main__":
    main()
