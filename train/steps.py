"""One run's bookkeeping at each training step, shared by the one-run trainer
(:class:`probe.train.loop.Trainer`) and the vectorised ensemble (:mod:`probe.train.ensemble`).

Both loops compute a run's numbers their own way (one model, or a stacked member of a batched one);
what they do with them is one object, :class:`StepRecorder`: the metric row, the early stop of
``cfg.stop``, the checkpoint schedule's decision and record, and queueing and committing the
checkpoint with the run's resume state (docs/design.md, "Sweeps"; docs/run-format.md, "Consistency
rules").
A resumed run builds its recorder from the metric rows it committed (:func:`committed_history`), so
its early stop and its schedule take the decisions they took before the interruption.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from probe.runfile import ResumeState, RunWriter
from probe.schedules import Schedule

if TYPE_CHECKING:
    from probe.config import TrainConfig
    from probe.runfile import RunFile

#: the metric columns the early stop reads
STOP_COLUMNS: tuple[str, ...] = ("step", "train_acc", "val_acc")

MetricRow = dict[str, float]


def metric_row(step: int, train: tuple[float, float], val: tuple[float, float], lr: float) -> MetricRow:
    """The metric row of one step: ``train`` and ``val`` are (mean loss, accuracy)."""
    return {"step": step, "train_loss": train[0], "train_acc": train[1], "val_loss": val[0], "val_acc": val[1],
            "lr": lr}


def committed_history(rf: "RunFile", before: int | None) -> dict[str, np.ndarray]:
    """The committed metric rows of ``rf`` that the early stop reads, those of the steps before
    ``before`` (a resume step: the loop records that step's row again; None: every row)."""
    history = {k: v for k, v in rf.metrics().items() if k in STOP_COLUMNS}
    if before is not None:
        keep = history["step"] < before
        history = {k: v[keep] for k, v in history.items()}
    return history


class CommitClock:
    """When the members of an ensemble commit their queued checkpoints: in rounds, every member at
    its first checkpoint once a round is open (so that after a kill the members are normally at one
    step). A round opens at the latest ``max_seconds`` after the last, sooner while committing is
    cheap: the time spent committing stays about ``1 / ratio`` of the run's (commits are timed).

    A commit never changes what a run computes, only how much of it a kill loses; the one-run trainer
    commits every checkpoint and needs no clock."""

    def __init__(self, max_seconds: float, ratio: float) -> None:
        self.max_seconds = max_seconds
        self.ratio = ratio
        self.round = 0  # the round now open (0: none yet)
        self.opened = time.monotonic()
        self.spent = 0.0  # seconds spent committing, over every round

    @property
    def interval(self) -> float:
        """Seconds between the openings of two rounds."""
        mean = self.spent / self.round if self.round else 0.0
        return min(self.max_seconds, self.ratio * mean)

    def tick(self) -> None:
        """Once per step, before the step's checkpoints: open a round if it is time."""
        now = time.monotonic()
        if now - self.opened >= self.interval:
            self.round += 1
            self.opened = now

    def took(self, seconds: float) -> None:
        self.spent += seconds


class StepRecorder:
    """The bookkeeping of one run from step ``start`` on: its metric rows, its early stop
    (``cfg.stop``: once decided, ``end`` moves to the stop step), its checkpoint schedule and its run
    file. ``last_ckpt`` is the step of the last checkpoint already written (-1: none);
    ``history``: the metric rows the run committed before ``start`` (a resumed run), which decide
    the stop as they did before. Without a ``clock`` every checkpoint is committed at once, with its
    resume state; with one, checkpoints are queued and committed when the clock says so, and always
    at the run's last step."""

    def __init__(self, cfg: "TrainConfig", writer: RunWriter, schedule: Schedule, start: int, last_ckpt: int,
                 history: dict[str, np.ndarray] | None = None, clock: CommitClock | None = None) -> None:
        self.cfg = cfg
        self.writer = writer
        self.schedule = schedule
        self.start = start
        self.last_ckpt = last_ckpt
        self.clock = clock
        self.round = clock.round if clock is not None else 0  # the commit round this run last took part in
        self.seen: dict[str, list[float]] = {k: list((history or {}).get(k, [])) for k in STOP_COLUMNS}
        self.stop_at = cfg.stop.stop_step(self.seen["step"], self.seen["train_acc"], self.seen["val_acc"])
        self.end = cfg.steps  # the run's last step: its budget, or its early stop once decided
        if self.stop_at is not None:
            self.end = min(self.end, max(self.stop_at, start))
            schedule.total = self.end

    def metrics_due(self, step: int) -> bool:
        """Whether ``step`` records a metric row."""
        return step % self.cfg.checkpoint.metrics_every == 0 or step == self.end

    def add_metrics(self, step: int, train: tuple[float, float], val: tuple[float, float], lr: float) -> MetricRow:
        """Record the metric row of ``step`` and let it decide the early stop."""
        row = metric_row(step, train, val, lr)
        self.writer.add_metrics(row)
        stop = self.cfg.stop
        if stop.after_generalization is not None and self.stop_at is None:
            for k in self.seen:
                self.seen[k].append(row[k])
            self.stop_at = stop.stop_step(self.seen["step"], self.seen["train_acc"], self.seen["val_acc"])
            if self.stop_at is not None and self.stop_at < self.end:
                self.end = max(self.stop_at, step)  # the phase is decided: stop after the margin
                self.schedule.total = self.end
        return row

    def checkpoint(self, step: int, row: MetricRow | None, series: Callable[[], dict[str, np.ndarray]],
                   state: Callable[[np.ndarray], ResumeState]) -> bool:
        """Write checkpoint ``step`` if the schedule says so (``row``: the step's metric row, if any):
        ``series()`` gives the saved tensors, ``state(schedule_state)`` the run's resume state at
        ``step`` (called only when the checkpoint is committed). Returns whether it was due."""
        if not (step > self.last_ckpt and self.schedule.due(step, row)):
            return False
        self.schedule.record(step, row)
        self.writer.queue_checkpoint(step, series())
        self.last_ckpt = step
        clock = self.clock
        if clock is None or self.finished(step) or clock.round > self.round:
            began = time.monotonic()
            self.writer.commit(state(self.schedule.state.copy()))
            if clock is not None:
                clock.took(time.monotonic() - began)
                self.round = clock.round
        return True

    def finished(self, step: int) -> bool:
        """Whether ``step`` is the run's last."""
        return step >= self.end

    def close(self, finished: bool) -> None:
        self.writer.close(finished=finished)
