"""Learning phases (Liu et al. 2022, App. A, Table 1) from training curves: pure functions of arrays.

A run is in *comprehension* when validation accuracy passes the threshold within ``delay`` steps of
training accuracy, *grokking* when it passes later (within the budget), *memorization* when only
training accuracy passes, *confusion* when neither does. The threshold (0.9), budget (1e5 steps) and
delay (1e3 steps) are parameters and travel with every result (docs/design.md, "Sweeps and phases").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probe.errors import ProbeError

PHASES: tuple[str, ...] = ("comprehension", "grokking", "memorization", "confusion")


@dataclass(frozen=True)
class PhaseRule:
    """Liu Table 1's three numbers."""

    threshold: float = 0.9
    budget: int | None = 100_000
    delay: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ProbeError(f"must be in (0, 1], got {self.threshold}", param="threshold")
        if self.budget is not None and self.budget < 0:
            raise ProbeError(f"must be >= 0, got {self.budget}", param="budget")
        if self.delay < 0:
            raise ProbeError(f"must be >= 0, got {self.delay}", param="delay")


def first_step(steps: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """First step where ``values >= threshold`` (NaN if never)."""
    hit = np.flatnonzero(np.asarray(values) >= threshold)
    return float(np.asarray(steps)[hit[0]]) if hit.size else float("nan")


def _curve(name: str, values: object, length: int | None = None) -> np.ndarray:
    """One training curve as a 1-D float array (``length`` values when given), or a ProbeError."""
    if isinstance(values, (str, bytes)):
        raise ProbeError(f"the training curve {name!r} is not a list of numbers")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ProbeError(f"the training curve {name!r} is not a list of numbers") from None
    if arr.ndim != 1:
        raise ProbeError(f"the training curve {name!r} is not a flat list of numbers")
    if length is not None and arr.shape[0] != length:
        raise ProbeError(f"the training curve {name!r} has {arr.shape[0]} values for {length} steps")
    if name == "step" and not np.all(np.isfinite(arr)):
        raise ProbeError("the training curves' steps are not all finite")
    return arr


@dataclass(frozen=True)
class PhaseResult:
    train_step: float  # first step with train accuracy above the threshold (NaN: never within the budget)
    val_step: float
    phase: str

    @property
    def delay(self) -> float:
        return self.val_step - self.train_step


def classify(steps: np.ndarray, train_acc: np.ndarray, val_acc: np.ndarray,
             rule: PhaseRule = PhaseRule()) -> PhaseResult:
    """Liu App. A Table 1 for one run's curves (steps ascending). Curves that are not numbers of one
    length, or steps that do not increase, are refused with a ProbeError naming the curve."""
    steps = _curve("step", steps)
    if np.any(np.diff(steps) <= 0):
        raise ProbeError("the training curves' steps do not increase")
    train_acc, val_acc = _curve("train_acc", train_acc, len(steps)), _curve("val_acc", val_acc, len(steps))
    keep = steps <= rule.budget if rule.budget is not None else np.ones(len(steps), dtype=bool)
    above = rule.threshold + 1e-12  # "exceeds" the threshold (Liu App. A)
    t = first_step(steps[keep], train_acc[keep], above)
    v = first_step(steps[keep], val_acc[keep], above)
    if math.isnan(t):
        phase = "confusion"
    elif math.isnan(v):
        phase = "memorization"
    else:
        phase = "comprehension" if v - t < rule.delay else "grokking"
    return PhaseResult(t, v, phase)


def phase(steps: np.ndarray, train_acc: np.ndarray, val_acc: np.ndarray, threshold: float = 0.9,
          budget: int | None = None, delay: int = 1000) -> str:
    """The phase name alone (see :func:`classify`)."""
    return classify(steps, train_acc, val_acc, PhaseRule(threshold, budget, delay)).phase


def majority(phases: list[str]) -> tuple[str, float]:
    """The most common phase and its share (ties broken in :data:`PHASES` order)."""
    if not phases:
        return "n/a", float("nan")
    counts = {p: phases.count(p) for p in PHASES}
    best = max(PHASES, key=lambda p: (counts[p], -PHASES.index(p)))
    return best, counts[best] / len(phases)
