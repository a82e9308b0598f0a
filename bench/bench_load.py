"""Load time of statistics files against their size: seconds per MB must stay flat.

Exact (integer) statistics with sums past int64 (stored as 62-bit limbs) and float
statistics, over a 10x range of file sizes; plus a hostile file declaring 5000 limbs per
sum (decoding was quadratic in the limbs before they were bounded): refused at once.
``--quick`` uses smaller files. Compares with ``safetensors.numpy.load_file`` of the same
file (the floor: reading the tensors alone).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file, save

import normlab
from normlab import Moments
from normlab.errors import FileFormatError
from normlab.io import read_file


def _stats(n_features: int, exact: bool) -> Moments:
    rng = np.random.default_rng(0)
    if not exact:
        return Moments.from_array(rng.normal(size=(20, n_features)))
    m = Moments.from_array(rng.integers(0, 256, (20, n_features), dtype=np.uint8))
    for _ in range(50):  # sums past int64: several limbs each
        m = m + m
    return m


def _best(func, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = [5_000, 15_000, 50_000] if args.quick else [10_000, 31_623, 100_000]
    folder = tempfile.mkdtemp()
    print(f"{'kind':6} {'features':>9} {'MB':>7} {'load s':>8} {'s/MB':>7} {'tensors s/MB':>13}")
    for exact in (True, False):
        for n in sizes:
            path = os.path.join(folder, f"s{n}{exact}.safetensors")
            _stats(n, exact).save(path)
            mb = os.path.getsize(path) / 1e6
            t = _best(lambda path=path: normlab.load(path))
            t0 = _best(lambda path=path: load_file(path))
            kind = "exact" if exact else "float"
            print(f"{kind:6} {n:9d} {mb:7.2f} {t:8.3f} {t / mb:7.3f} {t0 / mb:13.4f}")
    path = os.path.join(folder, "hostile.safetensors")
    _stats(1000, True).save(path)
    meta, tensors = read_file(path)
    tensors["s1_limbs"] = np.zeros((1000, 5000), np.int64)
    with open(path, "wb") as handle:
        handle.write(save(tensors, metadata={"normlab": json.dumps(meta)}))
    start = time.perf_counter()
    try:
        normlab.load(path)
        outcome = "loaded (!)"
    except FileFormatError:
        outcome = "FileFormatError"
    mb = os.path.getsize(path) / 1e6
    print(f"hostile 5000-limb sums, {mb:.1f} MB: {outcome} in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
