"""Figures (matplotlib, Agg backend): metrics over log-scaled steps with accuracy on the same axis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from probe.errors import ProbeError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from probe.analyses.events import Events
    from probe.run import Run

FIG_SUFFIXES = (".png", ".pdf", ".svg")


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_steps(ax, steps: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    positive = steps[steps > 0]
    ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
    ax.set_xlabel("step")


def metric_over_time(df: "pd.DataFrame", columns: Sequence[str], run: "Run | None" = None,
                     title: str | None = None) -> "Figure":
    """Metric columns of ``df`` against step (symlog x), train/validation accuracy on a twin axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), constrained_layout=True)
    steps = df["step"].to_numpy()
    for col in columns:
        ax.plot(steps, df[col].to_numpy(), marker=".", ms=3, lw=1.5, label=col)
    ax.set_ylabel(", ".join(columns) if len(columns) <= 3 else "value")
    _log_steps(ax, steps)
    handles, labels = ax.get_legend_handles_labels()
    if run is not None and not run.metrics.empty:
        m = run.metrics
        ax2 = ax.twinx()
        ax2.plot(m["step"], m["train_acc"], color="0.55", lw=1, ls="--", label="train acc")
        ax2.plot(m["step"], m["val_acc"], color="0.2", lw=1, ls=":", label="val acc")
        ax2.set_ylim(-0.02, 1.02)
        ax2.set_ylabel("accuracy")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title or (run.dir.name if run is not None else ""))
    return fig


