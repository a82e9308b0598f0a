"""Co-moments of uint8 60000×784 (MNIST-sized) vs one float64 ``X.T @ X`` on the same data.

Target (issue 5): ``normlab.compute_comoments`` — the whole public call: chunking, per-feature
moments, the exact Gram matrix, then ``cov()`` from exact integers — within 1.5× of one float64
GEMM ``Xf.T @ Xf`` on the data already converted to float64. For information: the same GEMM
including the conversion, and a float32 GEMM (faster, but not exact beyond 258 rows of uint8).
Exactness is checked: the Gram matrix equals the integer reference. Times are the best of
``--repeat`` runs after a warm-up.

Run: ``python bench/run.py --only comoments`` (``--quick`` for 10,000 rows).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

TARGET = 1.5  # compute_comoments + cov() vs one float64 X.T @ X


def best_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import normlab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 rows instead of 60,000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = 10_000 if args.quick else 60_000
    x = np.random.default_rng(0).integers(0, 256, (rows, 784), dtype=np.uint8)
    xf = x.astype(np.float64)
    x32 = x.astype(np.float32)

    def ours() -> object:
        return normlab.compute_comoments(x, progress=False).cov()

    times = {
        "normlab compute_comoments + cov()": best_time(ours, args.repeat),
        "float64 Xf.T @ Xf (Xf ready)": best_time(lambda: xf.T @ xf, args.repeat),
        "float64 incl. conversion": best_time(
            lambda: (lambda a: a.T @ a)(x.astype(np.float64)), args.repeat
        ),
        "float32 X32.T @ X32 (X32 ready)": best_time(lambda: x32.T @ x32, args.repeat),
    }
    gram = normlab.compute_comoments(x, progress=False).gram()
    exact = np.array_equal(
        gram.astype(np.int64), (xf.T @ xf).astype(np.int64)
    )  # uint8: f64 GEMM is exact here
    reference = times["float64 Xf.T @ Xf (Xf ready)"]
    f32 = times["float32 X32.T @ X32 (X32 ready)"]
    print(f"co-moments of uint8 {rows}x784 (best of {args.repeat}; 2-core shared machine)")
    print(f"{'case':<36} {'seconds':>9} {'vs f64 GEMM':>12} {'vs f32 GEMM':>12}")
    for name, seconds in times.items():
        print(f"{name:<36} {seconds:>9.3f} {seconds / reference:>11.2f}x {seconds / f32:>11.2f}x")
    ratio = times["normlab compute_comoments + cov()"] / reference
    verdict = "meets" if ratio <= TARGET else "misses"
    print(
        f"exact Gram matrix: {exact}; normlab / float64 GEMM = {ratio:.2f}x "
        f"({verdict} the {TARGET}x target)"
    )


if __name__ == "__main__":
    main()
