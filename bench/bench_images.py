"""Image folders: decode-only ceiling vs the usual Pillow loop vs normlab, on the same files.

``make_bench_images(root)`` writes (once, then reuses) 2,000 JPEGs (224x224 RGB, quality 90)
and 20,000 PNGs (28x28 gray) under ``root``; other benchmarks reuse the same files.
Run: ``python bench/bench_images.py`` (``--quick`` for a smaller subset).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

N_JPEG = 2000
N_PNG = 20000
JPEG_SIZE = (224, 224)
PNG_SIZE = (28, 28)


def bench_root() -> Path:
    """The cache folder in the system temp dir (shared by every benchmark that needs images)."""
    return Path(tempfile.gettempdir()) / "normlab-bench-images"


def _smooth_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like image: low-frequency colour fields plus mild noise (not pure noise)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.empty((h, w, 3))
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.3)
        out[..., c] = 128 + 90 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    out += rng.normal(0, 12, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_bench_images(root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the benchmark's image sets under ``root`` once; returns ``(jpeg_dir, png_dir)``.

    A marker file records completion, so an interrupted run starts over and a finished one is
    reused as is.
    """
    from PIL import Image

    root = Path(root) if root is not None else bench_root()
    jpeg_dir, png_dir = root / "jpeg224", root / "png28"
    for folder, n, write in (
        (jpeg_dir, N_JPEG, "jpeg"),
        (png_dir, N_PNG, "png"),
    ):
        marker = folder / ".complete"
        if marker.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0 if write == "jpeg" else 1)
        for i in range(n):
            if write == "jpeg":
                img = Image.fromarray(_smooth_rgb(rng, *JPEG_SIZE), "RGB")
                img.save(folder / f"{i:05d}.jpg", quality=90)
            else:
                digit = (_smooth_rgb(rng, *PNG_SIZE)[..., 0] > 170).astype(np.uint8) * 255
                Image.fromarray(digit, "L").save(folder / f"{i:05d}.png")
        marker.write_text(str(n))
    return jpeg_dir, png_dir


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def decode_only_jpeg(files: list[str]) -> None:
    """The ceiling: the same decoder normlab uses (simplejpeg), nothing else."""
    import simplejpeg

    for f in files:
        simplejpeg.decode_jpeg(_read(f), colorspace="RGB")


def decode_only_png(files: list[str]) -> None:
    """The ceiling: the same decoder normlab uses (OpenCV, IMREAD_UNCHANGED), nothing else."""
    import cv2

    for f in files:
        cv2.imdecode(np.frombuffer(_read(f), np.uint8), cv2.IMREAD_UNCHANGED)


def pillow_loop(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The usual user loop: Pillow -> float64 array -> running per-channel sums."""
    from PIL import Image

    total = total_sq = 0.0
    count = 0
    for f in files:
        with Image.open(f) as img:
            x = np.asarray(img, dtype=np.float64)
        x = x.reshape(-1, x.shape[2] if x.ndim == 3 else 1)
        total = total + x.sum(axis=0)
        total_sq = total_sq + (x * x).sum(axis=0)
        count += x.shape[0]
    mean = total / count
    return mean, np.sqrt(total_sq / count - mean**2)


def normlab_serial(files: list[str], axis: str = "channel"):
    import normlab

    return normlab.compute_stats(files, axis, progress=False)


def _best_interleaved(
    methods: dict, files: list[str], repeat: int
) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each method over ``repeat`` rounds, the methods taking turns
    in each round (so a busy spell on a shared machine does not fall on one method only).

    Every method runs on one thread, so its CPU time is what it would take on an idle core;
    on a shared machine the wall-clock times also count the time other jobs held the core.
    """
    best = {name: (float("inf"), float("inf")) for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn(files)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the files, one repeat")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args(argv)
    from normlab import kernels

    jpeg_dir, png_dir = make_bench_images()
    repeat = 1 if args.quick else args.repeat
    share = 4 if args.quick else 1
    kernels.set_threads(1)  # strictly serial: one core, like the decode-only loop
    print(
        f"normlab image sources ({os.cpu_count()} CPUs; numba kernels on 1 thread; "
        f"best of {repeat})"
    )
    print(
        f"{'':<56}{'---------- wall clock ----------':>34}"
        f"{'------------ CPU time ------------':>36}"
    )
    header = f"{'img/s':>10}{'vs decode':>11}{'vs Pillow':>11}"
    print(f"{'set':<22}{'method':<34}{header}  {header}")
    cases = (
        (
            "JPEG 224x224 RGB q90",
            sorted(map(str, jpeg_dir.glob("*.jpg"))),
            decode_only_jpeg,
            "simplejpeg",
        ),
        ("PNG 28x28 grey", sorted(map(str, png_dir.glob("*.png"))), decode_only_png, "OpenCV"),
    )
    for name, files, decode, decoder in cases:
        files = files[: len(files) // share]
        for f in files:  # warm the page cache: every method reads the same cached bytes
            _read(f)
        normlab_serial(files[:50])  # warm numba's compiled kernels
        methods = {
            f"decode only ({decoder})": decode,
            "Pillow -> float64 -> sums": pillow_loop,
            "normlab serial, axis=channel": normlab_serial,
            "normlab serial, axis=global": lambda fs: normlab_serial(fs, "global"),
            "normlab serial, axis=feature": lambda fs: normlab_serial(fs, "feature"),
        }
        times = _best_interleaved(methods, files, repeat)
        decode_t, pillow_t = times[f"decode only ({decoder})"], times["Pillow -> float64 -> sums"]
        for method, t in times.items():
            cells = [
                f"{len(files) / t[k]:>10.0f}{decode_t[k] / t[k]:>10.2f}x"
                f"{pillow_t[k] / t[k]:>10.2f}x"
                for k in (0, 1)
            ]
            print(f"{name:<22}{method:<34}{cells[0]}  {cells[1]}")


if __name__ == "__main__":
    main()
