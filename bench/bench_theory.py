"""Theory against measurement: SGD stability thresholds and the non-linear ranking rule.

    OPENBLAS_NUM_THREADS=1 python bench/bench_theory.py stability --dataset digits \
        --batch 1,32,full --epochs '' --ms-epochs 10,20,40,80 \
        --out docs/results/theory-stability/epoch
    python bench/bench_theory.py table --main docs/results/theory-stability/epoch/digits.json
    python bench/bench_theory.py ranking --dataset digits --dataset shifted --seeds 4 \
        --out docs/results/theory-ranking
    python bench/bench_theory.py floor --dataset mnist5k --scheme zca --lr 0.03125,0.0078125 \
        --epochs 10 --runs 8 --additive

``stability``: for each scheme the largest stable SGD rate predicted from the statistics for
the lab's batches, one permutation per epoch (``normlab.lab.theory.sgd_stable_lr_epoch``:
``eta_epoch``), and in closed form for independent batches (``sgd_stable_lr``: ``eta*``),
beside measured divergence thresholds (``normlab.lab.stability.stable_lr_by_horizon``: the
lab's lsq runs, computed for a grid of rates at once), each at every horizon of a list (runs of
at least 500 steps), so that a threshold that still moves with the horizon shows: the mean
square (``--runs`` runs, their mean loss above 10× its initial value at the end of the
horizon; ``--ms-epochs``; batches as the lab draws them, or independent ones with
``--ms-sampling fresh``), divided by the prediction for the same batches, and the lab's single
run (one permutation per epoch, 10× the initial loss at any checkpoint; ``--epochs``), divided
by ``eta_epoch``. Flagged beyond 25 % (mean square, longest horizon).
``table``: the docs' tables (measured/predicted per data set and batch size) from those JSON
files. ``floor``: the predicted noise floor of the steps to ε (``theory.sgd_excess_floor``) for one
permutation per epoch (the lab's) and for independent batches, beside the mean excess of
simulated runs of each kind (``--additive``: also with the mean Hessian at every step).
``ranking``: small MLP comparisons; the predicted order (the rule in docs/guide/lab.md) against
the measured one, with Spearman's ρ. ``breast_cancer``, ``wine`` and ``iris`` are
scikit-learn's bundled tables; ``scaled`` is generated here (:func:`_scaled`): features on
scales from 1e-2 to 1e3 with offsets, three of them rare (non-zero in 1 % of the samples);
``shifted`` and ``images8`` (:func:`_shifted`, :func:`_images8`) are held out.
Figures are as measured on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TABLES = ("breast_cancer", "wine", "iris", "scaled", "shifted", "images8")


def _scaled() -> tuple[np.ndarray, np.ndarray]:
    """A generated table with deliberately unequal feature scales (chosen before any run)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2500,
        n_features=30,
        n_informative=10,
        n_redundant=6,
        n_classes=4,
        n_clusters_per_class=2,
        random_state=0,
    )
    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.uniform(-2.0, 3.0, x.shape[1])
    offsets = rng.uniform(-3.0, 3.0, x.shape[1]) * scales
    x = x * scales + offsets
    rare = rng.random((len(x), 3)) < 0.01  # three rare, count-like features
    x[:, :3] = np.where(rare, np.abs(x[:, :3]) + 1.0, 0.0)
    return x, y


