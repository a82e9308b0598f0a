"""Compare normalization schemes on real training runs: the lab's entry point, :func:`compare`.

For each scheme: fit the normalizer on the training split, measure the Hessian proxy
``E[x xᵀ]`` of the normalized inputs, then train every seed over a log grid of learning
rates centred on ``2/λ_max`` — the largest rate plain gradient descent tolerates on a linear
unit (Efficient BackProp §5) — and widen the grid until the best rate lies strictly inside.
One fixed grid for all schemes would mostly measure the grid: on raw 0..255 MNIST
λ_max ≈ 2.5e6, so any rate above 1e-6 diverges there.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import schemes as scheme_registry
from ..errors import NormlabError, NormlabWarning
from ..io import atomic_write
from ..progress import progress_bar
from .datasets import Dataset, load_dataset
from .models import MODELS, build_model
from .probes import PROBES, diagonal_spread, second_moment_spectrum, single_signed_samples
from .train import TrainConfig, train_run

RESULTS_FILE = "results.json"
TIMINGS_FILE = "timings.json"
RESULTS_VERSION = 1
_ADAM_CENTER = 1e-3  # Adam rescales gradients, so its grid is centred on its usual rate instead
_SIGNIFICANT_DIGITS = 7


def compare(
    dataset: str | None = "digits",
    *,
    schemes: Sequence[str] = ("raw", "max", "global", "feature"),
    model: str = "mlp",
    seeds: int = 3,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 32,
    target: float = 0.9,
    optimizer: str = "sgd",
    activation: str = "tanh",
    hidden: int = 64,
    lr_min: float = 1 / 16,
    lr_max: float = 16.0,
    lr_factor: float = 2.0,
    max_extensions: int = 12,
    checkpoints_per_epoch: int = 10,
    test_fraction: float = 0.2,
    offset: float = 0.0,
    n_samples: int | None = None,
    data: str | Path | None = None,
    labels: str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    threads: int = 1,
    progress: bool | None = None,
    report: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train ``model`` under each normalization scheme and compare how fast it learns.

    Parameters
    ----------
    dataset : str, optional
        ``digits``, ``mnist5k``, ``lecun-gauss``; or ``None`` with ``data``/``labels``.
    schemes : sequence of str
        Names from :mod:`normlab.schemes`, each fitted on the training split only.
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
        How often per epoch the whole training split is evaluated (the resolution of
        ``samples_to_target``).
    optimizer : {"sgd", "momentum", "adam"}
        Plain SGD by default, where the effect is cleanest.
    lr_min, lr_max, lr_factor : float
        The initial grid: ``2/λ_max`` times ``lr_factor**k`` from ``lr_min`` to ``lr_max``.
    max_extensions : int
        How many grid points may be added per scheme while the best rate sits at an edge.
    out : path, optional
        Folder for ``results.json`` (rewritten atomically after every finished run, so an
        interrupt keeps them), ``timings.json``, the plots and ``report.html``. It must not
        exist unless ``overwrite``; only these files are ever replaced.
    threads : int
        ``torch.set_num_threads``; results are deterministic for a seed and thread count.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    torch = _torch()
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
    )
    config.check()
    if out is not None and Path(out).exists() and not overwrite:
        raise NormlabError(
            f"output folder {out} exists; pass --overwrite to replace its report files"
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
    # bad shapes fail before anything is written
    build_model(
        model,
        sample_shape=ds.sample_shape,
        n_classes=ds.n_classes,
        hidden=hidden,
        activation=activation,
    )
    prepared = {name: _prepare_scheme(name, ds, torch) for name in names}  # so do unfit schemes
    out_dir = _prepare_out(out, overwrite)
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
            "lr_min": lr_min,
            "lr_max": lr_max,
            "lr_factor": lr_factor,
            "max_extensions": max_extensions,
            "checkpoints_per_epoch": checkpoints_per_epoch,
            "test_fraction": test_fraction,
            "offset": offset,
            "n_samples": n_samples,
            "threads": threads,
        },
        "dataset": ds.summary(),
        "diagnosis": _diagnosis(ds),
        "schemes": {},
        "runs": [],
    }
    timings: dict[str, Any] = {"runs": []}
    started = time.perf_counter()
    planned = len(names) * (k_high - k_low + 1) * seeds
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
    from ..report import write_report

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
    optimizer: str,
    seeds: int,
    seed: int,
    k_low: int,
    k_high: int,
    lr_factor: float,
    max_extensions: int,
) -> None:
    """Per scheme: train the grid and widen it until the best LR is inside."""
    for name, scheme in prepared.items():
        info = scheme["info"]
        results["schemes"][name] = info
        center = _ADAM_CENTER if optimizer == "adam" else info["lr_bound"]
        if center is None:
            info["skipped"] = "E[x xᵀ] is zero: nothing to learn from"
            continue
        by_k: dict[int, list[dict[str, Any]]] = {}
        pending = list(range(k_low, k_high + 1))
        extensions = 0
        while pending:
            for k in pending:
                lr = float(center * lr_factor**k)
                by_k[k] = []
                for s in range(seed, seed + seeds):
                    t0 = time.perf_counter()
                    run = train_run(
                        scheme["tensors"], config=config, lr=lr, seed=s, n_classes=ds.n_classes
                    )
                    timings["runs"].append(
                        {"scheme": name, "lr": lr, "seed": s, "seconds": time.perf_counter() - t0}
                    )
                    by_k[k].append(run)
                    results["runs"].append({"scheme": name, **run})
                    _write(out_dir, results, timings, started)
                    advance(1)
            best = _best(by_k)
            pending = []
            if extensions < max_extensions and best in (min(by_k), max(by_k)):
                pending = [best - 1 if best == min(by_k) else best + 1]
                extensions += 1
        _summarize(info, by_k, center, lr_factor)


def _torch() -> Any:
    from ..errors import require

    return require("torch", "lab")


def _prepare_out(out: str | Path | None, overwrite: bool) -> Path | None:
    if out is None:
        return None
    out_dir = Path(out)
    if out_dir.exists() and not overwrite:
        raise NormlabError(
            f"output folder {out_dir} exists; pass --overwrite to replace its report files"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise NormlabError(f"output path {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _prepare_scheme(name: str, ds: Dataset, torch: Any) -> dict[str, Any]:
    """Fit on the training split only; float32 tensors once; data probes of the normalized inputs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NormlabWarning)
        normalizer = scheme_registry.get(name)
        normalizer.fit(ds.x_train)
        x_train = normalizer.transform(ds.x_train)
        x_test = normalizer.transform(ds.x_test)
    spectrum = second_moment_spectrum(x_train)
    lam = spectrum["lambda_max"]
    info = {
        "normalizer": repr(normalizer),
        "lambda_max": lam,
        "lambda_min": spectrum["lambda_min"],
        "trace": spectrum["trace"],
        "lr_bound": 2.0 / lam if lam > 0 else None,
        "input_mean_abs": float(np.abs(np.asarray(x_train, dtype=np.float64).mean())),
        "diagonal": diagonal_spread(x_train),
        "batch1_single_signed": single_signed_samples(x_train),
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
    return {"info": info, "tensors": tensors}


def _score(runs: list[dict[str, Any]]) -> tuple[float, float, float, float]:
    """Lower is better: most seeds reaching the target, fewest samples, fewest divergences, lowest loss."""
    reached = [r["samples_to_target"] for r in runs if r["samples_to_target"] is not None]
    losses = [r["final_train_loss"] for r in runs if r["final_train_loss"] is not None]
    mean_samples = sum(reached) / len(reached) if reached else math.inf
    mean_loss = sum(losses) / len(losses) if losses else math.inf
    return (-len(reached), mean_samples, sum(r["diverged"] for r in runs), mean_loss)


def _best(by_k: dict[int, list[dict[str, Any]]]) -> int:
    """The best grid index; on a full tie (e.g. every rate diverged) the smallest rate."""
    return min(sorted(by_k), key=lambda k: _score(by_k[k]))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _summarize(
    info: dict[str, Any], by_k: dict[int, list[dict[str, Any]]], center: float, factor: float
) -> None:
    ks = sorted(by_k)
    best = _best(by_k)
    runs = by_k[best]
    reached = [r["samples_to_target"] for r in runs if r["samples_to_target"] is not None]
    info["grid"] = [float(center * factor**k) for k in ks]
    info["best_lr"] = float(center * factor**best)
    info["best_lr_inside_grid"] = ks[0] < best < ks[-1]
    info["grid_center"] = center
    summary: dict[str, Any] = {
        "n_seeds": len(runs),
        "n_reached": len(reached),
        "n_diverged": sum(r["diverged"] for r in runs),
    }
    summary["samples_to_target_mean"], summary["samples_to_target_std"] = _mean_std(reached)
    finals = [r["final_test_acc"] for r in runs if r["final_test_acc"] is not None]
    summary["final_test_acc_mean"], summary["final_test_acc_std"] = _mean_std(finals)
    for probe in PROBES:
        values = [r["probes"][probe] for r in runs if r["probes"][probe] is not None]
        summary[probe] = _mean_std(values)[0]
    info["summary"] = summary


def _rounded(obj: Any) -> Any:
    """Floats to 7 significant digits (stable, small files); NaN/inf become null."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(f"{obj:.{_SIGNIFICANT_DIGITS}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj


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
        schemes=("raw", "max", "global", "feature"),
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
