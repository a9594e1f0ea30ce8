"""Liu et al.'s effective theory on whole tasks and runs (Sec. 3.2, Fig. 4): the library side of
``probe theory``. Pure maths lives in :mod:`probe.analyses.effective`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from probe.analyses.applies import abelian, require
from probe.config import SEED_LIMIT
from probe.errors import ProbeError
from probe.tasks import TASKS, Task, make_task

if TYPE_CHECKING:
    import pandas as pd

    from probe.run import Run

def theory_task(name: str, p: int) -> tuple[Task, str]:
    """The task ``name`` with modulus ``p`` and its description: task names mean what they mean
    everywhere (``nonmod-add`` is Liu et al.'s non-modular addition, ``add`` modular addition)."""
    if p < 2:
        raise ProbeError(f"must be >= 2, got {p}", param="p")
    return make_task(name, p=p), TASKS.get(name).description


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

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ProbeError(f"must be an integer in 0..{SEED_LIMIT - 1}, got {seed!r}", param="seed")
    task, label = theory_task(name, p)
    sizes, prob, crit, full = critical_fraction(task, trials=trials, seed=seed, progress=progress)
    notes = []
    if task.modulus:
        notes.append("modular task: sum-aggregation structure is degenerate (dof 1 = collapsed solution); Liu's "
                     "linear-representation criterion is for non-modular addition")
    df = pd.DataFrame({"train_size": sizes, "train_fraction": sizes / task.n_samples, "p_unique": prob})
    return CriticalFraction(df, crit, full, task, label, tuple(notes))


@dataclass(frozen=True)
class EffectiveDynamics:
    table: "pd.DataFrame"  # step, t_eff, symbol, dim, predicted, real
    predicted: np.ndarray  # [T, p, d] at the chosen time scale
    real: np.ndarray  # [T, p, d]
    time_scale: float  # effective time per (step x embedding lr)
    fitted: bool
    rms: float  # root-mean-square difference at time_scale
    rms_unit: float  # ... at time scale 1


def effective_dynamics_table(run: "Run", time_scale: float | str = "fit") -> EffectiveDynamics:
    """Liu Fig. 4c/d: integrate the effective loss from the run's initial embeddings and set it beside
    the real normalised embeddings. Time is ``(step - step_0) * embedding lr * time_scale``;
    ``time_scale="fit"`` (the default) chooses it by least squares against the real trajectory
    (:func:`probe.analyses.effective.fit_time_scale`), since Liu et al.'s flow time and an Adam-trained
    network's steps agree only up to a factor."""
    import pandas as pd

    from probe.analyses.effective import effective_flow, fit_time_scale
    from probe.analyses.parallelograms import Parallelograms, hessian, normalize

    fit = time_scale == "fit"
    if not fit:
        try:
            time_scale = float(time_scale)
        except (TypeError, ValueError):
            raise ProbeError(f"must be 'fit' or a positive number, got {time_scale!r}", param="time_scale") from None
        if not (np.isfinite(time_scale) and time_scale > 0):
            raise ProbeError(f"must be 'fit' or a positive number, got {time_scale}", param="time_scale")
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
    m = int(p0.within(run.split.train).sum())
    base = (steps - steps[0]) * run.config.resolved_embed_lr
    real = np.stack([normalize(e) for e in real_raw])
    if fit:
        scale, rms, rms_unit = fit_time_scale(real_raw[0], h, m, base, real)
    else:
        scale = float(time_scale)
    flow = effective_flow(real_raw[0], h, m, float(base[-1]) * max(scale, 1.0))
    pred = flow(base * scale)
    if not fit:
        rms = float(np.sqrt(np.mean((pred - real) ** 2)))
        rms_unit = float(np.sqrt(np.mean((flow(base) - real) ** 2))) if scale >= 1.0 else float("nan")
    times = base * scale
    t_idx, k_idx, d_idx = np.meshgrid(np.arange(len(steps)), np.arange(real.shape[1]), np.arange(real.shape[2]),
                                      indexing="ij")
    df = pd.DataFrame({"step": steps[t_idx.ravel()], "t_eff": times[t_idx.ravel()], "symbol": k_idx.ravel(),
                       "dim": d_idx.ravel(), "predicted": pred.ravel(), "real": real.ravel()})
    return EffectiveDynamics(df, pred, real, float(scale), fit, float(rms), float(rms_unit))
