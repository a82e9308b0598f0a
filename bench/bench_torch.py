"""uint8 → float32 normalization of an image batch: normlab's fused apply vs the usual ways.

Run: ``.venv/bin/python bench/bench_torch.py`` (``--quick``: a batch of 32), or
``bench/run.py --only torch``.

* ``float-div-then-normalize``: ``x.float().div(255)``, then ``(y − m) / s`` (new tensors);
* ``torchvision-way``: ``ToDtype(scale=True)`` + ``F.normalize`` as torchvision does them,
  reimplemented here (torchvision is not a dependency): ``x.to(float32).div(255)``, then
  ``sub(mean).div_(std)``;
* ``mixed-dtype-addcmul``: one ``torch.addcmul`` reading uint8 and writing float32 (one pass
  in theory; PyTorch's CPU casting loop is not vectorized, so it loses);
* ``convert-then-mul_-sub_``: the same conversion into the output, then two in-place passes
  (one more pass than the fused multiply-add, and two roundings instead of one);
* ``normlab``: :class:`normlab.torch.Normalize`: one conversion into the output buffer, then
  one in-place fused multiply-add with precomputed ``1/(255·std)`` and ``mean/std``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from normlab.torch import Normalize

MEAN = [0.485, 0.456, 0.406]  # ImageNet's constants, the most common ones
STD = [0.229, 0.224, 0.225]


def best_times(runs: dict[str, Callable[[], torch.Tensor]], repeat: int) -> dict[str, float]:
    """Best of ``repeat`` per method, the methods interleaved so that load drift hits all alike."""
    times = {name: float("inf") for name in runs}
    for fn in runs.values():
        fn()  # warm-up (allocator, thread pool)
    for _ in range(repeat):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def contenders(x: torch.Tensor, layout: str) -> dict[str, Callable[[], torch.Tensor]]:
    shape = (3, 1, 1) if layout == "CHW" else (3,)
    mean = torch.tensor(MEAN).view(shape)
    std = torch.tensor(STD).view(shape)
    mult = (1.0 / (255.0 * torch.tensor(STD, dtype=torch.float64))).float().view(shape)
    neg_offset = (
        (-torch.tensor(MEAN, dtype=torch.float64) / torch.tensor(STD, dtype=torch.float64))
        .float()
        .view(shape)
    )
    normalize = Normalize(MEAN, STD, layout=layout)

    def mixed_addcmul() -> torch.Tensor:
        return torch.addcmul(neg_offset, x, mult, out=torch.empty(x.shape, dtype=torch.float32))

    def convert_mul_sub() -> torch.Tensor:
        out = torch.empty(x.shape, dtype=torch.float32)
        out.copy_(x)
        return out.mul_(mult).sub_(neg_offset.neg())

    return {
        "float-div-then-normalize": lambda: (x.float().div(255) - mean) / std,
        "torchvision-way": lambda: x.to(torch.float32).div(255).sub(mean).div_(std),
        "mixed-dtype-addcmul": mixed_addcmul,
        "convert-then-mul_-sub_": convert_mul_sub,
        "normlab": lambda: normalize(x),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch of 32")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    batch = 32 if args.quick else args.batch
    torch.manual_seed(0)
    print(
        f"uint8 -> float32 normalize, batch {batch}x3x224x224, "
        f"{torch.get_num_threads()} threads, best of {args.repeat}"
    )
    print(f"{'layout':<7}{'method':<27}{'seconds':>9}{'GB/s out':>10}{'normlab is':>12}")
    for layout in ("CHW", "HWC"):
        shape = (batch, 3, 224, 224) if layout == "CHW" else (batch, 224, 224, 3)
        x = torch.randint(0, 256, shape, dtype=torch.uint8)
        runs = contenders(x, layout)
        reference = runs["normlab"]()
        for fn in runs.values():
            torch.testing.assert_close(fn(), reference, rtol=1e-5, atol=1e-5)
        times = best_times(runs, args.repeat)
        for name, seconds in times.items():
            gbs = x.numel() * 4 / seconds / 1e9
            print(
                f"{layout:<7}{name:<27}{seconds:>9.4f}{gbs:>10.2f}"
                f"{seconds / times['normlab']:>11.2f}x"
            )


if __name__ == "__main__":
    main()