def _shifted() -> tuple[np.ndarray, np.ndarray]:
    """Held out from rules v2 and v3 alike: defined with the tie rule, before any run on it.

    Image-like: 40 features sharing a large mean (40), standard deviations spread over two
    decades (0.8 to 80), 5 classes, 2,000 samples.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2000,
        n_features=40,
        n_informative=12,
        n_redundant=10,
        n_classes=5,
        n_clusters_per_class=1,
        flip_y=0.02,
        random_state=11,
    )
    rng = np.random.default_rng(11)
    spread = 10.0 ** rng.uniform(-1.0, 1.0, x.shape[1])
    return 40.0 + 8.0 * x * spread, y


def _images8() -> tuple[np.ndarray, np.ndarray]:
    """Held out: defined after the third measurement, before any run on it.

    8-bit 12×12 images, 6 classes, 2,000 samples: each class a template of three Gaussian
    blobs at random places (peak 200); a sample is its class's template shifted by up to one
    pixel, times a contrast from 0.5 to 1, on a background level from 20 to 60, with pixel noise
    of standard deviation 25, rounded and clipped to 0..255 (uint8, so ``max`` applies).
    """
    rng = np.random.default_rng(23)
    side = 12
    yy, xx = np.mgrid[:side, :side]
    templates = []
    for _ in range(6):
        t = np.zeros((side, side))
        for _ in range(3):
            cy, cx = rng.uniform(2.0, side - 2.0, 2)
            r = rng.uniform(1.0, 2.5)
            t += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * r * r))
        templates.append(200.0 * t / t.max())
    y = rng.integers(0, 6, 2000)
    x = np.empty((len(y), side, side))
    for i, c in enumerate(y):
        dy, dx = rng.integers(-1, 2, 2)
        image = np.roll(templates[c], (int(dy), int(dx)), axis=(0, 1))
        x[i] = rng.uniform(0.5, 1.0) * image + rng.uniform(20.0, 60.0)
        x[i] += rng.normal(0.0, 25.0, (side, side))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y


def _own(name: str, folder: Path) -> Path:
    from sklearn import datasets

    if name == "scaled":
        x, y = _scaled()
    elif name == "shifted":
        x, y = _shifted()
    elif name == "images8":
        x, y = _images8()
    else:
        bunch = getattr(datasets, f"load_{name}")()
        x, y = bunch.data, bunch.target
    path = folder / f"{name}.npz"
    np.savez(path, x=x, y=y)
    return path


def _load(name: str, folder: Path) -> Any:
    from normlab.lab import load_dataset

    if name in TABLES:
        return load_dataset(data=_own(name, folder), seed=0)
    return load_dataset(name, seed=0)


def _moved(found: list[dict[str, Any]]) -> float:
    """How far the threshold moved between the two longest horizons (a fraction)."""
    if len(found) < 2:
        return float("nan")
    return abs(found[-1]["threshold"] / found[-2]["threshold"] - 1.0)


def stability(args: argparse.Namespace) -> None:
    import torch

    from normlab import schemes
    from normlab.lab.stability import stable_lr_by_horizon
    from normlab.lab.theory import (
        lsq_problem,
        sgd_stable_lr,
        sgd_stable_lr_epoch,
        sgd_top_direction_lr,
    )

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ds = _load(args.dataset, Path(tmp))
    n = len(ds.y_train)
    horizons = [int(e) for e in args.epochs.split(",") if e]
    ms_text = args.epochs if args.ms_epochs is None else args.ms_epochs
    ms_horizons = [int(e) for e in ms_text.split(",") if e]
    reshuffled = args.ms_sampling == "epoch"
    print(
        f"{args.dataset}: {n} training samples, {ds.n_features} features; lsq model. "
        f"lab: one run, epoch permutations, any checkpoint above 10x, horizons {horizons} "
        f"epochs; mean square: {args.runs} runs, "
        f"{'one permutation per epoch' if reshuffled else 'independent batches'}, mean loss "
        f"at the end above 10x, horizons {ms_horizons} epochs (all at least 500 steps). "
        "Ratios to the prediction for the same sampling: eta_epoch for permutations (the "
        "lab's), eta* for independent batches"
    )
    print(
        "scheme    batch  eta*       eta_epoch  top-dir   "
        + "".join(f"lab({e}ep)  " for e in horizons)
        + "".join(f"ms({e}ep)  " for e in ms_horizons)
    )
    rows: list[dict[str, Any]] = []
    for scheme in args.schemes.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                x = schemes.get(scheme).fit(ds.x_train).transform(ds.x_train)
            except Exception as exc:  # noqa: BLE001 - a scheme that does not apply is reported
                print(f"{scheme:8s} not applicable: {exc}")
                continue
        problem = lsq_problem(x, ds.y_train, ds.n_classes)
        for text in args.batch.split(","):
            batch = n if text == "full" else int(text)
            t0 = time.perf_counter()
            predicted = sgd_stable_lr(problem, batch)
            seconds_predict = time.perf_counter() - t0
            t0 = time.perf_counter()
            predicted_epoch = sgd_stable_lr_epoch(problem, batch, permutations=args.permutations)
            seconds_epoch = time.perf_counter() - t0
            ms_predicted = predicted_epoch if reshuffled else predicted
            common: dict[str, Any] = dict(
                n_classes=ds.n_classes, batch_size=batch, guess=ms_predicted, span=2.0, grid=13
            )
            t0 = time.perf_counter()
            found = (
                stable_lr_by_horizon(problem, ds.y_train, epochs=horizons, **common)
                if horizons
                else []
            )
            t1 = time.perf_counter()
            mean_square = (
                stable_lr_by_horizon(
                    problem,
                    ds.y_train,
                    epochs=ms_horizons,
                    sampling=args.ms_sampling,
                    runs=args.runs,
                    criterion="end",
                    **common,
                )
                if ms_horizons
                else []
            )
            ratios = [f["threshold"] / predicted_epoch for f in found]  # the lab's: permutations
            ms_ratios = [f["threshold"] / ms_predicted for f in mean_square]
            last = (ms_ratios or ratios or [1.0])[-1]  # predictions only: nothing to flag
            inside = bool(0.8 <= last <= 1.25)
            flag = "" if inside else "  (!) beyond 25 %"
            print(
                f"{scheme:8s} {text:>5s}  {predicted:9.4g}  {predicted_epoch:9.4g}  "
                f"{sgd_top_direction_lr(problem, batch):8.4g}  "
                + "".join(f"{r:9.3f}  " for r in ratios)
                + "".join(f"{r:8.3f}  " for r in ms_ratios)
                + f" {t1 - t0:6.1f}s {time.perf_counter() - t1:6.1f}s{flag}",
                flush=True,
            )
            rows.append(
                {
                    "scheme": scheme,
                    "batch": text,
                    "batch_size": batch,
                    "predicted": predicted,
                    "predicted_epoch": predicted_epoch,
                    "top_direction": sgd_top_direction_lr(problem, batch),
                    "seconds_predict": seconds_predict,
                    "seconds_predict_epoch": seconds_epoch,
                    "ratio_to": "predicted_epoch",
                    "ratio_mean_square_to": "predicted_epoch" if reshuffled else "predicted",
                    "measured": found,
                    "ratio": ratios,
                    "moved_last_doubling": _moved(found),
                    "within_25_percent_lab": bool(ratios and 0.8 <= ratios[-1] <= 1.25),
                    "measured_mean_square": mean_square,
                    "ratio_mean_square": ms_ratios,
                    "moved_last_doubling_mean_square": _moved(mean_square),
                    "within_25_percent": bool(ms_ratios and inside),
                }
            )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {
            "dataset": args.dataset,
            "n_train": n,
            "lab": {"sampling": "epoch", "runs": 1, "criterion": "any", "horizons": horizons},
            "permutations": args.permutations,
            "mean_square": {
                "sampling": args.ms_sampling,
                "runs": args.runs,
                "criterion": "end",
                "horizons": ms_horizons,
            },
            "load_average": list(os.getloadavg()),
            "rows": rows,
        }
        name = args.name or args.dataset
        (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")


def _cell(found: list[dict[str, Any]], predicted: float) -> tuple[str, bool]:
    """measured/predicted at the longest horizon, the previous one where it moved > 3 %."""
    ratios = [f["threshold"] / predicted for f in found]
    text = f"{ratios[-1]:.3f}"
    inside = 0.8 <= ratios[-1] <= 1.25
    if not inside:
        text += " (!)"
    if len(ratios) > 1 and abs(ratios[-1] / ratios[-2] - 1.0) > 0.03:
        text += f" ({ratios[-2]:.3f} at {found[-2]['epochs']} ep)"
    return text, inside


def table(args: argparse.Namespace) -> None:
    """Markdown tables of measured/predicted thresholds from ``stability`` JSON files.

    ``--main`` files give the predictions and the mean square (a later file of a data set
    replaces an earlier one's cells); ``--lab`` files (the same) the lab's single-run
    thresholds, divided by the same prediction (for the lab's batches: ``predicted_epoch``);
    ``--predictions`` files, where given, replace the ``--main`` files' ``predicted_epoch``.
    """
    batches = ("1", "32", "full")
    mains: list[dict[str, Any]] = []  # one per data set; a later file's cells replace earlier
    for f in args.main:
        record = json.loads(Path(f).read_text())
        same = [m for m in mains if m["dataset"] == record["dataset"]]
        if same:
            kept = {(r["scheme"], r["batch"]) for r in record["rows"]}
            old = [r for r in same[0]["rows"] if (r["scheme"], r["batch"]) not in kept]
            same[0]["rows"] = old + record["rows"]
        else:
            mains.append(record)
    labs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    predictions: dict[tuple[str, str, str], float] = {}
    for f in args.predictions or []:
        record = json.loads(Path(f).read_text())
        for row in record["rows"]:
            predictions[(record["dataset"], row["scheme"], row["batch"])] = row["predicted_epoch"]
    for f in args.lab or []:
        record = json.loads(Path(f).read_text())
        for row in record["rows"]:
            if row["measured"]:
                labs[(record["dataset"], row["scheme"], row["batch"])] = row["measured"]
    schemes = ("raw", "max", "center", "global", "feature", "zca")
    for title, which in (("mean square, the lab's batches", "ms"), ("the lab's, one run", "lab")):
        head = "| scheme | " + " | ".join(
            f"{m['dataset']} B={b}" if b == "1" else (f"B={b}" if b != "full" else "full")
            for m in mains
            for b in batches
        )
        print(f"\n{title}\n\n{head} |\n|---" + "|---" * len(mains) * len(batches) + "|")
        inside = total = 0
        for scheme in schemes:
            cells = []
            for m in mains:
                rows = {r["batch"]: r for r in m["rows"] if r["scheme"] == scheme}
                for b in batches:
                    row = rows.get(b)
                    key = (m["dataset"], scheme, b)
                    found = (
                        (row or {}).get("measured_mean_square") if which == "ms" else labs.get(key)
                    )
                    if not row or not found:
                        cells.append("—")
                        continue
                    predicted = (
                        row["predicted"]
                        if args.independent
                        else predictions.get(key, row.get("predicted_epoch", row["predicted"]))
                    )
                    text, ok = _cell(found, predicted)
                    cells.append(text)
                    inside, total = inside + ok, total + 1
            print(f"| {scheme} | " + " | ".join(cells) + " |")
        print(f"\nwithin 25 %: {inside} of {total}")


def ranking(args: argparse.Namespace) -> None:
    import torch

    from normlab.lab import compare, load_dataset
    from normlab.lab.theory import relative_target

    torch.set_num_threads(1)
    for name in args.dataset_list:
        with tempfile.TemporaryDirectory() as tmp:
            own = name in TABLES
            schemes = args.schemes.split(",")
            data = _own(name, Path(tmp)) if own else None
            n_samples = args.n_samples if name == "mnist5k" else None
            ds = load_dataset(None if own else name, data=data, n_samples=n_samples, seed=0)
            if ds.x_train.dtype.kind == "f":
                schemes = [s for s in schemes if s != "max"]  # floats have no value scale
            attainable = relative_target(ds.x_train, ds.y_train, ds.n_classes)
            target = attainable["target"] if args.target == "relative" else float(args.target)
            t0 = time.perf_counter()
            results = compare(
                None if own else name,
                data=data,
                schemes=schemes,
                model="mlp",
                seeds=args.seeds,
                epochs=args.epochs,
                target=round(target, 4),
                n_samples=n_samples,
                lr_min=1 / 16,
                lr_max=16.0,
                lr_factor=4.0,
                every_step=name != "mnist5k",
                progress=False,
                out=Path(args.out) / name if args.out else None,
                overwrite=True,
                report=False,
                command=f"python bench/bench_theory.py ranking --dataset {name} --seeds "
                f"{args.seeds} --epochs {args.epochs} --target {args.target}",
            )
        th = results["theory"]
        print(
            f"\n{name} (mlp, tanh, {args.seeds} seeds, {args.epochs} epochs, target "
            f"{round(target, 4)}: majority {attainable['majority']:.3f}, linear optimum "
            f"{attainable['linear_optimum']:.3f}, best single feature "
            f"{attainable['best_single_feature']:.3f}), {time.perf_counter() - t0:.0f} s, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        print("scheme    κ99      T½      saturated(pred/meas)  cost       samples to target/seed")
        for scheme, t in th["schemes"].items():
            sat = t.get("saturation", {})
            print(
                f"{scheme:8s} {t.get('kappa99') or float('nan'):8.3g}  "
                f"{t.get('signal_half_steps')!s:>6s}  "
                f"{sat.get('tanh_saturated_predicted', float('nan')):.2f}/"
                f"{sat.get('tanh_saturated_measured', float('nan')):.2f}            "
                f"{t.get('ranking_cost', float('nan')):9.3g}  "
                f"{t.get('samples_to_target_per_seed')}"
            )
        rk = th["ranking"]
        print(f"predicted: {' < '.join(' = '.join(g) for g in rk['predicted_groups'])}")
        print(f"measured:  {' < '.join(' = '.join(g) for g in rk['measured_groups'])}")
        print(
            f"Spearman rho (groups) = {rk['spearman']}, (values) = {rk['spearman_values']}; "
            f"best match {rk['best_match']}, worst match {rk['worst_match']}",
            flush=True,
        )


def _additive_only(
    problem: Any, y: np.ndarray, n_classes: int, lr: float, batch: int, epochs: int, runs: int
) -> dict[str, float]:
    """Mean excess at the last epoch's end when every step uses the mean Hessian ``H``.

    Only the additive noise (the batch gradient at the optimum) is random, so the drive of
    :func:`normlab.lab.theory._drives` is the whole story: a check of its formula alone.
    """
    from normlab.lab.theory import _NULL

    keep = problem.lam > _NULL * problem.lambda_max
    lam, u = problem.lam[keep], problem.projected
    n = len(u)
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    residual = onehot - u @ (problem.w_star @ problem.vecs[:, keep]).T
    noise = u[:, :, None] * residual[:, None, :]  # per-sample gradient at the optimum
    m, a = -(-n // batch), 1.0 - lr * lam  # the last batch of an epoch may be smaller
    rng = np.random.default_rng(0)
    found = {}
    for sampling in ("epoch", "fresh"):
        total = 0.0
        for _ in range(runs):
            e = np.zeros((len(lam), n_classes))
            for _ in range(epochs):
                order = rng.permutation(n)
                for t in range(m):
                    if sampling == "epoch":
                        rows = order[t * batch : (t + 1) * batch]
                    else:
                        rows = rng.choice(n, batch, replace=False)
                    e = a[:, None] * e + lr * noise[rows].mean(axis=0)
            total += 0.5 * float((lam[:, None] * e**2).sum())
        found[sampling] = total / runs
    return found


def floor(args: argparse.Namespace) -> None:
    """The closure's mean excess against simulated runs, for both ways of drawing batches.

    Predicted: the closure iterated from the runs' initial error (``s ← A s + d_t``) to the end
    of the last epoch, and its steady state's lowest point (the floor); simulated: the mean
    excess of ``--runs`` runs at the same step (the lab's lsq runs in float64).
    """
    from normlab import schemes
    from normlab.lab.stability import _initial_error, _run
    from normlab.lab.theory import _NULL, _drives, lsq_problem, sgd_excess_floor, sgd_excess_path

    with tempfile.TemporaryDirectory() as tmp:
        ds = _load(args.dataset, Path(tmp))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = schemes.get(args.scheme).fit(ds.x_train).transform(ds.x_train)
    problem = lsq_problem(x, ds.y_train, ds.n_classes)
    n = len(ds.y_train)
    per_epoch = -(-n // args.batch)
    start = _initial_error(problem, problem.vecs.shape[0] - 1, ds.n_classes, 0)
    print(
        f"{args.dataset} {args.scheme}, batch {args.batch}: mean excess after {args.epochs} "
        f"epochs ({args.runs} runs), predicted from the same initial error; floor = the "
        "predicted steady state's lowest point"
    )
    print("rate        sampling      predicted  simulated  sim/pred  floor     additive pred/sim")
    for lr in (float(v) for v in args.lr.split(",")):
        additive = (
            _additive_only(problem, ds.y_train, ds.n_classes, lr, args.batch, args.epochs, 16)
            if args.additive
            else {}
        )
        keep = problem.lam > _NULL * problem.lambda_max
        lam = problem.lam[keep]
        for sampling, kernel in (("epoch", "epoch"), ("independent", "fresh")):
            _, ends, _ = _run(
                problem,
                ds.y_train,
                np.array([lr]),
                n_classes=ds.n_classes,
                batch_size=args.batch,
                steps=args.epochs * per_epoch,
                seed=0,
                sampling=kernel,
                runs=args.runs,
                checkpoints_per_epoch=1,
                factor=1e12,
            )
            simulated = float(ends[0, -1] - problem.loss_star)
            s0 = np.zeros(len(problem.lam))
            s0[keep] = (start**2).sum(axis=0)
            steps = args.epochs * per_epoch
            predicted = float(sgd_excess_path(problem, s0, lr, args.batch, steps, sampling)[-1])
            steady = sgd_excess_floor(problem, lr, args.batch, sampling=sampling)
            extra = ""
            if additive:
                drives = _drives(problem, lr, args.batch, sampling)
                s = np.zeros(len(lam))
                for _ in range(args.epochs):
                    for t in range(per_epoch):
                        s = (1.0 - lr * lam) ** 2 * s + drives[t % len(drives)]
                extra = f"  {0.5 * lam @ s:.5f}/{additive[kernel]:.5f}"
            print(
                f"{lr:<10.4g}  {sampling:12s}  {predicted:9.5f}  {simulated:9.5f}  "
                f"{simulated / predicted:7.2f}  {steady or float('nan'):8.5f}{extra}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    st = sub.add_parser("stability")
    st.add_argument("--dataset", default="digits")
    st.add_argument("--schemes", default="raw,max,center,global,feature,zca")
    st.add_argument("--batch", default="1,32,full")
    st.add_argument("--epochs", default="10,20,40", help="the lab's horizons (epochs; '' for none)")
    st.add_argument("--ms-epochs", default=None, help="mean-square horizons (default: --epochs)")
    st.add_argument("--runs", type=int, default=16, help="runs averaged for the mean square")
    st.add_argument(
        "--ms-sampling",
        default="epoch",
        choices=("epoch", "fresh"),
        help="the mean square's batches: one permutation per epoch (the lab's) or independent",
    )
    st.add_argument(
        "--permutations", type=int, default=32, help="orders averaged by eta_epoch's prediction"
    )
    st.add_argument("--out", default=None, help="folder for <name>.json")
    st.add_argument("--name", default=None, help="file name (default: the data set)")
    tb = sub.add_parser("table", help="docs tables from stability JSON files")
    tb.add_argument("--main", nargs="+", required=True, help="stability JSON files")
    tb.add_argument("--lab", nargs="*", help="JSON files with the lab's single-run thresholds")
    tb.add_argument(
        "--independent", action="store_true", help="divide by eta* (independent batches) instead"
    )
    tb.add_argument(
        "--predictions",
        nargs="*",
        help="stability JSON files (e.g. --epochs '' --ms-epochs '') whose eta_epoch replaces "
        "the --main files' one",
    )
    fl = sub.add_parser("floor")
    fl.add_argument("--dataset", default="digits")
    fl.add_argument("--scheme", default="zca")
    fl.add_argument("--batch", type=int, default=32)
    fl.add_argument("--lr", default="0.125", help="comma-separated rates")
    fl.add_argument("--epochs", type=int, default=20)
    fl.add_argument("--runs", type=int, default=32)
    fl.add_argument("--additive", action="store_true", help="also the mean-Hessian check")
    rk = sub.add_parser("ranking")
    rk.add_argument("--dataset", dest="dataset_list", action="append")
    rk.add_argument("--schemes", default="raw,max,center,global,feature")
    rk.add_argument("--seeds", type=int, default=2)
    rk.add_argument("--epochs", type=int, default=3)
    rk.add_argument(
        "--target",
        default="relative",
        help="train accuracy, or 'relative': majority + 0.9 × (linear optimum − majority)",
    )
    rk.add_argument("--out", default=None, help="folder for <dataset>/results.json")
    rk.add_argument("--n-samples", type=int, default=2000)
    args = parser.parse_args()
    if args.what == "stability":
        stability(args)
    elif args.what == "table":
        table(args)
    elif args.what == "floor":
        floor(args)
    else:
        args.dataset_list = args.dataset_list or ["digits"]
        ranking(args)


if __name__ == "__main__":
    main()
