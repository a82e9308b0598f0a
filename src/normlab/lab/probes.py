"""Probes of the mechanism (Efficient BackProp §4.3 and §5), on data and on first-layer updates.

Data probes (numpy, float64, on the normalized training inputs):

* :func:`second_moment_spectrum` — λ_max of the Hessian of a linear unit, ``H = E[x xᵀ]``;
  ``2/λ_max`` is the largest learning rate plain gradient descent can use.
* :func:`diagonal_spread` — the per-input diagonal ``E[x_k²]``: unequal entries mean unequal
  per-weight learning rates.
* :func:`single_signed_samples` — the batch-size-1 illustration: with one sample the update
  of unit j is ``δ_j·x``, so its row is single-signed exactly when the nonzero inputs all
  share a sign — 100 % for any non-negative data, whatever the model does.

Update probes (torch, during training, at the run's batch size): :class:`UpdateProbe`
measures how many first-layer rows move with one sign, and the cosine between successive
updates of each row (negative = a reversed step: the zigzag).

>>> import numpy as np
>>> x = np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 1.0]])
>>> float(single_signed_samples(x))  # non-negative data: every row of δ_j·x has one sign
1.0
>>> float(single_signed_samples(x - x.mean(axis=0)))  # centered: mixed signs (zero row skipped)
0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EIGH_LIMIT = 4096  # features; above this, power iteration on E[x xᵀ] without forming it


def _flat64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def second_moment_spectrum(x: np.ndarray) -> dict[str, float]:
    """λ_max, λ_min and trace of ``E[x xᵀ]`` (uncentered: the mean's spike is the point).

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    >>> second_moment_spectrum(x)["lambda_max"]  # E[x xᵀ] = diag(10/3, 4/3)
    3.3333333333333335
    """
    flat = _flat64(x)
    n, d = flat.shape
    if d <= _EIGH_LIMIT:
        eig = np.linalg.eigvalsh(flat.T @ flat / n)
        return {
            "lambda_max": float(eig[-1]),
            "lambda_min": float(max(eig[0], 0.0)),
            "trace": float(eig.sum()),
        }
    v = np.ones(d) / np.sqrt(d)
    lam = 0.0
    for _ in range(200):
        w = flat.T @ (flat @ v) / n
        lam_new = float(np.linalg.norm(w))
        if lam_new == 0.0:
            break
        v = w / lam_new
        if abs(lam_new - lam) <= 1e-10 * lam_new:
            lam = lam_new
            break
        lam = lam_new
    return {"lambda_max": lam, "lambda_min": float("nan"), "trace": float((flat**2).sum() / n)}


def diagonal_spread(x: np.ndarray, n_quantiles: int = 21) -> dict[str, Any]:
    """The diagonal ``E[x_k²]`` of the second-moment matrix: ratios and quantiles.

    ``ratio`` is max / median over inputs with a nonzero entry (1.0 when every input has the
    same second moment); ``cv`` is their std / mean.
    """
    diag = (_flat64(x) ** 2).mean(axis=0)
    nonzero = diag[diag > 0]
    if nonzero.size == 0:
        return {"ratio": None, "cv": None, "n_zero": int(diag.size), "quantiles": []}
    quantiles = np.quantile(nonzero, np.linspace(0.0, 1.0, n_quantiles))
    return {
        "ratio": float(nonzero.max() / np.median(nonzero)),
        "cv": float(nonzero.std() / nonzero.mean()),
        "n_zero": int(diag.size - nonzero.size),
        "quantiles": [float(q) for q in quantiles],
    }


def single_signed_samples(x: np.ndarray) -> float:
    """Share of samples whose nonzero values all have one sign (batch size 1: rows of ``δ_j·x``).

    All-zero samples are left out (their update is zero).
    """
    flat = _flat64(x)
    pos = (flat > 0).any(axis=1)
    neg = (flat < 0).any(axis=1)
    moving = pos | neg
    if not moving.any():
        return float("nan")
    return float(((pos ^ neg) & moving).sum() / moving.sum())


PROBES = ("single_signed", "sign_agreement", "mean_share", "cosine", "reversed")


class UpdateProbe:
    """Accumulates sign and zigzag statistics of successive first-layer updates.

    ``observe(update)`` takes the layer's update (or minus its gradient) of shape
    ``(units, ...)``; :meth:`collect` returns the means over rows and steps since the last call:

    * ``single_signed`` — share of rows (units) whose nonzero entries all share one sign;
    * ``sign_agreement`` — share of a row's ``|update|`` mass that carries the row's majority
      sign: 1.0 for a single-signed row, 0.5 for balanced signs (weighting by magnitude keeps
      thousands of tiny entries, e.g. of rarely-lit pixels, from deciding it);
    * ``mean_share`` — share of a row's squared norm along the mean input direction
      (``mean_direction``; only for dense first layers): the common-mode part of each step
      that a non-zero input mean forces on all weights of a unit at once;
    * ``cosine`` — cosine between a row's update and its previous update;
    * ``reversed`` — share of those (row, step) pairs with a negative cosine (the zigzag).

    Everything stays in torch tensors until :meth:`collect`, so the training loop never waits.

    >>> import torch
    >>> probe = UpdateProbe()
    >>> probe.observe(torch.tensor([[1.0, 3.0], [1.0, -1.0]]))
    >>> probe.observe(torch.tensor([[-1.0, -3.0], [1.0, -1.0]]))
    >>> probe.collect()  # doctest: +NORMALIZE_WHITESPACE
    {'single_signed': 0.5, 'sign_agreement': 0.75, 'mean_share': None, 'cosine': 0.0,
     'reversed': 0.5}
    """

    def __init__(self, mean_direction: Any = None) -> None:
        self._previous: Any = None
        self._direction: Any = None
        if mean_direction is not None:
            norm = float(mean_direction.norm())
            self._direction = (
                mean_direction.reshape(-1) / norm if norm > 0 else mean_direction.reshape(-1) * 0
            )
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, Any] = {}
        self._counts: dict[str, Any] = {}

    def _add(self, name: str, total: Any, count: Any) -> None:
        if name in self._sums:
            self._sums[name] = self._sums[name] + total
            self._counts[name] = self._counts[name] + count
        else:
            self._sums[name], self._counts[name] = total, count

    def observe(self, update: Any) -> None:
        import torch

        rows = update.detach().reshape(update.shape[0], -1)
        tiny = torch.finfo(rows.dtype).tiny
        positive = rows.clamp(min=0).sum(dim=1)
        negative = (-rows).clamp(min=0).sum(dim=1)
        mass = positive + negative
        moving = mass > 0
        n_moving = moving.sum()
        single = ((positive == 0) | (negative == 0)) & moving
        agreement = torch.maximum(positive, negative) / mass.clamp(min=tiny)
        self._add("single_signed", single.sum(), n_moving)
        self._add("sign_agreement", (agreement * moving).sum(), n_moving)
        squared = (rows * rows).sum(dim=1)
        if self._direction is not None and self._direction.numel() == rows.shape[1]:
            along = rows @ self._direction.to(rows.dtype)
            self._add(
                "mean_share", (along * along / squared.clamp(min=tiny) * moving).sum(), n_moving
            )
        if self._previous is not None:
            norms = torch.sqrt(squared * (self._previous * self._previous).sum(dim=1))
            valid = norms > 0
            cos = (rows * self._previous).sum(dim=1) / norms.clamp(min=tiny)
            self._add("cosine", (cos * valid).sum(), valid.sum())
            self._add("reversed", ((cos < 0) & valid).sum(), valid.sum())
        self._previous = rows.clone()

    def collect(self) -> dict[str, float | None]:
        """Means since the last call (``None`` where nothing was observed), then reset."""
        out: dict[str, float | None] = {}
        for name in PROBES:
            count = int(self._counts[name]) if name in self._counts else 0
            out[name] = float(self._sums[name]) / count if count else None
        self._reset()
        return out
