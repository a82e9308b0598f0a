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
float64 instead of float32 (a numba kernel; about 0.35 ns per floating-point operation on one
core).
``tests/test_theory.py`` checks the thresholds against ``measure_stable_lr``.

``sampling="independent"`` draws every batch afresh (without replacement inside the batch, with
replacement between batches) from the run's torch generator, as ``train_run`` would;
``sampling="fresh"`` draws the same kind of batches from numpy (faster). Independent batches
are what the mean-square prediction (:func:`normlab.lab.theory.sgd_stable_lr`) describes.

:func:`stable_lr_by_horizon` measures the threshold at several horizons from one set of runs
to the longest, and two definitions of divergence: the lab's (``criterion="any"``: one run, a
train loss above 10× its initial value at any checkpoint) and the mean square's
(``criterion="end"`` with ``runs=R``: ``R`` runs from the same initial weights, their *mean*
train loss at the end of the horizon above 10× its initial value). Below the mean-square
threshold the mean loss settles to a stationary level, whatever the horizon; a single run's
largest excursion keeps growing with the horizon when the multiplicative noise is heavy-tailed,
which the lab's criterion catches. Above it the mean loss grows geometrically, but when that
growth is carried by rare runs, ``R`` runs see it only if one of them is such a run: the
measured threshold then lies above the true one and approaches it as ``R`` grows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import NormlabError
from .theory import LsqProblem

try:  # numba is a core dependency; without it the same loops run as (slow) Python
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

SAMPLINGS = ("epoch", "independent", "fresh")
_DIVERGENCE_FACTOR = 10.0  # as in train.py: a train loss above 10× its initial value
_GRID = 25  # rates per pass
_SPAN = 8.0  # the first pass spans guess / 8 .. guess × 8


def _sgd_steps_py(
    error: np.ndarray,
    lr: np.ndarray,
    alive: np.ndarray,
    died: np.ndarray,
    proj: np.ndarray,
    residual_star: np.ndarray,
    index: np.ndarray,
    starts: np.ndarray,
    check: np.ndarray,
    lam: np.ndarray,
    loss_star: float,
    limit: np.ndarray,
    done: int,
    res: np.ndarray,
    end_loss: np.ndarray,
) -> None:
    """SGD on the batches ``index[q, starts[i]:starts[i + 1]]`` of run ``q``, every live rate.

    ``error`` is (runs, rates, outputs, r). After batch ``i`` with ``check[i]`` the train loss
    averaged over the runs is compared with each rate's ``limit``; a rate whose mean loss is
    above it (or not finite) stops, with ``died`` set to the step count ``done + i + 1``.
    ``end_loss`` receives each rate's mean loss after the last batch (``inf`` once stopped).
    """
    n_runs, n_rates, n_out, r = error.shape
    n_alive = 0
    for k in range(n_rates):
        if alive[k]:
            n_alive += 1
    for i in range(len(starts) - 1):
        if n_alive == 0:
            return
        lo, hi = starts[i], starts[i + 1]
        size = hi - lo
        for q in range(n_runs):
            for k in range(n_rates):
                if not alive[k]:
                    continue
                step = lr[k] / size
                for o in range(n_out):
                    e = error[q, k, o]
                    for j in range(size):
                        row = index[q, lo + j]
                        z = proj[row]
                        acc = 0.0
                        for m in range(r):
                            acc += e[m] * z[m]
                        res[j] = (acc - residual_star[row, o]) * step
                    for j in range(size):
                        z = proj[index[q, lo + j]]
                        g = res[j]
                        for m in range(r):
                            e[m] -= g * z[m]
        if check[i] or i == len(starts) - 2:
            for k in range(n_rates):
                if not alive[k]:
                    continue
                total = 0.0
                for q in range(n_runs):
                    for o in range(n_out):
                        e = error[q, k, o]
                        for m in range(r):
                            total += lam[m] * e[m] * e[m]
                loss = loss_star + 0.5 * total / n_runs
                end_loss[k] = loss
                if check[i] and not (loss <= limit[k]):  # also catches NaN and inf
                    alive[k] = False
                    died[k] = done + i + 1
                    n_alive -= 1
    for k in range(n_rates):
        if not alive[k]:
            end_loss[k] = np.inf


_sgd_steps = (
    njit(cache=True, nogil=True, fastmath=True)(_sgd_steps_py) if HAVE_NUMBA else _sgd_steps_py
)


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


