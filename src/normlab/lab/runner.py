"""Compare normalization schemes on real training runs: the lab's entry point, :func:`compare`.

For each scheme: fit the normalizer on the training split, measure the Hessian proxy
``E[z zᵀ]`` of the normalized inputs with the bias input included (``z = (x, 1)``), then
train every seed over a log grid of learning rates centred on ``2/λ_max`` of it — the
largest rate plain gradient descent tolerates on a linear unit with a bias (Efficient
BackProp §5) — and widen the grid until the best rate lies strictly inside. The schemes
progress together (grid point by grid point), so a stopped run still compares all of them,
and ``resume=True`` continues it from its ``results.json``. Before training, the
predictions of :mod:`normlab.lab.theory` are made from the statistics alone; they are
stored beside the measured values under ``results["theory"]``.
One fixed grid for all schemes would mostly measure the grid: on raw 0..255 MNIST
λ_max ≈ 2.5e6, so any rate above 1e-6 diverges there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import schemes as scheme_registry
from ..errors import NormlabError, NormlabWarning
from ..io import atomic_write, json_finite
from ..progress import progress_bar
from . import theory
from .datasets import Dataset, load_dataset
from .models import MODELS, build_model
from .probes import PROBES, diagonal_spread, second_moment_spectrum, single_signed_samples
from .train import MOMENTUM, TrainConfig, batch_size_of, check_batches, train_run

RESULTS_FILE = "results.json"
TIMINGS_FILE = "timings.json"
RESULTS_VERSION = 2
_EVERY_STEP_LIMIT = 2_000_000  # train samples × features up to which targets are checked every step
_AGREE = 1.25  # predicted and measured agree within this factor
_ADAM_CENTER = 1e-3  # Adam rescales gradients, so its grid is centred on its usual rate instead
_BN_EPS = 1e-5  # torch.nn.BatchNorm's default eps
_SIGNIFICANT_DIGITS = 7
# samples × directions² above which the stability prediction for the lab's batches is left out
# (None): its epoch products grow with it; mnist5k (4,000 × 646²) took 20–83 s per scheme
_EPOCH_PREDICTION_LIMIT = 4e9


def compare(
    dataset: str | None = "digits",
    *,
    schemes: Sequence[str] | None = None,
    model: str = "mlp",
    seeds: int = 3,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 32,
    target: float = 0.9,
    optimizer: str = "sgd",
    activation: str = "tanh",
    hidden: int = 64,
    input_bn: bool = False,
    lr_min: float = 1 / 16,
    lr_max: float = 16.0,
    lr_factor: float = 2.0,
    max_extensions: int = 12,
    checkpoints_per_epoch: int = 10,
    every_step: bool | None = None,
    epsilon: float = 0.01,
    test_fraction: float = 0.2,
    offset: float = 0.0,
    n_samples: int | None = None,
    data: str | Path | None = None,
    labels: str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    threads: int = 1,
    progress: bool | None = None,
    report: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` under each normalization scheme and compare how fast it learns.

    Parameters
    ----------
    dataset : str, optional
        ``digits``, ``mnist5k``, ``lecun-gauss``; or ``None`` with ``data``/``labels``.
    schemes : sequence of str
        Names from :mod:`normlab.schemes`, each fitted on the training split only; default: the
        registry's default set (``normlab.schemes.where(in_default_set=True)``).
    model : {"linear", "lsq", "mlp", "cnn"}
        See :mod:`normlab.lab.models`.
    seeds : int
        Runs per learning rate (initialisation and mini-batch order ``seed .. seed+seeds-1``);
        ``seed`` also shuffles the train/test split.
    epochs, batch_size : int
        Passes over the training split and mini-batch size (``batch_size >= n_train`` is
        full-batch gradient descent).
    target : float
        Train accuracy whose first crossing gives ``samples_to_target``.
    checkpoints_per_epoch : int
        How often per epoch the learning curve is stored.
    every_step : bool, optional
        Check the target after every step, so that ``samples_to_target`` is exact (default:
        when training samples × features is at most 2 million); otherwise at checkpoints.
    epsilon : float
        ``lsq`` only: the absolute excess loss over the optimum whose first crossing gives
        ``steps_to_epsilon``, the metric the theory predicts (and ranks the rates by).
    optimizer : {"sgd", "momentum", "adam", "gd"}
        Plain SGD by default, where the effect is cleanest; ``gd`` is full-batch descent;
        ``momentum`` is SGD with momentum β = 0.9.
    input_bn : bool
        Put a BatchNorm layer on the inputs, before the first layer (per feature; per channel
        for the cnn). The grid centre and the predictions then use the statistics of what the
        first layer sees at initialization: the scheme's output standardized per feature (per
        channel for the cnn), as the BatchNorm layer standardizes it. Not for ``lsq``.
    lr_min, lr_max, lr_factor : float
        The initial grid: the centre times ``lr_factor**k`` from ``lr_min`` to ``lr_max``. The
        centre is ``2/λ_max`` for sgd and gd, ``(1 − β)·2/λ_max`` for momentum (the same
        effective step ``η/(1 − β)``), and 1e-3 for adam.
    max_extensions : int
        How many grid points may be added per scheme while the best rate sits at an edge.
    out : path, optional
        Folder for ``results.json`` (rewritten atomically after every finished run, so an
        interrupt keeps them), ``timings.json``, the plots and ``report.html``. It must not
        exist unless ``overwrite`` or ``resume``; only these files are ever replaced.
    resume : bool
        Continue a stopped run in ``out`` from its ``results.json``: finished runs are kept,
        the rest trained; refused if any option differs from the stopped run's.
    log : callable, optional
        Receives the plan, the time estimate and one line per finished run.
    threads : int
        ``torch.set_num_threads``; results are deterministic for a seed and thread count.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    torch = _torch()
    if schemes is None:
        schemes = scheme_registry.where(in_default_set=True)
    names = list(dict.fromkeys(schemes))
    if not names:
        raise NormlabError("no schemes given; choose from: " + ", ".join(scheme_registry.names()))
    valid = scheme_registry.names()
    unknown = [s for s in names if s not in valid]
    if unknown:
        raise NormlabError(f"unknown scheme {unknown[0]!r}; choose from: {', '.join(valid)}")
    if model not in MODELS:
        raise NormlabError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    if seeds < 1 or threads < 1:
        raise NormlabError(f"seeds and threads must be positive; got {seeds} and {threads}")
    if not (0 < lr_min <= lr_max and lr_factor > 1 and max_extensions >= 0):
        raise NormlabError(
            f"learning-rate grid needs 0 < lr_min <= lr_max and lr_factor > 1; got "
            f"{lr_min}, {lr_max}, {lr_factor}"
        )
    config = TrainConfig(
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        activation=activation,
        hidden=hidden,
        target=target,
        checkpoints_per_epoch=checkpoints_per_epoch,
        input_bn=input_bn,
    )
    config.check()
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise NormlabError(f"epsilon must be a positive excess loss; got {epsilon}")
    if resume and overwrite:
        raise NormlabError("--resume continues a run and --overwrite replaces it: pass one")
    if resume and (out is None or not (Path(out) / RESULTS_FILE).is_file()):
        raise NormlabError(
            f"--resume needs the folder of a stopped run holding {RESULTS_FILE}; "
            f"{out} has none: run without --resume"
        )
    if out is not None and Path(out).exists():
        if not Path(out).is_dir():
            raise NormlabError(f"--out {out} is a file, not a folder: choose another --out")
        if not (overwrite or resume):
            raise NormlabError(
                f"output folder {out} exists; pass --overwrite to replace its report files, or "
                "--resume to continue the run in it"
            )
    ds = load_dataset(
        dataset,
        seed=seed,
        test_fraction=test_fraction,
        offset=offset,
        n_samples=n_samples,
        data=data,
        labels=labels,
    )
    largest = max(
        float(np.abs(part).max(initial=0.0)) if part.dtype.kind == "f" else 0.0
        for part in (ds.x_train, ds.x_test)
    )
    if largest > float(np.finfo(np.float32).max):
        raise NormlabError(
            f"the inputs reach {largest:.3g}, beyond float32 (up to 3.4e38), in which the lab "
            "trains: the raw scheme's inputs would be inf; rescale the data first "
            f"(e.g. x / 1e{int(math.log10(largest)) - 1})"
        )
    # bad shapes fail before anything is written
    build_model(
        model,
        sample_shape=ds.sample_shape,
        n_classes=ds.n_classes,
        hidden=hidden,
        activation=activation,
        input_bn=input_bn,
    )
    check_batches(config, len(ds.y_train))
    prepared = {
        name: _prepare_scheme(name, ds, torch, model, input_bn) for name in names
    }  # so do unfit schemes
    if every_step is None:
        every_step = len(ds.y_train) * ds.n_features <= _EVERY_STEP_LIMIT
    config = dataclasses.replace(
        config, every_step=every_step, epsilon=epsilon if model == "lsq" else None
    )
    torch.set_num_threads(threads)

    k_low = round(math.log(lr_min) / math.log(lr_factor))
    k_high = round(math.log(lr_max) / math.log(lr_factor))
    results: dict[str, Any] = {
        "format": "normlab-lab-results",
        "version": RESULTS_VERSION,
        "complete": False,
        "command": command,
        "config": {
            "dataset": ds.name,
            "model": model,
            "schemes": names,
            "seeds": seeds,
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "target": target,
            "optimizer": optimizer,
            "activation": activation,
            "hidden": hidden,
            "input_bn": input_bn,
            "lr_min": lr_min,
            "lr_max": lr_max,
            "lr_factor": lr_factor,
            "max_extensions": max_extensions,
            "checkpoints_per_epoch": checkpoints_per_epoch,
            "every_step": every_step,
            "epsilon": epsilon,
            "test_fraction": test_fraction,
            "offset": offset,
            "n_samples": n_samples,
            "threads": threads,
        },
        "dataset": ds.summary(),
        "diagnosis": _diagnosis(ds),
        "theory": _predict(prepared, ds, config, seeds=seeds, seed=seed),
        "schemes": {},
        "runs": [],
    }
    timings: dict[str, Any] = {"runs": []}
    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if resume:
        done, timings = _previous(Path(str(out)), results)
    out_dir = _prepare_out(out)
    # a resumed run's total counts the stopped run's time too
    started = time.perf_counter() - float(timings.get("total_seconds", 0.0))
    planned = len(names) * (k_high - k_low + 1) * seeds
    say = log or (lambda text: None)
    say(
        f"plan: {len(names)} scheme(s) × {k_high - k_low + 1} learning rates × {seeds} seed(s) = "
        f"{planned} runs, more while a best rate sits at a grid edge"
        + (f"; {len(done)} already finished in {out}" if done else "")
    )
    try:
        with progress_bar(
            planned, f"{ds.name}/{model}: training runs", enabled=progress
        ) as advance:
            _search(
                prepared,
                ds,
                config,
                results,
                timings,
                started,
                out_dir,
                advance,
                done=done,
                say=say,
                optimizer=optimizer,
                seeds=seeds,
                seed=seed,
                k_low=k_low,
                k_high=k_high,
                lr_factor=lr_factor,
                max_extensions=max_extensions,
            )
    except KeyboardInterrupt:
        if out_dir is not None and report:
            _report(results, out_dir)  # the finished runs are already in results.json
        raise
    results["complete"] = True
    _write(out_dir, results, timings, started)
    if out_dir is not None and report:
        _report(results, out_dir)
    return results


def _diagnosis(ds: Dataset) -> dict[str, Any] | None:
    """``normlab diagnose`` of the training split: the predictions the runs are measured against."""
    from ..diagnostics import diagnose

    try:
        found = diagnose(ds.x_train, progress=False)
    except NormlabError as exc:  # e.g. too few samples: the lab still runs
        return {"error": str(exc)}
    return {k: found[k] for k in ("spectrum", "predictions", "recommendation")}


def _report(results: dict[str, Any], out_dir: Path) -> None:
    from .report import write_report

    write_report(results, out_dir)


def _search(
    prepared: dict[str, dict[str, Any]],
    ds: Dataset,
    config: TrainConfig,
    results: dict[str, Any],
    timings: dict[str, Any],
    started: float,
    out_dir: Path | None,
    advance: Any,
    *,
    done: dict[tuple[str, int, int], dict[str, Any]],
    say: Callable[[str], None],
    optimizer: str,
    seeds: int,
    seed: int,
    k_low: int,
    k_high: int,
    lr_factor: float,
    max_extensions: int,
) -> None:
    """All schemes together, grid point by grid point; widen each grid until its best is inside.

    The initial grid is visited from its centre outwards, every scheme at each point before
    the next, so that a stopped run compares all schemes on the rates tried so far.
    """
    states: dict[str, dict[str, Any]] = {}
    middle = (k_low + k_high) / 2
    initial = sorted(range(k_low, k_high + 1), key=lambda k: (abs(k - middle), k))
    for name, scheme in prepared.items():
        info = scheme["info"]
        results["schemes"][name] = info
        center = _grid_center(optimizer, info["lr_bound"])
        info["grid_center_rule"] = _GRID_RULES[optimizer]
        if center is None:
            info["skipped"] = "E[z zᵀ] is zero: nothing to learn from"
            advance(0, more=-(k_high - k_low + 1) * seeds)
            continue
        states[name] = {"center": center, "by_k": {}, "pending": list(initial), "extensions": 0}
    first_runs: list[float] = []
    n_done = 0
    while any(state["pending"] for state in states.values()):
        longest = max(len(state["pending"]) for state in states.values())
        for i in range(longest):
            for name, state in states.items():
                if i >= len(state["pending"]):
                    continue
                k = state["pending"][i]
                lr = float(state["center"] * lr_factor**k)
                state["by_k"][k] = []
                for s in range(seed, seed + seeds):
                    t0 = time.perf_counter()
                    run = done.get((name, k, s))
                    fresh = run is None
                    if run is None:
                        run = _rounded(
                            train_run(
                                prepared[name]["tensors"],
                                config=config,
                                lr=lr,
                                seed=s,
                                n_classes=ds.n_classes,
                                quadratic=prepared[name].get("quadratic"),
                            )
                        )
                        run = {"scheme": name, "grid_index": k, **run}
                        timings["runs"].append(
                            {
                                "scheme": name,
                                "lr": lr,
                                "seed": s,
                                "seconds": time.perf_counter() - t0,
                            }
                        )
                    state["by_k"][k].append(run)
                    results["runs"].append(run)
                    _write(out_dir, results, timings, started)
                    advance(1)
                    n_done += 1
                    say(_run_line(run, n_done, fresh))
                    if fresh:
                        first_runs.append(time.perf_counter() - t0)
                        if len(first_runs) == len(states):
                            per_run = sum(first_runs) / len(first_runs)
                            left = sum(len(st["pending"]) for st in states.values()) * seeds
                            say(
                                f"estimate: {per_run:.2g} s per run from the first "
                                f"{len(first_runs)}, about {_duration(per_run * left)} in all"
                            )
        for name, state in states.items():
            if not state["pending"]:
                continue
            by_k = state["by_k"]
            best = _best(by_k, config.model)
            state["pending"] = []
            if state["extensions"] < max_extensions and best in (min(by_k), max(by_k)):
                state["pending"] = [best - 1 if best == min(by_k) else best + 1]
                state["extensions"] += 1
                advance(0, more=seeds)
            else:
                _summarize(results["schemes"][name], by_k, state["center"], lr_factor, config.model)
                _measured(results, prepared, name, config, ds)


def _run_line(run: dict[str, Any], index: int, fresh: bool) -> str:
    if run["diverged"]:
        outcome = "diverged"
    elif "steps_to_epsilon" in run:
        outcome = (
            f"steps to ε {run['steps_to_epsilon']}"
            if run["steps_to_epsilon"] is not None
            else "ε not reached"
        )
    else:
        outcome = (
            f"samples to target {run['samples_to_target']:,}"
            if run["samples_to_target"] is not None
            else "target not reached"
        )
    where = "" if fresh else " (from the stopped run)"
    return f"run {index}: {run['scheme']} lr {run['lr']:.4g} seed {run['seed']}: {outcome}{where}"


_GRID_RULES = {
    "sgd": "2/λ_max of the augmented second moment",
    "gd": "2/λ_max of the augmented second moment",
    "momentum": f"(1 − β)·2/λ_max, β = {MOMENTUM}: the effective step η/(1 − β) of SGD's centre",
    "adam": f"{_ADAM_CENTER:g}, Adam's usual rate (it rescales each gradient coordinate)",
}


def _grid_center(optimizer: str, lr_bound: float | None) -> float | None:
    """Where a scheme's learning-rate grid is centred for ``optimizer`` (see ``_GRID_RULES``)."""
    if lr_bound is None:
        return None  # nothing to learn from: the scheme is skipped
    if optimizer == "adam":
        return _ADAM_CENTER
    if optimizer == "momentum":
        return (1.0 - MOMENTUM) * lr_bound
    return lr_bound


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _previous(
    out_dir: Path, results: dict[str, Any]
) -> tuple[dict[tuple[str, int, int], dict[str, Any]], dict[str, Any]]:
    """The finished runs of a stopped run in ``out_dir``, if its options match this one's."""
    path = out_dir / RESULTS_FILE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NormlabError(f"--resume: cannot read {path} ({exc}); run with --overwrite") from None
    if old.get("format") != "normlab-lab-results" or old.get("version") != RESULTS_VERSION:
        raise NormlabError(
            f"--resume: {path} is not a results file of this normlab version; run with --overwrite"
        )
    # options added since a stopped run was written default to what that run did
    mine, theirs = _rounded(results["config"]), {"input_bn": False, **old.get("config", {})}
    differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if _rounded(results["dataset"]) != old.get("dataset"):
        differ.append("dataset")
    if differ:
        changes = ", ".join(f"{k}: {theirs.get(k)!r} then, {mine.get(k)!r} now" for k in differ)
        raise NormlabError(
            f"--resume: the options differ from the stopped run in {out_dir} ({changes}); "
            "rerun with the same options, or use --overwrite to start again"
        )
    done = {(r["scheme"], r["grid_index"], r["seed"]): r for r in old.get("runs", [])}
    try:
        timings = json.loads((out_dir / TIMINGS_FILE).read_text())
    except (OSError, ValueError):
        timings = {"runs": []}
    return done, timings


