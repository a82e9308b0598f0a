"""The lab's divergence threshold for least squares, measured on many learning rates at once.

:func:`normlab.lab.train.measure_stable_lr` bisects the rate with one ``train_run`` per probe;
at batch size 1 on a few thousand samples, with the horizons that heavy tails need (tens of
epochs: the one sample that lights a rare feature comes round once per epoch), that takes
hours. For the ``lsq`` model the same runs can be computed exactly, for a whole grid of rates
together, in the eigenbasis of ``H = E[z zᵀ]`` (``z = (x, 1)``): with the weights written as
``W = W* + E Vᵀ`` the batch residual is ``E (Vᵀz) − r*`` (``r*`` the optimum's residuals),
a step is ``E ← E − η/B · Σ_batch (E Vᵀz − r*) (Vᵀz)ᵀ`` and the train loss is
``L* + ½ Σ_k λ_k ‖E_k‖²``. Initial weights, batch order (one seeded permutation per epoch, as
``train_run`` draws it), checkpoints and the divergence criterion (a non-finite loss, or a train
loss above 10× its initial value at a checkpoint) are the lab's; only the arithmetic is
float64 instead of float32. ``tests/test_theory.py`` checks the thresholds against
``measure_stable_lr``.

``sampling="independent"`` draws every batch afresh (without replacement inside the batch, with
replacement between batches): the sampling that the mean-square prediction
(:func:`normlab.lab.theory.sgd_stable_lr`) describes exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import NormlabError
from .theory import LsqProblem

SAMPLINGS = ("epoch", "independent")
_DIVERGENCE_FACTOR = 10.0  # as in train.py: a train loss above 10× its initial value
_GRID = 25  # rates per pass
_SPAN = 8.0  # the first pass spans guess / 8 .. guess × 8


def _initial_error(problem: LsqProblem, n_inputs: int, n_classes: int, seed: int) -> np.ndarray:
    import torch

    from .models import build_model

    torch.manual_seed(seed)
    model = build_model("lsq", sample_shape=(n_inputs,), n_classes=n_classes)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0]
    w = np.concatenate(
        [linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()[:, None]],
        axis=1,
    )
    keep = problem.lam > 1e-12 * problem.lambda_max
    return np.asarray((w - problem.w_star) @ problem.vecs[:, keep])


def simulate(
    problem: LsqProblem,
    y: np.ndarray,
    rates: np.ndarray,
    *,
    n_classes: int,
    batch_size: int,
    steps: int,
    seed: int = 0,
    sampling: str = "epoch",
    checkpoints_per_epoch: int = 50,
) -> np.ndarray:
    """Which of ``rates`` diverge within ``steps`` SGD steps (a boolean per rate)."""
    import torch

    if sampling not in SAMPLINGS:
        raise NormlabError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    proj = problem.projected  # (n, r) samples along the eigenvectors with λ > 0
    n = len(proj)
    keep = problem.lam > 1e-12 * problem.lambda_max
    lam = problem.lam[keep]
    z_onehot = np.zeros((n, n_classes))
    z_onehot[np.arange(n), np.asarray(y, dtype=np.int64)] = 1.0
    residual_star = z_onehot - (proj @ (problem.w_star @ problem.vecs[:, keep]).T)
    n_inputs = problem.vecs.shape[0] - 1
    error = np.repeat(_initial_error(problem, n_inputs, n_classes, seed)[None], len(rates), 0)
    lr = np.asarray(rates, dtype=np.float64)[:, None, None]

    def excess(e: np.ndarray) -> np.ndarray:
        return 0.5 * (e**2 * lam).sum(axis=(1, 2))

    initial = problem.loss_star + excess(error)
    limit = _DIVERGENCE_FACTOR * np.maximum(initial, 1e-12)
    diverged = ~np.isfinite(initial)
    active = np.flatnonzero(~diverged)  # the rates still running; error holds only theirs
    error, lr, limit = error[active], lr[active], limit[active]
    batch = min(max(batch_size, 1), n)
    per_epoch = math.ceil(n / batch)
    check_every = max(1, per_epoch // max(1, min(per_epoch, checkpoints_per_epoch)))
    generator = torch.Generator().manual_seed(seed)
    done = 0
    with np.errstate(over="ignore", invalid="ignore"):
        while done < steps and len(active):
            order = torch.randperm(n, generator=generator).numpy()
            for step in range(per_epoch):
                if done >= steps or not len(active):
                    break
                if sampling == "epoch":
                    index = order[step * batch : (step + 1) * batch]
                else:
                    index = torch.randperm(n, generator=generator)[:batch].numpy()
                if batch == n:  # the normal equations: Σ r* zᵀ = 0 and YᵀY/n = Λ
                    error *= 1.0 - lr * lam
                else:
                    yb = proj[index]
                    res = error @ yb.T - residual_star[index].T  # (rates, outputs, batch)
                    error -= lr / len(index) * (res @ yb)
                done += 1
                if (step + 1) % check_every == 0 or step == per_epoch - 1:
                    loss = problem.loss_star + excess(error)
                    bad = ~np.isfinite(loss) | (loss > limit)
                    if bad.any():
                        diverged[active[bad]] = True
                        active, error, lr, limit = (
                            active[~bad],
                            error[~bad],
                            lr[~bad],
                            limit[~bad],
                        )
    return diverged


def measure_lsq_stable_lr(
    problem: LsqProblem,
    y: np.ndarray,
    *,
    n_classes: int,
    batch_size: int,
    guess: float,
    seed: int = 0,
    min_steps: int = 500,
    min_epochs: int = 2,
    sampling: str = "epoch",
) -> dict[str, Any]:
    """The divergence threshold of SGD on ``problem``, from two passes over a grid of rates.

    The horizon is ``max(min_steps, min_epochs epochs)`` steps. The first pass spans
    ``guess / 8 .. guess × 8`` (moved by ×64 while every rate diverges or none does); the
    second refines between the largest stable rate below the smallest diverging one
    (resolution about 1 %). Returns ``largest_stable``, ``smallest_diverging``, their
    geometric mean ``threshold``, and the horizon ``steps``.
    """
    n = len(problem.projected)
    per_epoch = math.ceil(n / min(max(batch_size, 1), n))
    steps = max(min_steps, min_epochs * per_epoch)

    def run(rates: np.ndarray) -> np.ndarray:
        return simulate(
            problem,
            y,
            rates,
            n_classes=n_classes,
            batch_size=batch_size,
            steps=steps,
            seed=seed,
            sampling=sampling,
        )

    centre = guess
    for _ in range(20):
        rates = centre * np.geomspace(1 / _SPAN, _SPAN, _GRID)
        diverged = run(rates)
        if diverged.all():
            centre /= _SPAN**2
        elif not diverged.any():
            centre *= _SPAN**2
        else:
            break
    else:
        raise NormlabError(f"no divergence threshold found near {guess:g}")
    first = int(np.argmax(diverged))
    low, high = (rates[first - 1] if first > 0 else rates[0] / 2.0), rates[first]
    fine = np.geomspace(low, high, _GRID)[1:-1]
    diverged = run(fine)
    if diverged.any():
        first = int(np.argmax(diverged))
        high = fine[first]
        low = fine[first - 1] if first > 0 else low
    else:
        low = fine[-1]
    return {
        "largest_stable": float(low),
        "smallest_diverging": float(high),
        "threshold": math.sqrt(low * high),
        "steps": steps,
        "sampling": sampling,
    }
