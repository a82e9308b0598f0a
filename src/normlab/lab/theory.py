"""Predictions from the statistics alone, made before training, that the lab then measures.

Least squares (``--model lsq``) is the one model whose Hessian is known exactly: with the bias
folded in as a constant input, ``z = (x, 1)``, the loss ``½·mean ‖W z − y‖²`` has Hessian
``H = E[z zᵀ]`` (the *augmented* second moment) for every output row. Write the error of each
row in the eigenbasis of ``H`` (``λ_k``, ``v_k``) and let ``s_k`` be the second moment of the
error along ``v_k`` summed over output rows; the excess loss over the optimum is
``½ Σ_k λ_k s_k``.

* **Full-batch gradient descent** (:func:`gd_steps_to_epsilon`): each component shrinks by
  ``(1 − η λ_k)`` per step, so ``excess(t) = ½ Σ_k λ_k (1 − η λ_k)^{2t} s_k(0)``: the exact
  step count to an excess ``ε`` follows from the eigen-decomposition and the initial error.
* **Mini-batch SGD** (:func:`sgd_stable_lr`, :func:`sgd_steps_to_epsilon`): a batch of ``B``
  samples drawn without replacement from ``n`` has Hessian ``H_B`` with ``E[H_B] = H`` and
  covariance ``c·(E[h ⊗ h] − H ⊗ H)`` for ``h = z zᵀ`` and ``c = (n − B) / (B (n − 1))``. The
  error ``e`` of one output row moves as ``e ← (I − η H_B) e`` plus noise, so its second moment
  ``P = E[e eᵀ]`` obeys the exact linear recursion ``P ← L_η(P)`` (plus a constant drive),
  ``L_η(P) = (I − ηH) P (I − ηH) + c η² (E[(zᵀPz) z zᵀ] − H P H)``.
  SGD is stable in mean square while the spectral radius of ``L_η`` is below 1. ``L_η`` is
  self-adjoint and maps positive semi-definite matrices to themselves, and
  ``L_η − I = −η S + η² Q`` with ``S(P) = HP + PH`` and ``Q(P) = (1 − c) HPH + c E[(zᵀPz) z zᵀ]``;
  so the threshold is ``η* = 1 / μ_max``, ``μ_max`` the largest generalized eigenvalue of
  ``Q P = μ S P`` over symmetric ``P`` — one eigenproblem, found by Lanczos iteration on the
  samples (no bisection on η). At ``B = n`` it is ``2/λ_max``; along a single unit direction
  ``u`` (``P = u uᵀ``) it gives the bound ``2q / (q²(1 − c) + c E[(uᵀz)⁴])``, ``q = uᵀHu``, and
  at ``B = 1`` along a rare feature's axis this is ``2 / z_max²`` — a step on the one sample
  that lights the feature must satisfy ``η ‖z‖² < 2`` along it. Heavy tails are in the
  samples, not in the top eigenvector (:func:`sgd_top_direction_lr` misses them).
  The lab's batches are not independent: one permutation per epoch brings every sample
  exactly once. A rare sample's kick ``K = (1 − η‖z‖²)²`` then multiplies an epoch's mean
  square once, where independent draws multiply it ``Poisson(1)`` times (``E = exp(K − 1)``).
  :func:`sgd_stable_lr_epoch` is the mean-square threshold of those batches: the spectral
  radius per epoch of ``P ↦ E_π[Φ_π P Φ_πᵀ]``, ``Φ_π`` the epoch's product of
  ``(I − η H_b)``, the expectation taken over seeded permutations.
  The steps to ε keep only the diagonal of ``P`` in the eigenbasis (the closure):
  ``s ← A s + η² c N`` with ``A = diag((1 − η λ)² − c η² λ²) + c η² K``,
  ``K_kj = E[(v_kᵀz)² (v_jᵀz)²]`` and ``N_k = Σ_o E[(v_kᵀz)² r_o²]`` (the residuals ``r`` at
  the optimum: the noise floor). The lab draws one permutation per epoch, not independent
  batches: the batch gradients at the optimum then sum to zero over each epoch, which lowers
  the drive within the epoch (:func:`_drives`; exact when every step's Hessian is ``H``).

Non-linear models (:func:`saturation`): the first layer's pre-activations ``a = W x + b`` at
initialization have, per unit, mean ``wᵀμ + b`` and variance ``wᵀ Σ w`` (μ, Σ: the data's mean
and covariance after the scheme); under a Gaussian approximation this gives the share of tanh
pre-activations with ``|a| > 2`` (gradient below 7 % of its peak, Efficient BackProp §4.6) and
of ReLU units dead on at least 99 % of the samples.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((200, 3)) + 4.0
>>> problem = lsq_problem(x, rng.integers(0, 2, 200), n_classes=2)
>>> round(float(problem.lam[-1]))  # the mean (and the bias) add one eigenvalue ≈ 3·4² + 1 + 1
49
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import NormlabError

_NULL = 1e-12  # eigenvalues below this fraction of λ_max are null directions (nothing moves)
_MAX_STEPS = 1_000_000


def augmented(x: np.ndarray) -> np.ndarray:
    """Flattened float64 inputs with the bias input, a column of ones, appended."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.concatenate([flat, np.ones((len(flat), 1))], axis=1)


def augmented_lambda_max(x: np.ndarray) -> float:
    """λ_max of ``E[z zᵀ]`` for ``z = (x, 1)``: the curvature a model with a bias sees."""
    z = augmented(x)
    if z.shape[1] <= 4096:
        return float(np.linalg.eigvalsh(z.T @ z / len(z))[-1])
    v = np.ones(z.shape[1]) / math.sqrt(z.shape[1])
    lam = 0.0
    for _ in range(300):
        w = z.T @ (z @ v) / len(z)
        new = float(np.linalg.norm(w))
        if new == 0.0:
            return 0.0
        v = w / new
        if abs(new - lam) <= 1e-10 * new:
            return new
        lam = new
    return lam