def _torch() -> Any:
    from ..errors import require

    return require("torch", "lab")


def _prepare_out(out: str | Path | None) -> Path | None:
    """The output folder, created once the data loaded (``compare`` checked ``out`` first)."""
    if out is None:
        return None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def batchnorm_view(x: np.ndarray, model: str = "mlp") -> np.ndarray:
    """What an input BatchNorm layer passes on at initialization (scale 1, shift 0), float64.

    Each feature (each channel of image-shaped inputs for the cnn) standardized with the
    statistics of ``x``: ``(x − μ)/√(σ² + eps)``, eps = 1e-5 as in PyTorch. A constant
    feature becomes 0. Mini-batches use their own μ and σ², close to these.
    """
    arr = np.asarray(x, dtype=np.float64)
    if model == "cnn":
        axes = tuple(range(arr.ndim - 1)) if arr.ndim == 4 else tuple(range(arr.ndim))
    else:
        axes = (0,)
    mean = arr.mean(axis=axes, keepdims=True)
    var = arr.var(axis=axes, keepdims=True)
    return np.asarray((arr - mean) / np.sqrt(var + _BN_EPS))


def _prepare_scheme(
    name: str, ds: Dataset, torch: Any, model: str = "mlp", input_bn: bool = False
) -> dict[str, Any]:
    """Fit on the training split only; float32 tensors once; probes of the normalized inputs.

    With ``input_bn`` the spectrum, the grid centre and the predictions describe what the
    first layer sees: the BatchNorm layer's output at initialization (:func:`batchnorm_view`).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NormlabWarning)
        normalizer = scheme_registry.get(name)
        normalizer.fit(ds.x_train)
        x_train = normalizer.transform(ds.x_train)
        x_test = normalizer.transform(ds.x_test)
    x_first = batchnorm_view(x_train, model) if input_bn else x_train
    spectrum = second_moment_spectrum(x_first)
    lam = theory.augmented_lambda_max(x_first)
    info = {
        "normalizer": repr(normalizer),
        "lambda_max": spectrum["lambda_max"],
        "lambda_max_augmented": lam,
        "lambda_min": spectrum["lambda_min"],
        "trace": spectrum["trace"],
        "lr_bound": 2.0 / lam if lam > 0 else None,
        "input_mean_abs": float(np.abs(np.asarray(x_train, dtype=np.float64).mean())),
        "input_range": [float(np.min(x_train)), float(np.max(x_train))],
        "data_range": [float(np.min(ds.x_train)), float(np.max(ds.x_train))],
        "first_layer_inputs": "the input BatchNorm's output at initialization"
        if input_bn
        else "the scheme's output",
        "diagonal": diagonal_spread(x_first),
        "batch1_single_signed": single_signed_samples(x_first),
        "warnings": sorted(
            {str(w.message) for w in caught if issubclass(w.category, NormlabWarning)}
        ),
    }
    tensors = {
        "x_train": torch.as_tensor(np.ascontiguousarray(x_train, dtype=np.float32)),
        "y_train": torch.as_tensor(ds.y_train),
        "x_test": torch.as_tensor(np.ascontiguousarray(x_test, dtype=np.float32)),
        "y_test": torch.as_tensor(ds.y_test),
    }
    prepared: dict[str, Any] = {"info": info, "tensors": tensors, "x_train": x_first}
    if model == "lsq" and lam > 0:
        problem = theory.lsq_problem(x_train, ds.y_train, ds.n_classes)
        prepared["problem"] = problem
        prepared["quadratic"] = {
            "hessian": torch.as_tensor(problem.hessian),
            "w_star": torch.as_tensor(problem.w_star),
            "unreachable": problem.unreachable,
        }
    return prepared


def _initial_layer(
    ds: Dataset, config: TrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The first dense layer's weight and bias as ``train_run`` initializes them for ``seed``."""
    import torch

    torch.manual_seed(seed)
    net = build_model(
        config.model,
        sample_shape=ds.sample_shape,
        n_classes=ds.n_classes,
        hidden=config.hidden,
        activation=config.activation,
        input_bn=config.input_bn,
    )
    first = next(m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    if not isinstance(first, torch.nn.Linear):
        return None
    return first.weight.detach().double().numpy(), first.bias.detach().double().numpy()


def _predict(
    prepared: dict[str, dict[str, Any]], ds: Dataset, config: TrainConfig, *, seeds: int, seed: int
) -> dict[str, Any]:
    """The predictions made from the statistics (and the seeds' initial weights) alone."""
    batch = batch_size_of(config, len(ds.y_train))
    inits = [_initial_layer(ds, config, s) for s in range(seed, seed + seeds)]
    per_scheme: dict[str, Any] = {}
    for name, scheme in prepared.items():
        lam = scheme["info"]["lambda_max_augmented"]
        entry: dict[str, Any] = {
            "lambda_max_augmented": lam,
            "lr_gd_max": 2.0 / lam if lam > 0 else None,
        }
        problem = scheme.get("problem")
        if problem is not None:
            entry["kappa99"] = theory.kappa99(problem.lam)
            # the optimum over all directions: the excess (measured and predicted) counts from it
            entry["loss_star"] = problem.loss_star - problem.unreachable
            entry["loss_unreachable"] = problem.unreachable
            if config.optimizer in ("sgd", "gd"):
                entry["lr_sgd_max_predicted"] = theory.sgd_stable_lr(problem, batch)
                entry["lr_sgd_max_top_direction"] = theory.sgd_top_direction_lr(problem, batch)
                # the lab's batches: one permutation per epoch (2/λ_max at full batch)
                size = problem.n * problem.projected.shape[1] ** 2
                entry["lr_sgd_max_predicted_epoch"] = (
                    theory.sgd_stable_lr_epoch(problem, batch)
                    if size <= _EPOCH_PREDICTION_LIMIT or batch >= problem.n
                    else None
                )
        elif lam > 0:
            flat = np.asarray(scheme["x_train"], dtype=np.float64).reshape(len(ds.y_train), -1)
            labelled = theory.lsq_problem(flat, ds.y_train, ds.n_classes)
            entry["kappa99"] = theory.kappa99(labelled.lam)
            entry["signal_half_steps"] = theory.signal_half_steps(labelled)
        layers = [i for i in inits if i is not None]
        if config.model in ("mlp", "cnn") and len(layers) == len(inits):
            found = [theory.saturation(scheme["x_train"], w, b) for w, b in layers]
            entry["saturation"] = {k: float(np.mean([f[k] for f in found])) for k in found[0]}
            key = "tanh_saturated" if config.activation == "tanh" else "relu_dead"
            entry["saturated_share"] = entry["saturation"][f"{key}_predicted"]
        if config.model != "lsq":
            entry["ranking_cost"] = theory.ranking_cost(
                entry.get("signal_half_steps"), entry.get("saturated_share", 0.0)
            )
        per_scheme[name] = entry
    out: dict[str, Any] = {
        "formulas": theory.describe(),
        "batch_size": batch,
        "epsilon": config.epsilon,
        "schemes": per_scheme,
    }
    if config.model == "lsq":
        out["initial_components"] = "per seed, from the seed's initial weights"
    return out


def _measured(
    results: dict[str, Any],
    prepared: dict[str, dict[str, Any]],
    name: str,
    config: TrainConfig,
    ds: Dataset,
) -> None:
    """Once a scheme's search is over: the prediction at its chosen rate beside the measurement."""
    info = results["schemes"][name]
    entry = results["theory"]["schemes"][name]
    runs = [r for r in results["runs"] if r["scheme"] == name and r["lr"] == info["best_lr"]]
    problem = prepared[name].get("problem")
    if problem is not None and config.epsilon is not None and config.optimizer in ("sgd", "gd"):
        batch = batch_size_of(config, len(ds.y_train))
        horizon = config.epochs * math.ceil(len(ds.y_train) / batch)
        predicted = []
        for run in runs:
            layer = _initial_layer(ds, config, run["seed"])
            assert layer is not None
            s0 = problem.components(*layer)
            count = theory.sgd_steps_to_epsilon(
                problem, s0, info["best_lr"], batch, config.epsilon, max_steps=4 * horizon
            )  # full batch: the exact count, which may lie beyond the cap
            predicted.append(None if count is None or count > 4 * horizon else count)
        measured = [r.get("steps_to_epsilon") for r in runs]
        reached_p = [p for p in predicted if p is not None]
        reached_m = [m for m in measured if m is not None]
        mean_p = sum(reached_p) / len(reached_p) if reached_p else None
        mean_m = sum(reached_m) / len(reached_m) if reached_m else None
        compared = theory.compare_counts(predicted, measured, horizon, 4 * horizon, _AGREE)
        entry.update(
            {
                "lr": info["best_lr"],
                "steps_to_epsilon_predicted": mean_p,
                "steps_to_epsilon_predicted_per_seed": predicted,
                "steps_to_epsilon_measured": mean_m,
                "steps_to_epsilon_measured_per_seed": measured,
                "steps_to_epsilon_horizon": horizon,
                "steps_to_epsilon_prediction_cap": 4 * horizon,
                "excess_floor_predicted": theory.sgd_excess_floor(problem, info["best_lr"], batch),
                "ratio_measured_to_predicted": compared["ratio"],
                "ratio_bound": compared["ratio_bound"],
                "ratio_per_seed": [s["ratio"] for s in compared["per_seed"]],
                "agrees": compared["agrees"],
                "disagreement": compared["disagreement"],
            }
        )
    if entry.get("lr_sgd_max_predicted") is not None:
        _stability_bracket(entry, [r for r in results["runs"] if r["scheme"] == name])
    summary = info["summary"]
    entry["samples_to_target_measured"] = summary["samples_to_target_mean"]
    entry["samples_to_target_per_seed"] = [r["samples_to_target"] for r in runs]
    _ranking(results)


def _stability_bracket(entry: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """The grid's measured bracket of the divergence threshold beside the predicted rate.

    ``largest_stable``: the largest rate below every diverging one at which no seed diverged;
    ``smallest_diverging``: the smallest rate at which a seed diverged (``None``: none on the
    grid). The prediction for the lab's batches (one permutation per epoch; the closed form
    for independent batches in results written before it existed) agrees if it lies inside
    the bracket widened by 25 % each side.
    """
    diverging = [r["lr"] for r in runs if r["diverged"]]
    high = min(diverging) if diverging else None
    stable = [r["lr"] for r in runs if not r["diverged"] and (high is None or r["lr"] < high)]
    low = max(stable) if stable else None
    predicted = entry.get("lr_sgd_max_predicted_epoch") or entry["lr_sgd_max_predicted"]
    entry["lr_stable_measured"] = {"largest_stable": low, "smallest_diverging": high}
    entry["stability_agrees"] = bool(
        (low is None or predicted >= low / _AGREE) and (high is None or predicted <= high * _AGREE)
    )


def _ranking(results: dict[str, Any]) -> None:
    """Predicted against measured order of the finished schemes, with tie groups and ρ.

    The measured value of a scheme is the median over its seeds at the chosen rate (a seed
    that never got there counts as ∞); ties as in :func:`theory.compare_rankings`, predicted
    costs within √(grid factor) (lsq: the agreement factor 1.25) counting as tied.
    """
    th = results["theory"]
    config = results["config"]
    lsq = config["model"] == "lsq"
    if lsq and (config.get("epsilon") is None or config["optimizer"] not in ("sgd", "gd")):
        th["ranking"] = None  # nothing predicted to rank: steps to ε are for SGD and GD only
        return
    finished = [s for s, info in results["schemes"].items() if "summary" in info]
    key = "steps_to_epsilon_predicted" if lsq else "ranking_cost"
    seeds_key = "steps_to_epsilon_measured_per_seed" if lsq else "samples_to_target_per_seed"
    pred = {s: th["schemes"][s].get(key) for s in finished}
    pred_v = {s: math.inf if v is None else float(v) for s, v in pred.items()}
    per_seed = {
        s: [math.inf if v is None else float(v) for v in th["schemes"][s].get(seeds_key) or [None]]
        for s in finished
    }
    factor = _AGREE if lsq else math.sqrt(config["lr_factor"])
    ranking: dict[str, Any] = {
        "rule": theory.describe()["ranking"] if not lsq else "fewest predicted SGD steps to ε",
        "ties": theory.describe()["ties"],
        "predicted_tie_factor": factor,
    }
    if finished:
        compared = theory.compare_rankings(pred_v, per_seed, factor)
        ranking.update(
            {
                "predicted": [s for group in compared["predicted_groups"] for s in group],
                "measured": [s for group in compared["measured_groups"] for s in group],
                **compared,
            }
        )
    else:
        ranking.update({"predicted": [], "measured": [], "spearman": None})
    th["ranking"] = ranking


def _score(runs: list[dict[str, Any]], model: str = "mlp") -> tuple[float, float, float, float]:
    """Lower is better: most seeds reaching the target, fewest samples, divergences, lowest loss.

    For ``lsq`` the target is the excess loss ε and the count is steps.
    """
    key = "steps_to_epsilon" if model == "lsq" else "samples_to_target"
    reached = [r[key] for r in runs if r.get(key) is not None]
    losses = [r["final_train_loss"] for r in runs if r["final_train_loss"] is not None]
    mean_samples = sum(reached) / len(reached) if reached else math.inf
    mean_loss = sum(losses) / len(losses) if losses else math.inf
    return (-len(reached), mean_samples, sum(r["diverged"] for r in runs), mean_loss)


def _best(by_k: dict[int, list[dict[str, Any]]], model: str = "mlp") -> int:
    """The best grid index; on a full tie (e.g. every rate diverged) the smallest rate."""
    return min(sorted(by_k), key=lambda k: _score(by_k[k], model))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _summarize(
    info: dict[str, Any],
    by_k: dict[int, list[dict[str, Any]]],
    center: float,
    factor: float,
    model: str = "mlp",
) -> None:
    ks = sorted(by_k)
    best = _best(by_k, model)
    runs = by_k[best]
    reached = [r["samples_to_target"] for r in runs if r["samples_to_target"] is not None]
    info["grid"] = [by_k[k][0]["lr"] for k in ks]
    info["best_lr"] = by_k[best][0]["lr"]
    info["best_lr_inside_grid"] = ks[0] < best < ks[-1]
    info["grid_center"] = center
    summary: dict[str, Any] = {
        "n_seeds": len(runs),
        "n_reached": len(reached),
        "n_diverged": sum(r["diverged"] for r in runs),
    }
    summary["samples_to_target_mean"], summary["samples_to_target_std"] = _mean_std(reached)
    if model == "lsq":
        steps = [r["steps_to_epsilon"] for r in runs if r.get("steps_to_epsilon") is not None]
        summary["n_reached_epsilon"] = len(steps)
        summary["steps_to_epsilon_mean"], summary["steps_to_epsilon_std"] = _mean_std(steps)
    finals = [r["final_test_acc"] for r in runs if r["final_test_acc"] is not None]
    summary["final_test_acc_mean"], summary["final_test_acc_std"] = _mean_std(finals)
    for probe in PROBES:
        values = [r["probes"][probe] for r in runs if r["probes"][probe] is not None]
        summary[probe] = _mean_std(values)[0]
    info["summary"] = summary


def _rounded(obj: Any) -> Any:
    """Floats to 7 significant digits (stable, small files); NaN/inf become null."""
    return json_finite(obj, _SIGNIFICANT_DIGITS)


def _write(
    out_dir: Path | None, results: dict[str, Any], timings: dict[str, Any], started: float
) -> None:
    if out_dir is None:
        return
    with atomic_write(out_dir / RESULTS_FILE, "w") as handle:
        json.dump(_rounded(results), handle, separators=(",", ":"), allow_nan=False)
        handle.write("\n")
    timings["total_seconds"] = time.perf_counter() - started
    with atomic_write(out_dir / TIMINGS_FILE, "w") as handle:
        json.dump(timings, handle, indent=1)


def demo_comparison(out_dir: str | Path, quiet: bool = False, overwrite: bool = False) -> Path:
    """A small comparison on ``digits`` (MLP, plain SGD, 2 seeds); returns the report's path.

    ``out_dir`` must not exist unless ``overwrite``: then its report files (and nothing else
    there) are replaced.
    """
    compare(
        "digits",
        schemes=None,
        model="mlp",
        seeds=2,
        epochs=8,
        target=0.9,
        lr_min=1 / 16,
        lr_max=4.0,
        out=out_dir,
        overwrite=overwrite,
        progress=False if quiet else None,
        command="normlab demo",
    )
    return Path(out_dir) / "report.html"
