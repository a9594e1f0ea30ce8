"""Checkpoint schedules: every k steps, geometric (log-spaced), adaptive (dense where metrics move).

A schedule decides, step by step, whether the trainer writes a checkpoint. Step 0 and the final step
are always checkpointed. A schedule keeps its state (the last checkpoint's step and metrics) in a
small float64 vector that the run file stores with the resume state, so a resumed run takes the
same decisions. Schedules live in probe's core because configs validate against them and run files
carry their state; the trainer only calls :meth:`Schedule.due` and :meth:`Schedule.record`.

Adding a schedule is one registration: a :class:`Schedule` subclass decorated with
``@SCHEDULES.register("name")``; ``checkpoint.schedule=name`` then selects it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from probe.registry import Registry

if TYPE_CHECKING:
    from probe.config import CheckpointConfig

STATE_SIZE = 5  # last step, train_acc, val_acc, log10 train_loss, log10 val_loss
LOSS_FLOOR = 1e-4  # loss changes below this are noise for scheduling purposes
LOSS_SCALE = 5.0  # a tenfold loss change counts like a 0.2 change in accuracy


class Schedule:
    """Base class. ``due(step, row)``: write a checkpoint at ``step``? ``row``: that step's metrics
    (None when metrics were not recorded at that step)."""

    def __init__(self, cfg: "CheckpointConfig", total_steps: int, state: np.ndarray | None = None) -> None:
        self.cfg = cfg
        self.total = total_steps
        self.state = np.full(STATE_SIZE, np.nan) if state is None else np.asarray(state, np.float64).copy()

    def due(self, step: int, row: dict[str, float] | None) -> bool:
        return step == 0 or step == self.total or self._due(step, row)

    def _due(self, step: int, row: dict[str, float] | None) -> bool:
        raise NotImplementedError

    @staticmethod
    def _features(row: dict[str, float]) -> np.ndarray:
        def log(x: float) -> float:
            return math.log10(max(x, LOSS_FLOOR)) if x == x else float("nan")

        return np.array([row["train_acc"], row["val_acc"], log(row["train_loss"]), log(row["val_loss"])])

    def record(self, step: int, row: dict[str, float] | None) -> None:
        """Remember the checkpoint just written (its metrics, if recorded at that step)."""
        self.state[0] = step
        if row is not None:
            self.state[1:] = self._features(row)


SCHEDULES: Registry[type[Schedule]] = Registry("checkpoint schedule")


def make_schedule(cfg: "CheckpointConfig", total_steps: int, state: np.ndarray | None = None) -> Schedule:
    """The schedule ``cfg.schedule`` names, for a run of ``total_steps`` (``state``: resumed state)."""
    return SCHEDULES.get(cfg.schedule)(cfg, total_steps, state)


@SCHEDULES.register("every")
class Every(Schedule):
    """Every ``checkpoint.every`` steps."""

    def _due(self, step: int, row: dict[str, float] | None) -> bool:
        return step % self.cfg.every == 0


def geometric_steps(total: int, count: int) -> np.ndarray:
    """About ``count`` log-spaced steps in [0, total], always including 0 and ``total``."""
    grid = np.unique(np.round(np.logspace(0, math.log10(max(total, 1)), count)).astype(np.int64))
    return np.unique(np.concatenate([[0], grid[grid <= total], [total]]))


@SCHEDULES.register("geometric")
class Geometric(Schedule):
    """About ``checkpoint.count`` log-spaced steps (Power et al.; Omnigrok)."""

    def __init__(self, cfg: "CheckpointConfig", total_steps: int, state: np.ndarray | None = None) -> None:
        super().__init__(cfg, total_steps, state)
        self._steps = set(geometric_steps(total_steps, cfg.count).tolist())

    def _due(self, step: int, row: dict[str, float] | None) -> bool:
        return step in self._steps


@SCHEDULES.register("adaptive")
class Adaptive(Schedule):
    """At metric steps where train/val accuracy or log-loss moved by ``checkpoint.threshold`` since
    the last checkpoint (accuracy in absolute terms, log10 loss / 5), at least ``min_every`` and at
    most ``max_every`` steps apart."""

    def change(self, row: dict[str, float]) -> float:
        """Largest move since the last checkpoint: accuracy in absolute terms, log10 loss / 5."""
        diff = np.abs(self._features(row) - self.state[1:])
        diff[2:] /= LOSS_SCALE
        diff = diff[np.isfinite(diff)]
        return float(diff.max()) if diff.size else float("inf")

    def _due(self, step: int, row: dict[str, float] | None) -> bool:
        gap = step - self.state[0] if np.isfinite(self.state[0]) else float("inf")
        if gap >= self.cfg.max_every:
            return True
        return row is not None and gap >= self.cfg.min_every and self.change(row) >= self.cfg.threshold