@dataclass
class LsqProblem:
    """Linear least squares on one-hot targets, in the eigenbasis of the augmented moment.

    ``lam`` (ascending) and ``vecs`` diagonalize ``H = E[z zᵀ]``; ``w_star`` (outputs × inputs+1,
    the bias last) is the minimum-norm optimum over the directions with ``λ > 1e-12·λ_max``
    (the null directions are those no gradient step moves along; the same threshold as the
    predictions') and ``loss_star`` its loss, so ``L(W) − loss_star = ½ tr(E H Eᵀ)`` for
    ``E = [W b] − w_star`` up to rounding; ``fourth`` is
    ``K``, ``noise`` is ``N`` (see the module text); ``n`` the number of samples;
    ``projected`` the samples' coordinates along the eigenvectors with ``λ > 0``;
    ``unreachable`` how far ``loss_star`` lies above the optimum over all directions (computed
    on centred inputs, where a large mean does not hide the bias): the part of the loss that
    gradient steps cannot remove, added to every excess the lab measures and predicts, so that
    ε is counted from the same optimum under every scheme. 0 unless a large mean makes a real
    direction look null (e.g. inputs offset by 1000).
    """

    lam: np.ndarray
    vecs: np.ndarray
    w_star: np.ndarray
    loss_star: float
    fourth: np.ndarray
    noise: np.ndarray
    n: int
    projected: np.ndarray
    unreachable: float = 0.0
    # closures already built, by (rate, batch size, sampling): a report asks for the same one
    # per seed and once more for the floor, and at batch 1 its orbit costs seconds
    _closures: dict[tuple[float, int, str], _Closure] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def lambda_max(self) -> float:
        return float(self.lam[-1])

    @property
    def hessian(self) -> np.ndarray:
        return (self.vecs * self.lam) @ self.vecs.T

    def components(self, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """``s_k``: the squared initial error along each eigenvector, summed over outputs."""
        w = np.concatenate(
            [np.asarray(weight, np.float64), np.asarray(bias, np.float64)[:, None]], 1
        )
        return (((w - self.w_star) @ self.vecs) ** 2).sum(axis=0)

    def excess(self, weight: np.ndarray, bias: np.ndarray) -> float:
        """Loss minus the optimum's loss, ``½ Σ λ_k s_k``, for a model's weight and bias."""
        return float(0.5 * self.lam.clip(min=0.0) @ self.components(weight, bias))

    def noise_factor(self, batch_size: int) -> float:
        """``c``: variance of a batch mean relative to one sample (drawn without replacement)."""
        b = min(max(batch_size, 1), self.n)
        return 0.0 if self.n <= 1 else (self.n - b) / (b * (self.n - 1))


def lsq_problem(x: np.ndarray, y: np.ndarray, n_classes: int) -> LsqProblem:
    """Everything the predictions need, from the (normalized) training inputs and labels."""
    z = augmented(x)
    n, p = z.shape
    targets = np.zeros((n, n_classes))
    targets[np.arange(n), np.asarray(y, dtype=np.int64)] = 1.0
    lam, vecs = np.linalg.eigh(z.T @ z / n)
    lam = lam.clip(min=0.0)
    # The optimum over the directions the eigenbasis keeps (λ > _NULL·λ_max, i.e. singular
    # values above √_NULL of the largest). lstsq's default cut-off (machine ε·max(n, p)) also
    # fits directions with λ ~ 1e-20·λ_max — a whitening's image of constant pixels, float32
    # rounding — with weights ~1e8 that no gradient step moves along, and whose squares turn
    # the rounding of H into an O(1) error in ½ tr(E H Eᵀ).
    w_star = np.linalg.lstsq(z, targets, rcond=math.sqrt(_NULL))[0].T
    residual = targets - z @ w_star.T
    loss_star = float(0.5 * (residual**2).sum(axis=1).mean())
    proj2 = (z @ vecs) ** 2
    fourth = proj2.T @ proj2 / n
    noise = proj2.T @ (residual**2).sum(axis=1) / n
    keep = lam > _NULL * lam[-1]
    projected = (z @ vecs[:, keep]).astype(np.float64)
    # the optimum over every direction, from centred inputs: the bias is the targets' mean
    centred = z[:, :-1] - z[:, :-1].mean(axis=0)
    aims = targets - targets.mean(axis=0)
    fit = np.linalg.lstsq(centred, aims, rcond=math.sqrt(_NULL))[0]
    full = float(0.5 * ((aims - centred @ fit) ** 2).sum(axis=1).mean())
    gap = loss_star - full
    unreachable = gap if gap > 1e-9 * max(1.0, loss_star) else 0.0
    return LsqProblem(lam, vecs, w_star, loss_star, fourth, noise, n, projected, unreachable)


def gd_steps_to_epsilon(
    problem: LsqProblem, s0: np.ndarray, lr: float, epsilon: float
) -> int | None:
    """The exact number of full-batch GD steps until the excess loss is at most ``epsilon``.

    ``None`` if it never gets there (a component with ``|1 − η λ_k| ≥ 1`` carries error).
    """

    def excess(t: int) -> float:
        moving = 0.5 * np.sum(problem.lam * (1.0 - lr * problem.lam) ** (2 * t) * s0)
        return float(moving) + problem.unreachable

    if problem.unreachable >= epsilon:
        return None

    if excess(0) <= epsilon:
        return 0
    moving = (problem.lam > _NULL * problem.lambda_max) & (s0 > 0)
    if np.any(np.abs(1.0 - lr * problem.lam[moving]) >= 1.0):
        return None
    high = 1
    while excess(high) > epsilon:  # monotone: every factor is below 1 in absolute value
        high *= 2
        if high > _MAX_STEPS:
            return None
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        if excess(mid) > epsilon:
            low = mid
        else:
            high = mid
    return high


def _transition(problem: LsqProblem, lr: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    keep = problem.lam > _NULL * problem.lambda_max
    lam = problem.lam[keep]
    a = c * lr**2 * problem.fourth[np.ix_(keep, keep)]
    a[np.diag_indices_from(a)] += (1.0 - lr * lam) ** 2 - c * lr**2 * lam**2
    return a, keep


def mean_square_operator(problem: LsqProblem, lr: float, batch_size: int) -> Any:
    """``L_η`` as a function on symmetric matrices in the eigenbasis (for checks and tests)."""
    y = problem.projected
    lam = problem.lam[problem.lam > _NULL * problem.lambda_max]
    c = problem.noise_factor(batch_size)
    keep_step = 1.0 - lr * lam

    def apply(p: np.ndarray) -> np.ndarray:
        weights = ((y @ p) * y).sum(axis=1)
        fourth = (y.T * weights) @ y / len(y)
        return keep_step[:, None] * p * keep_step[None, :] + c * lr**2 * (
            fourth - lam[:, None] * p * lam[None, :]
        )

    return apply


def sgd_stable_lr(problem: LsqProblem, batch_size: int, tol: float = 1e-8) -> float:
    """The largest learning rate at which mini-batch SGD is stable in mean square.

    ``1/μ_max`` of the generalized eigenproblem ``Q P = μ S P`` (module text): exact for
    batches drawn independently, with every fourth moment of the samples, heavy tails
    included. ``2/λ_max`` at full batch; smaller batches lower it.
    """
    c = problem.noise_factor(batch_size)
    if c == 0.0:
        return 2.0 / problem.lambda_max
    from scipy.sparse.linalg import LinearOperator, eigsh

    y = problem.projected
    lam = problem.lam[problem.lam > _NULL * problem.lambda_max]
    r = len(lam)
    scale = 1.0 / np.sqrt(lam[:, None] + lam[None, :])  # S^(-1/2), elementwise in the eigenbasis

    def apply(flat: np.ndarray) -> np.ndarray:
        x = flat.reshape(r, r)
        p = scale * (x + x.T) / 2.0
        weights = ((y @ p) * y).sum(axis=1)
        q = (1.0 - c) * lam[:, None] * p * lam[None, :] + c * ((y.T * weights) @ y) / len(y)
        return np.asarray(scale * q).ravel()

    if r * r <= 64:
        basis = np.eye(r * r)
        mu = float(np.linalg.eigvalsh(np.stack([apply(b) for b in basis], axis=1))[-1])
    else:
        operator = LinearOperator((r * r, r * r), matvec=apply, dtype=np.float64)
        start = (np.eye(r) / np.sqrt(2.0 * lam)[:, None]).ravel()  # P = I, a positive start
        mu = float(eigsh(operator, k=1, which="LA", v0=start, tol=tol)[0][0])
    return min(1.0 / mu, 2.0 / problem.lambda_max)


_CHUNK = 256  # at most this many samples per block of an epoch's product (whole batches)


def _epoch_product(
    y: np.ndarray, order: np.ndarray, lr: float, batch_size: int, columns: np.ndarray
) -> np.ndarray:
    """``Φ = A_m ⋯ A_1``: one epoch of noiseless SGD on the error, ``A_b = I − η H_b``,
    restricted to the eigen-directions ``columns`` (rows and columns).

    The batches cut ``order`` into runs of ``batch_size`` (the last may be smaller), as the
    lab's epochs do. A block of batches is applied at once in the compact form
    ``A_k ⋯ A_1 = I − Yᵀ T Y`` (``Y`` the block's samples as rows), with ``T`` from the
    unit lower-triangular system ``(I + D L) T = D``: ``D`` holds each row's ``η / |batch|``
    and ``L`` the Gram matrix ``Y Yᵀ`` between rows of earlier batches only — matrix products
    rather than one rank-``B`` update per batch.
    """
    from scipy.linalg import solve_triangular

    n, r = y.shape
    b = min(max(batch_size, 1), n)
    # a block of m rows costs m·r (Gram) + m² (solve) + 2r² (update) per row: m ≈ r
    chunk = max(b, (min(_CHUNK, max(r, 8)) // b) * b)
    phi = np.eye(r)[:, columns]
    for start in range(0, n, chunk):
        rows = order[start : start + chunk]
        block = y[rows]
        m = len(rows)
        which = np.arange(m) // b
        sizes = np.bincount(which).astype(np.float64)
        d = lr / sizes[which]
        earlier = which[:, None] > which[None, :]
        system = np.eye(m) + d[:, None] * np.where(earlier, block @ block.T, 0.0)
        t = solve_triangular(system, np.diag(d), lower=True, unit_diagonal=True)
        phi -= block.T @ (t @ (block @ phi))
    return np.ascontiguousarray(phi[columns])


def _epoch_radius(
    phis: Sequence[np.ndarray],
    start: np.ndarray | None = None,
    tol: float = 1e-5,
    side_only: bool = False,
) -> tuple[float, np.ndarray]:
    """The spectral radius of ``P ↦ mean_k Φ_k P Φ_kᵀ`` and its eigenvector.

    The map keeps positive semi-definite matrices so: its radius is its Perron root, with a
    positive semi-definite eigenvector. Small maps are solved densely; larger ones by power
    iteration from ``start`` (a nearby rate's eigenvector) or ``I``, until the distance left to
    the limit of the growth ``tr T(P) / tr P``, estimated from its last steps as for geometric
    convergence, is below ``tol`` (relative). ``side_only``: or below a twentieth of
    ``|log ρ|`` — the threshold search needs only the side of 1 where ``ρ`` lies, and
    ``log ρ`` moves by a few per unit of ``log η``, so near 1 the error stays far below the
    1 % resolution in ``η`` (far from 1 the top two eigenvalues can lie close: iterating to
    ``tol`` took up to 650 steps on mnist5k).
    """
    r = phis[0].shape[0]
    identity = np.eye(r) / r
    if not all(np.isfinite(phi).all() for phi in phis):
        return math.inf, identity
    if r <= 24:
        dense = sum(np.kron(phi, phi) for phi in phis) / len(phis)
        values, vectors = np.linalg.eig(dense)
        top = int(np.argmax(np.abs(values)))
        p = np.real(vectors[:, top]).reshape(r, r)
        p = (p + p.T) / 2.0
        trace = float(np.trace(p))
        return float(np.abs(values[top])), (p / trace if trace != 0.0 else identity)
    p = identity if start is None or start.shape != (r, r) else start
    growths: list[float] = []
    for _ in range(2000):
        with np.errstate(over="ignore", invalid="ignore"):
            q = sum(phi @ p @ phi.T for phi in phis) / len(phis)
        trace = float(np.trace(q))
        if not math.isfinite(trace):
            return math.inf, identity
        if trace <= 0.0:
            return 0.0, identity
        growths.append(trace)  # tr P = 1
        p = (q + q.T) / (2.0 * trace)
        if len(growths) < 3:
            continue
        step, before = growths[-1] - growths[-2], growths[-2] - growths[-3]
        if step == 0.0:
            break
        ratio = step / before if before != 0.0 else 1.0
        if not 0.0 <= ratio < 1.0:
            continue
        # geometric convergence: the distance left is about step·ratio/(1 − ratio); far from
        # 1 only the side matters (the bracket), so a twentieth of the distance to 1 will do
        left = abs(step * ratio / (1.0 - ratio)) / trace
        if left <= tol or (side_only and left <= abs(math.log(trace)) / 20.0):
            break
    return growths[-1], p


def sgd_stable_lr_epoch(
    problem: LsqProblem,
    batch_size: int,
    *,
    permutations: int = 32,
    seed: int = 0,
    rel: float = 0.01,
) -> float:
    """The largest rate at which SGD with one permutation per epoch is stable in mean square.

    The lab draws one permutation per epoch, so each sample comes exactly once in an epoch:
    a rare sample's kick ``K = (1 − η ‖z‖²)²`` along its direction multiplies an epoch once,
    where independent batches (:func:`sgd_stable_lr`) multiply it ``Poisson(1)`` times —
    ``exp(K − 1)`` against ``K`` in mean square, which matters for heavy tails and at
    ``B = 1``. Epochs are independent, so the second moment of the error grows by the
    spectral radius of ``P ↦ E_π[Φ_π P Φ_πᵀ]`` per epoch, ``Φ_π`` the epoch's noiseless
    product for permutation ``π`` (:func:`_epoch_product`); the expectation over the ``n!``
    orders has no closed form and is taken over ``permutations`` seeded ones (an estimate:
    over seeds, 32 orders moved it by 2–7 % on digits ``zca`` and ``scaled`` ``raw``, 16 by up
    to 11 % and 8 by up to 78 % — rare orders carry the mean square). The threshold
    (relative resolution ``rel``) is bracketed from :func:`sgd_stable_lr` and then found by
    interpolating ``log ρ`` in ``log η`` (bisection where that stalls). Only the inputs
    enter: no targets, no weights, no training. ``2/λ_max`` at full batch.
    """
    b = min(max(batch_size, 1), problem.n)
    if b >= problem.n:
        return 2.0 / problem.lambda_max
    y = np.ascontiguousarray(problem.projected)
    lam = problem.lam[problem.lam > _NULL * problem.lambda_max]
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(problem.n) for _ in range(max(1, permutations))]
    eigenvector: list[np.ndarray | None] = [None]
    steps = math.ceil(problem.n / b)

    def log_radius(lr: float) -> float:
        # directions an epoch damps by less than e^(-1/2) on average are left out: their
        # eigenvalues crowd 1 from either side by rounding-sized amounts and would hide the
        # crossing of the mode that diverges (which an epoch moves by a finite factor)
        fast = np.flatnonzero(2.0 * lr * lam * steps >= 0.5)
        if not len(fast):
            return -math.inf
        with np.errstate(over="ignore", invalid="ignore"):
            phis = [_epoch_product(y, o, lr, b, fast) for o in orders]
        rho, p = _epoch_radius(phis, eigenvector[0], side_only=True)
        if math.isfinite(rho) and rho > 0.0:
            eigenvector[0] = p
            return math.log(rho)
        return math.inf if rho > 0.0 else -math.inf

    step = 1.25
    low = high = sgd_stable_lr(problem, b)
    f_low = f_high = log_radius(low)
    for _ in range(400):  # 1.25^400: any rate a float can hold
        if f_low < 0.0 <= f_high:
            break
        if f_low < 0.0:
            low, f_low = high, f_high
            high *= step
            f_high = log_radius(high)
        else:
            high, f_high = low, f_low
            low /= step
            f_low = log_radius(low)
    else:  # pragma: no cover - a radius that never crosses 1
        raise NormlabError("no stability threshold found for the lab's batches")
    while high / low > 1.0 + rel:
        middle = math.sqrt(low * high)
        if math.isfinite(f_low) and math.isfinite(f_high):  # interpolate, kept off the ends
            t = f_low / (f_low - f_high)
            guess = math.exp(math.log(low) + t * math.log(high / low))
            margin = (high / low) ** 0.1
            middle = min(max(guess, low * margin), high / margin)
        f_middle = log_radius(middle)
        if f_middle < 0.0:
            low, f_low = middle, f_middle
        else:
            high, f_high = middle, f_middle
    return math.sqrt(low * high)


def sgd_top_direction_lr(problem: LsqProblem, batch_size: int) -> float:
    """The mean-square bound along the top eigenvector alone: blind to heavy tails."""
    c = problem.noise_factor(batch_size)
    lam = problem.lambda_max
    return 2.0 / (lam * (1.0 - c) + c * problem.fourth[-1, -1] / lam)


SAMPLINGS = ("epoch", "independent")


def _batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """The sizes of one epoch's batches when a permutation of ``n`` is cut into ``batch_size``."""
    b = min(max(batch_size, 1), n)
    sizes = np.full(math.ceil(n / b), b)
    sizes[-1] = n - b * (len(sizes) - 1)
    return sizes


def _drives(problem: LsqProblem, lr: float, batch_size: int, sampling: str) -> np.ndarray:
    """The noise drive of the closure at each step of an epoch (rows), or one row.

    ``sampling="independent"``: every batch drawn afresh, one drive ``η² c N``.
    ``sampling="epoch"`` (the lab's): one permutation per epoch, cut into ``⌈n/B⌉`` batches
    of ``B`` (the last one may be smaller). The means of two disjoint batches of one permutation
    have covariance ``−N/(n − 1)`` whatever their sizes (the gradients at the optimum sum to
    zero), and the error at position ``p`` of an epoch holds the epoch's earlier batches' noise,
    decayed by ``a_k = 1 − η λ_k`` per step: the drive along ``v_k`` becomes
    ``η² N_k (c_p − 2 a_k (1 − a_k^p) / ((n − 1)(1 − a_k)))``, ``c_p`` the noise factor of
    the batch at ``p``. Exact when every step's Hessian is ``H`` (the additive noise alone; over
    an epoch of equal batches with ``a → 1`` the drives sum to zero); the multiplicative noise
    is left as for independent batches (:func:`_closure`).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    keep = problem.lam > _NULL * problem.lambda_max
    noise = lr**2 * problem.noise[keep]
    b = min(max(batch_size, 1), problem.n)
    if sampling == "independent" or b >= problem.n:
        return (problem.noise_factor(b) * noise)[None, :]
    sizes = _batch_sizes(problem.n, b)
    factors = np.array([problem.noise_factor(int(size)) for size in sizes])[:, None]
    x = lr * problem.lam[keep]  # 1 − a_k
    position = np.arange(len(sizes))[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # (1 − a^p)/(1 − a) without the cancellation of 1 − a^p when ηλ is tiny
        geometric = -np.expm1(position * np.log1p(-x)) / x
        direct = (1.0 - (1.0 - x) ** position) / x
    memory = np.where(x <= 0.0, position, np.where(x < 1.0, geometric, direct))
    return noise * (factors - 2.0 * (1.0 - x) * memory / (problem.n - 1.0))


_ROWS_LIMIT = 1 << 23  # floats (64 MiB): above, an epoch is walked step by step


@dataclass
class _Closure:
    """The diagonal closure ``s ← A_p s + d_p`` over the positions ``p`` of an epoch.

    ``full`` is ``A`` for a batch of ``B``, ``last`` for the epoch's last batch (smaller when
    ``B`` does not divide ``n``: its multiplicative noise is larger too); ``drives`` one row
    per position (one row in all for independent batches); ``keep`` the eigen-directions kept
    and ``lam`` their eigenvalues. The transitions are symmetric, so the excess after position
    ``p`` of an epoch that starts at ``s`` is ``r_p · s + g_p`` with ``r_p = ½ A^p λ`` (the last:
    ``½ Φᵀλ``, ``Φ`` the epoch's product) and ``g_p`` the drives' part: one product per epoch
    instead of one per step (:meth:`epoch_excess`).
    """

    full: np.ndarray
    last: np.ndarray
    drives: np.ndarray
    keep: np.ndarray
    lam: np.ndarray

    @property
    def period(self) -> int:
        return len(self.drives)

    def transition(self, position: int) -> np.ndarray:
        return self.last if position == self.period - 1 else self.full

    @cached_property
    def epoch_matrix(self) -> np.ndarray | None:
        """``A_last A^(period − 1)``; ``None`` where it overflows."""
        with np.errstate(over="ignore", invalid="ignore"):
            phi = self.last @ np.linalg.matrix_power(self.full, self.period - 1)
        return phi if np.isfinite(phi).all() else None

    def stable(self) -> bool:
        """Whether the second moment settles (the epoch map's spectral radius is below 1)."""
        if float(np.abs(np.linalg.eigvalsh(self.full)).max()) >= 1.0:
            return False
        phi = self.epoch_matrix
        return phi is not None and float(np.abs(np.linalg.eigvals(phi)).max()) < 1.0

    @cached_property
    def _from_zero(self) -> tuple[np.ndarray, np.ndarray]:
        """The drives' part of an epoch from ``s = 0``: ``g_p`` per position, ``s`` at the end."""
        s = np.zeros(len(self.full))
        offsets = np.empty(self.period)
        for position, drive in enumerate(self.drives):
            s = self.transition(position) @ s + drive
            offsets[position] = 0.5 * float(self.lam @ s)
        return offsets, s

    @cached_property
    def _rows(self) -> np.ndarray | None:
        """``r_p`` for every position (``None`` above :data:`_ROWS_LIMIT` floats)."""
        phi = self.epoch_matrix
        if phi is None or self.period * len(self.full) > _ROWS_LIMIT:
            return None
        rows = np.empty((self.period, len(self.full)))
        v = 0.5 * self.lam
        for position in range(self.period - 1):
            v = self.full @ v
            rows[position] = v
        rows[-1] = phi.T @ (0.5 * self.lam)
        return rows

    def epoch_excess(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean excess after each position of an epoch that starts at ``s``, and its end."""
        offsets, cycle = self._from_zero
        rows, phi = self._rows, self.epoch_matrix
        if rows is not None and phi is not None:
            return rows @ s + offsets, phi @ s + cycle
        excess = np.empty(self.period)
        for position, drive in enumerate(self.drives):
            s = self.transition(position) @ s + drive
            excess[position] = 0.5 * float(self.lam @ s)
        return excess, s

    @cached_property
    def orbit(self) -> np.ndarray:
        """The steady mean excess after each position of the epoch (the last: an epoch's end)."""
        phi = self.epoch_matrix
        assert phi is not None
        steady = np.linalg.solve(np.eye(len(phi)) - phi, self._from_zero[1])
        return self.epoch_excess(steady)[0]

    def first_crossing(self, s: np.ndarray, epsilon: float, max_steps: int) -> int | None:
        """The first step (≤ ``max_steps``) whose mean excess is at most ``epsilon``, from ``s``."""
        done = 0
        while done < max_steps:
            excess, s = self.epoch_excess(s)
            below = np.flatnonzero(excess <= epsilon)
            if below.size:
                step = done + int(below[0]) + 1
                return step if step <= max_steps else None
            done += self.period
        return None


def _closure(problem: LsqProblem, lr: float, batch_size: int, sampling: str) -> _Closure:
    """The closure of one rate, batch size and way of drawing batches (built once per problem)."""
    key = (float(lr), int(batch_size), sampling)
    if key not in problem._closures:
        problem._closures[key] = _build_closure(problem, lr, batch_size, sampling)
    return problem._closures[key]


def _build_closure(problem: LsqProblem, lr: float, batch_size: int, sampling: str) -> _Closure:
    c = problem.noise_factor(batch_size)
    full, keep = _transition(problem, lr, c)
    drives = _drives(problem, lr, batch_size, sampling)
    last = full
    if sampling == "epoch" and len(drives) > 1:
        size = int(_batch_sizes(problem.n, batch_size)[-1])
        if problem.noise_factor(size) != c:
            last = _transition(problem, lr, problem.noise_factor(size))[0]
    return _Closure(full, last, drives, keep, problem.lam[keep])


def sgd_excess_path(
    problem: LsqProblem,
    s0: np.ndarray,
    lr: float,
    batch_size: int,
    steps: int,
    sampling: str = "epoch",
) -> np.ndarray:
    """The predicted mean excess loss after each of ``steps`` SGD steps (from ``s0``).

    The closure of :func:`sgd_steps_to_epsilon`, step by step (a training run starts at the
    beginning of an epoch); at full batch the exact gradient-descent excess.
    """
    if problem.noise_factor(batch_size) == 0.0:
        t = np.arange(1, steps + 1)[:, None]
        factor = (1.0 - lr * problem.lam[None, :]) ** (2 * t)
        return np.asarray(0.5 * (factor * problem.lam * s0).sum(axis=1) + problem.unreachable)
    closure = _closure(problem, lr, batch_size, sampling)
    s = np.asarray(s0, dtype=np.float64)[closure.keep]
    epochs = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(math.ceil(steps / closure.period)):
            excess, s = closure.epoch_excess(s)
            epochs.append(excess)
    return np.concatenate(epochs)[:steps] + problem.unreachable


def sgd_steps_to_epsilon(
    problem: LsqProblem,
    s0: np.ndarray,
    lr: float,
    batch_size: int,
    epsilon: float,
    max_steps: int = 100_000,
    sampling: str = "epoch",
) -> int | None:
    """Predicted SGD steps until the mean excess loss is at most ``epsilon`` (``None``: never).

    Iterates ``s ← A_p s + d_p`` with the drive ``d_p`` of ``sampling`` (:func:`_drives`;
    ``"epoch"``, one permutation per epoch, is how the lab trains), an epoch at a time
    (:meth:`_Closure.epoch_excess`); stops early when the noise floor (its lowest point over an
    epoch) lies at or above ``epsilon``.
    """
    if problem.noise_factor(batch_size) == 0.0:
        return gd_steps_to_epsilon(problem, s0, lr, epsilon)
    closure = _closure(problem, lr, batch_size, sampling)
    lam = problem.lam[closure.keep]
    s = np.asarray(s0, dtype=np.float64)[closure.keep]
    epsilon -= problem.unreachable  # what the moving directions must get below
    if 0.5 * lam @ s <= epsilon:
        return 0
    if epsilon <= 0.0 or not closure.stable():
        return None
    if float(closure.orbit.min()) >= epsilon:
        return None
    return closure.first_crossing(s, epsilon, max_steps)


def sgd_excess_floor(
    problem: LsqProblem, lr: float, batch_size: int, sampling: str = "epoch"
) -> float | None:
    """The mean excess loss SGD settles at: ``½ λ·s∞``, ``s∞`` the closure's steady state.

    With one permutation per epoch (``sampling="epoch"``) the steady state cycles over the
    epoch; this is its lowest point (what a first crossing of ε can reach). ``None`` where the
    closure is not contracting (no floor: the mean square grows); 0 at full batch.
    :func:`sgd_steps_to_epsilon` predicts "never" when this is at least ε.
    """
    if problem.noise_factor(batch_size) == 0.0:
        return problem.unreachable
    closure = _closure(problem, lr, batch_size, sampling)
    if not closure.stable():
        return None
    lowest = float(closure.orbit.min())
    return max(0.0, lowest) + problem.unreachable


AGREE = 1.25  # predicted and measured counts agree within this factor either way


def _count_ratio(
    predicted: Sequence[int | None],
    measured: Sequence[int | None],
    horizon: int,
    cap: int,
    factor: float,
) -> tuple[float | None, str | None, bool]:
    """Ratio of mean counts, its kind (exact, lower or upper bound) and the verdict."""
    m_low = [float(horizon) if m is None else float(m) for m in measured]
    p_low = [float(cap) if p is None else float(p) for p in predicted]
    m_cut, p_cut = None in measured, None in predicted
    mean_m, mean_p = sum(m_low) / len(m_low), sum(p_low) / len(p_low)
    if not m_cut and not p_cut:
        ratio = mean_m / mean_p if mean_p > 0 else (1.0 if mean_m == 0 else math.inf)
        return ratio, "exact", 1.0 / factor <= ratio <= factor
    if m_cut and not p_cut:  # the measurement is only known to exceed the horizon
        ratio = mean_m / mean_p if mean_p > 0 else math.inf
        return ratio, "lower", ratio < factor
    if p_cut and not m_cut:  # the prediction is only known to exceed its cap
        ratio = mean_m / mean_p
        return ratio, "upper", ratio > 1.0 / factor
    return None, None, True


def compare_counts(
    predicted: Sequence[int | None],
    measured: Sequence[int | None],
    horizon: int,
    cap: int,
    factor: float = AGREE,
) -> dict[str, Any]:
    """Predicted against measured steps to ε, per seed and over the seeds, with censoring.

    ``predicted[i]`` and ``measured[i]`` are seed ``i``'s counts; ``None`` is "never": the
    measurement did not get there within ``horizon`` steps (so it is above ``horizon``), the
    prediction not within ``cap`` steps (or never at all). The ratio measured/predicted of the
    means is exact where no count is censored, a lower bound where only measurements are
    (``never`` counted as ``horizon``), an upper bound where only predictions are (counted as
    ``cap``). A disagreement is a ratio known to lie outside ``[1/factor, factor]``: a
    measurement that never reached ε against a prediction ``P ≤ horizon/factor`` is one
    (ratio > horizon/P), and so is a prediction of never against a measurement that got there.
    Where both are censored nothing is known beyond "both never", which agrees. Returns
    ``ratio``, ``ratio_bound`` (``exact``/``lower``/``upper``/``None``), ``agrees``,
    ``per_seed`` (the same three per seed) and ``disagreement`` (a sentence, or ``None``);
    the scheme disagrees if the means do or any seed does.

    >>> r = compare_counts([320, 324], [None, None], horizon=1250, cap=5000)
    >>> round(r["ratio"], 2), r["ratio_bound"], r["agrees"]
    (3.88, 'lower', False)
    >>> compare_counts([None], [400], horizon=1250, cap=5000)["agrees"]
    False
    >>> compare_counts([1100], [None], horizon=1250, cap=5000)["agrees"]
    True
    >>> compare_counts([None, None], [None, None], horizon=1250, cap=5000)["ratio_bound"] is None
    True
    """
    if len(predicted) != len(measured) or not predicted:
        raise ValueError("compare_counts needs one predicted and one measured count per seed")

    def finite(r: float | None) -> float | None:
        return r if r is not None and math.isfinite(r) else None

    ratio, bound, agrees = _count_ratio(predicted, measured, horizon, cap, factor)
    ratio = finite(ratio)
    pairs = zip(predicted, measured, strict=True)
    seeds = [_count_ratio([p], [m], horizon, cap, factor) for p, m in pairs]
    per_seed = [{"ratio": finite(r), "ratio_bound": b, "agrees": a} for r, b, a in seeds]
    disagreement = None
    if not agrees or not all(a for _, _, a in seeds):
        shown = ["—" if r is None else _bound_text(r, b) for r, b, _ in seeds]
        mean = "" if ratio is None else f"; over the seeds {_bound_text(ratio, bound)}"
        disagreement = (
            f"measured/predicted per seed {', '.join(shown)}{mean}: beyond a factor "
            f"{factor:g} (measured never = more than {horizon} steps; predicted never = more "
            f"than {cap})"
        )
        agrees = False
    return {
        "ratio": ratio,
        "ratio_bound": bound,
        "agrees": agrees,
        "per_seed": per_seed,
        "disagreement": disagreement,
    }


def _bound_text(ratio: float, bound: str | None) -> str:
    return {"lower": "> ", "upper": "< "}.get(bound or "", "") + f"{ratio:.2f}"


# ------------------------------------------------------------------------ non-linear models
def _normal_cdf(x: np.ndarray) -> np.ndarray:
    from math import erf, sqrt

    return np.vectorize(lambda v: 0.5 * (1.0 + erf(v / sqrt(2.0))))(x)


def saturation(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> dict[str, float]:
    """First-layer pre-activations at initialization: predicted from moments, and measured.

    ``weight`` (units × inputs) and ``bias`` are the initial first layer. Predicted values use
    only the mean and covariance of ``x`` (Gaussian approximation per unit); measured ones
    evaluate ``a = W x + b`` on the samples.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    w = np.asarray(weight, dtype=np.float64).reshape(len(weight), -1)
    b = np.asarray(bias, dtype=np.float64)
    mean = flat.mean(axis=0)
    centered = flat - mean
    cov_w = (centered.T @ (centered @ w.T)) / len(flat)  # Σ wᵀ without forming Σ twice
    m = w @ mean + b
    s = np.sqrt(np.maximum((w * cov_w.T).sum(axis=1), 1e-300))
    tanh_pred = float(np.mean(_normal_cdf((-2.0 - m) / s) + 1.0 - _normal_cdf((2.0 - m) / s)))
    dead_pred = float(np.mean(_normal_cdf(m / s) <= 0.01))
    a = flat @ w.T + b
    return {
        "tanh_saturated_predicted": tanh_pred,
        "tanh_saturated_measured": float(np.mean(np.abs(a) > 2.0)),
        "relu_dead_predicted": dead_pred,
        "relu_dead_measured": float(np.mean(np.mean(a > 0, axis=0) <= 0.01)),
        "preactivation_std": float(np.sqrt(np.mean(s**2 + m**2))),
    }


def kappa99(lam: np.ndarray) -> float | None:
    """``λ_max / λ_k99``: ``k99`` eigenvalues (largest first) hold 99 % of the trace."""
    desc = np.sort(np.asarray(lam, dtype=np.float64).clip(min=0.0))[::-1]
    total = float(desc.sum())
    if total <= 0:
        return None
    k = int(np.searchsorted(np.cumsum(desc) / total, 0.99) + 1)
    return float(desc[0] / desc[min(k, len(desc)) - 1])


def signal_half_steps(problem: LsqProblem) -> int | None:
    """``T½``: full-batch GD steps at ``η = 1/λ_max`` that remove half the explainable loss.

    Least squares on the one-hot labels, bias included, from zero weights: the start's excess
    ``L(0) − L*`` is the same under every invertible scheme (the outputs are 0), so ``T½`` is
    an absolute count. It weights the spectrum by where the labels' signal lies (unlike κ₉₉,
    which ignores the labels and collapses to 1 when one feature holds 99 % of the trace).
    ``None`` if not reached in a million steps.
    """
    outputs = problem.w_star.shape[0]
    s0 = problem.components(np.zeros((outputs, problem.vecs.shape[0] - 1)), np.zeros(outputs))
    start = float(0.5 * problem.lam @ s0)
    return gd_steps_to_epsilon(problem, s0, 1.0 / problem.lambda_max, 0.5 * start)


def ranking_cost(half_steps: int | None, saturated: float) -> float:
    """The ranking rule for non-linear models: ``T½ / max(1 − saturated share, 0.01)``.

    ``T½`` from :func:`signal_half_steps` (conditioning, weighted by the labels); the
    saturated share of first-layer units at initialization (:func:`saturation`) divides it:
    a saturated unit passes (almost) no gradient. Lower is predicted faster.
    """
    steps = math.inf if half_steps is None else float(max(half_steps, 1))
    return steps / max(1.0 - saturated, 0.01)


def ranks(values: list[float]) -> list[float]:
    """Ranks 1..n (average ranks for ties; ``inf`` ties last)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's ρ: Pearson correlation of the (tie-averaged) ranks; ``None`` if undefined.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40])
    1.0
    >>> spearman([1, 2, 3], [3, 2, float("inf")])
    0.5
    """
    if len(a) != len(b) or len(a) < 2:
        return None
    ra, rb = np.asarray(ranks(list(a))), np.asarray(ranks(list(b)))
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    return None if denom == 0 else float(da @ db / denom)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    low, high = ordered[mid - 1], ordered[mid]
    return float(high) if math.isinf(high) else float((low + high) / 2.0)


def predicted_tie_groups(costs: Mapping[str, float], factor: float) -> list[list[str]]:
    """Predicted tie groups, best first: costs within ``factor`` of a group's first are tied.

    The schemes are sorted by cost (``inf`` last, then by name); a group opens at the cheapest
    scheme not yet placed and takes every following scheme whose cost is at most ``factor``
    times the opener's (no chaining: 1, 1.9, 3.6 with factor 2 are two groups). All schemes
    with an infinite cost form one group, the last.

    >>> predicted_tie_groups({"a": 1.0, "b": 1.9, "c": 3.6, "d": float("inf")}, 2.0)
    [['a', 'b'], ['c'], ['d']]
    """
    if not factor >= 1.0:
        raise ValueError(f"a tie factor is at least 1; got {factor}")
    order = sorted(costs, key=lambda s: (costs[s], s))
    groups: list[list[str]] = []
    for name in order:
        if groups:
            opener = costs[groups[-1][0]]
            cost = costs[name]
            if (math.isinf(opener) and math.isinf(cost)) or cost <= factor * opener:
                groups[-1].append(name)
                continue
        groups.append([name])
    return groups


def measured_tie_groups(per_seed: Mapping[str, Sequence[float]]) -> list[list[str]]:
    """Measured tie groups, best first, from each scheme's per-seed counts (``inf``: never).

    The schemes are sorted by their median count (then by name); a group opens at the first
    scheme not yet placed and takes every following scheme whose range over the seeds,
    ``[min, max]``, overlaps the opener's. Two schemes are told apart only when every seed of
    one beats every seed of the other: for ``n`` seeds each that is the exact Mann–Whitney test
    at ``U = 0``, one-sided ``p = 1/C(2n, n)`` under exchangeable seeds (0.05 for 3 seeds,
    0.014 for 4). Schemes that never reached the target with any seed share the last group.

    >>> measured_tie_groups({"a": [32, 64, 32], "b": [64, 96, 64], "c": [128, 160, 192]})
    [['a', 'b'], ['c']]
    """
    spans = {}
    for name, values in per_seed.items():
        if not values:
            raise ValueError(f"scheme {name!r} has no per-seed values")
        spans[name] = (min(values), max(values), _median(values))
    order = sorted(spans, key=lambda s: (spans[s][2], s))
    groups: list[list[str]] = []
    for name in order:
        if groups:
            low, high, _ = spans[groups[-1][0]]
            if max(low, spans[name][0]) <= min(high, spans[name][1]):
                groups[-1].append(name)
                continue
        groups.append([name])
    return groups


def compare_rankings(
    predicted: Mapping[str, float], per_seed: Mapping[str, Sequence[float]], factor: float
) -> dict[str, Any]:
    """Predicted against measured ranking with ties on both sides (see docs/guide/lab.md).

    ``predicted``: the rule's cost per scheme (``inf``: predicted never); ``per_seed``: the
    measured counts per seed at the scheme's chosen rate (``inf``: never reached). Returns the
    tie groups of both sides (best first), Spearman's ρ of the group ranks (tied schemes share
    their group's average rank) and of the raw values (predicted cost against the median
    count), and whether the predicted best and worst groups share a scheme with the measured
    best and worst groups; ``None`` (undefined, not a success) where either side is one group.

    >>> r = compare_rankings({"a": 1.0, "b": 1.5, "c": 9.0}, {"a": [64, 96], "b": [32, 64],
    ...                      "c": [500, float("inf")]}, factor=2.0)
    >>> r["predicted_groups"], r["measured_groups"], r["best_match"], r["worst_match"]
    ([['a', 'b'], ['c']], [['b', 'a'], ['c']], True, True)
    >>> r["spearman"]
    1.0
    """
    names = list(predicted)
    if sorted(names) != sorted(per_seed):
        raise ValueError("predicted and measured rankings must name the same schemes")
    pred_groups = predicted_tie_groups(predicted, factor)
    meas_groups = measured_tie_groups(per_seed)
    pred_index = {s: i for i, group in enumerate(pred_groups) for s in group}
    meas_index = {s: i for i, group in enumerate(meas_groups) for s in group}
    medians = {s: _median(per_seed[s]) for s in names}

    def match(a: list[str], b: list[str]) -> bool | None:
        if len(pred_groups) < 2 or len(meas_groups) < 2:
            return None
        return bool(set(a) & set(b))

    return {
        "predicted_groups": pred_groups,
        "measured_groups": meas_groups,
        "spearman": spearman(
            [float(pred_index[s]) for s in names], [float(meas_index[s]) for s in names]
        ),
        "spearman_values": spearman([predicted[s] for s in names], [medians[s] for s in names]),
        "best_match": match(pred_groups[0], meas_groups[0]),
        "worst_match": match(pred_groups[-1], meas_groups[-1]),
    }


def relative_target(
    x: np.ndarray, y: np.ndarray, n_classes: int, share: float = 0.9
) -> dict[str, float]:
    """A train-accuracy target set by what the data allow, the same under every scheme.

    ``majority + share × (linear − majority)``: ``majority`` is the largest class's share and
    ``linear`` the train accuracy of the least-squares optimum on the one-hot labels, bias
    included — invariant under every invertible affine scheme. Also returned: the best
    accuracy of such a fit on a single feature (a target below it is met by one feature).
    """
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    labels = np.asarray(y, dtype=np.int64)
    targets = np.eye(n_classes)[labels]
    majority = float(np.bincount(labels, minlength=n_classes).max() / len(labels))

    def accuracy(inputs: np.ndarray) -> float:
        z = augmented(inputs)
        w = np.linalg.lstsq(z, targets, rcond=None)[0]
        return float(np.mean((z @ w).argmax(axis=1) == labels))

    linear = accuracy(flat)
    single = max(accuracy(flat[:, [j]]) for j in range(flat.shape[1]))
    return {
        "majority": majority,
        "linear_optimum": linear,
        "best_single_feature": single,
        "share": share,
        "target": majority + share * (linear - majority),
    }


def describe() -> dict[str, Any]:
    """The formulas, as recorded under ``results.json["theory"]["formulas"]``."""
    return {
        "excess": "½ Σ_k λ_k s_k over the eigenpairs of E[z zᵀ], z = (x, 1)",
        "gd_steps": "smallest t with ½ Σ λ_k (1 − ηλ_k)^{2t} s_k(0) ≤ ε",
        "sgd_stable_lr": "1/μ_max of Q P = μ S P over symmetric P: S(P) = HP + PH, "
        "Q(P) = (1 − c) HPH + c E[(zᵀPz) z zᵀ], c = (n − B)/(B(n − 1)) (mean-square stability "
        "of P ← (I − ηH)P(I − ηH) + cη²(E[(zᵀPz) z zᵀ] − HPH))",
        "sgd_stable_lr_epoch": "largest η with spectral radius of P ↦ mean_π Φ_π P Φ_πᵀ below 1, "
        "Φ_π = the epoch's product of (I − η H_b) over the batches of permutation π (the lab's "
        "batches: one permutation per epoch), the mean over 32 seeded permutations; directions "
        "an epoch damps by less than e^(-1/2) left out; inputs only",
        "sgd_steps": "iterate s ← A s + d(p), N_k = Σ_o E[(v_kᵀz)² r_o²], one permutation per "
        "epoch: d_k(p) = η² N_k (c_p − 2a_k(1 − a_k^p)/((n − 1)(1 − a_k))), a_k = 1 − ηλ_k, p the "
        "step's position in its epoch, c_p its batch's noise factor; first t with ½ λ·s ≤ ε",
        "ranking": "cost = T½ / max(1 − saturated share, 0.01), T½ = full-batch GD steps at "
        "η = 1/λ_max of least squares on the one-hot labels (bias included, from zero) until "
        "half the explainable loss is gone; lower ranks first",
        "ties": "predicted: costs within the tie factor (√ of the grid's factor) of a group's "
        "cheapest are tied; measured: ordered by the median over seeds (never = ∞), a scheme "
        "whose [min, max] over seeds overlaps its group's first is tied with it; ρ of the group "
        "ranks; best (worst) matches if the first (last) groups share a scheme, undefined if "
        "either side is a single group",
    }
