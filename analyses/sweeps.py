"""Sweep figures and tables: phase diagrams (Liu et al. Fig. 6 style) and summaries with the swept
values as columns. Figures register in :data:`SWEEP_FIGURES` (one function each), like run figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from probe.errors import ProbeError, valid
from probe.phases import PHASES, PhaseRule
from probe.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from probe.sweep import Sweep

PHASE_COLOURS = {"comprehension": "#2c7fb8", "grokking": "#41ab5d", "memorization": "#fd8d3c",
                 "confusion": "#bdbdbd", "n/a": "#ffffff"}


@dataclass(frozen=True)
class SweepFigureRequest:
    out: str
    x: str | None = None
    y: str | None = None
    value: str | None = None
    rule: PhaseRule = PhaseRule()


@dataclass(frozen=True)
class SweepFigure:
    name: str
    description: str
    draw: Callable[["Sweep", SweepFigureRequest], "pd.DataFrame"]


SWEEP_FIGURES: Registry[SweepFigure] = Registry("sweep figure")


def sweep_figure(name: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        SWEEP_FIGURES.add(name, SweepFigure(name, description, fn))
        return fn

    return wrap


def _axis(sweep: "Sweep", key: str | None, flag: str) -> str:
    if not key:
        raise ProbeError(f"the figure needs --{flag} KEY (a swept key{valid(sweep.swept)})", param=flag)
    if key not in sweep.swept:
        raise ProbeError(f"{key!r} is not a swept key of this sweep{valid(sweep.swept)}", param=flag)
    return key


@sweep_figure("phase-diagram", "one coloured cell per grid point: the (majority) phase of Liu et al. Table 1, "
              "log axes where the grid is log-spaced (Liu Fig. 6)")
def phase_diagram(sweep: "Sweep", req: SweepFigureRequest) -> "pd.DataFrame":
    from probe.analyses import plots

    x = _axis(sweep, req.x, "x")
    y = _axis(sweep, req.y, "y")
    if x == y:
        raise ProbeError("--x and --y must be different swept keys", param="y")
    plots.check_figure_path(req.out)
    df = sweep.phases(req.rule)
    phase_col = "majority_phase" if "majority_phase" in df.columns else "phase"
    if req.value is not None and req.value not in ("val_step", "train_step", "delay"):
        raise ProbeError(f"unknown value {req.value!r}{valid(['val_step', 'train_step', 'delay'])}", param="value")
    cells = df.groupby([x, y], sort=True).agg(phase=(phase_col, "first"),
                                              value=(req.value or "val_step", "median")).reset_index()
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.6), constrained_layout=True)
    xs, ys = np.sort(cells[x].unique()), np.sort(cells[y].unique())
    grid_phase = np.full((len(ys), len(xs)), "n/a", dtype=object)
    grid_value = np.full((len(ys), len(xs)), np.nan)
    for _, r in cells.iterrows():
        i, j = int(np.searchsorted(ys, r[y])), int(np.searchsorted(xs, r[x]))
        grid_phase[i, j] = str(r["phase"]) if not str(r["phase"]).startswith("n/a") else "n/a"
        grid_value[i, j] = r["value"]

    def edges(v: np.ndarray, log: bool) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if len(v) == 1:
            return np.array([v[0] * 0.5, v[0] * 1.5]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
        t = np.log10(v) if log else v
        mid = (t[1:] + t[:-1]) / 2
        e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
        return 10 ** e if log else e

    xlog, ylog = x in sweep.log_keys, y in sweep.log_keys
    xe, ye = edges(xs, xlog), edges(ys, ylog)
    if req.value:
        mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid_value), cmap="viridis", shading="flat")
        fig.colorbar(mesh, ax=ax, label=f"{req.value} (median over seeds)")
    else:
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        order = list(PHASES) + ["n/a"]
        codes = np.vectorize(order.index)(grid_phase)
        cmap = ListedColormap([PHASE_COLOURS[p] for p in order])
        ax.pcolormesh(xe, ye, codes, cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, shading="flat",
                      edgecolors="white", linewidth=0.5)
        ax.legend(handles=[Patch(color=PHASE_COLOURS[p], label=p) for p in PHASES], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    rule = req.rule
    ax.set_title(f"phases (threshold {rule.threshold}, budget {rule.budget}, delay {rule.delay})", fontsize=9)
    plots.save(fig, req.out)
    return df


def make_sweep_figure(name: str, sweep: "Sweep", req: SweepFigureRequest) -> "pd.DataFrame":
    return SWEEP_FIGURES.get(name).draw(sweep, req)


def sweep_summary(sweep: "Sweep", progress: bool = False) -> "pd.DataFrame":
    """:func:`probe.analyses.export.summary` of every finished run, with the swept values as columns."""
    import pandas as pd

    from probe.analyses.export import summary

    status = sweep.status().set_index("run")["state"]
    names = [n for n in sweep.names if status.get(n) == "done"]
    if not names:
        raise ProbeError(f"no finished run in the sweep {sweep.root} yet")
    runs = [sweep.run(n) for n in names]
    try:
        df = summary(runs, progress=progress)
    finally:
        for r in runs:
            r.close()
    values = sweep.values.set_index("run").loc[names].reset_index(drop=True)
    df["run"] = names
    return pd.concat([df[["run"]], values, df.drop(columns=["run"])], axis=1)


def sweep_tidy(sweep: "Sweep", metrics: list[str], steps: Any = "all", progress: bool = False,
               **params: Any) -> "pd.DataFrame":
    """:func:`probe.analyses.export.tidy` over every finished run of the sweep (one row per run and
    checkpoint), with the swept values as columns."""
    import pandas as pd

    from probe.analyses.export import tidy

    status = sweep.status().set_index("run")["state"]
    names = [n for n in sweep.names if status.get(n) == "done"]
    if not names:
        raise ProbeError(f"no finished run in the sweep {sweep.root} yet")
    values = sweep.values.set_index("run")
    frames = []
    for name in names:
        with sweep.run(name) as run:
            df = tidy([run], metrics, steps=steps, progress=progress, **params)
        df["run"] = name
        for key in reversed(sweep.swept):
            df.insert(1, key, values.loc[name, key])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
