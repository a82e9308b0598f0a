"""Theory against measurement: SGD stability thresholds and the non-linear ranking rule.

    python bench/bench_theory.py stability --dataset digits --batch 32,full
    python bench/bench_theory.py ranking --dataset digits --dataset mnist5k --dataset breast_cancer

``stability``: for each scheme the largest stable SGD rate predicted from the statistics
(``normlab.lab.theory.sgd_stable_lr``) beside the divergence threshold measured by bisection
(``measure_stable_lr``: runs of at least 500 steps and ``--epochs`` epochs), and the ratio.
``ranking``: small MLP comparisons; the predicted order (the rule in docs/guide/lab.md) against
the measured one, with Spearman's ρ. ``breast_cancer`` and ``wine`` are scikit-learn's bundled
tables, which the rule was not written on. Figures are as measured on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TABLES = ("breast_cancer", "wine")


def _own(name: str, folder: Path) -> Path:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    path = folder / f"{name}.npz"
    np.savez(path, x=bunch.data, y=bunch.target)
    return path


def _load(name: str, folder: Path) -> Any:
    from normlab.lab import load_dataset

    if name in TABLES:
        return load_dataset(data=_own(name, folder), seed=0)
    return load_dataset(name, seed=0)


def stability(args: argparse.Namespace) -> None:
    import torch

    from normlab import schemes
    from normlab.lab.theory import lsq_problem, sgd_stable_lr, sgd_top_direction_lr
    from normlab.lab.train import TrainConfig, measure_stable_lr

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ds = _load(args.dataset, Path(tmp))
    n = len(ds.y_train)
    print(f"{args.dataset}: {n} training samples, {ds.n_features} features; lsq model")
    print("scheme    batch  predicted  top-dir   measured  measured/predicted  seconds")
    for scheme in args.schemes.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                norm = schemes.get(scheme).fit(ds.x_train)
            except Exception as exc:  # noqa: BLE001 - a scheme that does not apply is reported
                print(f"{scheme:8s} not applicable: {exc}")
                continue
            xtr, xte = norm.transform(ds.x_train), norm.transform(ds.x_test)
        problem = lsq_problem(xtr, ds.y_train, ds.n_classes)
        data = {
            "x_train": torch.as_tensor(np.asarray(xtr, dtype=np.float32)),
            "y_train": torch.as_tensor(ds.y_train),
            "x_test": torch.as_tensor(np.asarray(xte, dtype=np.float32)),
            "y_test": torch.as_tensor(ds.y_test),
        }
        for text in args.batch.split(","):
            batch = n if text == "full" else int(text)
            predicted = sgd_stable_lr(problem, batch)
            top = sgd_top_direction_lr(problem, batch)
            t0 = time.perf_counter()
            found = measure_stable_lr(
                data,
                config=TrainConfig(model="lsq", batch_size=batch),
                n_classes=ds.n_classes,
                guess=predicted,
                min_epochs=args.epochs,
            )
            ratio = found["threshold"] / predicted
            flag = "" if 0.8 <= ratio <= 1.25 else "  (beyond 25 %)"
            print(
                f"{scheme:8s} {text:>5s}  {predicted:9.4g}  {top:8.4g}  {found['threshold']:9.4g}  "
                f"{ratio:18.3f}  {time.perf_counter() - t0:7.1f}{flag}",
                flush=True,
            )


def ranking(args: argparse.Namespace) -> None:
    import torch

    from normlab.lab import compare

    torch.set_num_threads(1)
    for name in args.dataset_list:
        with tempfile.TemporaryDirectory() as tmp:
            own = name in TABLES
            schemes = args.schemes.split(",")
            if own:
                schemes = [s for s in schemes if s != "max"]  # floats have no value scale
            t0 = time.perf_counter()
            results = compare(
                None if own else name,
                data=_own(name, Path(tmp)) if own else None,
                schemes=schemes,
                model="mlp",
                seeds=args.seeds,
                epochs=args.epochs,
                target=args.target,
                n_samples=args.n_samples if name == "mnist5k" else None,
                lr_min=1 / 16,
                lr_max=16.0,
                lr_factor=4.0,
                every_step=name != "mnist5k",
                progress=False,
            )
        th = results["theory"]
        print(
            f"\n{name} (mlp, tanh, {args.seeds} seeds, {args.epochs} epochs, target "
            f"{args.target}), {time.perf_counter() - t0:.0f} s"
        )
        print("scheme    κ99      saturated(pred/meas)  cost       samples to target")
        for scheme, t in th["schemes"].items():
            sat = t.get("saturation", {})
            print(
                f"{scheme:8s} {t.get('kappa99') or float('nan'):8.3g}  "
                f"{sat.get('tanh_saturated_predicted', float('nan')):.2f}/"
                f"{sat.get('tanh_saturated_measured', float('nan')):.2f}            "
                f"{t.get('ranking_cost', float('nan')):9.3g}  "
                f"{t.get('samples_to_target_measured')}"
            )
        rk = th["ranking"]
        print(f"predicted: {' < '.join(rk['predicted'])}")
        print(f"measured:  {' < '.join(rk['measured'])}")
        print(f"Spearman rho = {rk['spearman']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    st = sub.add_parser("stability")
    st.add_argument("--dataset", default="digits")
    st.add_argument("--schemes", default="raw,max,center,global,feature,zca")
    st.add_argument("--batch", default="32,full")
    st.add_argument("--epochs", type=int, default=2, help="horizon: at least this many epochs")
    rk = sub.add_parser("ranking")
    rk.add_argument("--dataset", dest="dataset_list", action="append")
    rk.add_argument("--schemes", default="raw,max,center,global,feature")
    rk.add_argument("--seeds", type=int, default=2)
    rk.add_argument("--epochs", type=int, default=3)
    rk.add_argument("--target", type=float, default=0.9)
    rk.add_argument("--n-samples", type=int, default=2000)
    args = parser.parse_args()
    if args.what == "stability":
        stability(args)
    else:
        args.dataset_list = args.dataset_list or ["digits"]
        ranking(args)


if __name__ == "__main__":
    main()
