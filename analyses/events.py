"""Events in the per-step training metrics: accuracy thresholds passed, validation-loss levels reached,
the grokking delay, training-loss spikes and ungrokking. Pure functions of the metric rows a run
records (``step, train_loss, train_acc, val_loss, val_acc``); every threshold is a parameter and is
returned with the result. Rules: docs/metrics.md, "Events".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.errors import ProbeError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class EventRule:
    """The parameters of :func:`find_events`.

    ``thresholds``: accuracies whose first passing (``>=``) is reported for train and validation.
    ``loss_levels``: validation-loss levels whose first undercut (``<``) is reported (Nanda et al.
    use 1 and 0.1). ``delay_threshold``: the grokking delay is the step validation accuracy passes it
    minus the step training accuracy does (Liu et al. App. A). A spike starts at a row whose training
    loss exceeds ``spike_factor`` times the minimum over the ``spike_window`` steps before it, and
    lasts while the loss stays above that bound; its height is the peak over that minimum and its
    recovery time the steps from its start until the loss is back under the bound. Ungrokking: after
    validation accuracy has passed ``delay_threshold``, a later row below ``ungrok_below``.
    """

    thresholds: tuple[float, ...] = (0.5, 0.9, 0.99)
    loss_levels: tuple[float, ...] = (1.0, 0.1)
    delay_threshold: float = 0.9
    spike_factor: float = 10.0
    spike_window: int = 1000
    ungrok_below: float = 0.5

    def __post_init__(self) -> None:
        for t in (*self.thresholds, self.delay_threshold, self.ungrok_below):
            if not (0.0 < t <= 1.0):
                raise ProbeError(f"accuracy thresholds must be in (0, 1], got {t}", param="threshold")
        if not self.thresholds:
            raise ProbeError("give at least one accuracy threshold", param="threshold")
        for level in self.loss_levels:
            if not (level > 0 and np.isfinite(level)):
                raise ProbeError(f"loss levels must be positive numbers, got {level}", param="loss_level")
        if not (self.spike_factor > 1 and np.isfinite(self.spike_factor)):
            raise ProbeError(f"must be a number > 1, got {self.spike_factor}", param="spike_factor")
        if self.spike_window < 1:
            raise ProbeError(f"must be >= 1 step, got {self.spike_window}", param="spike_window")


@dataclass(frozen=True)
class Spike:
    start: int  # first step above the bound
    peak: int  # step of the highest loss in the spike
    height: float  # peak loss / the running minimum before the spike
    recovery: int | None  # steps from start until the loss is back under the bound (None: not within the run)
    floor: float  # the running minimum the spike rose from


@dataclass(frozen=True)
class Events:
    """What :func:`find_events` found; ``None`` where an event did not happen within the run."""

    rule: EventRule
    train_passes: dict[float, int | None]
    val_passes: dict[float, int | None]
    val_loss_below: dict[float, int | None]
    delay: int | None
    delay_step: int | None  # where validation accuracy passed the delay threshold
    spikes: list[Spike] = field(default_factory=list)
    ungrok_step: int | None = None
    ungrok_min_acc: float | None = None

    def table(self) -> "pd.DataFrame":
        """One row per event: ``event, step, value`` (value: the threshold, level, height or accuracy)."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for t, s in self.train_passes.items():
            rows.append({"event": f"train_acc >= {t:g}", "step": s, "value": t})
        for t, s in self.val_passes.items():
            rows.append({"event": f"val_acc >= {t:g}", "step": s, "value": t})
        for level, s in self.val_loss_below.items():
            rows.append({"event": f"val_loss < {level:g}", "step": s, "value": level})
        rows.append({"event": f"grokking delay (at {self.rule.delay_threshold:g})", "step": self.delay_step,
                     "value": self.delay})
        for sp in self.spikes:
            rows.append({"event": "loss spike", "step": sp.start, "value": sp.height, "peak_step": sp.peak,
                         "recovery_steps": sp.recovery, "floor": sp.floor})
        rows.append({"event": f"ungrokking (val_acc < {self.rule.ungrok_below:g})", "step": self.ungrok_step,
                     "value": self.ungrok_min_acc})
        df = pd.DataFrame(rows, columns=["event", "step", "value", "peak_step", "recovery_steps", "floor"])
        df["step"] = df["step"].astype("Int64")
        df["peak_step"] = df["peak_step"].astype("Int64")
        df["recovery_steps"] = df["recovery_steps"].astype("Int64")
        df.attrs["probe"] = {"events": {"params": asdict(self.rule)}}
        return df


def first_at_least(steps: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    """The first step whose value is ``>= threshold`` (NaN never passes); None if none does."""
    hit = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= threshold)
    return int(steps[hit[0]]) if hit.size else None


def first_below(steps: np.ndarray, values: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(np.nan_to_num(values, nan=np.inf) < level)
    return int(steps[hit[0]]) if hit.size else None


def loss_spikes(steps: np.ndarray, loss: np.ndarray, factor: float, window: int) -> list[Spike]:
    """Training-loss spikes by the rule of :class:`EventRule` (rows with NaN loss are skipped)."""
    ok = np.isfinite(loss)
    steps, loss = np.asarray(steps)[ok], np.asarray(loss, dtype=np.float64)[ok]
    spikes: list[Spike] = []
    i, n = 1, len(loss)
    while i < n:
        lo = int(np.searchsorted(steps, steps[i] - window, side="left"))
        floor = float(loss[lo:i].min()) if i > lo else float("inf")
        if loss[i] > factor * floor:
            j = i
            while j < n and loss[j] > factor * floor:
                j += 1
            peak = i + int(np.argmax(loss[i:j]))
            recovery = int(steps[j] - steps[i]) if j < n else None
            spikes.append(Spike(start=int(steps[i]), peak=int(steps[peak]), height=float(loss[peak] / floor),
                                recovery=recovery, floor=floor))
            i = max(j, i + 1)
        else:
            i += 1
    return spikes


def find_events(metrics: "pd.DataFrame | dict[str, np.ndarray]", rule: EventRule = EventRule()) -> Events:
    """Events in a run's metric rows (``probe.Run.metrics``)."""
    cols = {k: np.asarray(metrics[k], dtype=np.float64) for k in ("train_loss", "train_acc", "val_loss", "val_acc")}
    steps = np.asarray(metrics["step"], dtype=np.int64)
    train = {t: first_at_least(steps, cols["train_acc"], t) for t in rule.thresholds}
    val = {t: first_at_least(steps, cols["val_acc"], t) for t in rule.thresholds}
    below = {level: first_below(steps, cols["val_loss"], level) for level in rule.loss_levels}
    t_train = first_at_least(steps, cols["train_acc"], rule.delay_threshold)
    t_val = first_at_least(steps, cols["val_acc"], rule.delay_threshold)
    delay = t_val - t_train if t_train is not None and t_val is not None else None
    ungrok_step = ungrok_min = None
    if t_val is not None:
        after = steps > t_val
        drop = np.flatnonzero(after & (np.nan_to_num(cols["val_acc"], nan=np.inf) < rule.ungrok_below))
        if drop.size:
            ungrok_step = int(steps[drop[0]])
            ungrok_min = float(np.nanmin(cols["val_acc"][after]))
    return Events(rule=rule, train_passes=train, val_passes=val, val_loss_below=below, delay=delay, delay_step=t_val,
                  spikes=loss_spikes(steps, cols["train_loss"], rule.spike_factor, rule.spike_window),
                  ungrok_step=ungrok_step, ungrok_min_acc=ungrok_min)
