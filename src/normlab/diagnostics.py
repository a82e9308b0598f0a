"""What the data will do to gradient descent, before training (Efficient BackProp §5).

For a linear unit under squared loss the Hessian is ``H = E[x xᵀ] = Σ + μμᵀ``. Gradient
descent is stable up to a learning rate of ``2/λ_max``; a non-zero mean adds one large
eigenvalue (``σ² + |μ|²`` when ``Σ = σ² I``); unequal variances spread the diagonal.

:func:`diagnose` reads everything from one :class:`~normlab.CoMoments` (so a saved file gives
the same answer as the data) and reports, as a JSON-able dict:

1. **spectrum** of ``E[y yᵀ]`` for every registry scheme that applies, computed analytically:
   an affine scheme ``y = (x − s)/scale`` gives ``E[y yᵀ] = D(Σ + (μ−s)(μ−s)ᵀ)D`` with
   ``D = diag(1/scale)``; whitening ``y = W(x − μ)`` gives ``WΣWᵀ``.
2. **predictions**: the largest stable learning rate ``2/λ_max`` and the predicted speed-up of
   full-batch GD on least squares. At the step ``1/λ_max`` the error along an eigenvector of
   eigenvalue ``λ`` shrinks by ``(1 − λ/λ_max)`` per step, so fitting every direction that
   carries 99 % of the variance takes about ``κ₉₉ = λ_max/λ_k99`` steps (times ``ln(1/tol)``);
   the predicted speed-up of scheme A over B is ``κ₉₉(B)/κ₉₉(A)``.
3. **feature health** from the per-feature moments: constant, near-constant and rare features,
   the largest training ``|z|`` and features whose scale is far off the median.
4. a plain-words **recommendation** with the numbers behind it.

Above :data:`~normlab.comoments.MAX_FEATURES` features the co-moments hold a one-pass sketch
``Σ x xᵀ Ω``; the top eigenvalues then come from a Nyström estimate (Tropp et al. 2017) with the
test matrix ``Ψ = D⁻¹Ω``, for which ``E[y yᵀ] Ψ = D(GΩ/n − μ(μᵀΩ) + v(vᵀΩ))`` needs no second
pass and no dense matrix.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from . import schemes
from .comoments import MAX_FEATURES, SKETCH_SIZE, CoMoments, compute_comoments
from .errors import EmptyDataError, NormlabError, NormlabWarning, ShapeError
from .moments import Moments
from .rarity import RARE_THRESHOLD, rare_limit, rare_rule

NEAR_CONSTANT = 1e-2  # std below 1 % of the median std: near-constant
SCALE_OFF = 100.0  # std more than 100x above or below the median std
Z_CAP = 10.0  # recommended std_floor = max |x − mean| / 10: every training |z| stays ≤ 10
WHITEN_WORTH = (
    2.0  # whitening is worth it when it cuts κ₉₉ by this factor over the best affine scheme
)
KERAS_FLOOR = 1e-7  # Keras Normalization divides by max(std, 1e-7) (anchors [K1])
LR_GRID = (0.5, 0.9, 0.95, 1.05, 1.1, 1.5, 2.0, 4.0)  # multiples of 2/λ_max
DIVERGENCE_STEPS = 400
TOLERANCE = 1e-2  # iterations until the excess loss is 1 % of its start
MAX_ITERATIONS = 20000
SHOWN = 20  # indices listed per finding


def diagnose(
    source: Any = None,
    *,
    dataset: str | None = None,
    labels: Any = None,
    key: str | None = None,
    holdout: Any = None,
    measure: bool = False,
    measure_schemes: tuple[str, ...] | None = None,
    rare_threshold: int = RARE_THRESHOLD,
    max_features: int = MAX_FEATURES,
    sketch_size: int = SKETCH_SIZE,
    mask_png: str | os.PathLike | None = None,
    progress: bool | None = None,
    **source_options: Any,
) -> dict[str, Any]:
    """Diagnose data (or saved co-moments) for gradient descent; returns a JSON-able dict.

    Parameters
    ----------
    source
        Data as :func:`~normlab.compute_stats` accepts it (array, ``.npy``, ...), a
        :class:`~normlab.CoMoments` object, or the path of a saved co-moments file.
    dataset : {"digits", "mnist5k"}, optional
        A bundled dataset of the lab (all samples) instead of ``source``.
    labels
        Integer labels (array or ``.npy``) for ``measure`` with your own data.
    holdout
        Held-out data (array or ``.npy``): also report ``|z|`` there.
    measure
        Run full-batch GD on least squares for ``measure_schemes`` (default: the schemes the
        registry marks ``measured_by_default``) and report the measured
        divergence threshold and iterations next to the predictions (needs the data and labels).
    rare_threshold
        A feature non-zero in at most this many samples, and in at most a tenth of them, is
        rare (:mod:`normlab.rarity`).
    mask_png
        For image-shaped samples, write a PNG of the constant (red) and rare (orange) pixels.
    source_options
        How to read ``source`` and where to run, as for :func:`~normlab.compute_comoments`:
        image folders take ``mode``, ``resize``, ``skip_bad``, ...; ``engine``, ``workers``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(3.0, 1.0, (4000, 5))  # Σ ≈ I, |μ|² = 45
    >>> d = diagnose(x)
    >>> round(d["spectrum"]["raw"]["lambda_max"])  # σ² + |μ|²
    46
    >>> round(d["spectrum"]["feature"]["lambda_max"], 1)  # the spike is gone
    1.0
    """
    data, targets, comoments = _inputs(
        source, dataset, labels, key, max_features, sketch_size, progress, source_options
    )
    n = comoments.n_samples_seen
    if n < 2:
        raise EmptyDataError(
            f"diagnosis needs at least 2 samples (a covariance of 1 sample is undefined); got {n}"
        )
    if rare_threshold < 0:
        raise NormlabError(f"rare_threshold must be ≥ 0; got {rare_threshold}")
    fitted, skipped = _fit_schemes(comoments)
    weights, prior = _prior_weights(comoments)
    spectra = {name: _spectrum(comoments, norm, weights) for name, norm in fitted.items()}
    report: dict[str, Any] = {
        "data": comoments.summary(),
        "spectrum": {**spectra, **{name: {"skipped": why} for name, why in skipped.items()}},
        "predictions": _predictions(spectra, prior),
        "health": _health(comoments.moments, rare_threshold),
    }
    if holdout is not None:
        report["holdout"] = _holdout(comoments.moments, holdout, key)
    if measure:
        if data is None or targets is None:
            raise NormlabError(
                "measure=True trains on the data: give the data with labels (dataset='NAME', "
                "or DATA.npy with labels='y.npy'), not a co-moments file"
            )
        if measure_schemes is None:
            measure_schemes = tuple(schemes.where(measured_by_default=True))
        report["measured"] = _measure(data, targets, fitted, spectra, measure_schemes)
    report["recommendation"] = _recommend(report)
    if mask_png is not None:
        _write_mask(comoments.moments, rare_threshold, mask_png)
    return report


# ---------------------------------------------------------------------------- inputs
def _inputs(
    source: Any,
    dataset: str | None,
    labels: Any,
    key: str | None,
    max_features: int,
    sketch_size: int,
    progress: bool | None,
    source_options: dict[str, Any],
) -> tuple[np.ndarray | None, np.ndarray | None, CoMoments]:
    """``(data or None, targets or None, comoments)`` from whatever was given."""
    if (source is None) == (dataset is None):
        raise NormlabError("give either data / a co-moments file, or dataset= (one of them)")
    data = targets = None
    if dataset is not None:
        from .lab.datasets import load_arrays

        if dataset not in ("digits", "mnist5k"):
            raise NormlabError(f"unknown dataset {dataset!r}; choose digits or mnist5k")
        data, targets, _ = load_arrays(dataset)
        source = data
    if isinstance(source, CoMoments):
        return None, None, source
    if isinstance(source, Moments):
        raise NormlabError(_NO_SECOND_MOMENTS.format(what="these statistics"))
    from .io import load, looks_saved

    if (
        isinstance(source, (str, os.PathLike))
        and Path(source).suffix not in (".npy", ".npz")
        and Path(source).is_file()
        and (Path(source).suffix == ".safetensors" or looks_saved(source))  # else: data
    ):
        obj = load(source)
        if not isinstance(obj, CoMoments):
            what = f"{source} holds {type(obj).__name__}" + (
                " (first moments only)" if isinstance(obj, Moments) else ""
            )
            raise NormlabError(_NO_SECOND_MOMENTS.format(what=what))
        return None, None, obj
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".npy"):
        from .sources.arrays import load_npy

        data = load_npy(source, "", mmap=True)
    elif isinstance(source, np.ndarray):
        data = source
    if labels is not None:
        targets = (
            _load_labels(labels) if isinstance(labels, (str, os.PathLike)) else np.asarray(labels)
        )
        if data is None or targets.shape != (len(data),):
            raise ShapeError(
                f"labels must be one integer per sample: got shape {targets.shape} for "
                f"{'unknown' if data is None else len(data)} samples"
            )
    comoments = compute_comoments(
        source,
        key=key,
        max_features=max_features,
        sketch_size=sketch_size,
        progress=progress,
        **source_options,
    )
    return data, targets, comoments


_NO_SECOND_MOMENTS = (
    "{what}: the diagnosis needs second moments between features (co-moments), which per-feature "
    "statistics do not hold; make them with `normlab comoments DATA -o FILE` or "
    "normlab.compute_comoments(DATA).save(FILE)"
)


def _fit_schemes(comoments: CoMoments) -> tuple[dict[str, Any], dict[str, str]]:
    """Every registry scheme fitted from the co-moments; the rest with the reason why not."""

    fitted: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    shape = comoments.sample_shape
    if shape is None:  # no samples: every fit would fail (the identity's affine with a TypeError)
        raise EmptyDataError("no samples seen: co-moments of empty data are undefined")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        for name in schemes.names():
            entry = schemes.entry(name)
            why = entry.unusable_for(shape)
            if why is not None:
                skipped[name] = why
                continue
            try:
                norm = schemes.get(name)
                norm.fit_stats(entry.statistics_from(comoments))
                if "comoments" not in entry.needs:
                    norm.affine(shape)
                fitted[name] = norm
            except NormlabError as exc:
                skipped[name] = str(exc)
    return fitted, skipped


# ---------------------------------------------------------------------------- spectrum
def _moments_of(
    comoments: CoMoments, norm: Any
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``E[y yᵀ]``, ``Cov(y)`` and ``Cov(y, x)`` of the normalized data, from the co-moments.

    ``Cov(y)`` is ``None`` where it equals ``E[y yᵀ]`` (the scheme centres the data).
    """
    from .whitening import Whiten

    cov = comoments.cov()
    if isinstance(norm, Whiten):
        _, matrix = norm.linear_map()
        return matrix @ cov @ matrix.T, None, matrix @ cov
    shift, scale = norm.affine(comoments.sample_shape)
    inv, v = 1.0 / scale, comoments.mean - shift
    cov_y = inv[:, None] * cov * inv[None, :]
    cross = inv[:, None] * cov
    if not np.any(v):
        return cov_y, None, cross
    return cov_y + np.outer(inv * v, inv * v), cov_y, cross


