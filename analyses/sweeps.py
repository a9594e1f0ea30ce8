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
    progress: bool = False
    convention: str = "liu"  # the RQI convention of the data-fraction figure (analyses/parallelograms.py)


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


RQI_TARGET = 0.95  # Liu Fig. 4b / 5b / 18b: "grokking steps" are the steps to RQI > 0.95
SIZE_KEYS = ("train_fraction", "n_train")
SEED_KEYS = ("seed", "split_seed")


def _first_above(steps: np.ndarray, values: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(np.asarray(values, dtype=np.float64) > target)
    return float(steps[hit[0]]) if len(hit) else float("inf")


def fraction_table(sweep: "Sweep", rule: PhaseRule = PhaseRule(), x: str | None = None,
                   progress: bool = False, convention: str = "liu") -> "pd.DataFrame":
    """One row per finished run of a sweep over the training-set size (Liu Fig. 4b / 5b; Power et
    al. Fig. 1 style data-fraction curves):

    * ``fraction``: the run's training fraction ``|train| / n_samples`` (from its split);
    * ``curve``: the other swept keys (e.g. the task), seeds and split seeds left out;
    * ``val_step``: the first step where validation accuracy passes ``rule.threshold`` (inf: never,
      within the run's ``budget`` of steps);
    * ``rqi_step``: the first checkpoint with RQI > 0.95 (Liu Sec. 3.1, eq. 3; inf: never; NaN where
      RQI does not apply to the task), under the RQI ``convention`` (``liu``, the paper's, or
      ``grokking-squared``, the authors' code's: :func:`probe.analyses.parallelograms.normalize`);
    * ``predicted``: the effective theory's ``1 / (lambda3 eta)`` for toy-model runs (Liu Sec. 3.2,
      Fig. 5b; eta the embedding learning rate; inf where ``lambda3 = 0``), NaN for other models.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from probe.analyses import compute
    from probe.analyses.effective import effective_theory
    from probe.analyses.parallelograms import CONVENTIONS
    from probe.analyses.registry import get_metric

    if convention not in CONVENTIONS:
        raise ProbeError(f"unknown RQI convention {convention!r}{valid(CONVENTIONS)}", param="convention")
    key = x or next((k for k in SIZE_KEYS if k in sweep.swept), None)
    if key is None:
        raise ProbeError(f"the sweep varies no training-set size ({' or '.join(SIZE_KEYS)}); swept: "
                         f"{', '.join(sweep.swept) or 'nothing'}", param="x")
    _axis(sweep, key, "x")
    phases = sweep.phases(rule).set_index("run")
    others = [k for k in sweep.swept if k != key and k not in SEED_KEYS]
    rqi = get_metric("rqi")
    rows = []
    done = [n for n in sweep.names if not str(phases.loc[n, "phase"]).startswith("n/a")]
    if not done:
        raise ProbeError(f"no finished run in the sweep {sweep.root} yet")
    for name in tqdm(done, desc="data-fraction", unit="run", disable=not progress):
        with sweep.run(name) as run:
            cfg, task, split = run.config, run.task, run.split
            budget = int(cfg.steps)
            val_step = phases.loc[name, "val_step"]
            val_step = float(val_step) if np.isfinite(float(val_step)) else float("inf")
            if rqi.applies(task) is None:
                df = compute(run, "rqi", convention=convention)
                rqi_step = _first_above(df["step"].to_numpy(), df["rqi"].to_numpy(), RQI_TARGET)
            else:
                rqi_step = float("nan")
            predicted = float("nan")
            if cfg.model.kind == "toy" and getattr(cfg.model, "aggregation", "sum") == "sum" and \
                    rqi.applies(task) is None:
                predicted = effective_theory(task, split.train).timescale_steps(cfg.resolved_embed_lr)
        row = {"run": name, **{k: phases.loc[name, k] for k in sweep.swept}, "x": phases.loc[name, key],
               "fraction": len(split.train) / task.n_samples,
               "curve": ", ".join(f"{k}={phases.loc[name, k]}" for k in others) or "all",
               "budget": budget, "val_step": val_step, "rqi_step": rqi_step, "predicted": predicted}
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["probe"] = {"data_fraction": {"x": key, "threshold": rule.threshold, "rqi_target": RQI_TARGET,
                                            "convention": convention, "critical": critical_fractions(out)}}
    return out


def critical_fractions(table: "pd.DataFrame") -> dict[str, dict[str, float | None]]:
    """Per curve and measure, the smallest training fraction from which on the median run reaches the
    target (validation threshold, RQI > 0.95) at every larger fraction of the sweep: Liu et al.'s
    critical fraction (Fig. 4b, about 0.4 for p = 10 addition). None when no fraction qualifies."""
    out: dict[str, dict[str, float | None]] = {}
    for curve, g in table.groupby("curve", sort=True):
        res: dict[str, float | None] = {}
        for col in ("val_step", "rqi_step"):
            med = g.groupby("fraction")[col].median().sort_index()
            if med.isna().all():
                continue
            reached = np.isfinite(med.to_numpy())
            crit = None
            for i in range(len(reached) - 1, -1, -1):
                if not reached[i]:
                    break
                crit = float(med.index[i])
            res[col] = crit
        out[str(curve)] = res
    return out


@sweep_figure("data-fraction", "steps to a validation-accuracy threshold and to RQI > 0.95 against the training "
              "fraction: median and range over seeds, never-reached runs marked, the effective theory's "
              "1/(lambda3 eta) for the toy model, one curve per other swept value (e.g. per operator) "
              "(Liu Fig. 4b/5b; Power et al. Fig. 1)")
def data_fraction(sweep: "Sweep", req: SweepFigureRequest) -> "pd.DataFrame":
    from probe.analyses import plots

    plots.check_figure_path(req.out)
    table = fraction_table(sweep, req.rule, req.x, progress=req.progress, convention=req.convention)
    panels = [("val_step", f"steps to validation accuracy >= {req.rule.threshold:g}")]
    if table["rqi_step"].notna().any():
        panels.append(("rqi_step", f"steps to RQI > {RQI_TARGET:g} ({req.convention} convention)"))
    plt = plots._plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), constrained_layout=True,
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ceiling = float(table["budget"].max()) * 1.6  # where never-reached runs are drawn
    crit = table.attrs["probe"]["data_fraction"]["critical"]
    for ax, (col, title) in zip(axes[0], panels):
        for c, (curve, g) in enumerate(table.groupby("curve", sort=True)):
            colour = colours[c % len(colours)]
            label = None if curve == "all" else str(curve)
            stats = g.groupby("fraction")[col].agg(list).sort_index()
            xs = stats.index.to_numpy(dtype=np.float64)
            med, lo, hi = [], [], []
            for vals in stats:
                v = np.asarray(vals, dtype=np.float64)
                v = v[~np.isnan(v)]
                clipped = np.minimum(v, ceiling)
                med.append(np.median(v) if len(v) else np.nan)
                lo.append(clipped.min() if len(v) else np.nan)
                hi.append(clipped.max() if len(v) else np.nan)
            med_a, lo_a, hi_a = (np.asarray(a, dtype=np.float64) for a in (med, lo, hi))
            ok = np.isfinite(med_a)
            ax.plot(xs[ok], med_a[ok], "o-", color=colour, label=label or "median over seeds")
            ax.fill_between(xs, np.where(np.isnan(lo_a), np.nan, lo_a), np.where(np.isnan(hi_a), np.nan, hi_a),
                            color=colour, alpha=0.15, linewidth=0)
            never = ~ok & ~np.isnan(med_a)
            if never.any():
                ax.plot(xs[never], np.full(never.sum(), ceiling), "^", mfc="none", color=colour, ms=8,
                        label="median run never reaches it" if c == 0 else None)
            single = g[np.isinf(g[col])]
            if len(single):
                ax.plot(single["fraction"], np.full(len(single), ceiling), "x", color=colour, alpha=0.6, ms=5)
            if col == "rqi_step" and g["predicted"].notna().any():
                pred = g.groupby("fraction")["predicted"].median().sort_index()
                finite = np.isfinite(pred.to_numpy())
                ax.plot(pred.index[finite], pred.to_numpy()[finite], "--", color=colour, alpha=0.8,
                        label="effective theory 1/(lambda3 eta)" if c == 0 else None)
            x_crit = crit.get(str(curve), {}).get(col)
            if x_crit is not None:
                ax.axvline(x_crit, color=colour, linestyle=":", alpha=0.7)
        ax.axhline(ceiling, color="0.6", linewidth=0.6)
        ax.text(0.01, ceiling, " never (x: one run)", va="bottom", fontsize=7, color="0.4",
                transform=ax.get_yaxis_transform())
        ax.set_yscale("log")
        ax.set_xlabel("training fraction")
        ax.set_ylabel("steps")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, frameon=False)
    plots.save(fig, req.out)
    return table


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
