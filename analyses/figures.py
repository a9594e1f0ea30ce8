"""The figure registry: ``probe plot RUN --figure NAME``. Each figure computes what it shows through
:func:`probe.analyses.runner.compute` and draws it with :mod:`probe.analyses.plots`; adding a
figure is one registered function here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from probe.analyses import plots
from probe.errors import ProbeError
from probe.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from probe.run import Run


@dataclass(frozen=True)
class FigureRequest:
    """What a figure is asked to show: metrics, checkpoints, metric parameters, animation speed."""

    out: str
    metrics: tuple[str, ...] = ()
    steps: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fps: int = 8
    progress: bool = False

    def __post_init__(self) -> None:
        plots.check_fps(self.fps)  # before any metric is computed

    def only(self, *names: str) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k in names}


@dataclass(frozen=True)
class Figure:
    """A registered figure; ``overlay`` figures take a list of runs (drawn in one figure)."""

    name: str
    description: str
    draw: Callable[[Any, FigureRequest], "pd.DataFrame | None"]
    overlay: bool = False


FIGURES: Registry[Figure] = Registry("figure")


def compute(*args: Any, **kwargs: Any) -> "pd.DataFrame":
    """:func:`probe.analyses.runner.compute`, imported when a figure is drawn (the command line lists the
    figures without loading the runner, h5py or the run API)."""
    from probe.analyses.runner import compute as run

    return run(*args, **kwargs)


def figure(name: str, description: str, overlay: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        FIGURES.add(name, Figure(name, description, fn, overlay))
        return fn

    return wrap


def make_figure(name: str, runs: "Run | list[Run]", request: FigureRequest) -> "pd.DataFrame | None":
    """Draw figure ``name`` of ``runs`` (one run, or several for the overlay figures) into
    ``request.out``; returns the table it showed (notes in attrs)."""
    fig = FIGURES.get(name)
    many = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    if fig.overlay:
        return fig.draw(many, request)
    if len(many) != 1:
        overlays = ", ".join(n for n, f in FIGURES.items() if f.overlay)
        raise ProbeError(f"--figure {name} shows one run; {overlays} overlay several", param="figure")
    return fig.draw(many[0], request)


def _metric_columns(name: str, run: "Run", req: FigureRequest) -> tuple["pd.DataFrame", list[str]]:
    """The requested metrics over the chosen steps, and the numeric columns a metric figure draws."""
    if not req.metrics:
        raise ProbeError(f"--figure {name} needs at least one metric (or choose another figure)", param="metric")
    plots.check_figure_path(req.out)
    df = compute(run, list(req.metrics), steps=req.steps or "all", progress=req.progress, **req.params)
    cols = [m for m in req.metrics if m in df.columns] or [c for c in df.columns if c != "step"]
    return df, [c for c in cols if np.issubdtype(df[c].dtype, np.number)]


@figure("metric", "the metrics over log steps, with train/val accuracy")
def _metric(run: "Run", req: FigureRequest) -> "pd.DataFrame":
    df, numeric = _metric_columns("metric", run, req)
    plots.save(plots.metric_over_time(df, numeric, run=run), req.out)
    return df


@figure("metric-loss", "the metrics over log steps beside the train and validation loss (e.g. llc)")
def _metric_loss(run: "Run", req: FigureRequest) -> "pd.DataFrame":
    df, numeric = _metric_columns("metric-loss", run, req)
    plots.save(plots.metric_and_loss(df, numeric, run), req.out)
    return df


def _spread(steps: np.ndarray) -> str:
    picks = sorted({0, len(steps) // 4, len(steps) // 2, (3 * len(steps)) // 4, len(steps) - 1})
    return ",".join(str(int(steps[i])) for i in picks)


def _pca_coords(run: "Run", req: FigureRequest, steps: str) -> tuple[np.ndarray, "pd.DataFrame"]:
    df = compute(run, "pca2d", steps=steps, progress=req.progress, **req.only("axes", "reference"))
    n = run.task.n_symbols
    coords = np.stack([np.stack([df[f"pca2d_x{k}"], df[f"pca2d_y{k}"]], 1) for k in range(n)], 1)  # [T, n, 2]
    return coords, df


@figure("pca", "embeddings on PC1/PC2 at a few steps (--axes refit|final)")
def _pca(run: "Run", req: FigureRequest) -> "pd.DataFrame":
    plots.check_figure_path(req.out)
    coords, df = _pca_coords(run, req, req.steps or _spread(run.steps))
    plots.save(plots.pca_scatter(list(coords), df["step"].tolist(), req.params.get("axes", "refit"),
                                 title=run.dir.name), req.out)
    return df


@figure("animation", "the PCA picture over the whole series (.gif or .mp4)")
def _animation(run: "Run", req: FigureRequest) -> "pd.DataFrame":
    if len(run.steps) < 2:
        raise ProbeError("an animation needs a run with at least two checkpoints")
    plots.check_animation_path(req.out)
    coords, df = _pca_coords(run, req, req.steps or "all")
    plots.animate_pca(coords, df["step"].to_numpy(), req.out, req.params.get("axes", "refit"), fps=req.fps)
    return df


@figure("fourier", "W_E and W_U norms per frequency at one step, key frequencies marked (Nanda et al.)")
def _fourier(run: "Run", req: FigureRequest) -> "pd.DataFrame":
    plots.check_figure_path(req.out)
    step = req.steps or "last"
    kf = compute(run, "key_freqs", steps=step, progress=req.progress, **req.only("key_threshold", "reference"))
    if len(kf) != 1:
        raise ProbeError("--figure fourier shows one checkpoint: give one step", param="steps")
    fn = compute(run, "fourier_norms", steps=step, progress=req.progress, parts="we,wu")
    p = run.task.n_symbols
    norms = {part: np.array([fn[f"{part}_{k}"].iloc[0] for k in range(1, p // 2 + 1)]) for part in ("we", "wu")}
    keys = [int(k) for k in str(kf["key_freqs"].iloc[0]).split(",") if k]
    plots.save(plots.fourier_bars({"W_E": norms["we"], "W_U": norms["wu"]}, keys, int(kf["step"].iloc[0])), req.out)
    return kf


@figure("projection", "accuracy against the number of principal components kept, at one step (Liu Fig. 22)")
def _projection(run: "Run", req: FigureRequest) -> "pd.DataFrame":
    plots.check_figure_path(req.out)
    df = compute(run, "pca_projection_accuracy", steps=req.steps or "last", progress=req.progress,
                 **req.only("n_components", "reference"))
    if len(df) != 1:
        raise ProbeError("--figure projection shows one checkpoint: give one step", param="steps")
    plots.save(plots.projection_curves(df.iloc[0], int(df["step"].iloc[0])), req.out)
    return df


def _labels(runs: list["Run"]) -> list[str]:
    from probe.run import run_labels

    return run_labels([r.dir for r in runs])


@figure("curves", "train and validation loss (log-log) and accuracy over log steps, events marked (probe "
        "events); several runs overlay", overlay=True)
def _curves(runs: list["Run"], req: FigureRequest) -> "pd.DataFrame":
    import pandas as pd

    from probe.analyses.events import EventRule, find_events

    plots.check_figure_path(req.out)
    rule = EventRule(**req.only(*EventRule.__dataclass_fields__))
    rows, curves = [], []
    for label, run in zip(_labels(runs), runs):
        m = run.metrics
        if m.empty:
            raise ProbeError(f"{run.dir} has no metric rows yet")
        ev = find_events(m, rule)
        curves.append((label, m, ev))
        t = ev.table()
        t.insert(0, "run", label)
        rows.append(t)
    plots.save(plots.training_curves(curves, title=runs[0].dir.name if len(runs) == 1 else ""), req.out)
    return pd.concat(rows, ignore_index=True)


@figure("norms", "parameter norms over log steps: total, embeddings and the rest, last layer, distance from "
        "initialisation (param_norm); several runs overlay", overlay=True)
def _norms(runs: list["Run"], req: FigureRequest) -> "pd.DataFrame":
    import pandas as pd

    plots.check_figure_path(req.out)
    tables = []
    for label, run in zip(_labels(runs), runs):
        df = compute(run, "param_norm", steps=req.steps or "all", progress=req.progress)
        tables.append((label, df))
    plots.save(plots.norm_curves(tables, title=runs[0].dir.name if len(runs) == 1 else ""), req.out)
    out = pd.concat([df.assign(run=label) for label, df in tables], ignore_index=True)
    out.attrs["probe"] = tables[0][1].attrs.get("probe", {})
    return out
