"""PCA and ZCA whitening, fitted from exact :class:`~normlab.CoMoments`.

With the covariance ``Σ = U diag(λ) Uᵀ`` (``eigh``) and a regularizer ``ε``:

* **ZCA**: ``W = U diag(1/√(λ + ε)) Uᵀ`` — symmetric, so the output stays in the input's
  coordinates (images still look like images). Decorrelated batch norm (Huang et al. 2018)
  found ZCA helps where PCA whitening's axis swapping hurts.
* **PCA**: ``W = diag(1/√(λ_k + ε)) U_kᵀ`` over the ``n_components`` largest eigenvalues —
  rotated and optionally truncated: the output has ``n_components`` features.

``y = (x − μ) Wᵀ``, whose covariance is ``U diag(λ/(λ + ε)) Uᵀ``: the identity on directions
with ``λ ≫ ε``, shrunk on the rest.

**The choice of ε.** By default ``eps_mode="relative"``: ``ε = eps · mean(λ)`` (the mean
eigenvalue, ``trace(Σ)/d``), ``eps = 1e-2``. An absolute ε depends on the units: kornia's
``1e-6`` added to eigenvalues of 0..1 images (mean eigenvalue ~10⁻²) barely regularizes,
while on 0..255 data it means something 65,025× smaller again. Tying ε to the mean
eigenvalue makes the same setting do the same thing on any scale: directions with less than
1 % of the average variance are damped instead of blown up (the pixel noise and the
near-zero directions of constant pixels). ``eps_mode="absolute"`` takes ``eps`` in squared
data units.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .comoments import MAX_FEATURES, CoMoments
from .errors import NormlabError, ShapeError
from .io import register
from .moments import Moments, as_batch, repeat_by_weight
from .normalizers import Normalizer

METHODS = ("zca", "pca")
EPS_MODES = ("relative", "absolute")


@register
class Whiten(Normalizer):
    """Decorrelate and scale to unit variance: ZCA (symmetric) or PCA (rotated, truncatable).

    Parameters
    ----------
    method : {"zca", "pca"}
        ZCA keeps the input's coordinates; PCA outputs principal components.
    eps : float
        Regularizer added to every eigenvalue (≥ 0; 0 only for a full-rank covariance).
    eps_mode : {"relative", "absolute"}
        ``relative``: ``ε = eps · mean eigenvalue``; ``absolute``: ``ε = eps``.
    n_components : int, optional
        Keep only the largest components (PCA: output size; ZCA: a low-rank projection).
    dtype : dtype, optional
        Output dtype (float32 for integer input, the input's float dtype otherwise).

    Examples
    --------
    >>> import numpy as np, normlab
    >>> mixing = np.array([[2.0, 1, 0], [0, 1, 0], [0, 0, 3]])
    >>> x = np.random.default_rng(0).normal(size=(500, 3)) @ mixing
    >>> w = normlab.Whiten(method="zca", eps=0.0).fit(x)
    >>> y = w.transform(x)
    >>> bool(np.allclose(np.cov(y.T, ddof=0), np.eye(3)))
    True
    >>> bool(np.allclose(w.inverse_transform(y), x))
    True
    """

    has_inverse = True

    def __init__(
        self,
        *,
        method: str = "zca",
        eps: float = 1e-2,
        eps_mode: str = "relative",
        n_components: int | None = None,
        dtype: Any = None,
    ) -> None:
        self.dtype = dtype  # no channel_axis: whitening works on the flattened sample
        self.method = method
        self.eps = eps
        self.eps_mode = eps_mode
        self.n_components = n_components

    def get_params(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "eps": self.eps,
            "eps_mode": self.eps_mode,
            "n_components": self.n_components,
            "dtype": self.dtype,
        }

    # mypy: a read-only property overrides the base's class attribute (ignored below)
    @property
    def scheme(self) -> str:  # type: ignore[override]
        return self.method

    def _validate_params(self) -> None:
        super()._validate_params()  # dtype, as for every normalizer: when fitting starts
        if self.method not in METHODS:
            raise NormlabError(f"method must be 'zca' or 'pca'; got {self.method!r}")
        if self.eps_mode not in EPS_MODES:
            raise NormlabError(f"eps_mode must be 'relative' or 'absolute'; got {self.eps_mode!r}")
        if not (
            isinstance(self.eps, (int, float))
            and not isinstance(self.eps, bool)
            and math.isfinite(float(self.eps))
            and self.eps >= 0
        ):
            raise NormlabError(f"eps must be a finite number ≥ 0; got {self.eps!r}")
        if self.n_components is not None and (
            not isinstance(self.n_components, (int, np.integer))
            or isinstance(self.n_components, bool)
            or self.n_components < 1
        ):
            raise NormlabError(
                f"n_components must be a positive integer or None; got {self.n_components!r}"
            )

    # ------------------------------------------------------------- fitting
    def partial_fit(
        self, X: Any, y: Any = None, *, sample_weight: Any = None, nan_policy: str = "raise"
    ) -> Whiten:
        """Add ``X`` to the co-moments seen so far and refit; returns ``self``.

        Whole-number ``sample_weight`` counts as copies of the samples; ``nan_policy="omit"``
        leaves out every sample with a NaN (a covariance needs whole samples).
        """
        self._validate_params()
        if sample_weight is not None:
            X = repeat_by_weight(X, sample_weight, f"{self.method} whitening")
        if nan_policy == "omit":  # a covariance needs whole samples: drop those with NaN/inf
            x = as_batch(X, "X")
            X = x[np.isfinite(x.reshape(len(x), -1)).all(axis=1)] if x.dtype.kind == "f" else x
        elif nan_policy != "raise":
            raise NormlabError(f"nan_policy must be 'raise' or 'omit'; got {nan_policy!r}")
        batch = CoMoments().update(as_batch(X, "X"))
        previous: CoMoments | None = getattr(self, "stats_", None)
        stats = previous + batch if previous is not None else batch
        return self._fit_from(stats)

    # whitening is fitted from CoMoments, not Moments (override ignored below)
    def fit_stats(self, stats: CoMoments) -> Whiten:  # type: ignore[override]
        """Fit from saved co-moments (no pass over the data); returns ``self``."""
        if isinstance(stats, Moments):
            raise NormlabError(
                f"{self.method} whitening needs co-moments (second moments between features), but "
                "these are per-feature Moments: compute them with normlab.compute_comoments(DATA) "
                "or `normlab comoments DATA -o FILE`"
            )
        if not isinstance(stats, CoMoments):
            raise NormlabError(
                f"Whiten.fit_stats needs a CoMoments object, got {type(stats).__name__}"
            )
        self._validate_params()
        self._reset()
        return self._fit_from(stats)

    # whitening is fitted from CoMoments, not Moments (override ignored below)
    def _coarsen(self, stats: CoMoments) -> CoMoments:  # type: ignore[override]
        """Co-moments are used as they are, once they can give a dense covariance."""
        if stats.dense is not None and not stats.dense:
            d = stats.n_features
            raise ShapeError(
                f"{self.method} whitening of samples of shape {stats.sample_shape} needs a dense "
                f"{d} x {d} covariance ({d * d * 8 / 1e9:.1f} GB), more than the limit of "
                f"{MAX_FEATURES} features; use per-channel statistics (scheme 'channel') or "
                "whiten patches (e.g. 8x8 crops) instead"
            )
        if stats.n_samples_seen < 2:
            raise NormlabError(
                "whitening needs at least 2 samples to estimate a covariance; got "
                f"{stats.n_samples_seen}"
            )
        return stats

    # whitening is fitted from CoMoments, not Moments (override ignored below)
    def _compute(self, stats: CoMoments) -> None:  # type: ignore[override]
        cov = stats.cov()
        d = cov.shape[0]
        lam, vecs = np.linalg.eigh(cov)
        lam, vecs = lam[::-1].clip(min=0.0), vecs[:, ::-1]  # largest first; rounding can give −0
        eps = self.eps * float(lam.mean()) if self.eps_mode == "relative" else float(self.eps)
        k = d if self.n_components is None else self.n_components
        if k > d:
            raise NormlabError(f"n_components={k} is more than the {d} features of the data")
        lam_k, vecs_k = lam[:k], vecs[:, :k]
        if not (lam_k + eps > 0).all():
            zero = int((lam_k + eps <= 0).sum())
            raise NormlabError(
                f"{zero} of the {k} kept eigenvalues of the covariance are 0 (constant or linearly "
                "dependent features), and eps=0: use eps > 0 (the default 1e-2 is relative to the "
                f"mean eigenvalue) or n_components ≤ {k - zero}"
            )
        root = np.sqrt(lam_k + eps)
        # eigh's signs are arbitrary: make each eigenvector's largest entry positive (as
        # scikit-learn's svd_flip), so refits on reordered or reweighted rows agree
        biggest = np.abs(vecs_k).argmax(axis=0)
        vecs_k = vecs_k * np.where(vecs_k[biggest, np.arange(k)] < 0, -1.0, 1.0)
        self.mean_ = stats.mean
        self.eigenvalues_ = lam_k
        self.components_ = vecs_k.T  # (k, d): rows are eigenvectors, largest first
        self.eps_ = eps
        if self.method == "zca":
            self.matrix_ = (vecs_k / root) @ vecs_k.T
            self.inverse_matrix_ = (vecs_k * root) @ vecs_k.T
        else:
            # Directions without variance (λ below numpy's matrix_rank tolerance) form a
            # degenerate eigenspace: any basis of it is an eigenbasis, so its components are
            # rounding noise. PCA outputs 0 there rather than an arbitrary projection.
            null = lam_k <= lam[0] * d * np.finfo(np.float64).eps
            self.matrix_ = np.where(null[:, None], 0.0, vecs_k.T / root[:, None])
            self.inverse_matrix_ = np.where(null[None, :], 0.0, vecs_k * root)

    def fitted_values(self) -> dict[str, np.ndarray]:
        return {"mean_": self.mean_, "eigenvalues_": self.eigenvalues_, "matrix_": self.matrix_}

    def linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        """``(shift, matrix)`` with ``y = matrix @ (x − shift)`` on flattened samples."""
        self._check_fitted()
        return self.mean_.copy(), self.matrix_.copy()

    def affine(self, sample_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NormlabError(
            f"{self.method} whitening mixes features: it is not a per-feature (shift, scale); "
            "use linear_map()"
        )

    # ------------------------------------------------------------- applying
    def _check_input(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = as_batch(X, "X")
        if x.shape[1:] != tuple(self.sample_shape_):
            raise ShapeError(
                f"Whiten was fitted on samples of shape {tuple(self.sample_shape_)}; got samples "
                f"of shape {x.shape[1:]}"
            )
        self._warn_double_normalization(x)
        return x

    def transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Whiten ``X``: ZCA keeps the sample shape, PCA returns ``(n, n_components)``.

        NaN/inf in ``X`` raise :class:`~normlab.errors.NonFiniteError`; under
        ``nan_policy="propagate"`` one makes every output of its sample NaN (the matrix mixes
        all of a sample's values). Outputs beyond the output dtype raise either way.
        """
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        x = self._check_input(X)
        with np.errstate(over="ignore", invalid="ignore"):
            flat = x.reshape(x.shape[0], -1).astype(np.float64) - self.mean_
            out = flat @ self.matrix_.T
            if self.method == "zca":
                out = out.reshape(x.shape)
            out = out.astype(self.output_dtype(x), copy=False)
        return self._checked_output(x, out, nan_policy, whole_sample=True)

    def inverse_transform(self, X: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Back to data units (exact up to rounding when no component was dropped)."""
        from .finite import check_policy

        nan_policy = check_policy(nan_policy)
        self._check_fitted()
        y = as_batch(X, "X")
        flat = y.reshape(y.shape[0], -1).astype(np.float64)
        if flat.shape[1] != self.matrix_.shape[0]:
            raise ShapeError(
                f"expected {self.matrix_.shape[0]} whitened features per sample; got "
                f"{flat.shape[1]}"
            )
        out = (flat @ self.inverse_matrix_.T + self.mean_).reshape(
            (y.shape[0], *self.sample_shape_)
        )
        with np.errstate(over="ignore"):
            out = out.astype(y.dtype if y.dtype.kind == "f" else np.float64, copy=False)
        return self._checked_output(y, out, nan_policy, whole_sample=True)

    # ------------------------------------------------------------- files
    def _json_params(self) -> dict[str, Any]:
        params = self.get_params()
        if params["dtype"] is not None:
            params["dtype"] = np.dtype(params["dtype"]).name
        return params

    @classmethod
    def from_tensors(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> Whiten:
        obj = cls(**meta["params"])
        if "stats" in meta:
            stats = CoMoments.from_tensors(
                meta["stats"], {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
            )
            obj._fit_from(stats)
        return obj

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.is_fitted:
            out.update({"eps_absolute": self.eps_, "components": int(self.matrix_.shape[0])})
        return out


def _register() -> None:
    from . import schemes

    schemes.register(
        "zca",
        lambda **options: Whiten(method="zca", **options),
        "ZCA whitening: W = U diag(1/√(λ+ε)) Uᵀ, symmetric (needs co-moments)",
        needs=("comoments",),
        measured_by_default=True,
    )
    schemes.register(
        "pca",
        lambda **options: Whiten(method="pca", **options),
        "PCA whitening: rotate onto principal axes, scale to unit variance (needs co-moments)",
        needs=("comoments",),
    )


_register()