def _k99(lam: np.ndarray) -> int | None:
    """How many eigenvalues (largest first) hold 99 % of the trace."""
    total = float(lam.sum())
    if total <= 0:
        return None
    return min(int(np.searchsorted(np.cumsum(lam) / total, 0.99) + 1), lam.size)


PRIORS = {
    "shared-unit": "f = Σ w_j (x_j − μ_j): the samples are images, whose pixels share one unit, "
    "so a pixel matters as much as it varies",
    "per-feature": "f = Σ w_j (x_j − μ_j)/σ_j: the features need not share a unit (grams and "
    "tonnes weigh the same), so each matters equally; near-constant features left out",
}


def _prior_weights(comoments: CoMoments) -> tuple[np.ndarray, str]:
    """The weights of the step prediction's targets, and the name of the prior.

    The targets are ``f(x) = Σ_j w_j a_j (x_j − μ_j)`` with independent standard normal
    ``w_j`` — a prior that no scheme changes. Images (samples of two or more axes) share a unit:
    ``a_j = 1``, and a pixel matters as much as it varies. Other samples are features of
    possibly different units: ``a_j = 1/σ_j`` makes every feature, in its own units, matter
    equally, and a large-unit feature cannot hide the others (the case in which κ₉₉ calls raw
    data well conditioned); constant and near-constant features (std below 1 % of the median
    std, the health table's rule) are left out.
    """
    std = np.sqrt(comoments.moments.var().reshape(-1))
    if len(comoments.sample_shape or ()) >= 2:
        return np.ones_like(std), "shared-unit"
    varied = std[std > 0]
    if varied.size == 0:
        return np.zeros_like(std), "per-feature"
    keep = std > NEAR_CONSTANT * float(np.median(varied))
    return np.where(keep, 1.0 / np.where(keep, std, 1.0), 0.0), "per-feature"


