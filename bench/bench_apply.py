"""The affine apply step: normlab's float64 subtract-then-scale kernel (rounding once) against
the float32 fused multiply-subtract it replaced and against plain numpy float64.

Prints time per call (best of several) and the ratio to the old fused path, plus the largest
error in float32 ulps of each against the exact float64 value. ``--quick`` uses smaller data.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from normlab import ZScore
from normlab.affine import apply_affine


def _best(func: Callable[[], object], repeat: int) -> float:
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def _ulps(got: np.ndarray, exact: np.ndarray) -> float:
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got.astype(np.float64) - exact) / spacing))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = 6000 if args.quick else 60000
    rng = np.random.default_rng(0)
    cases = {
        "uint8 (n, 784)": rng.integers(0, 256, (n, 784), dtype=np.uint8),
        "int32 1e8+ (n, 784)": (1e8 + rng.integers(0, 100, (n // 4, 784))).astype(np.int32),
        "float32 (n, 784)": rng.normal(3, 2, (n, 784)).astype(np.float32),
        "uint8 HWC channel (n, 28, 28, 3)": rng.integers(0, 256, (n // 3, 28, 28, 3), np.uint8),
    }
    print(
        f"{'input':34} {'kernel ms':>10} {'old fused ms':>13} {'numpy f64 ms':>13}"
        f" {'old/kernel':>11} {'ulps kernel':>12} {'ulps old':>9}"
    )
    for name, x in cases.items():
        axis = "channel" if "channel" in name else "feature"
        z = ZScore(axis=axis).fit(x)
        ndim = x.ndim - 1
        shift, scale = z.broadcast(z.shift_, ndim), z.broadcast(z.scale_, ndim)
        mult, offset = (1.0 / scale).astype(np.float32), (shift / scale).astype(np.float32)

        def kernel(x: np.ndarray = x, shift: np.ndarray = shift, scale: np.ndarray = scale):
            return apply_affine(x, shift, scale, np.dtype(np.float32))

        def old(x: np.ndarray = x, mult: np.ndarray = mult, offset: np.ndarray = offset):
            out = np.multiply(x, mult, dtype=np.float32)
            np.subtract(out, offset, out=out)
            return out

        def plain(x: np.ndarray = x, shift: np.ndarray = shift, scale: np.ndarray = scale):
            return ((x - shift) / scale).astype(np.float32)

        exact = (x.astype(np.float64) - shift) / scale
        t_kernel = _best(kernel, args.repeat)
        t_old = _best(old, args.repeat)
        t_plain = _best(plain, args.repeat)
        print(
            f"{name:34} {t_kernel * 1e3:10.2f} {t_old * 1e3:13.2f} {t_plain * 1e3:13.2f} "
            f"{t_old / t_kernel:11.2f} {_ulps(kernel(), exact):12.2f} {_ulps(old(), exact):9.3g}"
        )


if __name__ == "__main__":
    main()
