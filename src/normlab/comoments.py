"""Exact streaming co-moments: the mean vector and ``C = Σ (x−μ)(x−μ)ᵀ``, mergeable.

:class:`CoMoments` follows the contract of :class:`~normlab.Moments` (``update``, ``+=``,
``+``, ``save``/``load``; merges in task order) and carries a per-feature
:class:`~normlab.Moments` alongside, so every first-order scheme can be fitted from the same
file (``comoments.moments``).

Two representations, chosen by the data's dtype:

* **integer data**: the exact Gram matrix ``G = Σ x xᵀ``. Each chunk's product runs as a
  float64 BLAS GEMM on copies of the integers, summed in a float64 accumulator that is
  emptied into int64 before ``rows·max|x|²`` could reach 2⁵³, so every partial sum is an
  integer float64 holds exactly (uint8: 1.4·10¹¹ rows; uint16: 2.1·10⁶ rows; values above 2²⁶
  are split into 16-bit halves). A float32 GEMM would be exact for uint8 only in blocks of
  ≤ 258 rows, too thin to be fast. The int64 totals are flushed into Python integers
  before they could overflow. ``C = (n·G − S₁S₁ᵀ)/n`` is formed from exact integers and
  rounded once: any chunking, order or worker split gives the same bits.
* **float data**: float64 with a per-feature shift (the first sample), a two-pass centered
  product per chunk, and the matrix form of Chan's merge,
  ``C = C_a + C_b + δδᵀ·n_a·n_b/n``. Deterministic for a given chunk order.

The two representations are the classes of :mod:`normlab.exact` (:class:`~normlab.exact.ExactSum`
holds the Gram matrix as it holds ``Σx`` for :class:`~normlab.Moments`) and
:mod:`normlab.shifted` (:class:`~normlab.shifted.ShiftedCoMoments`).

Above ``max_features`` features (default 4,096: a 134 MB float64 matrix) no dense matrix is
kept: the object switches to a one-pass sketch ``Σ x xᵀ Ω`` for a fixed Gaussian ``Ω`` of
``sketch_size`` columns (mergeable by addition), from which :mod:`normlab.diagnostics`
estimates the top eigenvalues (Nyström). ``cov()`` and whitening refuse there, with a
message that suggests per-channel statistics or patches.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from typing import Any

import numpy as np

from .errors import EmptyDataError, FileFormatError, MergeError, NormlabError, ShapeError
from .exact import FLOAT64_EXACT, INT64_LIMIT, ExactSum, decode_bigints, encode_bigints
from .io import register
from .moments import Moments, Statistic, as_batch, check_same_names
from .provenance import Provenance, Recorded
from .shifted import ShiftedCoMoments

MAX_FEATURES = 4096  # 4,096² float64 = 134 MB: the largest dense matrix kept by default
SKETCH_SIZE = 64  # columns of Ω in sketch mode; top-eigenvalue estimates use about half
_GEMM_ROWS = 8192  # rows converted to float64 per GEMM (50 MB at 784 features)
_SPLIT_ABOVE = 2**26  # |x| above this: x·x no longer fits one float64 GEMM of a useful size
_OBJ = np.dtype(object)


def exact_gram(x: np.ndarray) -> np.ndarray:
    """``xᵀx`` of a 2-D integer array, exactly, as int64 (or Python ints when int64 is too small).

    >>> import numpy as np
    >>> x = np.array([[255, 1], [255, 0]], dtype=np.uint8)
    >>> exact_gram(x)
    array([[130050,    255],
           [   255,      1]])
    """
    n, d = x.shape
    max_abs = int(max(abs(int(x.min())), abs(int(x.max())))) if x.size else 0
    if max_abs > _SPLIT_ABOVE:
        wide = x.astype(np.int64)
        hi, lo = wide >> 16, wide & 0xFFFF  # x = hi·2¹⁶ + lo, |hi| ≤ 2¹⁵, 0 ≤ lo < 2¹⁶
        hh, hl, ll = exact_gram(hi), _exact_cross(hi, lo), exact_gram(lo)
        obj = lambda a: np.asarray(a, dtype=object)  # noqa: E731
        return obj(hh) * (1 << 32) + (obj(hl) + obj(hl).T) * (1 << 16) + obj(ll)
    return _exact_cross(x, x)


def _exact_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``aᵀb`` for integers with ``max|a|·max|b| ≤ 2⁵²``: float64 GEMMs kept exact, as int64.

    The float64 accumulator only ever holds integers below 2⁵³ (it is flushed into the
    integer result before the bound ``rows·max²`` could reach it), so no sum is ever rounded.
    """
    n = a.shape[0]
    top = max(int(np.abs(a).max(initial=0)), int(np.abs(b).max(initial=0)), 1)
    rows_exact = FLOAT64_EXACT // (top * top)
    # int64 holds the running sum unless n·max² could pass 2⁶³; then Python ints do
    out: Any = np.zeros(
        (a.shape[1], b.shape[1]), np.int64 if n * top * top <= INT64_LIMIT else object
    )
    acc = np.zeros((a.shape[1], b.shape[1]))
    acc_rows = 0
    step = max(1, min(rows_exact, _GEMM_ROWS))
    for start in range(0, n, step):
        fa = a[start : start + step].astype(np.float64)
        fb = fa if b is a else b[start : start + step].astype(np.float64)
        if acc_rows + fa.shape[0] > rows_exact:
            out += acc.astype(np.int64).astype(out.dtype)
            acc[...] = 0.0
            acc_rows = 0
        acc += fa.T @ fb
        acc_rows += fa.shape[0]
    return out + acc.astype(np.int64).astype(out.dtype)