def _steps_to_tolerance(lam: np.ndarray, excess: np.ndarray) -> int | None:
    """Full-batch GD steps at ``1/λ_max`` until ``Σ e_k (1 − λ_k/λ_max)^{2t} ≤ tol · Σ e_k``.

    ``None`` beyond :data:`MAX_ITERATIONS` (the measurement's cap).
    """
    total = float(excess.sum())
    if total <= 0 or lam.size == 0:
        return 0
    decay = (1.0 - lam / lam.max()).clip(0.0, 1.0)

    def left(t: int) -> float:
        return float((excess * decay ** (2 * t)).sum()) / total

    if left(0) <= TOLERANCE:
        return 0
    if left(MAX_ITERATIONS) > TOLERANCE:
        return None
    low, high = 0, MAX_ITERATIONS  # left(low) > tol ≥ left(high): the remainder only falls
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if left(mid) > TOLERANCE else (low, mid)
    return high


def _spectrum(comoments: CoMoments, norm: Any, weights: np.ndarray) -> dict[str, Any]:
    if not comoments.dense:
        return _sketch_spectrum(comoments, norm)
    second, cov_y, cross = _moments_of(comoments, norm)
    lam, vecs = np.linalg.eigh(second)
    lam, vecs = lam[::-1].clip(min=0.0), vecs[:, ::-1]
    # k99 counts the directions of the data's *variation* that hold 99 % of its variance: a
    # mean spike is one more eigenvalue of E[yyᵀ] (it caps the rate) but carries none of the
    # variation a model must fit, so it must not count as "99 % fitted" (raw data whose mean
    # holds 99.9 % of the trace would otherwise read κ₉₉ = 1, perfectly conditioned)
    varied = lam if cov_y is None else np.linalg.eigvalsh(cov_y)[::-1].clip(min=0.0)
    d = lam.size
    top = float(lam[0])
    tol = max(d, comoments.n_samples_seen) * np.finfo(np.float64).eps * top
    retained = lam > tol
    n_zero = int(d - retained.sum())
    total = float(lam.sum())
    k99 = _k99(varied)
    share = lam[lam > 0] / total if total > 0 else np.ones(1)
    # the prior's expected excess along each eigenvector at w = 0: ‖Gᵀu_k‖²/λ_k with
    # G = Cov(y, x)·diag(1/σ) (the optimum is H⁺E[y f], and E[y f] = G w)
    reach = ((vecs.T @ (cross * weights[None, :])) ** 2).sum(axis=1)
    excess = np.where(retained, reach / np.where(retained, lam, 1.0), 0.0)
    out = {
        "lambda_max": top,
        "lambda_2": float(lam[1]) if d > 1 else None,
        "ratio_max_2": _ratio(top, lam[1]) if d > 1 else None,
        "ratio_max_10": _ratio(top, lam[9]) if d >= 10 else None,
        "k99": k99,
        "ratio_max_k99": _ratio(top, varied[k99 - 1]) if k99 else None,
        "kappa_retained": _ratio(top, lam[retained][-1]) if retained.any() else None,
        "effective_rank": float(np.exp(-(share * np.log(share)).sum())),
        "trace": total,
        "n_zero": n_zero,
        "zero_reason": _zero_reason(comoments, n_zero, d) if n_zero else None,
        "gd_steps": _steps_to_tolerance(lam[retained], excess[retained]),
        # the mean's direction carries most of E[yyᵀ]'s top eigenvalue (a non-centred scheme)
        "mean_spike": cov_y is not None and top > 2.0 * float(varied[0]),
        "estimated": False,
    }
    return out


