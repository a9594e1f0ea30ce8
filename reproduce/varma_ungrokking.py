"""Varma, Shah, Kenton, Kramár, Kumar 2023, "Explaining grokking through circuit efficiency" (arXiv
2309.02390), ungrokking (Sec. 4 "Ungrokking", Sec. 5, App. A.2 Fig. 7): a network that has grokked,
trained further on a smaller subset of its data, falls back to poor test accuracy while its training
accuracy stays at 1, once the subset is below the critical dataset size; test accuracy at the end
against the subset's size shows a sharp transition (docs/reproductions/varma-ungrokking/README.md).

The authors released no code and no numbers; the references are the paper's text (quoted in the
page): Fig. 7's caption (7 geometrically spaced dataset sizes in [390, 1494], 10 seeds each, every
run initialised from a network trained on the full dataset; small sizes ungrok to poor test accuracy
with training accuracy at 1, an intermediate size to middling accuracy) and App. A.2 (ungrokking runs
reach a test accuracy of about 0.7 at a dataset size of about 800 to 1,000).

Training is two stages of ordinary sweeps: ``OUT/sweep`` grokks the parents, ``OUT/ungrok`` starts
each reduced-set run from a parent's last checkpoint (the sweep spec's ``from:``) with
``train_subset`` keeping a subset of the parent's training pairs; validation is the parent's held-out
set throughout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce import varma_dcrit as dcrit
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, Stage,
                                      reproduction)
from probe.reproduce.varma import A2, FIG7, MODEL, OPTIMIZER, PAPER, REPO, TASK, TITLE, VERSION

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

SEC4 = f"{PAPER} Sec. 4 (Ungrokking) and Sec. 5"
STAGE = "ungrok"
DCRIT_STAGE = "dcrit"  # memorising and generalising networks in the same setting, for D_crit
#: the quick D_crit stage: Kitouni's MLP with its norm held at about the quick parents' (35), memorising
#: networks at four sizes and generalising ones on all 1,685 pairs, 2 seeds
QUICK_DCRIT = ("preset: kitouni-mlp-comprehension\nset: {weight_decay: 0.0, steps: 300, constraint.norm: 35.0, "
               "checkpoint.schedule: every, checkpoint.every: 300, checkpoint.metrics_every: 50}")
P = 113
FULL = P * P  # 12,769 pairs
#: Fig. 7's sizes: 7 geometrically spaced dataset sizes in [390, 1494]
AUTHORS_SIZES: tuple[int, ...] = tuple(int(round(v)) for v in np.geomspace(390, 1494, 7))
AUTHORS_SEEDS = 10
AUTHORS_MIDDLING = (800, 1000)  # App. A.2: test accuracy ~0.7 at a dataset size of around 800-1000
MIDDLING_ACC = 0.7
POOR = 0.1  # "poor" / "near-random" test accuracy: below this (chance is 1/113 at p = 113)
STRONG = 0.99  # "test accuracy starts at 1": the parents' final validation accuracy at least this
TRAIN_ONE = 0.99  # "train accuracy remains at 1"
FACTOR = 1.5  # tolerance on the crossing size: within this factor of the authors' 800-1,000


def _fraction(size: int, n_train: int) -> float:
    """The ``train_subset`` fraction keeping exactly ``size`` of ``n_train`` pairs (probe keeps
    ``floor(fraction * n_train + 1e-9)``; half a pair more keeps the floor off a rounding edge)."""
    return 1.0 if size >= n_train else float(f"{(size + 0.5) / n_train:.8f}")


def _parents(seeds: list[int]) -> str:
    return "[" + ", ".join(f"sweep/runs/seed={s}" for s in seeds) + "]"


def _specs(preset: str, stage1: str, n_train: int, sizes: list[int], seeds: list[int], stage2: str,
           extra: str = "") -> tuple[str, str]:
    grok = f"preset: {preset}\nset: {{{stage1}}}\nseeds: {list(seeds)}\n"
    fractions = [_fraction(s, n_train) for s in sizes]
    ungrok = (
        f"set: {{{stage2}}}\n"
        f"zip:\n  seed: {list(seeds)}\n  from: {_parents(seeds)}\n"
        f"grid:\n  train_subset: {fractions}\n{extra}")
    return grok, ungrok


# quick: Kitouni's MLP at weight decay 5 comprehends addition mod 53 within 300 steps (1,685 training
# pairs); a 5% subset (84 pairs) and the whole set (the control) for 300 steps more
QUICK_N_TRAIN = 1685
QUICK_SIZES = [84, QUICK_N_TRAIN]
QUICK_GROK, QUICK_UNGROK = _specs(
    "kitouni-mlp-comprehension",
    "steps: 300, checkpoint.schedule: every, checkpoint.every: 300, checkpoint.metrics_every: 50",
    QUICK_N_TRAIN, QUICK_SIZES, [0],
    "steps: 300, checkpoint.schedule: every, checkpoint.every: 300, checkpoint.metrics_every: 25, "
    "checkpoint.tensors: [embed.W_E]")
# paper: the authors' transformer on addition mod 113; the parents on 90% of the pairs (11,492), then
# Fig. 7's seven sizes, three parents
PAPER_N_TRAIN = int(math.floor(0.9 * FULL + 1e-9))
PAPER_SEEDS = [0, 1, 2]
PAPER_GROK, PAPER_UNGROK = _specs(
    "nanda-modadd",
    "train_fraction: 0.9, steps: 10000, stop.threshold: 0.99, stop.after_generalization: 500, "
    "checkpoint.schedule: geometric, checkpoint.count: 20, checkpoint.metrics_every: 100",
    PAPER_N_TRAIN, list(AUTHORS_SIZES), PAPER_SEEDS,
    "steps: 20000, checkpoint.schedule: geometric, checkpoint.count: 20, checkpoint.metrics_every: 100, "
    "checkpoint.tensors: [embed.W_E]")

SETTING = (
    TASK,
    MODEL,
    OPTIMIZER,
    Setting("parents", "networks trained on the full dataset to 100% accuracy (Fig. 7: 'test accuracy starts "
            "at 1 for all runs')", FIG7,
            "3 parents (seeds 0, 1, 2) on 90% of the pairs (11,492), early stop 500 steps after validation "
            "accuracy passes 0.99 (budget 10,000)",
            "a 10% held-out set (1,277 pairs) keeps a test set the parents never trained on; 3 parents, not "
            "one per seed of 10"),
    Setting("reduced sets", "7 geometrically spaced dataset sizes in [390, 1494], 10 seeds each", FIG7,
            f"train_subset keeping exactly {', '.join(str(s) for s in AUTHORS_SIZES)} of the parent's training "
            "pairs (numpy default_rng([split_seed, 1])), one run per size and parent (21 runs)",
            "3 runs per size, not 10; the subset is drawn from the parent's training pairs (the text read here "
            "does not say how theirs were drawn)"),
    Setting("ungrokking steps", "not stated for modular addition; 100k steps for the other tasks (Fig. 8)",
            f"{PAPER} App. A.2, Fig. 8 caption", "20,000 steps, optimizer state fresh (parameters only: "
            "'initialised with parameters from a network')",
            "a fifth of Fig. 8's 100k steps for CPU time; the reported quantity is the final test accuracy"),
    Setting("evaluation", "test accuracy at the end of the reduced-set training, against the dataset size",
            FIG7, "validation accuracy (the parent's held-out pairs) at the last step; metrics every 100 steps"),
)


def _table(sweep_dir: str) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """The parents (one row each) and the reduced-set runs (one row each: size, parent, final
    accuracies, the validation curve in ``metrics``)."""
    import pandas as pd

    from probe.sweep import load_sweep

    parents = []
    for name, run in load_sweep(sweep_dir).done_runs():
        m = run.metrics
        parents.append({"run": name, "seed": int(run.config.seed), "n_train": int(run.split.sizes[0]),
                        "n_val": int(run.split.sizes[1]), "last_step": int(m["step"].iloc[-1]),
                        "final_train_acc": float(m["train_acc"].iloc[-1]),
                        "final_val_acc": float(m["val_acc"].iloc[-1])})
    runs = []
    stage = Path(sweep_dir).parent / STAGE
    if stage.is_dir():
        for name, run in load_sweep(stage).done_runs():
            m = run.metrics
            runs.append({"run": name, "seed": int(run.config.seed), "size": int(run.split.sizes[0]),
                         "last_step": int(m["step"].iloc[-1]),
                         "start_val_acc": float(m["val_acc"].iloc[0]),
                         "final_train_acc": float(m["train_acc"].iloc[-1]),
                         "final_val_acc": float(m["val_acc"].iloc[-1]),
                         "min_val_acc": float(m["val_acc"].min()),
                         "metrics": m[["step", "train_acc", "val_acc"]].copy()})
    pcols = ["run", "seed", "n_train", "n_val", "last_step", "final_train_acc", "final_val_acc"]
    rcols = ["run", "seed", "size", "last_step", "start_val_acc", "final_train_acc", "final_val_acc",
             "min_val_acc", "metrics"]
    return pd.DataFrame(parents, columns=pcols), pd.DataFrame(runs, columns=rcols)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """The rows of Fig. 7's claims, recomputed from the runs: the parents grokked, every reduced-set
    run keeps training accuracy 1, the smallest size ungroks to near-random test accuracy, and the size
    at which the median final test accuracy passes 0.7 (App. A.2: around 800 to 1,000)."""
    import pandas as pd

    parents, runs = _table(sweep_dir)
    rows: list[Row] = []
    if len(parents):
        worst = float(parents["final_val_acc"].min())
        rows.append(Row("parents: test accuracy before the reduced-set training (every parent)",
                        "1 ('test accuracy starts at 1 for all runs')", FIG7,
                        f"min {worst:.3f} over {len(parents)} parent(s) ({int(parents['n_train'].iloc[0]):,} "
                        f"training pairs)", f">= {STRONG:g}", "agrees" if worst >= STRONG else "differs"))
    by_size = (runs.groupby("size")["final_val_acc"].median() if len(runs)
               else pd.Series(dtype=float))
    if len(runs):
        worst_train = float(runs["final_train_acc"].min())
        rows.append(Row("reduced-set runs: final training accuracy (every run)",
                        "1 ('train accuracy remains at 1')", FIG7,
                        f"min {worst_train:.3f} over {len(runs)} runs", f">= {TRAIN_ONE:g}",
                        "agrees" if worst_train >= TRAIN_ONE else "differs"))
        small = int(by_size.index.min())
        acc_small = float(by_size.loc[small])
        rows.append(Row(f"smallest reduced set ({small:,} pairs): median final test accuracy",
                        f"poor, near random ('ungroks to poor test accuracy'; sizes from {AUTHORS_SIZES[0]} "
                        f"of {FULL:,})", f"{FIG7}; {SEC4}",
                        f"{acc_small:.3f} (runs: "
                        + ", ".join(f"{v:.3f}" for v in runs.loc[runs['size'] == small, 'final_val_acc'])
                        + ")", f"< {POOR:g}", "agrees" if acc_small < POOR else "differs"))
        large = int(by_size.index.max())
        acc_large = float(by_size.loc[large])
        rows.append(Row(f"sharp transition: median final test accuracy from the smallest to the largest set "
                        f"({small:,} to {large:,} pairs)",
                        "from near random to very strong ('a sharp transition from very strong to near-random "
                        "test accuracy')", SEC4, f"{acc_small:.3f} to {acc_large:.3f}",
                        f"below {POOR:g} at the smallest, at least {MIDDLING_ACC:g} at the largest",
                        "agrees" if acc_small < POOR and acc_large >= MIDDLING_ACC else "differs"))
        cross, below, above = dcrit.ungrokking_transition(by_size.index.to_numpy(), by_size.to_numpy(),
                                                          MIDDLING_ACC)
        lo, hi = AUTHORS_MIDDLING
        placed = not math.isnan(cross) and above <= dcrit.BRACKET * below
        ok = placed and lo / FACTOR <= cross <= hi * FACTOR
        if math.isnan(cross):
            text = "never crossed between the sizes trained"
        elif not placed:
            text = f"between {below:,.0f} and {above:,.0f} (sizes more than {dcrit.BRACKET:g}x apart: not placed)"
        else:
            text = f"{cross:,.0f}"
        rows.append(Row(f"dataset size at which the median final test accuracy passes {MIDDLING_ACC:g}",
                        f"around {lo:,}-{hi:,} ('test accuracy of ~0.7 with a dataset size of around "
                        f"800-1000')", A2,
                        text
                        + " (medians: " + ", ".join(f"{int(s):,}: {v:.3f}" for s, v in by_size.items()) + ")",
                        f"within a factor {FACTOR:g} of {lo:,}-{hi:,}, between sizes at most {dcrit.BRACKET:g}x apart",
                        "agrees" if ok else "differs"))
    est = dcrit.stage_estimate(Path(sweep_dir).parent / DCRIT_STAGE)  # D_crit in this setting (a further stage)
    rows.append(dcrit.ungrokking_row(by_size, est))
    table = runs.drop(columns=["metrics"]).reset_index(drop=True)
    curves = {str(r["run"]): (int(r["size"]), r["metrics"]) for _, r in runs.iterrows()}
    return Analysis(tuple(rows), table, {"scale": scale, "curves": curves, "by_size": by_size,
                                         "parents": parents, "dcrit": est})


def draw(analysis: Analysis) -> "Figure":
    """Like Fig. 7: test accuracy over the reduced-set training, one line per run coloured by its
    dataset size (left), and the final test accuracy against the dataset size (right, log axis), with
    the authors' size range and their ~0.7 at 800-1,000 marked."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    curves: dict[str, tuple[int, "pd.DataFrame"]] = analysis.extra["curves"]
    sizes = sorted({s for s, _ in curves.values()})
    cmap = plt.get_cmap("viridis")
    for name, (size, m) in sorted(curves.items(), key=lambda kv: kv[1][0]):
        colour = cmap(sizes.index(size) / max(1, len(sizes) - 1))
        ax.plot(m["step"], m["val_acc"], color=colour, lw=1.2, alpha=0.8)
    for i, size in enumerate(sizes):
        ax.plot([], [], color=cmap(i / max(1, len(sizes) - 1)), label=f"{size:,} pairs")
    ax.set_xlabel("step of the reduced-set training")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, frameon=False, title="dataset size", title_fontsize=7)
    ax.set_title("test accuracy while training on the reduced set", fontsize=10)
    by_size = analysis.extra["by_size"]
    finals = [(s, float(m["val_acc"].iloc[-1])) for s, m in curves.values()]
    if finals:
        ax2.plot([f[0] for f in finals], [f[1] for f in finals], "o", color="tab:blue", alpha=0.5,
                 label="probe, each run")
    if len(by_size):
        ax2.plot(by_size.index, by_size.values, "-", color="tab:blue", lw=1.5, label="probe, median")
    ax2.axvspan(AUTHORS_SIZES[0], AUTHORS_SIZES[-1], color="0.9", label="authors' sizes (Fig. 7)")
    ax2.plot([AUTHORS_MIDDLING[0], AUTHORS_MIDDLING[1]], [MIDDLING_ACC, MIDDLING_ACC], "-", color="tab:red",
             lw=3, label="authors: ~0.7 at 800-1,000 (App. A.2)")
    ax2.set_xscale("log")
    ax2.set_xlabel("dataset size (training pairs)")
    ax2.set_ylabel("final test accuracy")
    ax2.set_ylim(-0.03, 1.03)
    ax2.legend(fontsize=7, frameon=False)
    ax2.set_title("final test accuracy against dataset size", fontsize=10)
    dcrit.ungrokking_against_dcrit(ax3, [f[0] for f in finals], [f[1] for f in finals], analysis.extra.get("dcrit"),
                                   by_size)
    fig.suptitle(f"Varma et al. 2023, ungrokking ({analysis.extra['scale']} scale)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="varma-ungrokking",
    paper=TITLE,
    figure="ungrokking: Sec. 4 and 5, App. A.2 Fig. 7 (final test accuracy of grokked networks trained "
           "further on reduced datasets, against the dataset size)",
    artefact=Artefact(REPO, VERSION, "Sec. 4, Sec. 5, App. A, App. A.2 (Fig. 7 caption)",
                      "no code or numbers released: the paper's text (7 sizes in [390, 1494] x 10 seeds from "
                      "grokked networks; small sizes ungrok to poor test accuracy with training accuracy 1; "
                      "test accuracy ~0.7 at 800-1,000 pairs)"),
    trains="grokked networks (stage sweep), then each trained further on a reduced subset of its training "
           "pairs (stage ungrok, started from the first stage's last checkpoints)",
    setting=SETTING,
    scales={
        "quick": Scale("quick", QUICK_GROK, "about 32 s of CPU (--jobs 1): 15 s for the two stages, 17 s for the "
                       "D_crit stage",
                       "Kitouni's MLP (addition mod 53, weight decay 5) comprehends in 300 steps; trained 300 "
                       "steps more on 84 of its 1,685 pairs it ungroks to near-random test accuracy with "
                       "training accuracy 1, while the control on all 1,685 keeps test accuracy 1",
                       stages=(Stage(STAGE, QUICK_UNGROK), dcrit.dcrit_stage(QUICK_DCRIT, [84, 250, 750, 1685],
                                                                             [1685], [0, 1], DCRIT_STAGE))),
        "paper": Scale("paper", PAPER_GROK, "unmeasured",
                       "the authors' transformer on addition mod 113: 3 parents on 90% of the pairs, then Fig. "
                       "7's 7 sizes from each for 20,000 steps; about 6 h with --jobs 2 at the measured 46 ms a "
                       "step on 1,000 pairs (one core, the parents about 10 min each at 0.3 s a step)",
                       stages=(Stage(STAGE, PAPER_UNGROK), Stage(DCRIT_STAGE, dcrit.PAPER_SPEC))),
    },
    analyse=analyse,
    draw=draw,
    claims=("a grokked network trained further on a small enough subset of its data ungroks: test accuracy falls "
            "to near random while training accuracy stays at 1",
            "the final test accuracy rises sharply with the dataset size"),
))
