"""Liu et al.'s effective theory on whole tasks and runs (Sec. 3.2, Fig. 4): the library side of
``probe theory``. Pure maths lives in :mod:`probe.analyses.effective`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from probe.analyses.applies import abelian, require
from probe.errors import ProbeError
from probe.tasks import Task, make_task

if TYPE_CHECKING:
    import pandas as pd

    from probe.run import Run

THEORY_TASKS = {"add": ("nonmod-add", "Liu et al.'s addition (non-modular, unordered pairs)"),
                "mod-add": ("add", "modular addition")}


def theory_task(name: str, p: int) -> tuple[Task, str]:
    """``add`` is Liu et al.'s (non-modular) addition, ``mod-add`` modular addition; any other
    abelian probe task by its own name."""
    if p < 2:
        raise ProbeError(f"must be >= 2, got {p}", param="p")
    task_name, label = THEORY_TASKS.get(name, (name, name))
    return make_task(task_name, p=p), label


@dataclass(frozen=True)
class CriticalFraction:
    table: "pd.DataFrame"  # train_size, train_fraction, p_unique
    critical: float  # training fraction where P(unique) first reaches 0.5 (NaN if never)
    full_dof: int
    task: Task
    label: str
    notes: tuple[str, ...]


def critical_fraction_table(name: str, p: int, trials: int, seed: int, progress: bool = False) -> CriticalFraction:
    """Liu Fig. 4a: P(unique linear representation) per training-set size over random splits."""
    import pandas as pd

    from probe.analyses.effective import critical_fraction

    task, label = theory_task(name, p)
    sizes, prob, crit, full = critical_fraction(task, trials=trials, seed=seed, progress=progress)
    notes = []
    if task.modulus:
        notes.append("modular task: sum-aggregation structure is degenerate (dof 1 = collapsed solution); Liu's "
                     "linear-representation criterion is for non-modular addition")
    df = pd.DataFrame({"train_size": sizes, "train_fraction": sizes / task.n_samples, "p_unique": prob})
    return CriticalFraction(df, crit, full, task, label, tuple(notes))


def effective_dynamics_table(run: "Run", time_scale: float = 1.0) -> tuple["pd.DataFrame", np.ndarray, np.ndarray]:
    """Liu Fig. 4c/d: integrate the effective loss from the run's initial embeddings and set it beside
    the real normalised embeddings. Time is ``(step - step_0) * embedding lr * time_scale``.

    Returns the long table (step, t_eff, symbol, dim, predicted, real) and the two ``[T, p, d]``
    trajectories.
    """
    import pandas as pd

    from probe.analyses.effective import effective_dynamics
    from probe.analyses.parallelograms import Parallelograms, hessian, normalize

    if not time_scale > 0:
        raise ProbeError(f"must be positive, got {time_scale}", param="time_scale")
    require(abelian, run.task, "the effective theory")
    steps = np.asarray(run.steps)
    if len(steps) < 2:
        raise ProbeError("the effective dynamics need a run with at least two checkpoints")
    name = run.config.model.embed_param
    if name is None:
        raise ProbeError(f"the {run.config.model.kind} model has no symbol embeddings")
    real_raw = run.read_embeddings(np.arange(len(steps)))
    if real_raw is None or real_raw.ndim != 3:
        raise ProbeError("the effective dynamics are defined for vector embeddings (sum aggregation)")
    p0 = Parallelograms.from_labels(run.task.labels)
    h = hessian(run.task.inputs, p0, run.split.train, run.task.n_symbols)
    times = (steps - steps[0]) * run.config.resolved_embed_lr * time_scale
    pred = effective_dynamics(real_raw[0], h, int(p0.within(run.split.train).sum()), times)
    real = np.stack([normalize(e) for e in real_raw])
    t_idx, k_idx, d_idx = np.meshgrid(np.arange(len(steps)), np.arange(real.shape[1]), np.arange(real.shape[2]),
                                      indexing="ij")
    df = pd.DataFrame({"step": steps[t_idx.ravel()], "t_eff": times[t_idx.ravel()], "symbol": k_idx.ravel(),
                       "dim": d_idx.ravel(), "predicted": pred.ravel(), "real": real.ravel()})
    return df, pred, real
