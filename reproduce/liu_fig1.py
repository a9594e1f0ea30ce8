"""Liu et al. 2022 (grokking-squared), Fig. 1, with Kitouni's animation of it ("Some thoughts on
Grokking", section "Formation of structure (animated)"): the first two principal components of a
transformer's input embeddings at stages of training on addition mod 59, the axes refit at each stage
and fixed to the end of training's (docs/reproductions/liu-fig1/README.md).

Claims: "neither PCA ... nor t-SNE ... reveal any structure" early, and "perfect generalization
coincides with the PCA projecting the embeddings into a circle in 2D" (Sec. 4.2); with the axes fixed
to the first two principal components at the end of training, "this 'perfect' representation
actually exists very early (up to local ordering of embeddings)" (the post).

The authors' run is ``modular-addition59-deep/0427-1456`` of ``scripts/transformer_grokking.py`` on
the ``prototype`` branch of github.com/ejmichaud/grokking-squared (settings: :mod:`liu_fig7`); the
paper's panels come from ``scripts/pizza_plot.py`` (the embeddings at initialisation, "Overfitting
(1000 iterations)" and "Representation Learning (20000 iterations)"), the post's two videos from
``scripts/plot.py`` (``--nskip 12``, and ``--fixed`` for the axes fitted on the last embeddings). The
videos are released on the ``webpage`` branch (commit d09003d, ``assets/figures/
modular-addition59-deep_pca12.mp4`` and ``..._pca12_fixed.mp4``): 83 frames each, 500 x 500, at
log-spaced logged epochs, each titled with the epoch and the training / test loss and accuracy
(two decimals), the 59 symbols drawn as their two-digit numbers in the colour ``viridis_r(i / 58)``,
each axis scaled to [0, 1]. The reference numbers are read off those frames: the titles by eye, the
symbols' positions by colour (each connected glyph's mean colour matched to the nearest of the 59,
about 38 of the 59 symbols resolved, neighbours merged), and the circular order quality of the
positions computed as probe's :func:`probe.analyses.representations.order_quality` does (the
largest ``|mean_a exp(i(theta_a -/+ 2 pi k a / p))|`` over frequencies k, angles about the mean
position). The per-axis scaling and the merged neighbours make these values good to about 0.05; the
rows therefore compare only whether the symbols form an ordered ring (order quality at least
:data:`RING`), which the frames show plainly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce import liu_fig7 as f7
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = f7.REPO
WEBPAGE_COMMIT = "d09003d8e3b98f1d73c2655251de35bfacf6809f"  # head of the webpage branch
VIDEO_REFIT = "assets/figures/modular-addition59-deep_pca12.mp4"
VIDEO_FIXED = "assets/figures/modular-addition59-deep_pca12_fixed.mp4"
PLOT_SCRIPT = "scripts/plot.py"  # the videos (prototype branch)
FIG_SCRIPT = "scripts/pizza_plot.py"  # the paper's panels (prototype branch)
POST = "Kitouni 2022, Some thoughts on Grokking (blog post), section \"Formation of structure (animated)\""
PAPER = f7.PAPER

RING = 0.8  # order quality at or above which the symbols form an ordered ring
OVERFIT_ACC = 0.98  # the "overfitting" stage: the first step with train acc >= this (frame 960: 0.98 | 0.20)
GEN_ACC = 0.99  # the "generalisation" stage: the first step with val acc >= this
ACC_TOL = 0.15  # tolerance on the validation accuracy at the overfitting stage
EPOCH_TOL = 0.05  # tolerance on the validation accuracy at the authors' frame epochs (titles to two decimals)
TOP = 8  # the final principal components among whose pairs the best ring is sought
FINAL_TOL = 0.01  # tolerance on the final accuracies
FACTOR = f7.FACTOR
STAGES = ("initialisation", "overfitting", "generalisation", "end")

#: read off the frames (module doc), per stage: (epoch, train acc, test acc, order quality on the
#: frame's own first two principal components, order quality on the last embeddings' first two)
AUTHORS_FRAMES: dict[str, tuple[int, float, float, float, float]] = {
    "initialisation": (0, 0.02, 0.02, 0.42, 0.98),  # frame 1
    "overfitting": (960, 0.98, 0.20, 0.54, 0.99),  # frame 34, the first with train acc 0.98
    "generalisation": (3540, 1.00, 0.99, 0.94, 0.98),  # frame 55, the first with test acc 0.99 (3,320: 0.97)
    "end": (19980, 1.00, 1.00, 0.97, 0.98),  # frame 83
}
AUTHORS_TRAIN_099 = 1380  # the first frame with train acc 0.99 (the one before, 1,300: 0.98)
#: the frames whose test accuracy is compared at the same step: the overfitting and generalisation frames
#: (the stages themselves depend on the training accuracy, which the authors measured with dropout on)
FRAME_EPOCHS = (960, 3540)

QUICK_CHECKPOINTS = "checkpoint.schedule: every, checkpoint.every: 20"
PAPER_CHECKPOINTS = "checkpoint.schedule: every, checkpoint.every: 20"
PAPER_SEED = 1  # the run's recorded seed

SETTING = f7.TRANSFORMER_SETTING + (
    Setting("run", "one run, seed 1 (modular-addition59-deep/0427-1456)", PLOT_SCRIPT,
            "one run, seed = split seed = 1 (quick: 1)", "another draw of the split and the initial weights"),
    Setting("projection", "paper: each embedding standardised over its 256 dimensions, PCA refit at each panel "
            "(0, \"1000\" and 20,000 iterations); videos: PCA of the raw embeddings refit at each frame, or "
            "fitted on the last embeddings (--fixed), each axis scaled to [0, 1]", FIG_SCRIPT,
            "pca2d metric, axes refit (own) and final, on the centred embeddings; order quality of the "
            "symbols' angles (order_quality)",
            "no standardisation or axis scaling: neither moves the angular order of a ring much"),
    Setting("stages", "frames at log-spaced logged epochs (every 20 epochs, 83 of 1,000 files, gen_log_space); "
            "the paper's panels from files 0, 30 and the last (pizza_plot.py: file 30 is epoch 600, titled "
            "\"Overfitting (1000 iterations)\")", PLOT_SCRIPT,
            "checkpoints every 20 steps; stages: step 0, the first checkpoint with train acc >= 0.98, the "
            "first with val acc >= 0.99, the last; the validation accuracy also compared at the authors' "
            "overfitting and generalisation frames' epochs (960, 3,540)",
            "the stages are found by accuracy on probe's own run, where training accuracy is measured without "
            "dropout (theirs with dropout on, from the update's forward pass), so probe's overfitting stage "
            "comes far earlier (step 180 against epoch 960)"),
    Setting("reference numbers", "the two released videos (webpage branch, d09003d): titles and the symbols' "
            "positions per frame", PLOT_SCRIPT,
            "titles read by eye; positions by colour; order quality as probe computes it (module doc)",
            "digitised: order quality to about 0.05, so only ring / no ring is compared"),
)


def _spec(run: dict, seed: int, checkpoints: str) -> str:
    return f7.transformer_spec(run, [seed], checkpoints)


def ring_order(coords: np.ndarray, task: object) -> float:
    """Order quality of the symbols in a plane (``coords [p, 2]``), as the frames were read."""
    from probe.analyses.representations import order_quality

    return float(order_quality(np.asarray(coords, dtype=np.float64), task))


def best_pair_order(embeddings: np.ndarray, final: np.ndarray, task: object,
                    top: int = TOP) -> tuple[float, tuple[int, int]]:
    """The largest order quality of the symbols (``embeddings [p, d]``, centred) on a pair of the
    ``top`` first principal components of ``final``, and that pair (1-based). When two frequencies
    carry nearly equal variance, the first two components mix their two rings and each ring lies on
    another pair (docs/reproductions/liu-fig1/README.md)."""
    from probe.analyses.representations import centred, principal_axes

    vt = principal_axes(final)[1][:top]
    xy = centred(embeddings) @ vt.T
    best, pair = -1.0, (0, 0)
    for i in range(len(vt)):
        for j in range(i + 1, len(vt)):
            q = ring_order(xy[:, [i, j]], task)
            if q > best:
                best, pair = q, (i + 1, j + 1)
    return best, pair


def _coords(frame: "pd.DataFrame", p: int) -> np.ndarray:
    """``pca2d`` columns -> ``[T, p, 2]``."""
    x = frame[[f"pca2d_x{k}" for k in range(p)]].to_numpy(dtype=np.float64)
    y = frame[[f"pca2d_y{k}" for k in range(p)]].to_numpy(dtype=np.float64)
    return np.stack([x, y], axis=-1)


def stage_steps(metrics: "pd.DataFrame", checkpoints: np.ndarray) -> dict[str, float]:
    """The checkpoint step of each stage (inf: the run never reaches it): step 0, the first checkpoint
    at or after the first metrics step with train acc >= OVERFIT_ACC, the same for val acc >= GEN_ACC,
    the last checkpoint."""
    def first(column: str, threshold: float) -> float:
        hit = metrics[metrics[column] >= threshold]
        if not len(hit):
            return math.inf
        later = checkpoints[checkpoints >= int(hit["step"].iloc[0])]
        return float(later[0]) if len(later) else math.inf

    return {"initialisation": float(checkpoints[0]), "overfitting": first("train_acc", OVERFIT_ACC),
            "generalisation": first("val_acc", GEN_ACC), "end": float(checkpoints[-1])}


def run_table(sweep_dir: str) -> tuple["pd.DataFrame", dict[str, dict]]:
    """One row per finished run and stage: the stage's step, the accuracies there and the order quality
    of the symbols on the stage's own first two principal components and on the final ones; per run the
    coordinates at the stages (for the figure)."""
    import pandas as pd

    from probe.analyses import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    rows, extra = [], {}
    for name, run in sw.done_runs():
        cfg, metrics, task = run.config, run.metrics, run.task
        own = compute(run, "pca2d", axes="refit")
        fixed = compute(run, "pca2d", axes="final")
        lt = compute(run, "lottery_ticket", steps=[0])
        p = int(task.n_symbols)
        checkpoints = own["step"].to_numpy(dtype=np.int64)
        xy_own, xy_fixed = _coords(own, p), _coords(fixed, p)
        stages = stage_steps(metrics, checkpoints)
        by_step = metrics.set_index("step")
        final = run.checkpoint(int(checkpoints[-1])).embeddings()
        coords = {}
        for stage in STAGES:
            step = stages[stage]
            row = {"run": name, "seed": int(cfg.seed), "p": p, "budget": int(cfg.steps), "stage": stage, "step": step,
                   "train_acc": math.nan, "val_acc": math.nan, "order_own": math.nan, "order_final": math.nan,
                   "order_best_final": math.nan, "best_pair": "",
                   "random_order": float(lt["lt_random_order"].iloc[0])}
            if math.isfinite(step):
                i = int(np.searchsorted(checkpoints, int(step)))
                row["order_own"] = ring_order(xy_own[i], task)
                row["order_final"] = ring_order(xy_fixed[i], task)
                best, pair = best_pair_order(run.checkpoint(int(checkpoints[i])).embeddings(), final, task)
                row["order_best_final"], row["best_pair"] = best, f"{pair[0]}-{pair[1]}"
                if int(step) in by_step.index:
                    row["train_acc"] = float(by_step.loc[int(step), "train_acc"])
                    row["val_acc"] = float(by_step.loc[int(step), "val_acc"])
                coords[stage] = (int(step), xy_own[i], xy_fixed[i], row["train_acc"], row["val_acc"])
            rows.append(row)
        val_at = {e: float(by_step.loc[e, "val_acc"]) if e in by_step.index else math.nan for e in FRAME_EPOCHS}
        extra[name] = {"p": p, "coords": coords, "train_099": f7.first_step(metrics, "train_acc", 0.99),
                       "val_at": val_at, "last_step": int(metrics["step"].iloc[-1])}
    columns = ["run", "seed", "p", "budget", "stage", "step", "train_acc", "val_acc", "order_own", "order_final",
               "order_best_final", "best_pair", "random_order"]
    return pd.DataFrame(rows, columns=columns), extra


def _ring(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f} ({'ring' if v >= RING else 'no ring'})"


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per run: the steps of the overfitting and generalisation stages and of train acc >= 0.99, the
    validation accuracy at the overfitting stage and at the end, and at each stage whether the symbols
    form an ordered ring on their own and on the final first two principal components, recomputed from
    the runs against the frames of the authors' videos."""
    table, extra = run_table(sweep_dir)
    src_refit = f"{REPO} {VIDEO_REFIT} (webpage branch, read off)"
    src_fixed = f"{REPO} {VIDEO_FIXED} (webpage branch, read off)"
    rows: list[Row] = []
    for name, g in table.groupby("run", sort=True):
        g = g.set_index("stage")
        tag = f"run {name}" if table["run"].nunique() > 1 else "the run"
        budget = int(g["budget"].iloc[0])
        for stage, acc in (("overfitting", OVERFIT_ACC), ("generalisation", GEN_ACC)):
            paper = float(AUTHORS_FRAMES[stage][0])
            ours = float(g.loc[stage, "step"])
            curve = "train" if stage == "overfitting" else "val"
            rows.append(Row(f"{stage} stage: first step with {curve} acc >= {acc:g}, {tag}",
                            f"{paper:,.0f} (frame title)", src_refit, f"{fmt_steps(ours)} (budget {budget:,})",
                            f"within a factor {FACTOR:g}", "agrees" if f7.steps_agree(paper, ours) else "differs"))
        ours = extra[name]["train_099"]
        rows.append(Row(f"first step with train acc >= 0.99, {tag}",
                        f"{AUTHORS_TRAIN_099:,} (frame title; 1,300: 0.98)",
                        src_refit, f"{fmt_steps(ours)} (budget {budget:,})", f"within a factor {FACTOR:g}",
                        "agrees" if f7.steps_agree(float(AUTHORS_TRAIN_099), ours) else "differs"))
        val = float(g.loc["overfitting", "val_acc"])
        paper = AUTHORS_FRAMES["overfitting"][2]
        rows.append(Row(f"val acc at the overfitting stage, {tag}", f"{paper:.2f} (epoch 960; train acc 0.98)",
                        src_refit, "n/a (never overfits)" if math.isnan(val) else f"{val:.2f}",
                        f"within {ACC_TOL:g}", "agrees" if not math.isnan(val) and abs(val - paper) <= ACC_TOL
                        else "differs"))
        for epoch in FRAME_EPOCHS:
            stage = next(st for st in STAGES if AUTHORS_FRAMES[st][0] == epoch)
            paper = AUTHORS_FRAMES[stage][2]
            val = extra[name]["val_at"][epoch]
            rows.append(Row(f"val acc at step {epoch:,} (the authors' {stage} frame), {tag}",
                            f"{paper:.2f} (epoch {epoch:,})", src_refit,
                            f"n/a (the run's metrics end at step {extra[name]['last_step']:,})" if math.isnan(val)
                            else f"{val:.2f}", f"within {EPOCH_TOL:g}",
                            "agrees" if not math.isnan(val) and abs(val - paper) <= EPOCH_TOL + 1e-9 else "differs"))
        val = float(g.loc["end", "val_acc"])
        paper = AUTHORS_FRAMES["end"][2]
        rows.append(Row(f"val acc at the end, {tag}", f"{paper:.2f} (epoch 19,980)", src_refit,
                        f"{val:.3f} (step {int(g.loc['end', 'step']):,})", f"within {FINAL_TOL:g}",
                        "agrees" if abs(val - paper) <= FINAL_TOL else "differs"))
        random = float(g["random_order"].iloc[0])
        for column, idx, axes, src, quote in (
                ("order_own", 3, "its own first two PCs (refit)", src_refit,
                 f"{PAPER} Sec. 4.2: no structure early, a circle at generalisation"),
                ("order_final", 4, "the final first two PCs (fixed)", src_fixed,
                 f"{POST}: the representation exists very early")):
            for stage in STAGES:
                paper = AUTHORS_FRAMES[stage][idx]
                ours = float(g.loc[stage, column])
                same = not math.isnan(ours) and (ours >= RING) == (paper >= RING)
                step = g.loc[stage, "step"]
                rows.append(Row(f"circular order of the symbols on {axes}, {stage} stage, {tag}",
                                f"{_ring(paper)} (epoch {AUTHORS_FRAMES[stage][0]:,})", f"{quote}; {src}",
                                f"{_ring(ours)} (step {fmt_steps(float(step))}; random directions: {random:.2f})",
                                f"the same side of {RING:g} (ring or not)", "agrees" if same else "differs"))
        for stage in STAGES:  # the ring on whichever pair of the final components holds it
            paper = AUTHORS_FRAMES[stage][4]
            ours = float(g.loc[stage, "order_best_final"])
            same = not math.isnan(ours) and (ours >= RING) == (paper >= RING)
            pair = g.loc[stage, "best_pair"]
            rows.append(Row(f"circular order of the symbols on the best pair of the final first {TOP} PCs, {stage} "
                            f"stage, {tag}", f"{_ring(paper)} on PCs 1-2 (epoch {AUTHORS_FRAMES[stage][0]:,}; at "
                            "least that on its best pair)", f"{POST}: the representation exists very early; {src_fixed}",
                            f"{_ring(ours)} on PCs {pair} (step {fmt_steps(float(g.loc[stage, 'step']))})"
                            if pair else "n/a", f"the same side of {RING:g} (ring or not)",
                            "agrees" if same else "differs"))
    return Analysis(tuple(rows), table, {"scale": scale, "runs": extra})


