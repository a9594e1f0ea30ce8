"""Checkpoint schedules: every k steps, geometric (log-spaced), adaptive (dense where metrics move).

Step 0 and the final step are always checkpointed. The adaptive rule keeps its state (the last
checkpoint's step and metrics) in a small float64 vector that the run file stores with the resume
state, so a resumed run takes the same decisions.
"""

from __future__ import annotations

import math

import numpy as np

from probe.config import CheckpointConfig

STATE_SIZE = 5  # last step, train_acc, val_acc, log10 train_loss, log10 val_loss
LOSS_FLOOR = 1e-4  # loss changes below this are noise for scheduling purposes
LOSS_SCALE = 5.0  # a tenfold loss change counts like a 0.2 change in accuracy


def geometric_steps(total: int, count: int) -> np.ndarray:
    """About ``count`` log-spaced steps in [0, total], always including 0 and ``total``."""
    grid = np.unique(np.round(np.logspace(0, math.log10(max(total, 1)), count)).astype(np.int64))
    return np.unique(np.concatenate([[0], grid[grid <= total], [total]]))


class Schedule:
    def __init__(self, cfg: CheckpointConfig, total_steps: int, state: np.ndarray | None = None) -> None:
        self.cfg = cfg
        self.total = total_steps
        self.state = np.full(STATE_SIZE, np.nan) if state is None else np.asarray(state, np.float64).copy()
        self._geometric = set(geometric_steps(total_steps, cfg.count).tolist()) if cfg.schedule == "geometric" else set()

    @staticmethod
    def _features(row: dict[str, float]) -> np.ndarray:
        def log(x: float) -> float:
            return math.log10(max(x, LOSS_FLOOR)) if x == x else float("nan")

        return np.array([row["train_acc"], row["val_acc"], log(row["train_loss"]), log(row["val_loss"])])

    def change(self, row: dict[str, float]) -> float:
        """Largest move since the last checkpoint: accuracy in absolute terms, log10 loss / 5."""
        diff = np.abs(self._features(row) - self.state[1:])
        diff[2:] /= LOSS_SCALE
        diff = diff[np.isfinite(diff)]
        return float(diff.max()) if diff.size else float("inf")

    def due(self, step: int, row: dict[str, float] | None) -> bool:
        if step == 0 or step == self.total:
            return True
        kind = self.cfg.schedule
        if kind == "every":
            return step % self.cfg.every == 0
        if kind == "geometric":
            return step in self._geometric
        gap = step - self.state[0] if np.isfinite(self.state[0]) else float("inf")
        if gap >= self.cfg.max_every:
            return True
        return row is not None and gap >= self.cfg.min_every and self.change(row) >= self.cfg.threshold

    def record(self, step: int, row: dict[str, float] | None) -> None:
        """Remember the checkpoint just written (its metrics, if recorded at that step)."""
        self.state[0] = step
        if row is not None:
            self.state[1:] = self._features(row)