def _zero_reason(comoments: CoMoments, n_zero: int, d: int) -> str:
    n_const = int(comoments.moments.is_constant().sum())
    parts = []
    if n_const:
        parts.append(f"{n_const} constant feature(s) (zero variance)")
    if comoments.n_samples_seen - 1 < d:
        parts.append(f"only {comoments.n_samples_seen} samples for {d} features (rank ≤ n)")
    rest = n_zero - n_const
    if rest > 0 and comoments.n_samples_seen - 1 >= d:
        parts.append(f"{rest} linear dependence(s) between features")
    if rest < 0:
        parts.append("a non-zero mean fills one of the constant directions")
    return "; ".join(parts) or "linear dependences between features"


def _sketch_spectrum(comoments: CoMoments, norm: Any) -> dict[str, Any]:
    """Top eigenvalues of ``E[y yᵀ]`` from the one-pass sketch (Nyström, Tropp et al. 2017)."""
    from .whitening import Whiten

    if isinstance(norm, Whiten):  # never fitted above the limit; kept for clarity of intent
        raise ShapeError("whitening needs dense co-moments")
    sketch, omega = comoments.sketch()
    n = comoments.n_samples_seen
    mean = comoments.mean
    var = comoments.moments.var().reshape(-1)
    shift, scale = norm.affine(comoments.sample_shape)
    inv, v = 1.0 / scale, mean - shift
    psi = scale[:, None] * omega  # Ψ = D⁻¹Ω, so that E[yyᵀ]Ψ = D(GΩ/n − μμᵀΩ + vvᵀΩ)
    y = inv[:, None] * (sketch / n - np.outer(mean, mean @ omega) + np.outer(v, v @ omega))
    nu = math.sqrt(y.shape[0]) * np.finfo(np.float64).eps * np.linalg.norm(y)
    y_nu = y + nu * psi
    b = psi.T @ y_nu
    w, vecs = np.linalg.eigh((b + b.T) / 2)
    keep = w > w.max() * 1e-12
    f = y_nu @ (vecs[:, keep] / np.sqrt(w[keep]))
    lam = np.sort((np.linalg.svd(f, compute_uv=False) ** 2 - nu).clip(min=0.0))[::-1]
    top = float(lam[0])
    usable = max(2, lam.size // 2)  # the upper half of a sketch's eigenvalues is trustworthy
    return {
        "lambda_max": top,
        "lambda_2": float(lam[1]),
        "ratio_max_2": _ratio(top, lam[1]),
        "ratio_max_10": _ratio(top, lam[9]) if usable >= 10 else None,
        "k99": None,
        "ratio_max_k99": None,
        "kappa_retained": None,
        "effective_rank": None,
        "trace": float((inv**2 * (var + v**2)).sum()),
        "n_zero": None,
        "zero_reason": None,
        "gd_steps": None,
        "mean_spike": None,
        "estimated": True,
    }


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 and math.isfinite(a / b) else None


# ---------------------------------------------------------------------------- predictions
def _predictions(spectra: dict[str, dict[str, Any]], prior: str) -> dict[str, Any]:
    def kappa(name: str) -> float | None:
        s = spectra.get(name)
        if s is None:
            return None
        return s["ratio_max_k99"] if s["ratio_max_k99"] is not None else s["ratio_max_2"]

    def speedup(name: str, ref: str) -> tuple[float | None, bool]:
        """(speed-up of ``name`` over ``ref``, whether it is a lower bound)."""
        mine, theirs = spectra[name], spectra.get(ref)
        if theirs is None:
            return None, False
        if mine["estimated"] or theirs["estimated"]:  # a sketch: no step count, κ = λ_max/λ_2
            km, kr = kappa(name), kappa(ref)
            return (_ratio(kr, km) if km and kr else None), False
        steps, ref_steps = mine["gd_steps"], theirs["gd_steps"]
        if steps is None:
            return None, False
        if ref_steps is None:  # the reference never gets there: at least this much faster
            return MAX_ITERATIONS / max(steps, 1), True
        return max(ref_steps, 1) / max(steps, 1), False

    per_scheme = {}
    references = tuple(schemes.where(reference=True))
    for name, s in spectra.items():
        entry: dict[str, Any] = {
            "lr_max": 2.0 / s["lambda_max"] if s["lambda_max"] > 0 else None,
            "kappa99": kappa(name),
            "gd_steps": s["gd_steps"],
        }
        for ref in references:
            value, bound = speedup(name, ref)
            entry[f"speedup_vs_{ref}"] = value
            entry[f"speedup_vs_{ref}_is_lower_bound"] = bound
        per_scheme[name] = entry
    return {
        "formula": (
            "largest stable learning rate = 2/λ_max (of E[yyᵀ]: a model with a bias sees one more "
            "input, the constant 1); GD steps = full-batch gradient descent on least squares at "
            f"step 1/λ_max from w = 0 until the excess loss is {TOLERANCE:g} of its start, "
            f"expected over targets {PRIORS[prior]} (w_j standard normal); "
            f"'—' beyond {MAX_ITERATIONS} steps; speed-up of A over B = steps(B)/steps(A) "
            "('>' where B is beyond the cap; κ₉₉(B)/κ₉₉(A) with κ = λ_max/λ_2 where only a "
            "sketch of the spectrum exists); κ₉₉ = λ_max/λ_k99, k99: the components holding "
            "99 % of the variance"
        ),
        "steps_prior": prior,
        "schemes": per_scheme,
    }


# ---------------------------------------------------------------------------- health
def _indices(mask: np.ndarray, shape: tuple[int, ...]) -> list[list[int]]:
    flat = np.flatnonzero(mask.reshape(-1))[:SHOWN]
    return [[int(i) for i in np.unravel_index(j, shape)] for j in flat]


def _health(m: Moments, rare_threshold: int) -> dict[str, Any]:
    from .normalizers import constant_mask

    shape = tuple(m.sample_shape or ())
    n = m.n_samples_seen
    const = constant_mask(m).reshape(-1)
    std = m.std().reshape(-1)
    mean = m.mean.reshape(-1)
    live = ~const
    median_std = float(np.median(std[live])) if live.any() else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(
            live,
            np.fmax(np.abs(m.max.reshape(-1) - mean), np.abs(m.min.reshape(-1) - mean)) / std,
            0.0,
        )
    near = live & (std < NEAR_CONSTANT * median_std)
    rare = live & (m.n_nonzero.reshape(-1) <= rare_limit(n, rare_threshold))
    off = live & ((std > SCALE_OFF * median_std) | (std < median_std / SCALE_OFF))
    worst = int(np.argmax(z))
    health = {
        "n_features": int(const.size),
        "constant": {"count": int(const.sum()), "indices": _indices(const, shape)},
        "near_constant": {
            "count": int(near.sum()),
            "rule": f"std < {NEAR_CONSTANT:g} × median std ({median_std:.4g})",
            "indices": _indices(near, shape),
        },
        "rare": {
            "count": int(rare.sum()),
            "rule": rare_rule(n, rare_threshold),
            "indices": _indices(rare, shape),
        },
        "max_abs_z": {
            "value": float(z[worst]),
            "index": [int(i) for i in np.unravel_index(worst, shape)],
            "bound": math.sqrt(n - 1),
            "count_above_10": int((z > 10).sum()),
        },
        "scale_off": {
            "count": int(off.sum()),
            "rule": f"std > {SCALE_OFF:g}× or < 1/{SCALE_OFF:g} of the median std",
            "indices": _indices(off, shape),
        },
        "median_std": median_std,
    }
    if live.any() and median_std > 0:
        deviation = np.where(live, z * std, 0.0)  # max |x − mean| per feature
        floor = float(deviation.max() / Z_CAP)
        z_floor = np.where(live, deviation / np.maximum(std, floor), 0.0)
        health["std_floor"] = {
            "value": floor,
            "features_affected": int((live & (std < floor)).sum()),
            "max_abs_z_with_floor": float(z_floor.max()),
        }
    return health


def _holdout(m: Moments, holdout: Any, key: str | None) -> dict[str, Any]:
    """``|z|`` of held-out data under the training per-feature z-score (as normlab applies it)."""
    from .normalizers import ZScore
    from .stats import compute_stats

    test = compute_stats(holdout, "feature", key=key, progress=False)
    if test.sample_shape != m.sample_shape:
        raise ShapeError(
            f"held-out samples have shape {test.sample_shape}; the training samples "
            f"{m.sample_shape}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        zscore = ZScore(axis="feature").fit_stats(m)
    shift, scale = zscore.affine(m.sample_shape)
    dev = np.fmax(np.abs(test.max.reshape(-1) - shift), np.abs(test.min.reshape(-1) - shift))
    z = dev / scale
    const = zscore.zero_variance_.reshape(-1)
    moved = const & (dev > 0)
    worst = int(np.argmax(z))
    shape = tuple(m.sample_shape or ())
    return {
        "samples": test.n_samples_seen,
        "max_abs_z": float(z[worst]),
        "index": [int(i) for i in np.unravel_index(worst, shape)],
        "training_bound": math.sqrt(m.n_samples_seen - 1),
        "count_above_training_bound": int((z > math.sqrt(m.n_samples_seen - 1)).sum()),
        "train_constant_that_vary": {"count": int(moved.sum()), "indices": _indices(moved, shape)},
        "max_abs_z_with_keras_floor": float((dev[moved] / KERAS_FLOOR).max())
        if moved.any()
        else None,
    }


# ---------------------------------------------------------------------------- measurement
def _measure(
    data: np.ndarray,
    targets: np.ndarray,
    fitted: dict[str, Any],
    spectra: dict[str, Any],
    names: tuple[str, ...],
) -> dict[str, Any]:
    """Full-batch GD on linear least squares (½·squared error on one-hot targets, no bias).

    The lab's ``lsq`` model with its bias input left out, so that its Hessian is exactly the
    ``E[y yᵀ]`` analysed here. ``H = E[y yᵀ]`` and ``B = E[y tᵀ]`` are measured from the
    transformed samples (not from the co-moments), and GD runs in the eigenbasis of that
    measured ``H`` — GD is rotation-equivariant, so the losses are those of the plain
    iterates, at ``d`` operations per output and step.
    """
    classes, index = np.unique(np.asarray(targets), return_inverse=True)
    onehot = np.eye(len(classes))[index]
    out: dict[str, Any] = {}
    for name in names:
        if name not in fitted:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NormlabWarning)
            y = fitted[name].transform(np.asarray(data)).astype(np.float64).reshape(len(data), -1)
        lam, vecs = np.linalg.eigh(y.T @ y / len(y))
        h = lam.clip(min=0.0)[:, None]  # the measured H, diagonal in its eigenbasis
        b = vecs.T @ (y.T @ onehot / len(y))
        c = 0.5 * float((onehot**2).sum(axis=1).mean())
        predicted = 2.0 / spectra[name]["lambda_max"]
        stable, diverged = None, None
        for factor in LR_GRID:
            if _diverges(h, b, c, factor * predicted):
                diverged = factor * predicted
                break
            stable = factor * predicted
        threshold = math.sqrt(stable * diverged) if stable and diverged else None
        out[name] = {
            "lr_predicted": predicted,
            "lr_largest_stable": stable,
            "lr_smallest_diverging": diverged,
            "lr_threshold": threshold,
            "ratio_measured_to_predicted": threshold / predicted if threshold else None,
            "iterations_to_tolerance": _iterations(h, b, c, 0.5 * predicted),
        }
    for row in out.values():
        for ref in schemes.where(reference=True):
            mine = row["iterations_to_tolerance"]
            theirs = out[ref]["iterations_to_tolerance"] if ref in out else None
            # a reference that never reached the tolerance gives a lower bound on the speed-up
            bound = ref in out and theirs is None and mine is not None
            row[f"measured_speedup_vs_{ref}"] = (
                (MAX_ITERATIONS if bound else theirs) / mine if mine and (theirs or bound) else None
            )
            row[f"measured_speedup_vs_{ref}_is_lower_bound"] = bool(bound)
    return {
        "model": "linear least squares (½·squared error on one-hot targets, no bias), "
        "full-batch GD from w = 0",
        "threshold": "geometric mean of the largest stable and the smallest diverging rate on "
        "the grid " + ", ".join(f"{f:g}" for f in LR_GRID) + " × 2/λ_max",
        "max_iterations": MAX_ITERATIONS,
        "tolerance": f"excess loss ≤ {TOLERANCE:g} of its start, at step 1/λ_max, at most "
        f"{MAX_ITERATIONS} iterations (null: not reached)",
        "schemes": out,
    }


def _gd(h: np.ndarray, b: np.ndarray, c: float, lr: float, steps: int) -> Iterator[float]:
    """Yield the loss before each of ``steps`` full-batch GD steps from w = 0.

    ``h`` holds the eigenvalues of the Hessian.
    """
    w = np.zeros_like(b)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            hw = h * w
            yield float(0.5 * np.sum(w * hw) - np.sum(w * b) + c)
            w -= lr * (hw - b)


def _diverges(h: np.ndarray, b: np.ndarray, c: float, lr: float) -> bool:
    """Below 2/λ_max the loss of GD on a quadratic never rises; above it, it eventually explodes."""
    best = math.inf
    for loss in _gd(h, b, c, lr, DIVERGENCE_STEPS):
        if not math.isfinite(loss) or loss > best * (1 + 1e-9) + 1e-12:
            return True
        best = min(best, loss)
    return False


def _iterations(h: np.ndarray, b: np.ndarray, c: float, lr: float) -> int | None:
    keep = h > h.max() * h.size * np.finfo(np.float64).eps
    w_star = np.where(keep, b / np.where(keep, h, 1.0), 0.0)  # the least-squares optimum
    floor = float(0.5 * np.sum(w_star * (h * w_star)) - np.sum(w_star * b) + c)
    start = None
    for step, loss in enumerate(_gd(h, b, c, lr, MAX_ITERATIONS + 1)):
        start = loss - floor if start is None else start
        if loss - floor <= TOLERANCE * start:
            return step
    return None


# ---------------------------------------------------------------------------- advice
def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _speed_key(prediction: dict[str, Any]) -> tuple[float, float]:
    """Fewest predicted GD steps first (beyond the cap: last), then the smallest κ₉₉."""
    steps = prediction["gd_steps"]
    return (math.inf if steps is None else float(steps), prediction["kappa99"] or math.inf)


def _recommend(report: dict[str, Any]) -> list[str]:
    spectra = {k: v for k, v in report["spectrum"].items() if "skipped" not in v}
    preds = report["predictions"]["schemes"]
    health = report["health"]
    lines = []
    raw = next((spectra[b] for b in schemes.where(baseline=True) if b in spectra), None)
    if raw and raw["ratio_max_2"] and raw["mean_spike"] is not False:
        lines.append(
            f"The raw data's E[xxᵀ] has one dominant eigenvalue {raw['lambda_max']:.4g}, "
            f"{raw['ratio_max_2']:.3g}× the next: the mean spike. Centering removes it."
        )
    affine = {
        k: v for k, v in preds.items() if "comoments" not in schemes.entry(k).needs and v["kappa99"]
    }
    if affine:
        best = min(affine, key=lambda k: _speed_key(affine[k]))
        p = affine[best]
        versus = "; ".join(
            f"{'over ' if p[f'speedup_vs_{ref}_is_lower_bound'] else ''}"
            f"{p[f'speedup_vs_{ref}']:.3g}× faster than '{ref}'"
            for ref in reversed(schemes.where(reference=True))  # the stronger reference first
            if p[f"speedup_vs_{ref}"]
        )
        steps = (
            f"{_plural(p['gd_steps'], 'GD step')} to 1 %"
            if p["gd_steps"] is not None
            else f"over {MAX_ITERATIONS} GD steps to 1 %"
            if not spectra[best]["estimated"]
            else "steps not predicted (sketch)"
        )
        lines.append(
            f"Use '{best}': {steps}, κ₉₉ = {p['kappa99']:.4g}, largest stable LR "
            f"{p['lr_max']:.3g}; predicted {versus or 'no reference to compare with'}."
        )
        floor = health.get("std_floor")
        if (
            schemes.entry(best).feature_std
            and floor
            and (health["rare"]["count"] or health["max_abs_z"]["count_above_10"])
        ):
            lines.append(
                f"Per-feature z-scores let {health['rare']['count']} rare feature(s) reach |z| up "
                "to "
                f"{health['max_abs_z']['value']:.3g} (bound √(n−1) = "
                f"{health['max_abs_z']['bound']:.3g}); "
                f"std_floor={floor['value']:.3g} (data units: the largest |x − mean| / {Z_CAP:g}, "
                "so "
                f"every training |z| ≤ {Z_CAP:g}) touches "
                f"{floor['features_affected']} feature(s) and caps |z| at "
                f"{floor['max_abs_z_with_floor']:.3g}."
            )
        for name in schemes.where(measured_by_default=True):
            whiten = preds.get(name)
            if "comoments" not in schemes.entry(name).needs or not (whiten and whiten["kappa99"]):
                continue
            if p["gd_steps"] is not None and whiten["gd_steps"] is not None:
                gain = max(p["gd_steps"], 1) / max(whiten["gd_steps"], 1)
                what = _plural(whiten["gd_steps"], "GD step")
            elif whiten["gd_steps"] is not None and not spectra[best]["estimated"]:
                gain, what = math.inf, _plural(whiten["gd_steps"], "GD step")
            else:
                gain = p["kappa99"] / whiten["kappa99"]
                what = f"κ₉₉ = {whiten['kappa99']:.4g}"
            verdict = "worth it" if gain >= WHITEN_WORTH else "not worth the cost"
            lines.append(
                f"{name.upper()} whitening: {what}, {gain:.3g}× below "
                f"'{best}': {verdict} (threshold {WHITEN_WORTH:g}×) for a linear model."
            )
    if health["constant"]["count"]:
        lines.append(
            f"{health['constant']['count']} constant feature(s) carry no information: normlab "
            "gives "
            "them scale 1 (output 0); consider dropping them."
        )
    held = report.get("holdout")
    if held and held["train_constant_that_vary"]["count"]:
        lines.append(
            f"On held-out data {held['train_constant_that_vary']['count']} training-constant "
            "feature(s) "
            f"take other values: |z| up to {held['max_abs_z']:.3g} with normlab's scale 1, but "
            f"{held['max_abs_z_with_keras_floor']:.3g} with a 1e-7 std floor."
        )
    return lines


def _write_mask(m: Moments, rare_threshold: int, path: str | os.PathLike) -> None:
    """PNG of constant (red) and rare (orange) pixels over the mean image (gray)."""
    from .errors import require
    from .io import atomic_write
    from .normalizers import constant_mask

    shape = tuple(m.sample_shape or ())
    if len(shape) not in (2, 3):
        raise ShapeError(f"a pixel mask needs image-shaped samples (H, W[, C]); these are {shape}")
    matplotlib = require("matplotlib", "lab")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def per_pixel(a: np.ndarray, reduce: Any) -> np.ndarray:
        return reduce(a, axis=-1) if len(shape) == 3 else a

    mean = per_pixel(m.mean, np.mean)
    span = float(mean.max() - mean.min()) or 1.0
    gray = (mean - mean.min()) / span
    rgb = np.stack([gray, gray, gray], axis=-1)
    limit = rare_limit(m.n_samples_seen, rare_threshold)
    rare = per_pixel((m.n_nonzero <= limit) & ~constant_mask(m), np.any)
    const = per_pixel(constant_mask(m), np.all)
    rgb[rare] = (1.0, 0.6, 0.0)
    rgb[const] = (1.0, 0.0, 0.0)
    with atomic_write(path) as handle:
        plt.imsave(cast(BinaryIO, handle), rgb, format="png")  # atomic_write opens "wb"


def _load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    from .sources.arrays import load_npy

    return load_npy(path, "labels")