def _batches(
    sampling: str, n: int, batch: int, todo: int, generator: Any, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's sample indices of one run, and where each of its ``todo`` batches starts."""
    import torch

    order = torch.randperm(n, generator=generator).numpy().astype(np.int64)
    if sampling == "epoch":
        return order, np.minimum(np.arange(todo + 1) * batch, n)
    starts = np.arange(todo + 1) * batch
    if sampling == "independent":  # as train_run would draw them one batch at a time
        draws = [torch.randperm(n, generator=generator)[:batch].numpy() for _ in range(todo)]
        return np.concatenate(draws).astype(np.int64), starts
    if batch == 1:  # "fresh": numpy draws, each batch without replacement inside it
        return rng.integers(0, n, todo).astype(np.int64), starts
    keys = rng.random((todo, n))
    return np.argpartition(keys, batch - 1, axis=1)[:, :batch].ravel().astype(np.int64), starts


def _run(
    problem: LsqProblem,
    y: np.ndarray,
    rates: np.ndarray,
    *,
    n_classes: int,
    batch_size: int,
    steps: int,
    seed: int,
    sampling: str,
    runs: int,
    checkpoints_per_epoch: int,
    factor: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The step at which each of ``rates`` diverged (``-1`` where it did not within
    ``steps``), the mean loss at the end of every epoch (rates × epochs), the initial loss.

    ``runs`` runs share the initial weights (``seed``'s) and draw their batches from the
    seeds ``seed, seed + 1, …``; a rate diverges when the train loss *averaged over the runs*
    becomes non-finite or exceeds ``factor`` × its initial value at a checkpoint (10× with
    one run: the lab's criterion). The divergence step of a rate does not depend on
    ``steps``, so one call answers every horizon up to ``steps``.
    """
    import torch

    if sampling not in SAMPLINGS:
        raise NormlabError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    if runs < 1:
        raise NormlabError(f"runs must be at least 1, got {runs}")
    proj = np.ascontiguousarray(problem.projected)  # (n, r) samples along eigenvectors, λ > 0
    n = len(proj)
    keep = problem.lam > 1e-12 * problem.lambda_max
    lam = np.ascontiguousarray(problem.lam[keep])
    z_onehot = np.zeros((n, n_classes))
    z_onehot[np.arange(n), np.asarray(y, dtype=np.int64)] = 1.0
    residual_star = np.ascontiguousarray(
        z_onehot - (proj @ (problem.w_star @ problem.vecs[:, keep]).T)
    )
    n_inputs = problem.vecs.shape[0] - 1
    start = _initial_error(problem, n_inputs, n_classes, seed)
    lr = np.ascontiguousarray(np.asarray(rates, dtype=np.float64))
    error = np.ascontiguousarray(np.broadcast_to(start, (runs, len(lr)) + start.shape))
    initial = problem.loss_star + 0.5 * float((start**2 * lam).sum())
    limit = np.full(len(lr), factor * max(initial, 1e-12))
    died = np.full(len(lr), -1, dtype=np.int64)
    ends: list[np.ndarray] = []
    if not math.isfinite(initial):
        died[:] = 0
        return died, np.full((len(lr), 0), np.inf), initial
    batch = min(max(batch_size, 1), n)
    per_epoch = math.ceil(n / batch)
    check_every = max(1, per_epoch // max(1, min(per_epoch, checkpoints_per_epoch)))
    position = np.arange(per_epoch)
    checks = ((position + 1) % check_every == 0) | (position == per_epoch - 1)
    generators = [torch.Generator().manual_seed(seed + q) for q in range(runs)]
    rngs = [np.random.default_rng(seed + q) for q in range(runs)]
    alive = np.ones(len(lr), dtype=np.bool_)
    scratch = np.empty(batch)
    end_loss = np.full(len(lr), np.inf)
    done = 0
    with np.errstate(over="ignore", invalid="ignore"):
        while done < steps and alive.any():
            todo = min(per_epoch, steps - done)
            if batch == n:  # the normal equations: Σ r* zᵀ = 0 and YᵀY/n = Λ
                for g in generators:
                    torch.randperm(n, generator=g)  # keeps the streams as train_run draws them
                error[:, alive] *= (1.0 - lr[alive, None, None] * lam) ** todo
                loss = problem.loss_star + 0.5 * (error**2 * lam).sum(axis=(2, 3)).mean(axis=0)
                bad = alive & ~(loss <= limit)
                died[bad] = done + todo
                alive &= ~bad
                ends.append(np.where(alive, loss, np.inf))
                done += todo
                continue
            drawn = [
                _batches(sampling, n, batch, todo, g, rng)
                for g, rng in zip(generators, rngs, strict=True)
            ]
            _sgd_steps(
                error,
                lr,
                alive,
                died,
                proj,
                residual_star,
                np.ascontiguousarray(np.stack([d[0] for d in drawn])),
                drawn[0][1],
                checks[:todo],
                lam,
                float(problem.loss_star),
                limit,
                done,
                scratch,
                end_loss,
            )
            ends.append(end_loss.copy())
            done += todo
    return died, np.stack(ends, axis=1) if ends else np.full((len(lr), 0), np.inf), initial


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
    runs: int = 1,
    checkpoints_per_epoch: int = 50,
) -> np.ndarray:
    """Which of ``rates`` diverge within ``steps`` SGD steps (a boolean per rate)."""
    died, _, _ = _run(
        problem,
        y,
        rates,
        n_classes=n_classes,
        batch_size=batch_size,
        steps=steps,
        seed=seed,
        sampling=sampling,
        runs=runs,
        checkpoints_per_epoch=checkpoints_per_epoch,
        factor=_DIVERGENCE_FACTOR,
    )
    return np.asarray(died >= 0)


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


CRITERIA = ("any", "end")
_CAP = 1e12  # criterion "end": a rate whose mean loss passes this multiple stops (it diverged)


def stable_lr_by_horizon(
    problem: LsqProblem,
    y: np.ndarray,
    *,
    n_classes: int,
    batch_size: int,
    guess: float,
    epochs: list[int],
    seed: int = 0,
    min_steps: int = 500,
    sampling: str = "epoch",
    runs: int = 1,
    criterion: str = "any",
    span: float = _SPAN,
    grid: int = _GRID,
) -> list[dict[str, Any]]:
    """The divergence threshold at each horizon of ``epochs``, from runs to the longest one.

    ``criterion="any"`` is the lab's: a rate diverges if the train loss (averaged over the
    ``runs``) is non-finite or above 10× its initial value at any checkpoint within the
    horizon of ``max(min_steps, e epochs)`` steps. ``criterion="end"`` asks it of the loss at
    the end of the horizon only (whole epochs, at least ``min_steps`` steps): the runs got
    worse, rather than touched a level once. Either way one grid of rates run to the longest
    horizon answers every horizon: a coarse pass (``guess / span .. guess × span``, ``grid``
    rates, extended until every horizon is bracketed), then a fine one inside each horizon's
    bracket. Returns, per horizon, ``epochs``, ``steps``, ``largest_stable``,
    ``smallest_diverging``, their geometric mean ``threshold``, ``sampling``, ``runs`` and
    ``criterion``.
    """
    if not epochs:
        raise NormlabError("give at least one horizon (epochs)")
    if criterion not in CRITERIA:
        raise NormlabError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    n = len(problem.projected)
    per_epoch = math.ceil(n / min(max(batch_size, 1), n))
    if criterion == "any":
        horizons = [max(min_steps, e * per_epoch) for e in epochs]
    else:
        horizons = [max(e, math.ceil(min_steps / per_epoch)) * per_epoch for e in epochs]
    longest = max(horizons)

    def run(rates: np.ndarray) -> np.ndarray:
        """Per rate and horizon: diverged or not."""
        died, ends, initial = _run(
            problem,
            y,
            rates,
            n_classes=n_classes,
            batch_size=batch_size,
            steps=longest,
            seed=seed,
            sampling=sampling,
            runs=runs,
            checkpoints_per_epoch=50,
            factor=_DIVERGENCE_FACTOR if criterion == "any" else _CAP,
        )
        if criterion == "any":
            return np.stack([(died >= 0) & (died <= h) for h in horizons], axis=1)
        limit = _DIVERGENCE_FACTOR * max(initial, 1e-12)
        if ends.shape[1] < longest // per_epoch:  # every rate stopped early
            pad = np.full((len(rates), longest // per_epoch - ends.shape[1]), np.inf)
            ends = np.concatenate([ends, pad], axis=1)
        return np.stack([~(ends[:, h // per_epoch - 1] <= limit) for h in horizons], axis=1)

    rates = guess * np.geomspace(1 / span, span, grid)
    gone = run(rates)
    for _ in range(40):
        if gone[:, -1].all() or not gone[:, -1].any():  # none stable, or none diverges at the end
            lower = bool(gone[:, -1].all())
        elif not all(gone[:, j].any() for j in range(len(horizons))):  # a horizon not bracketed
            lower = False
        else:
            break
        extra = rates[0 if lower else -1] * np.geomspace(1, span ** (-2 if lower else 2), grid)
        extra = extra[1:]
        rates, gone = np.concatenate([rates, extra]), np.concatenate([gone, run(extra)])
        order = np.argsort(rates)
        rates, gone = rates[order], gone[order]
    else:
        raise NormlabError(f"no divergence threshold found near {guess:g}")

    def bracket(j: int) -> tuple[float, float]:
        first = int(np.argmax(gone[:, j]))
        low = float(rates[first - 1]) if first > 0 else float(rates[0]) / 2.0
        return low, float(rates[first])

    fine = np.unique(
        np.concatenate([np.geomspace(*bracket(j), 8)[1:-1] for j in range(len(horizons))])
    )
    rates, gone = np.concatenate([rates, fine]), np.concatenate([gone, run(fine)])
    order = np.argsort(rates)
    rates, gone = rates[order], gone[order]
    found = []
    for j, (e, h) in enumerate(zip(epochs, horizons, strict=True)):
        low, high = bracket(j)
        found.append(
            {
                "epochs": e,
                "steps": h,
                "largest_stable": low,
                "smallest_diverging": high,
                "threshold": math.sqrt(low * high),
                "sampling": sampling,
                "runs": runs,
                "criterion": criterion,
            }
        )
    return found
