"""The lab's training loop vs the usual PyTorch ``DataLoader`` loop, one epoch of the MNIST MLP.

Run: ``.venv/bin/python bench/bench_lab.py`` (``--quick``: fewer repeats), or
``bench/run.py --only lab``.

* ``dataloader``: ``DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)`` — per-sample
  indexing and a collate per batch, the way most training scripts read data; no probes;
* ``lab, 1 eval`` / ``lab, 10 evals``: :func:`normlab.lab.train.train_run` — tensors loaded
  once, each batch one index gather, *with* the first-layer probes on every step, and one or
  ten whole-train-set evaluations per epoch (the lab's default is ten, for samples-to-target)
  plus one test evaluation.

Both: the same model (784-64-10 tanh MLP), plain SGD, batch 32, one thread, 4,000 samples.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import normlab.schemes as schemes
from normlab.lab import load_dataset
from normlab.lab.models import build_model
from normlab.lab.train import TrainConfig, train_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    torch.set_num_threads(1)
    ds = load_dataset("mnist5k", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norm = schemes.get("feature").fit(ds.x_train)
    data = {
        "x_train": torch.as_tensor(np.asarray(norm.transform(ds.x_train), dtype=np.float32)),
        "y_train": torch.as_tensor(ds.y_train),
        "x_test": torch.as_tensor(np.asarray(norm.transform(ds.x_test), dtype=np.float32)),
        "y_test": torch.as_tensor(ds.y_test),
    }
    n = len(ds.y_train)

    def lab(checkpoints: int) -> None:
        config = TrainConfig(epochs=1, checkpoints_per_epoch=checkpoints)
        train_run(data, config=config, lr=0.1, seed=0, n_classes=10)

    def dataloader() -> None:
        torch.manual_seed(0)
        model = build_model("mlp", sample_shape=(28, 28), n_classes=10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data["x_train"], data["y_train"]),
            batch_size=32,
            shuffle=True,
        )
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()

    runs = {
        "dataloader": dataloader,
        "lab, 1 eval": lambda: lab(1),
        "lab, 10 evals": lambda: lab(10),
    }
    best = {name: float("inf") for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"one epoch, {n} samples, batch 32, 1 thread (best of {repeat})")
    print(f"{'method':<16}{'seconds':>10}{'samples/s':>12}{'vs dataloader':>15}")
    for name, seconds in best.items():
        print(
            f"{name:<16}{seconds:>10.3f}{n / seconds:>12,.0f}{best['dataloader'] / seconds:>14.2f}x"
        )


if __name__ == "__main__":
    main()
