"""Varma et al. 2023 ("Explaining grokking through circuit efficiency", arXiv 2309.02390): the
efficiency of the memorising and the generalising circuit, each measured on its own, and the critical
dataset size D_crit where they cross. Pure functions of arrays; the library side that reads a sweep
of runs is :func:`probe.analyses.theory.critical_dataset_size_table` (``probe theory
critical-dataset-size``). Definitions and choices: docs/metrics.md, "Circuit efficiency and D_crit".

Efficiency (Sec. 1 and Sec. 3 of the paper): a circuit is more efficient when it "produces larger
logits with the same parameter norm", i.e. needs "less parameter norm to produce a given logit
value". The paper predicts (Sec. 4) that the memorising circuit C_mem's efficiency falls as the
training set grows, while the generalising circuit C_gen's does not depend on it, so that the two
cross at D_crit: below it C_mem is the more efficient, above it C_gen.

probe measures the efficiency of one circuit at a time, on networks that can hold only that one:
memorising networks trained on shuffled labels (``labels=shuffled``: nothing to generalise) and
generalising networks trained on the task's labels that did generalise (validation accuracy). Every
network is trained with its total parameter norm held at one value ``N0`` (the norm constraint), so
the logit scale it reaches is its circuit's logit scale at the fixed norm ``N0``:

    efficiency(C) = logit_scale(C at ||theta|| = N0)
                  = mean over training samples of ( z_y - mean_{c != y} z_c )

(:func:`logit_scale`; the correct-class logit against the mean of the others, which the softmax does
not see shifted). A weight-decay run whose norm settles at ``N0`` sits where the cross-entropy is
stationary on the sphere of radius ``N0`` too, so both describe the same point of the logit-norm
trade-off the paper's argument is about.

D_crit: for each seed, the generalising level ``g(D)`` (interpolated linearly in log size between the
sizes where a generalising network was measured, and held constant beyond them: the paper's claim
that C_gen's efficiency does not depend on D) is compared with the memorising curve ``m(D)``; the
seed's crossing is the first size where ``m - g`` falls from positive to zero or below, interpolated
linearly in log size between the two trained sizes around it. The estimate is the median of the
seeds' crossings and its interval their range (min to max over seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probe.errors import ProbeError

#: at least this many dataset sizes with memorising networks, and this many seeds with both circuits
MIN_SIZES = 3
MIN_SEEDS = 2
#: where a seed's curves cross: inside the trained sizes, below the smallest (C_gen already the more
#: efficient there) or above the largest (C_mem still the more efficient)
WHERE = ("inside", "below", "above")


def logit_scale(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of the correct-class logit minus the mean of the other logits (``logits
    [N, C]``, ``labels [N]``): the logit a circuit produces, the quantity whose size per unit of
    parameter norm is its efficiency (Varma et al. Sec. 1, Sec. 3)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0 or z.shape[1] < 2:
        raise ProbeError(f"logit_scale needs logits [N, C] with N >= 1, C >= 2 and labels [N]; got {z.shape} "
                         f"and {y.shape}")
    correct = z[np.arange(z.shape[0]), y]
    others = (z.sum(axis=1) - correct) / (z.shape[1] - 1)
    return float(np.mean(correct - others))


def log_interp(sizes: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values`` (NaN where not measured) at the sizes ``at``: linear in log size between the measured
    sizes, constant beyond the first and the last; all NaN when nothing was measured."""
    s = np.asarray(sizes, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    at = np.asarray(at, dtype=np.float64)
    if not ok.any():
        return np.full(at.shape, np.nan)
    return np.interp(np.log(at), np.log(s[ok]), v[ok])


def crossing(sizes: np.ndarray, mem: np.ndarray, gen: np.ndarray) -> tuple[float, str]:
    """``(size, where)``: the first dataset size at which the memorising efficiency ``mem`` falls to the
    generalising level ``gen`` (both at ``sizes``, increasing), linear in log size between the two
    trained sizes around it; ``where`` is one of :data:`WHERE` (NaN unless ``inside``)."""
    s = np.asarray(sizes, dtype=np.float64)
    d = np.asarray(mem, dtype=np.float64) - np.asarray(gen, dtype=np.float64)
    if d[0] <= 0:
        return math.nan, "below"
    for i in range(1, len(s)):
        if d[i - 1] > 0 >= d[i]:
            t = d[i - 1] / (d[i - 1] - d[i])
            return float(np.exp(np.log(s[i - 1]) + t * (np.log(s[i]) - np.log(s[i - 1])))), "inside"
    return math.nan, "above"


@dataclass(frozen=True)
class CriticalSize:
    """The critical dataset size: each seed's crossing, their median and their range."""

    sizes: tuple[float, ...]  # the dataset sizes trained
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]  # each seed's crossing (NaN unless it crossed inside the sizes)
    where: tuple[str, ...]  # each seed's :data:`WHERE`
    estimate: float  # median of the seeds' crossings (NaN when none crossed)
    low: float  # smallest and largest crossing over the seeds: the interval
    high: float

    @property
    def crossed(self) -> int:
        return sum(w == "inside" for w in self.where)

    def describe(self) -> str:
        n = len(self.seeds)
        if math.isnan(self.estimate):
            counts = ", ".join(f"{self.where.count(w)} {w}" for w in WHERE if self.where.count(w))
            return (f"no crossing inside the sizes trained ({self.sizes[0]:,.0f}-{self.sizes[-1]:,.0f}; seeds: "
                    f"{counts})")
        return (f"{self.estimate:,.0f} (median over seeds; range {self.low:,.0f}-{self.high:,.0f}; "
                f"{self.crossed} of {n} seeds cross inside {self.sizes[0]:,.0f}-{self.sizes[-1]:,.0f})")