@functools.lru_cache(maxsize=2)
def _sketch_matrix(n_features: int, sketch_size: int, seed: int) -> np.ndarray:
    """The fixed Gaussian test matrix Ω (``n_features × sketch_size``): same seed, same Ω."""
    omega = np.random.default_rng(seed).standard_normal((n_features, sketch_size))
    omega.flags.writeable = False
    return omega


@register
class CoMoments(Statistic, Recorded):
    """Streaming mean vector and co-moment matrix per feature, exact for integer data.

    Parameters
    ----------
    max_features : int
        Largest number of features (values per sample) kept as a dense matrix. Above it the
        object keeps a one-pass sketch instead (see the module docs): ``cov()`` refuses and
        :class:`~normlab.Whiten` cannot be fitted, but the diagnostics still estimate the
        top of the spectrum.
    sketch_size : int
        Columns of the random test matrix Ω in sketch mode.
    seed : int
        Seed of Ω; objects merge only with the same seed.

    Examples
    --------
    >>> import numpy as np, normlab
    >>> x = np.array([[0, 1], [2, 2], [4, 6]], dtype=np.uint8)
    >>> c = normlab.CoMoments().update(x[:1])
    >>> c += normlab.CoMoments().update(x[1:])
    >>> c.mean
    array([2., 3.])
    >>> c.cov()
    array([[2.66666667, 3.33333333],
           [3.33333333, 4.66666667]])
    >>> bool(c.cov()[0, 1] == 10 / 3)  # exact integers, rounded once
    True
    """

    def __init__(
        self, *, max_features: int = MAX_FEATURES, sketch_size: int = SKETCH_SIZE, seed: int = 0
    ) -> None:
        from .validate import integer

        max_features = integer("max_features", max_features, minimum=1)
        sketch_size = integer("sketch_size", sketch_size, minimum=2)
        seed = integer("seed", seed, minimum=0)
        if max_features < 1 or sketch_size < 2:
            raise NormlabError(
                f"max_features must be ≥ 1 and sketch_size ≥ 2; got {max_features} and "
                f"{sketch_size}"
            )
        self.max_features = int(max_features)
        self.sketch_size = int(sketch_size)
        self.seed = int(seed)
        self.moments = Moments("feature")
        self.dense: bool | None = None
        # the second moments, one of three once samples arrive: the exact Gram matrix Σ x xᵀ
        # (integer data), the shifted co-moments (float data), or the sketch Σ x xᵀ Ω (float64,
        # n_features × sketch_size) above max_features
        self._second: ExactSum | ShiftedCoMoments | np.ndarray | None = None
        self._cache: dict[str, np.ndarray] = {}
        # what the source recorded (skipped items, modes): set by compute_comoments, not merged
        self.provenance = Provenance("feature")

    # ------------------------------------------------------------------ properties
    @property
    def n_samples_seen(self) -> int:
        return self.moments.n_samples_seen

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self.moments.sample_shape

    @property
    def value_scale(self) -> dict[str, Any] | None:
        return self.moments.value_scale

    @property
    def exact(self) -> bool | None:
        return self.moments.exact

    @property
    def feature_names(self) -> list[str] | None:
        """Names of the features (table columns; flat order), None when unnamed."""
        return self.moments.feature_names

    @feature_names.setter
    def feature_names(self, names: list[str] | None) -> None:
        from .moments import check_feature_names

        self.moments.feature_names = check_feature_names(names, self.sample_shape)

    @property
    def n_features(self) -> int:
        self._require()
        return math.prod(self.sample_shape or ())

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self.n_samples_seen

    @property
    def mean(self) -> np.ndarray:
        """Mean vector (flat, float64; correctly rounded for integer data)."""
        self._require()
        return self.moments.mean.reshape(-1)

    # ------------------------------------------------------------------ update
    def update(self, batch: Any) -> CoMoments:
        """Add a batch ``(n_samples, *sample_shape)``; returns ``self``."""
        arr = as_batch(batch)
        if arr.shape[0] == 0:
            return self
        self.moments.update(arr)  # checks shape, dtype, NaN (raise) before any product
        flat = arr.reshape(arr.shape[0], -1)
        if self.dense is None:
            self.dense = flat.shape[1] <= self.max_features
        if not self.dense:
            self._update_sketch(flat)
        elif self.exact:
            self._update_exact(flat)
        else:
            self._update_float(flat)
        self._cache.clear()
        return self

    def _update_exact(self, flat: np.ndarray) -> None:
        if flat.dtype.kind == "b":
            flat = flat.view(np.uint8)
        gram = exact_gram(flat)
        if self._second is None:
            self._second = ExactSum(gram.shape)
        assert isinstance(self._second, ExactSum)
        if gram.dtype == _OBJ:
            self._second.add_exact(gram)
            return
        top = max(abs(int(flat.min())), abs(int(flat.max())))
        self._second.add(gram, flat.shape[0] * top * top)

    def _update_float(self, flat: np.ndarray) -> None:
        if self._second is None:
            self._second = ShiftedCoMoments(flat[0])
            n_a = 0
        else:
            n_a = self.n_samples_seen - flat.shape[0]
        assert isinstance(self._second, ShiftedCoMoments)
        self._second.update(flat, n_a)

    def _update_sketch(self, flat: np.ndarray) -> None:
        if self._second is None:
            self._second = np.zeros((flat.shape[1], self.sketch_size))
        assert isinstance(self._second, np.ndarray)
        x = flat.astype(np.float64)
        self._second += x.T @ (x @ self._omega())

    def _omega(self) -> np.ndarray:
        return _sketch_matrix(self.n_features, self.sketch_size, self.seed)

    # ------------------------------------------------------------------ merge
    def __iadd__(self, other: CoMoments) -> CoMoments:
        if not isinstance(other, CoMoments):
            raise MergeError(f"cannot merge CoMoments with {type(other).__name__}")
        if (self.max_features, self.sketch_size, self.seed) != (
            other.max_features,
            other.sketch_size,
            other.seed,
        ):
            raise MergeError(
                "cannot merge CoMoments with different max_features/sketch_size/seed: "
                f"{(self.max_features, self.sketch_size, self.seed)} vs "
                f"{(other.max_features, other.sketch_size, other.seed)}"
            )
        check_same_names(self.feature_names, other.feature_names)
        names = self.feature_names or other.feature_names
        if other.dense is None:
            self.moments.feature_names = names
            return self
        if self.dense is None:
            self.__dict__.update(copy.deepcopy(other.__dict__))
            self.moments.feature_names = names
            return self
        n_a = self.n_samples_seen
        # checks shapes and value scales; kept apart until the second moments merged too, so
        # that a refused merge (float64 overflow) leaves these co-moments as they were
        moments = self.moments + other.moments
        mine, theirs = self._second, other._second
        if isinstance(mine, ExactSum) and isinstance(theirs, ExactSum):
            mine += theirs
        elif isinstance(mine, ShiftedCoMoments) and isinstance(theirs, ShiftedCoMoments):
            mine.merge(n_a, theirs, other.n_samples_seen)
        elif isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray):
            self._second = mine + theirs
        else:
            raise MergeError(
                f"cannot merge co-moments of {self._kind()} with co-moments of {other._kind()}"
            )
        self.moments = moments
        self._cache.clear()
        return self

    def _kind(self) -> str:
        if isinstance(self._second, ExactSum):
            return "integer data (exact)"
        if isinstance(self._second, ShiftedCoMoments):
            return "float data"
        return f"a sketch of {self.n_features} features" if self.dense is False else "no data"

    # ------------------------------------------------------------------ results
    def _require(self) -> None:
        if self.dense is None:
            raise EmptyDataError("no samples seen: co-moments of empty data are undefined")

    def _require_dense(self, what: str) -> None:
        self._require()
        if not self.dense:
            d = self.n_features
            raise ShapeError(
                f"{what} needs the dense {d} x {d} co-moment matrix ({d * d * 8 / 1e9:.1f} GB in "
                f"float64), but samples of shape {self.sample_shape} have {d} features, more than "
                f"max_features={self.max_features}; only a sketch of the top eigenvalues is "
                "kept. Use per-channel statistics (axis='channel') or whiten patches (e.g. 8x8 "
                "crops) instead"
            )

    def gram(self) -> np.ndarray:
        """Exact ``Σ x xᵀ`` of integer data as Python ints (object array); integer data only."""
        self._require_dense("gram()")
        if not self.exact:
            raise NormlabError(
                "gram() is exact for integer data only; float data keep the co-moment matrix"
            )
        assert isinstance(self._second, ExactSum)
        return self._second.get()

    def comoment(self) -> np.ndarray:
        """``C = Σ (x−μ)(x−μ)ᵀ`` as float64 (rounded once from exact integers for integer data)."""
        self._require_dense("comoment()")
        if "comoment" not in self._cache:
            if isinstance(self._second, ShiftedCoMoments):
                self._cache["comoment"] = self._second.comoment.copy()
            else:
                self._cache["comoment"] = self._exact_ratio(1)
        return self._cache["comoment"].copy()

    def cov(self, ddof: int = 0) -> np.ndarray:
        """Covariance ``C/(n − ddof)`` (population by default)."""
        from .validate import integer

        ddof = integer("ddof", ddof, minimum=0)
        self._require_dense("cov()")
        n = self.n_samples_seen
        if n - ddof <= 0:
            raise EmptyDataError(
                f"covariance with ddof={ddof} needs more than {ddof} samples; got {n}"
            )
        key = f"cov{ddof}"
        if key not in self._cache:
            if isinstance(self._second, ShiftedCoMoments):
                self._cache[key] = self._second.comoment / (n - ddof)
            else:
                self._cache[key] = self._exact_ratio(n - ddof)
        return self._cache[key].copy()

    def _exact_ratio(self, divisor: int) -> np.ndarray:
        """``(n·G − S₁S₁ᵀ) / (n·divisor)``: exact integers, one correctly rounded division."""
        n = self.n_samples_seen
        assert isinstance(self._second, ExactSum)
        s1 = self.moments.exact_sums()[0].reshape(-1)
        top = max(abs(int(self.moments.min.min())), abs(int(self.moments.max.max())))
        den = n * divisor
        if n * n * top * top < FLOAT64_EXACT and den < FLOAT64_EXACT:
            # every term is an integer below 2⁵³: int64 is exact, float64 holds it exactly
            s = s1.astype(np.int64)
            num = n * self._second.int64() - np.outer(s, s)
            return num.astype(np.float64) / den
        num = n * self.gram() - np.outer(s1, s1)
        flat = [a / den for a in num.reshape(-1)]  # Python int / int: correctly rounded
        return np.array(flat, dtype=np.float64).reshape(num.shape)

    def sketch(self) -> tuple[np.ndarray, np.ndarray]:
        """Sketch mode only: ``(Σ x xᵀ Ω, Ω)``."""
        self._require()
        if self.dense:
            raise NormlabError("sketch() exists only above max_features; use comoment() here")
        assert isinstance(self._second, np.ndarray)
        return self._second.copy(), self._omega()

    def summary(self) -> dict[str, Any]:
        self._require()
        return {
            "samples": self.n_samples_seen,
            "features": self.n_features,
            "sample_shape": list(self.sample_shape or ()),
            "value_scale": self.value_scale,
            "exact": bool(self.exact),
            "dense": bool(self.dense),
        }

    def __repr__(self) -> str:
        if self.dense is None:
            return "CoMoments(empty)"
        from .display import numpy_text

        kind = "dense" if self.dense else f"sketch of {self.sketch_size}"
        head = f"CoMoments(samples={self.n_samples_seen}, features={self.n_features}, {kind})"
        return f"{head}\n  mean = {numpy_text(self.mean)}"

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        return {
            "class": "CoMoments",
            "max_features": self.max_features,
            "sketch_size": self.sketch_size,
            "seed": self.seed,
            "dense": self.dense,
            "moments": self.moments.metadata(),
        }

    def to_tensors(self) -> dict[str, np.ndarray]:
        out = {f"moments.{k}": v for k, v in self.moments.to_tensors().items()}
        if self.dense is None:
            return out
        if isinstance(self._second, np.ndarray):
            out["sketch"] = self._second
        elif isinstance(self._second, ShiftedCoMoments):
            out.update(self._second.to_tensors())
        else:
            out.update(encode_bigints("gram", self.gram()))
        return {k: np.array(v, order="C") for k, v in out.items()}

    @classmethod
    def from_tensors(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> CoMoments:
        from .io import field

        obj = cls(
            max_features=meta["max_features"], sketch_size=meta["sketch_size"], seed=meta["seed"]
        )
        obj.moments = Moments.from_tensors(
            meta["moments"], {k[8:]: v for k, v in tensors.items() if k.startswith("moments.")}
        )
        obj.dense = meta["dense"]
        if obj.dense is None:
            return obj
        d = obj.n_features
        if not obj.dense:
            obj._second = field(tensors, "sketch", np.float64, (d, obj.sketch_size))
        elif obj.exact:
            gram = decode_bigints("gram", tensors, (d, d))
            # the Gram matrix's diagonal is Σx² of each feature: the moments hold it too
            if obj.moments.sums is not None and list(np.diagonal(gram)) != list(
                obj.moments.exact_sums()[1].reshape(-1)
            ):
                raise FileFormatError(
                    "the Gram matrix's diagonal differs from the moments' sums of squares: "
                    "corrupt gram"
                )
            obj._second = ExactSum.of(gram)
        else:
            obj._second = ShiftedCoMoments.from_tensors(tensors, d)
        return obj

    @staticmethod
    def _wrong_class_hint(obj: Any) -> str:
        if not isinstance(obj, Moments):
            return ""
        return (
            " (first moments only: make co-moments with normlab.compute_comoments(DATA) or "
            "`normlab comoments DATA -o FILE`)"
        )

    @classmethod
    def from_array(cls, x: Any, **options: Any) -> CoMoments:
        """Co-moments of one array ``(n_samples, *sample_shape)``."""
        return cls(**options).update(x)


def compute_comoments(
    source: Any,
    *,
    key: str | None = None,
    max_features: int = MAX_FEATURES,
    sketch_size: int = SKETCH_SIZE,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool | None = None,
    engine: str = "serial",
    workers: int | None = None,
    scheduler: Any = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_key: str | None = None,
    checkpoint_fingerprint: str = "auto",
    **source_options: Any,
) -> CoMoments:
    """Co-moments of a whole data set in one streamed pass (any source, any engine).

    Accepts what :func:`~normlab.compute_stats` accepts — arrays, ``.npy``/``.npz``, image
    folders and lists (with ``mode``, ``resize``, ``skip_bad``, ...), PyTorch datasets,
    iterables — and runs on the same runner: engines, progress, ``checkpoint`` and resume work
    as for moments, ``checkpoint_key`` and ``checkpoint_fingerprint`` included (see
    :func:`~normlab.compute_stats`: a generator is checkpointed only under a key).
    NaN/inf raise :class:`~normlab.errors.NonFiniteError`.

    >>> import numpy as np, normlab
    >>> x = np.random.default_rng(0).integers(0, 256, (50, 6), dtype=np.uint8)
    >>> c = normlab.compute_comoments(x, chunk_size=7)
    >>> c == normlab.CoMoments().update(x)
    True
    """
    from .engines import run
    from .sources import resolve
    from .validate import run_options

    run_options(
        chunk_size=chunk_size,
        workers=workers,
        engine=engine,
        scheduler=scheduler,
        key=key,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    if checkpoint is not None and isinstance(source, (str, os.PathLike)):
        from .io import refuse_overwrite

        refuse_overwrite([checkpoint], [source])
    CoMoments(max_features=max_features, sketch_size=sketch_size, seed=seed)  # checks them
    src = resolve(source, key=key, chunk_size=chunk_size, **source_options)
    make_empty = functools.partial(
        CoMoments, max_features=max_features, sketch_size=sketch_size, seed=seed
    )
    result = run(
        src.tasks,
        make_empty,
        engine=engine,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_key=checkpoint_key,
        checkpoint_fingerprint=checkpoint_fingerprint,
    )
    stats, record = result.nonempty(src.description).stats, result.provenance
    stats.provenance = record
    stats.feature_names = src.info.get("feature_names")
    return stats