def trajectories(steps: np.ndarray, predicted: np.ndarray, real: np.ndarray, title: str = "") -> "Figure":
    """Liu Fig. 4c/d: effective-theory and real normalised embeddings (first dimension) per symbol."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    p = predicted.shape[1]
    for ax, data, name in ((axes[0], predicted, "effective theory"), (axes[1], real, "neural network")):
        for k in range(p):
            ax.plot(steps, data[:, k, 0], color=cmap(k / max(p - 1, 1)), lw=1.2, label=str(k))
        _log_steps(ax, steps)
        ax.set_title(name)
    axes[0].set_ylabel("normalised embedding (dim 0)")
    axes[1].legend(title="symbol", fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title)
    return fig


def check_figure_path(out: str) -> None:
    path = Path(out)
    if path.suffix.lower() not in FIG_SUFFIXES:
        raise ProbeError(f"--out {out}: figure format must be one of {', '.join(FIG_SUFFIXES)}")
    if str(path.parent) and not path.parent.exists():
        raise ProbeError(f"cannot write {out}: directory {path.parent} does not exist")


def save(fig: "Figure", out: str) -> None:
    try:
        check_figure_path(out)
    except ProbeError:
        _plt().close(fig)
        raise
    path = Path(out)
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ProbeError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        _plt().close(fig)


def _symbol_colours(n: int):  # type: ignore[no-untyped-def]
    plt = _plt()
    return plt.get_cmap("hsv" if n > 12 else "viridis")(np.arange(n) / n)


def pca_scatter(coords: Sequence[np.ndarray], steps: Sequence[int], axes: str, title: str = "") -> "Figure":
    """Embeddings on two principal components at chosen steps, points labelled by symbol and coloured
    by value (the blog posts' pictures). ``coords``: one ``[n_symbols, 2]`` array per step."""
    plt = _plt()
    n = len(coords)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, grid = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False, constrained_layout=True)
    colours = _symbol_colours(coords[0].shape[0])
    for ax, xy, step in zip(grid.ravel(), coords, steps):
        ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=18)
        if xy.shape[0] <= 60:
            for k, (x, y) in enumerate(xy):
                ax.annotate(str(k), (x, y), fontsize=6, ha="center", va="bottom")
        ax.set_title(f"step {step}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    for ax in grid.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(title or f"embeddings on PC1/PC2 ({'axes refit per step' if axes == 'refit' else 'final axes'})")
    return fig


def fourier_bars(norms: dict[str, np.ndarray], keys: Sequence[int], step: int, title: str = "") -> "Figure":
    """Norm per frequency of W_E / W_U (Nanda et al. Fig. 3 style), key frequencies marked."""
    plt = _plt()
    fig, axes = plt.subplots(len(norms), 1, figsize=(7, 2.4 * len(norms)), squeeze=False, constrained_layout=True)
    for ax, (name, v) in zip(axes[:, 0], norms.items()):
        k = np.arange(1, len(v) + 1)
        colours = ["C3" if kk in keys else "C0" for kk in k]
        ax.bar(k, v, color=colours)
        ax.set_ylabel(f"{name} norm")
        for kk in keys:
            ax.annotate(str(kk), (kk, v[kk - 1]), ha="center", va="bottom", fontsize=7, color="C3")
    axes[-1, 0].set_xlabel("frequency k")
    fig.suptitle(title or f"Fourier norms at step {step} (key frequencies in red)")
    return fig


def projection_curves(row: "pd.Series", step: int, title: str = "") -> "Figure":
    """Liu et al. Fig. 22: accuracy against the number n of principal components kept."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    for tag, ls in (("cur", "-"), ("final", "--")):
        for split, colour in (("train", "C0"), ("test", "C1")):
            cols = [c for c in row.index if c.startswith(f"{split}_acc_{tag}_")]
            ns = np.array([int(c.rsplit("_", 1)[1]) for c in cols])
            order = np.argsort(ns)
            ax.plot(ns[order], row[cols].to_numpy(dtype=float)[order], ls=ls, color=colour, marker="o", ms=3,
                    label=f"{split}, {'current' if tag == 'cur' else 'final'} PCs")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("principal components kept (n)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(title or f"projection accuracy at step {step}")
    return fig


def check_animation_path(out: str) -> None:
    from matplotlib import animation

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ProbeError(f"--out {out}: an animation is written as .gif or .mp4")
    if suffix == ".mp4" and not animation.writers.is_available("ffmpeg"):
        raise ProbeError("MP4 output needs ffmpeg on PATH (install it, or write a .gif)")
    if str(path.parent) and not path.parent.exists():
        raise ProbeError(f"cannot write {out}: directory {path.parent} does not exist")


MAX_FPS = 100  # a GIF stores frame durations in hundredths of a second: 100 frames per second at most


def check_fps(fps: int) -> None:
    """Frames per second of an animation: a whole number in 1..MAX_FPS."""
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or not 1 <= fps <= MAX_FPS:
        raise ProbeError(f"must be in 1..{MAX_FPS} frames per second, got {fps!r}", param="fps")


def animate_pca(coords: np.ndarray, steps: np.ndarray, out: str, axes: str, fps: int = 8) -> None:
    """An animation of the embeddings on two principal components over the series (GIF or MP4)."""
    plt = _plt()
    from matplotlib import animation

    check_animation_path(out)
    check_fps(fps)
    path = Path(out)
    suffix = path.suffix.lower()
    if len(steps) < 2:
        raise ProbeError("an animation needs at least two checkpoints")
    fig, ax = plt.subplots(figsize=(4.5, 4.5), constrained_layout=True)
    colours = _symbol_colours(coords.shape[1])
    lim = float(np.abs(coords).max()) * 1.1 if axes == "final" else None
    scat = ax.scatter(coords[0][:, 0], coords[0][:, 1], c=colours, s=18)
    ax.set_xticks([])
    ax.set_yticks([])

    def frame(i: int):  # type: ignore[no-untyped-def]
        xy = coords[i]
        scat.set_offsets(xy)
        if lim is None:
            m = float(np.abs(xy).max()) * 1.1 or 1.0
            ax.set_xlim(-m, m)
            ax.set_ylim(-m, m)
        else:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        ax.set_title(f"step {int(steps[i])} ({'refit axes' if axes == 'refit' else 'final axes'})", fontsize=9)
        return (scat,)

    anim = animation.FuncAnimation(fig, frame, frames=len(steps), interval=1000 // fps, blit=False)
    writer = animation.PillowWriter(fps=fps) if suffix == ".gif" else animation.FFMpegWriter(fps=fps)
    try:
        anim.save(str(path), writer=writer)
    except OSError as exc:
        raise ProbeError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _colours(n: int):  # type: ignore[no-untyped-def]
    cmap = _plt().get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def training_curves(curves: Sequence[tuple[str, "pd.DataFrame", "Events"]], title: str = "") -> "Figure":
    """Train (solid) and validation (dashed) loss on log-log axes and accuracy on a log step axis, one
    colour per run; events marked: accuracy thresholds passed (dotted verticals at the delay
    threshold), validation loss levels (circles), loss spikes (triangles at their peaks) and
    ungrokking (a cross). ``curves``: ``(label, metric rows, Events)`` per run."""
    plt = _plt()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 3.9), constrained_layout=True)
    all_steps = []
    for (label, m, ev), colour in zip(curves, _colours(len(curves))):
        steps = m["step"].to_numpy()
        all_steps.append(steps)
        for col, ls in (("train_loss", "-"), ("val_loss", "--")):
            y = m[col].to_numpy(dtype=float)
            ok = y > 0
            ax_l.plot(steps[ok], y[ok], color=colour, ls=ls, lw=1.2,
                      label=f"{label} {col.split('_')[0]}" if len(curves) > 1 else col)
        ax_a.plot(steps, m["train_acc"], color=colour, ls="-", lw=1.2,
                  label=f"{label} train" if len(curves) > 1 else "train_acc")
        ax_a.plot(steps, m["val_acc"], color=colour, ls="--", lw=1.2,
                  label=f"{label} val" if len(curves) > 1 else "val_acc")
        thr = ev.rule.delay_threshold
        for s in (ev.train_passes.get(thr), ev.val_passes.get(thr)):
            if s is not None:
                ax_a.axvline(max(s, 1), color=colour, ls=":", lw=0.8)
        val_loss = dict(zip(steps.tolist(), m["val_loss"].to_numpy(dtype=float).tolist()))
        for level, s in ev.val_loss_below.items():
            if s is not None:
                ax_l.plot([max(s, 1)], [val_loss.get(s, level)], "o", color=colour, ms=5, mfc="none")
        train_loss = dict(zip(steps.tolist(), m["train_loss"].to_numpy(dtype=float).tolist()))
        for sp in ev.spikes:
            ax_l.plot([max(sp.peak, 1)], [train_loss.get(sp.peak, np.nan)], "^", color=colour, ms=6)
        if ev.ungrok_step is not None:
            ax_a.plot([ev.ungrok_step], [0.0], "x", color=colour, ms=8, mew=2)
    steps = np.concatenate(all_steps) if all_steps else np.array([1])
    for ax in (ax_l, ax_a):
        _log_steps(ax, steps)
        ax.set_xlim(left=0, right=float(steps.max()) * 1.05 if steps.size else 1.0)
    ax_l.set_yscale("log")
    ax_l.set_ylabel("loss")
    ax_a.set_ylabel("accuracy")
    ax_a.set_ylim(-0.03, 1.03)
    ax_l.legend(fontsize=7, loc="best")
    ax_a.legend(fontsize=7, loc="best")
    ax_l.set_title("loss (triangles: spikes; circles: val loss levels)", fontsize=9)
    ax_a.set_title("accuracy (dotted: threshold passed; x: ungrokking)", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def norm_curves(tables: Sequence[tuple[str, "pd.DataFrame"]], title: str = "") -> "Figure":
    """Parameter norms over log steps, one colour per run: total, the embedding and other groups, the
    last layer, and the distance from initialisation (``param_norm`` columns)."""
    plt = _plt()
    panels = [("norm_total", "total L2 norm"), ("norm_embed", "embeddings / rest (dashed)"),
              ("norm_last", "last layer (unembedding)"), ("dist_init", "distance from initialisation")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), constrained_layout=True)
    for (label, df), colour in zip(tables, _colours(len(tables))):
        steps = df["step"].to_numpy()
        for ax, (col, name) in zip(axes, panels):
            if col in df.columns:
                ax.plot(steps, df[col], color=colour, lw=1.3, label=label)
            if col == "norm_embed" and "norm_rest" in df.columns:
                ax.plot(steps, df["norm_rest"], color=colour, lw=1.3, ls="--")
            ax.set_title(name, fontsize=9)
            _log_steps(ax, steps)
            ax.set_xlim(left=0)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def metric_and_loss(df: "pd.DataFrame", columns: Sequence[str], run: "Run", title: str | None = None) -> "Figure":
    """Metric columns over log steps (left) beside the run's train and validation loss on log-log axes
    (right), e.g. the local learning coefficient next to the losses (Hoogland et al.)."""
    plt = _plt()
    fig, (ax, ax_l) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    steps = df["step"].to_numpy()
    for col in columns:
        ax.plot(steps, df[col].to_numpy(), marker=".", ms=4, lw=1.5, label=col)
        std = f"{col}_std"
        if std in df.columns:
            ax.fill_between(steps, df[col] - df[std], df[col] + df[std], alpha=0.25)
    _log_steps(ax, steps)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    ax.set_ylabel(", ".join(columns))
    m = run.metrics
    for col, ls in (("train_loss", "-"), ("val_loss", "--")):
        y = m[col].to_numpy(dtype=float)
        ok = y > 0
        ax_l.plot(m["step"].to_numpy()[ok], y[ok], ls=ls, color="0.2", lw=1.2, label=col)
    _log_steps(ax_l, m["step"].to_numpy())
    ax_l.set_xlim(left=0)
    ax_l.set_yscale("log")
    ax_l.set_ylabel("loss")
    ax_l.legend(fontsize=8)
    fig.suptitle(title or run.dir.name)
    return fig