def critical_size(sizes: np.ndarray, mem: np.ndarray, gen: np.ndarray,
                  seeds: tuple[int, ...] | list[int] | None = None) -> CriticalSize:
    """D_crit from the memorising and generalising efficiencies ``mem`` and ``gen`` (``[n_seeds,
    n_sizes]`` at ``sizes``; NaN where no network of that circuit was measured, for example where a
    network trained on the task's labels did not generalise). Raises :class:`ProbeError` (one line)
    with memorising networks at fewer than :data:`MIN_SIZES` sizes or both circuits for fewer than
    :data:`MIN_SEEDS` seeds."""
    s = np.asarray(sizes, dtype=np.float64).reshape(-1)
    m = np.asarray(mem, dtype=np.float64)
    g = np.asarray(gen, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if g.ndim == 1:
        g = g[None, :]
    if m.ndim != 2 or g.shape != m.shape or m.shape[1] != s.shape[0]:
        raise ProbeError(f"the efficiencies must be [seeds, sizes] arrays of one shape over the {s.shape[0]} sizes; "
                         f"got {m.shape} and {g.shape}")
    if not (np.all(np.isfinite(s)) and np.all(s > 0) and len(np.unique(s)) == len(s)):
        raise ProbeError("the dataset sizes must be distinct positive numbers")
    order = np.argsort(s)
    s, m, g = s[order], m[:, order], g[:, order]
    seeds = tuple(range(m.shape[0])) if seeds is None else tuple(int(x) for x in seeds)
    if len(seeds) != m.shape[0]:
        raise ProbeError(f"{len(seeds)} seed labels for {m.shape[0]} rows of efficiencies")
    n_sizes = int(np.isfinite(m).any(axis=0).sum())
    usable = [i for i in range(m.shape[0])
              if np.isfinite(m[i]).sum() >= MIN_SIZES and np.isfinite(g[i]).any()]
    if n_sizes < MIN_SIZES or len(usable) < MIN_SEEDS:
        raise ProbeError(f"a critical dataset size needs memorising networks at >= {MIN_SIZES} dataset sizes and "
                         f"both circuits measured for >= {MIN_SEEDS} seeds; got {n_sizes} size(s) and "
                         f"{len(usable)} seed(s) with both")
    per, where = [], []
    for i in usable:
        ok = np.isfinite(m[i])
        level = log_interp(s, g[i], s[ok])
        x, w = crossing(s[ok], m[i, ok], level)
        per.append(x)
        where.append(w)
    found = np.array([x for x in per if not math.isnan(x)])
    est = float(np.median(found)) if len(found) else math.nan
    low = float(found.min()) if len(found) else math.nan
    high = float(found.max()) if len(found) else math.nan
    return CriticalSize(tuple(float(x) for x in s), tuple(seeds[i] for i in usable), tuple(per), tuple(where),
                        est, low, high)


def falls(values: np.ndarray) -> bool:
    """Whether the finite entries of ``values`` (in the order of increasing size) strictly decrease."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return len(v) >= 2 and bool(np.all(np.diff(v) < 0))


def spread(values: np.ndarray) -> float:
    """Largest over smallest of the finite, positive entries (1: flat); NaN with fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2 or np.any(v <= 0):
        return math.nan
    return float(v.max() / v.min())
