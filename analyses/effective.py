"""Liu et al.'s effective theory of representation learning (Sec. 3.2, Figs. 4-5, App. F).

* ``dof``: nullity of ``A(P0(D))`` (eq. 7): 2 means the training set implies the unique linear
  representation ``E_k = a + k b`` (up to translation and scale).
* ``lambda3``: third-smallest eigenvalue of ``H = A_D^T A_D``, the "grokking rate"; the timescale
  ``n_h = 1 / (lambda3 * eta)`` with ``eta`` the embedding learning rate (Sec. 3.2; about ``3 n_h``
  steps to converge in Liu's toy runs; Fig. 5 compares it with steps to RQI > 0.95 up to a factor).
* :func:`critical_fraction`: Monte Carlo estimate of ``P(dof == 2)`` against the training-set size
  and its 0.5 crossing (Fig. 4a: about 0.4 for ``p = 10`` addition).
* :func:`effective_dynamics`: gradient flow (eq. 4) of ``l_eff = l0 / Z0`` (eq. 5) on the normalised
  embeddings, from a given start (Fig. 4c); :func:`fit_time_scale` fits the factor between flow time
  and ``step x eta`` to a run's real trajectory by least squares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from probe.analyses.applies import abelian, require
from probe.analyses.parallelograms import Parallelograms, hessian, normalize, spectrum
from probe.errors import ProbeError
from probe.tasks import Task, make_split


@dataclass(frozen=True)
class EffectiveTheory:
    dof: int
    lambda3: float
    eigenvalues: np.ndarray
    n_constraints: int  # |P0(D)|

    def timescale_steps(self, eta: float) -> float:
        """Liu Sec. 3.2: ``n_h = 1 / (lambda3 eta)``, the number of gradient-flow steps (step size
        ``eta``) in which the slowest non-trivial component shrinks by a factor e; infinite when
        ``lambda3 = 0`` (no unique structure). A timescale, not a prediction of the step at which a
        network generalises: Liu et al. observe convergence after about ``3 n_h`` steps in the toy
        setting, and networks trained with Adam and a decoder follow it only up to a factor."""
        return float("inf") if self.lambda3 <= 0 else 1.0 / (self.lambda3 * eta)


def effective_theory(task: Task, train: np.ndarray, p0: Parallelograms | None = None) -> EffectiveTheory:
    """dof and lambda3 of the training set ``train`` (sample indices)."""
    p0 = p0 if p0 is not None else Parallelograms.from_labels(task.labels)
    h = hessian(task.inputs, p0, np.asarray(train), task.n_symbols)
    evals, _, nullity = spectrum(h)
    evals = np.where(np.arange(evals.shape[0]) < nullity, 0.0, evals)
    lam3 = float(evals[2]) if evals.shape[0] > 2 else 0.0
    return EffectiveTheory(dof=nullity, lambda3=lam3, eigenvalues=evals, n_constraints=int(p0.within(train).sum()))


def critical_fraction(task: Task, trials: int = 100, sizes: np.ndarray | None = None, seed: int = 0,
                      progress: bool = False) -> tuple["np.ndarray", "np.ndarray", float, int]:
    """``P(unique linear representation)`` per training-set size, over random splits (Liu Fig. 4a).

    "Unique" means the training set implies every constraint of the full table: ``dof`` equals the
    nullity of ``A(P0)`` (2 for Liu's non-modular addition, i.e. ``E_k = a + k b``; 1 for modular
    addition, where the sum-aggregation structure is degenerate).

    Returns ``(sizes, probability, critical_fraction, full_dof)``; the critical fraction is where the
    probability first crosses 0.5 (linear interpolation between sizes), NaN if it never does.
    """
    require(abelian, task, "the effective theory")
    if trials < 1:
        raise ProbeError(f"must be >= 1, got {trials}", param="trials")
    n = task.n_samples
    sizes = np.arange(1, n + 1) if sizes is None else np.asarray(sizes)
    p0 = Parallelograms.from_labels(task.labels)
    full = effective_theory(task, np.arange(n), p0).dof
    prob = np.empty(len(sizes))
    it = sizes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(sizes, desc="training-set sizes", unit="size", leave=False)
    for i, size in enumerate(it):
        hits = 0
        for trial in range(trials):
            split = make_split(n, 1.0, seed=seed * 1_000_003 + trial * 7919 + int(size), n_train=int(size))
            hits += effective_theory(task, split.train, p0).dof == full
        prob[i] = hits / trials
    return sizes, prob, crossing(sizes / n, prob), full


def crossing(fractions: np.ndarray, prob: np.ndarray, level: float = 0.5) -> float:
    """The fraction where ``prob`` first reaches ``level``, interpolated linearly from the size before;
    the first fraction when it starts at or above ``level``; NaN when it never reaches it (Liu Fig. 4a's
    critical fraction at ``level`` 0.5)."""
    above = np.flatnonzero(np.asarray(prob) >= level)
    if above.size == 0:
        return float("nan")
    j = int(above[0])
    if j == 0:
        return float(fractions[0])
    x0, x1, y0, y1 = fractions[j - 1], fractions[j], prob[j - 1], prob[j]
    return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)


def _gradient_flow(e0: np.ndarray, h: np.ndarray, n_constraints: int) -> tuple[np.ndarray, Any]:
    """The normalised start and the right-hand side ``-d l_eff / dE`` (Liu eq. 4-5) on flattened
    embeddings, shared by :func:`effective_flow` and :func:`effective_dynamics`."""
    e0 = np.asarray(e0, dtype=np.float64)
    if e0.ndim == 1:
        e0 = e0[:, None]
    start = normalize(e0)  # the one normalisation (Liu Sec. 3.2)
    shape = start.shape
    m = max(n_constraints, 1)

    def rhs(_t: float, flat: np.ndarray) -> np.ndarray:
        e = flat.reshape(shape)
        he = h @ e
        z0 = float(np.sum(e * e))
        l0 = float(np.sum(e * he)) / m
        grad = 2.0 * he / (m * z0) - 2.0 * l0 * e / (z0 * z0)
        return -grad.ravel()

    return start, rhs


def effective_flow(e0: np.ndarray, h: np.ndarray, n_constraints: int, t_max: float) -> "Any":
    """The gradient flow of :func:`effective_dynamics` as a dense solution on ``[0, t_max]``:
    ``flow(t)`` gives the normalised embeddings ``[len(t), p, d]`` at any times in that range."""
    from scipy.integrate import solve_ivp

    start, rhs = _gradient_flow(e0, h, n_constraints)
    shape = start.shape

    sol = solve_ivp(rhs, (0.0, float(max(t_max, 1e-12))), start.ravel(), method="LSODA", rtol=1e-8, atol=1e-10,
                    dense_output=True)
    if not sol.success:
        raise ProbeError(f"integrating the effective dynamics failed: {sol.message}")

    def flow(t: np.ndarray) -> np.ndarray:
        tt = np.clip(np.asarray(t, dtype=np.float64), 0.0, sol.t[-1])
        traj = sol.sol(tt).T.reshape(len(tt), *shape)
        return np.stack([normalize(e) for e in traj])

    return flow


def fit_time_scale(e0: np.ndarray, h: np.ndarray, n_constraints: int, times: np.ndarray, real: np.ndarray,
                   bounds: tuple[float, float] = (1e-4, 1e4)) -> tuple[float, float, float]:
    """Least-squares time scale ``s`` of the effective dynamics against a real trajectory:
    ``min_s sum_t |E_eff(s t) - E_real(t)|^2`` over normalised embeddings ``real [T, p, d]`` at
    ``times`` (step x embedding lr). A log-spaced scan of ``bounds``, refined by a bounded scalar
    search around the best point. Returns ``(s, residual at s, residual at s = 1)``, residuals as
    root-mean-square differences."""
    from scipy.optimize import minimize_scalar

    times = np.asarray(times, dtype=np.float64)
    flow = effective_flow(e0, h, n_constraints, float(times[-1]) * bounds[1])

    def cost(log_s: float) -> float:
        return float(np.sqrt(np.mean((flow(times * 10.0 ** log_s) - real) ** 2)))

    grid = np.linspace(np.log10(bounds[0]), np.log10(bounds[1]), 33)
    costs = [cost(g) for g in grid]
    i = int(np.argmin(costs))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    log_s = float(best.x) if best.fun <= costs[i] else float(grid[i])
    return 10.0 ** log_s, cost(log_s), cost(0.0)


def effective_dynamics(e0: np.ndarray, h: np.ndarray, n_constraints: int, times: np.ndarray) -> np.ndarray:
    """Integrate ``dE/dt = -d l_eff / dE`` (Liu eq. 4) from ``e0 [p, d]``; returns ``[len(times), p, d]``.

    ``e0`` is normalised first (centre, divide by sigma). The flow conserves ``sum_k E_k`` and
    ``Z0 = sum_k |E_k|^2`` (App. F); the returned trajectories are re-normalised at each time, as the
    real embeddings are, so both can be compared on one scale.
    """
    from scipy.integrate import solve_ivp

    start, rhs = _gradient_flow(e0, h, n_constraints)
    shape = start.shape

    times = np.asarray(times, dtype=np.float64)
    sol = solve_ivp(rhs, (0.0, float(times[-1])), start.ravel(), t_eval=times, method="LSODA",
                    rtol=1e-8, atol=1e-10)
    if not sol.success:
        raise ProbeError(f"integrating the effective dynamics failed: {sol.message}")
    traj = sol.y.T.reshape(len(times), *shape)
    return np.stack([normalize(e) for e in traj])
