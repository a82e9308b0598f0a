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
from .models import build_model, first_layer_weight, input_norm_layer, loss_function
from .probes import PROBES, UpdateProbe

OPTIMIZERS = ("sgd", "momentum", "adam", "gd")  # gd: plain SGD on the full batch
_DIVERGENCE_FACTOR = 10.0  # train loss above 10x its initial value counts as diverged
MOMENTUM = 0.9  # β of --optimizer momentum (heavy ball, PyTorch's SGD form)


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
    every_step: bool = False  # check targets after every step (checkpoints are still stored)
    epsilon: float | None = None  # lsq: also record steps to this absolute excess loss
    input_bn: bool = False  # a BatchNorm layer on the inputs, before the first layer

    def check(self) -> None:
        if not isinstance(self.input_bn, bool):
            raise NormlabError(f"input_bn must be True or False; got {self.input_bn!r}")
        if self.input_bn and self.model == "lsq":
            raise NormlabError(
                "input_bn does not apply to model 'lsq': its optimum and Hessian are those of "
                "the inputs themselves; use model 'linear', 'mlp' or 'cnn' with an input BatchNorm"
            )
        if self.optimizer not in OPTIMIZERS:
            raise NormlabError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoints_per_epoch < 1:
            raise NormlabError(
                "epochs, batch_size and checkpoints_per_epoch must be positive; got "
                f"{self.epochs}, {self.batch_size}, {self.checkpoints_per_epoch}"
            )
        if not 0.0 < self.target <= 1.0:
            raise NormlabError(f"target train accuracy must lie in (0, 1]; got {self.target}")


def _outputs(model: Any, x: Any) -> Any:
    """``model(x)`` in evaluation mode (an input BatchNorm uses its running statistics and
    keeps them), back in training mode afterwards; without gradients."""
    import torch

    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train()


def _evaluate(model: Any, loss_fn: Any, x: Any, y: Any) -> tuple[float, float]:
    import torch

    out = _outputs(model, x)
    loss = float(loss_fn(out, y))
    acc = float((out.argmax(dim=1) == y).to(torch.float64).mean())
    return loss, acc


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def batch_size_of(config: TrainConfig, n: int) -> int:
    """The effective mini-batch size: ``gd`` always uses the whole training split."""
    return n if config.optimizer == "gd" else min(config.batch_size, n)


def check_batches(config: TrainConfig, n: int) -> None:
    """A dense model's input BatchNorm needs two samples in every mini-batch (its variance)."""
    if not config.input_bn or config.model == "cnn":
        return
    batch = batch_size_of(config, n)
    if batch == 1 or n % batch == 1:
        raise NormlabError(
            f"input_bn needs at least 2 samples in every mini-batch; with {n} training samples "
            f"and batch size {batch} one batch holds a single sample: choose another batch size"
        )


def _excess(quadratic: dict[str, Any], model: Any) -> float:
    """``½ tr(E H Eᵀ)`` in float64 for the lsq model's error ``E = [W b] − W*``, plus the
    loss no gradient step can remove (``unreachable``: see ``theory.LsqProblem``)."""
    import torch

    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0]
    with torch.no_grad():
        w = torch.cat([linear.weight, linear.bias[:, None]], dim=1).to(torch.float64)
        err = w - quadratic["w_star"]
        moving = float(0.5 * ((err @ quadratic["hessian"]) * err).sum())
    return moving + float(quadratic.get("unreachable", 0.0))


def make_optimizer(name: str, parameters: Any, lr: float) -> Any:
    """The ``torch.optim`` optimizer of ``name``: Adam (PyTorch's defaults, β = (0.9, 0.999)),
    SGD with momentum :data:`MOMENTUM`, or plain SGD (``sgd`` and ``gd``)."""
    import torch

    if name not in OPTIMIZERS:
        raise NormlabError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if not (lr > 0 and math.isfinite(lr)):
        raise NormlabError(f"learning rate must be positive and finite; got {lr}")
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    momentum = MOMENTUM if name == "momentum" else 0.0
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum)