def draw(analysis: Analysis) -> "Figure":
    """Like the paper's Fig. 1 and the post's two videos: the symbols (their numbers, coloured as the
    authors' viridis_r) on their own first two principal components (top) and on the final ones
    (bottom) at the four stages of probe's first run, each titled with its step and accuracies and the
    authors' values at the same stage."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(2, len(STAGES), figsize=(3.2 * len(STAGES), 6.8), constrained_layout=True)
    runs = analysis.extra["runs"]
    name = sorted(runs)[0] if runs else None
    cmap = plt.get_cmap("viridis_r")
    table = analysis.runs
    for j, stage in enumerate(STAGES):
        a = AUTHORS_FRAMES[stage]
        for i, (key, label) in enumerate(((1, "own PCs"), (2, "final PCs"))):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if name is None or stage not in runs[name]["coords"]:
                ax.set_title(f"{stage}: not reached", fontsize=8)
                continue
            step, own, fixed, tr, va = runs[name]["coords"][stage]
            xy = own if key == 1 else fixed
            p = runs[name]["p"]
            for k in range(p):
                ax.text(xy[k, 0], xy[k, 1], f"{k:02d}", color=cmap(k / max(p - 1, 1)), fontsize=6,
                        ha="center", va="center", fontweight="bold")
            pad = 0.08 * (np.ptp(xy, axis=0) + 1e-12)
            ax.set_xlim(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0])
            ax.set_ylim(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1])
            column = "order_own" if key == 1 else "order_final"
            order = float(table[(table["run"] == name) & (table["stage"] == stage)][column].iloc[0])
            ax.set_title(f"{stage}, step {step:,} ({label})\nacc {tr:.2f} | {va:.2f}, order {order:.2f}; "
                         f"authors {a[1]:.2f} | {a[2]:.2f}, {a[2 + key]:.2f}", fontsize=7)
    fig.suptitle(f"Liu et al. Fig. 1 / Kitouni's animation: PCA of the embeddings ({analysis.extra['scale']} "
                 "scale; authors: epochs 0, 960, 3,540, 19,980 of their p = 59 run)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="liu-fig1",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          f"Effective Theory of Representation Learning (NeurIPS), with {POST}",
    figure="Fig. 1: first two principal components of a transformer's embeddings at stages of training on "
           "addition mod 59, axes refit and fixed to the end of training (the post's two animations)",
    artefact=Artefact(REPO, WEBPAGE_COMMIT, f"{VIDEO_REFIT}, {VIDEO_FIXED}",
                      "83 frames each of the run modular-addition59-deep/0427-1456 (epoch, losses, accuracies, "
                      "the 59 symbols on the first two PCs, refit or fixed); read off: train acc 0.98 at epoch "
                      "960 (test 0.20), test acc 0.99 at 3,540; the symbols form a ring on the refit axes only "
                      "from generalisation on, on the fixed axes from initialisation on"),
    trains="the authors' transformer on addition mod 59 (liu-fig7's setting), one run with a checkpoint of the "
           "embeddings every 20 steps",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(f7.QUICK_RUN, f7.QUICK_SEED, QUICK_CHECKPOINTS),
                       "13 s (--jobs 1; 10 s of training)",
                       "one run, p = 31, d_model 32, d_mlp 32, 800 steps at 25 times the learning rates: no ring "
                       "on the refit axes at initialisation or while only the training set is fitted, a ring when "
                       "the model generalises; at this scale the ring fades again by step 800, so the final axes "
                       "show none (nor one on the initial embeddings); every reference row is produced"),
        "paper": Scale("paper", _spec(f7.PAPER_RUN, PAPER_SEED, PAPER_CHECKPOINTS),
                       "2 h 30 min (--jobs 1, one core, beside other work)",
                       "the authors' run: p = 59, 20,000 full-batch steps, seed 1, the embeddings every 20 "
                       "steps (1,001 checkpoints); estimated 1.9 h on one core (0.33 s a step, timed over 40 "
                       "steps)"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the first two principal components show no structure at initialisation or while the model only "
            "fits its training set, and an ordered ring once it generalises",
            "on the final first two principal components the initial embeddings already form the ring, up to "
            "local order (the post's lottery ticket)"),
))
