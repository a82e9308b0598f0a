"""ZCA whitening of uint8 images in PyTorch: normlab.torch.Whitening against the plain way.

The plain way: ``x.float() / 255`` (a float copy), subtract the mean, ``@ W.T``. normlab's
module converts once into the output buffer, subtracts the mean in integer units in place and
runs one ``nn.Linear``. Best of 5 runs, methods interleaved; the machine may be loaded, so
read the ratios. Run: ``python bench/bench_whitening_torch.py``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import normlab
from normlab.export import to_torch


def best_of(fn, x: torch.Tensor, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    shape = (16, 16, 3)
    train = rng.integers(0, 256, (4096, *shape), dtype=np.uint8)
    w = normlab.Whiten(method="zca").fit(train)
    module = to_torch(w)
    mean = torch.from_numpy(w.mean_ / 255).float()
    matrix = torch.from_numpy(w.matrix_ * 255).float()

    def plain(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1).float() / 255
        return ((flat - mean) @ matrix.T).reshape(x.shape)

    batch = torch.from_numpy(rng.integers(0, 256, (2048, *shape), dtype=np.uint8))
    with torch.no_grad():
        err = (module(batch) - plain(batch)).abs().max().item()
        results: dict[str, list[float]] = {"plain": [], "normlab": []}
        for _ in range(3):
            results["plain"].append(best_of(plain, batch))
            results["normlab"].append(best_of(module, batch))
    plain_s, ours_s = min(results["plain"]), min(results["normlab"])
    print(f"batch {tuple(batch.shape)} uint8, {np.prod(shape)} features, max |diff| {err:.2e}")
    print(f"plain  x.float()/255, - mean, @ W.T : {plain_s * 1e3:8.2f} ms")
    print(
        f"normlab.torch.Whitening              : {ours_s * 1e3:8.2f} ms ({plain_s / ours_s:.2f}x)"
    )


if __name__ == "__main__":
    main()
