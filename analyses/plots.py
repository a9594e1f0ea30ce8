"""Figures (matplotlib, Agg backend): metrics over log-scaled steps with accuracy on the same axis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from probe.errors import ProbeError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

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


def save(fig: "Figure", out: str) -> None:
    path = Path(out)
    if path.suffix.lower() not in FIG_SUFFIXES:
        raise ProbeError(f"--out {out}: figure format must be one of {', '.join(FIG_SUFFIXES)}")
    if not path.parent.exists() if str(path.parent) else False:
        raise ProbeError(f"cannot write {out}: directory {path.parent} does not exist")
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ProbeError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        _plt().close(fig)
