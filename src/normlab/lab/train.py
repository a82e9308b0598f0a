"""One training run: a model, one learning rate, one seed; metrics per epoch and probes.

The data are float32 tensors loaded once; mini-batches are drawn by index from a seeded
permutation, so there is no per-sample Python loop. A NaN/inf loss, or a train loss ten
times the initial one at a checkpoint, stops the run cleanly and flags it ``diverged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import NormlabError
from .models import build_model, first_layer_weight, loss_function
from .probes import PROBES, UpdateProbe

OPTIMIZERS = ("sgd", "momentum", "adam")
_DIVERGENCE_FACTOR = 10.0  # train loss above 10x its initial value counts as diverged
_MOMENTUM = 0.9


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the data, the learning rate and the seed."""

    model: str = "mlp"
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"
    activation: str = "tanh"
    hidden: int = 64
    target: float = 0.9
    checkpoints_per_epoch: int = 10

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise NormlabError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoints_per_epoch < 1:
            raise NormlabError(
                f"epochs, batch_size and checkpoints_per_epoch must be positive; got {self.epochs}, "
                f"{self.batch_size}, {self.checkpoints_per_epoch}"
            )
        if not 0.0 < self.target <= 1.0:
            raise NormlabError(f"target train accuracy must lie in (0, 1]; got {self.target}")


def _evaluate(model: Any, loss_fn: Any, x: Any, y: Any) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        out = model(x)
        loss = float(loss_fn(out, y))
        acc = float((out.argmax(dim=1) == y).to(torch.float64).mean())
    return loss, acc


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def train_run(
    data: dict[str, Any],
    *,
    config: TrainConfig,
    lr: float,
    seed: int,
    n_classes: int,
) -> dict[str, Any]:
    """Train once; ``data`` holds float32 tensors ``x_train, y_train, x_test, y_test``.

    Returns a JSON-ready dict: per-epoch ``epochs`` records (samples seen, train/test loss and
    accuracy, probe means), ``checkpoints`` ``[samples, train_loss, train_acc]``,
    ``samples_to_target`` (``None`` if never reached) and ``diverged``.
    """
    import torch

    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    n = len(y_train)
    torch.manual_seed(seed)
    model = build_model(
        config.model,
        sample_shape=tuple(x_train.shape[1:]),
        n_classes=n_classes,
        hidden=config.hidden,
        activation=config.activation,
    )
    loss_fn = loss_function(config.model, n_classes)
    weight = first_layer_weight(model)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        momentum = _MOMENTUM if config.optimizer == "momentum" else 0.0
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    probe = UpdateProbe(mean_direction=x_train.reshape(n, -1).mean(dim=0))
    steps_per_epoch = math.ceil(n / config.batch_size)
    check_every = max(1, steps_per_epoch // config.checkpoints_per_epoch)

    initial_loss, initial_acc = _evaluate(model, loss_fn, x_train, y_train)
    checkpoints: list[list[float]] = [[0, initial_loss, initial_acc]]
    epochs: list[dict[str, Any]] = []
    samples = 0
    samples_to_target = 0 if initial_acc >= config.target else None
    diverged = not math.isfinite(initial_loss)
    limit = _DIVERGENCE_FACTOR * max(initial_loss, 1e-12)

    for epoch in range(1, config.epochs + 1):
        if diverged:
            break
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[index]), y_train[index])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            if config.optimizer == "sgd":
                probe.observe(-weight.grad)
                optimizer.step()
            else:
                before = weight.detach().clone()
                optimizer.step()
                probe.observe(weight.detach() - before)
            samples += len(index)
            last = step == steps_per_epoch - 1
            if (step + 1) % check_every == 0 or last:
                train_loss, train_acc = _evaluate(model, loss_fn, x_train, y_train)
                checkpoints.append([samples, _finite(train_loss), train_acc])
                if not math.isfinite(train_loss) or train_loss > limit:
                    diverged = True
                    break
                if samples_to_target is None and train_acc >= config.target:
                    samples_to_target = samples
        train_loss, train_acc = _evaluate(model, loss_fn, x_train, y_train)
        test_loss, test_acc = _evaluate(model, loss_fn, x_test, y_test)
        record = {
            "epoch": epoch,
            "samples": samples,
            "train_loss": _finite(train_loss),
            "train_acc": train_acc,
            "test_loss": _finite(test_loss),
            "test_acc": test_acc,
            **probe.collect(),
        }
        epochs.append(record)

    probe_means = {}
    for name in PROBES:
        values = [e[name] for e in epochs if e[name] is not None]
        probe_means[name] = sum(values) / len(values) if values else None
    return {
        "lr": lr,
        "seed": seed,
        "diverged": diverged,
        "samples_to_target": None if diverged else samples_to_target,
        "final_train_loss": None if diverged or not epochs else epochs[-1]["train_loss"],
        "final_train_acc": None if diverged or not epochs else epochs[-1]["train_acc"],
        "final_test_acc": None if diverged or not epochs else epochs[-1]["test_acc"],
        "probes": probe_means,
        "epochs": epochs,
        "checkpoints": checkpoints,
    }