def train_run(
    data: dict[str, Any],
    *,
    config: TrainConfig,
    lr: float,
    seed: int,
    n_classes: int,
    quadratic: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train once; ``data`` holds float32 tensors ``x_train, y_train, x_test, y_test``.

    Returns a JSON-ready dict: per-epoch ``epochs`` records (samples seen, train/test loss and
    accuracy, probe means), ``checkpoints`` ``[samples, train_loss, train_acc]``,
    ``samples_to_target`` (``None`` if never reached) and ``diverged``. With ``quadratic``
    (float64 tensors ``hessian`` and ``w_star`` of the lsq problem) and ``config.epsilon``,
    also ``steps_to_epsilon``: the first step whose excess loss over the optimum is at most ε,
    and ``final_excess``, the excess at the end (``final_train_loss`` minus the optimum's loss).
    ``max_steps`` stops training after that many steps (a divergence probe).
    """
    import torch

    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    n = len(y_train)
    config.check()
    check_batches(config, n)
    torch.manual_seed(seed)
    model = build_model(
        config.model,
        sample_shape=tuple(x_train.shape[1:]),
        n_classes=n_classes,
        hidden=config.hidden,
        activation=config.activation,
        input_bn=config.input_bn,
    )
    loss_fn = loss_function(config.model, n_classes)
    weight = first_layer_weight(model)
    optimizer = make_optimizer(config.optimizer, model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    # the common-mode direction of what the first layer sees: an input BatchNorm centres it
    mean_input = None if config.input_bn else x_train.reshape(n, -1).mean(dim=0)
    probe = UpdateProbe(mean_direction=mean_input)
    batch_size = batch_size_of(config, n)
    steps_per_epoch = math.ceil(n / batch_size)
    check_every = max(1, steps_per_epoch // config.checkpoints_per_epoch)
    epsilon = config.epsilon if quadratic is not None else None
    track = epsilon is not None

    initial_loss, initial_acc = _evaluate(model, loss_fn, x_train, y_train)
    checkpoints: list[list[float | None]] = [[0, initial_loss, initial_acc]]
    epochs: list[dict[str, Any]] = []
    samples = 0
    samples_to_target = 0 if initial_acc >= config.target else None
    diverged = not math.isfinite(initial_loss)
    limit = _DIVERGENCE_FACTOR * max(initial_loss, 1e-12)
    steps = 0
    steps_to_epsilon = None
    if quadratic is not None and epsilon is not None and _excess(quadratic, model) <= epsilon:
        steps_to_epsilon = 0

    for epoch in range(1, config.epochs + 1):
        if diverged or (max_steps is not None and steps >= max_steps):
            break
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            if max_steps is not None and steps >= max_steps:
                break
            index = order[step * batch_size : (step + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[index]), y_train[index])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            if config.optimizer in ("sgd", "gd"):
                probe.observe(-weight.grad)
                optimizer.step()
            else:
                before = weight.detach().clone()
                optimizer.step()
                probe.observe(weight.detach() - before)
            samples += len(index)
            steps += 1
            if quadratic is not None and epsilon is not None and steps_to_epsilon is None:
                if _excess(quadratic, model) <= epsilon:
                    steps_to_epsilon = steps
            last = step == steps_per_epoch - 1
            stored = (step + 1) % check_every == 0 or last
            if config.every_step and not stored and samples_to_target is None:
                out = _outputs(model, x_train)
                acc = float((out.argmax(dim=1) == y_train).to(torch.float64).mean())
                if not math.isfinite(float(out.abs().max())):
                    diverged = True
                    break
                if acc >= config.target:
                    samples_to_target = samples
            if stored:
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
    extra: dict[str, Any] = {}
    if quadratic is not None and track:
        extra["steps_to_epsilon"] = None if diverged else steps_to_epsilon
        # the excess ½ tr(E H Eᵀ) at the end: equals final_train_loss − loss_star
        extra["final_excess"] = None if diverged else _finite(_excess(quadratic, model))
    bn = input_norm_layer(model)
    if bn is not None:  # what the input BatchNorm learned of the inputs (means over features)
        extra["input_bn_running"] = {
            "mean": _finite(float(bn.running_mean.mean())),
            "var": _finite(float(bn.running_var.mean())),
            "weight": _finite(float(bn.weight.detach().mean())),
        }
    return {
        "lr": lr,
        "seed": seed,
        "diverged": diverged,
        "samples_to_target": None if diverged else samples_to_target,
        **extra,
        "steps": steps,
        "final_train_loss": None if diverged or not epochs else epochs[-1]["train_loss"],
        "final_train_acc": None if diverged or not epochs else epochs[-1]["train_acc"],
        "final_test_acc": None if diverged or not epochs else epochs[-1]["test_acc"],
        "probes": probe_means,
        "epochs": epochs,
        "checkpoints": checkpoints,
    }


def measure_stable_lr(
    data: dict[str, Any],
    *,
    config: TrainConfig,
    n_classes: int,
    guess: float,
    seed: int = 0,
    min_steps: int = 500,
    min_epochs: int = 2,
    rtol: float = 0.02,
) -> dict[str, Any]:
    """The divergence threshold of ``config``'s optimizer, measured by bisection.

    A rate diverges if a run of ``max(min_steps, min_epochs epochs)`` steps hits a non-finite
    loss or a train loss ten times its initial value. Returns the largest stable and smallest
    diverging rate found, their geometric mean ``threshold`` and the horizon in steps.
    """
    n = len(data["y_train"])
    per_epoch = math.ceil(n / batch_size_of(config, n))
    steps = max(min_steps, min_epochs * per_epoch)
    probe = TrainConfig(
        model=config.model,
        epochs=math.ceil(steps / per_epoch),
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        activation=config.activation,
        hidden=config.hidden,
        input_bn=config.input_bn,
        target=1.0,
        checkpoints_per_epoch=max(1, min(per_epoch, 50)),
    )

    def diverges(lr: float) -> bool:
        run = train_run(data, config=probe, lr=lr, seed=seed, n_classes=n_classes, max_steps=steps)
        return bool(run["diverged"])

    low, high = guess, guess
    runs = 0
    while diverges(low):
        runs += 1
        high, low = low, low / 2.0
        if runs > 60:
            raise NormlabError(f"every learning rate down to {low:g} diverges")
    while not diverges(high):
        runs += 1
        low, high = high, high * 2.0
        if runs > 60:
            raise NormlabError(f"no learning rate up to {high:g} diverges")
    while high / low > 1.0 + rtol:
        mid = math.sqrt(low * high)
        if diverges(mid):
            high = mid
        else:
            low = mid
    return {
        "largest_stable": low,
        "smallest_diverging": high,
        "threshold": math.sqrt(low * high),
        "steps": steps,
    }
