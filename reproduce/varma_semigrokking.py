"""Varma, Shah, Kenton, Kramár, Kumar 2023, "Explaining grokking through circuit efficiency" (arXiv
2309.02390): semi-grokking (Sec. 1, Sec. 4 "Semi-grokking", Sec. 5; docs/reproductions/
varma-semigrokking/README.md). Trained at a dataset size near the critical size D_crit, where the
memorising and the generalising circuit are about equally efficient, a network first memorises and
later generalises, but only to middling test accuracy: "delayed generalisation to partial rather
than perfect test accuracy". The authors call it hard to elicit (it needs the two circuits' efficiencies
finely balanced); the rows report what the runs show, near D_crit and at a control size above it.

The authors released no code and no numbers; the references are the paper's words. The sizes trained
near D_crit come from varma-dcrit's estimate in the same setting (its quick scale: about 270 pairs of
addition mod 23 at parameter norm 28; at the paper scale the ungrokking transition the authors place at
D_crit, App. A.2: 800 to 1,000 pairs of addition mod 113).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction
from probe.reproduce.varma import (A2, ABSTRACT, MODEL, OPTIMIZER, PAPER, REPO, SEC1, SEC5, TASK, TITLE,
                                   VERSION)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

SEC4 = f"{PAPER} Sec. 4 (Semi-grokking)"
#: "middling": the final test accuracy between these (probe's reading of "partial rather than perfect")
MIDDLING = (0.2, 0.9)
FIT = 0.99  # training accuracy counts as fitted from here
DELAY = 10.0  # delayed: generalisation (half the final level) comes at least this many times later than the fit
SETTLED = 0.1  # levelled off: the last quarter's two halves differ by at most this in mean test accuracy
FULL = 0.95  # the control above D_crit generalises fully: final test accuracy at least this
TAIL = 0.1  # the final level: the mean test accuracy over the last tenth of the metric rows

# quick: the varma-dcrit quick setting (a ReLU MLP on addition mod 23, parameter norm held at 28), 230
# pairs (just below its D_crit estimate of about 270) for 20,000 steps, and a control at 480 pairs (well
# above) for 800
QUICK_NEAR, QUICK_CONTROL = 230, 480
QUICK = ("set: {task: add, p: 23, optimizer: adamw, lr: 0.02, weight_decay: 0.0, betas: [0.9, 0.999], "
         "model.kind: mlp, model.d_embed: 32, model.hidden: [64], model.act: relu, constraint.norm: 28.0, "
         "checkpoint.schedule: every, checkpoint.every: 1000000, checkpoint.metrics_every: 100}\n"
         f"zip:\n  n_train: [{QUICK_NEAR}, {QUICK_CONTROL}]\n  steps: [20000, 800]\nseeds: [0]\n")
# paper: the authors' training (the nanda-modadd transformer, AdamW, weight decay 1) on addition mod 113
# at four sizes around the ungrokking transition (App. A.2: 800-1,000 pairs) for 50,000 steps, and a
# control at Nanda et al.'s 30% (3,830 pairs) for 20,000, 3 seeds
PAPER_NEAR = [700, 850, 1000, 1200]
PAPER_CONTROL = 3830
PAPER_SEEDS = [0, 1, 2]
PAPER_SPEC = ("preset: nanda-modadd\nset: {checkpoint.schedule: geometric, checkpoint.count: 30, "
              "checkpoint.metrics_every: 100}\n"
              f"zip:\n  n_train: [{', '.join(map(str, PAPER_NEAR))}, {PAPER_CONTROL}]\n"
              f"  steps: [{', '.join(['50000'] * len(PAPER_NEAR))}, 20000]\n"
              f"seeds: [{', '.join(map(str, PAPER_SEEDS))}]\n")

SETTING = (
    TASK,
    MODEL,
    OPTIMIZER,
    Setting("dataset size", "D ~ D_crit, where C_gen and C_mem are similarly efficient", SEC4,
            f"{', '.join(map(str, PAPER_NEAR))} pairs, around the ungrokking transition the authors place at D_crit "
            "(about 0.7 test accuracy at 800-1,000 pairs)", "the exact sizes of the authors' semi-grokking runs are "
            "not in the text read here"),
    Setting("ungrokking transition", "ungrokking runs reach a test accuracy of ~0.7 with a dataset size of around "
            "800-1000", A2, "used to place the sizes near D_crit"),
    Setting("control", "above D_crit a network groks to full test accuracy", SEC4,
            f"{PAPER_CONTROL} pairs (30% of the pairs, nanda-modadd's fraction) for 20,000 steps"),
    Setting("training length", "not stated in the text read here", SEC5,
            "50,000 steps near D_crit (long enough for a slow, partial transition), 20,000 for the control",
            "probe's choice"),
    Setting("seeds", "not stated in the text read here", SEC5, ", ".join(map(str, PAPER_SEEDS)), "probe's choice"),
)


def _first(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    hit = np.nonzero(values >= level)[0]
    return float(steps[hit[0]]) if len(hit) else math.inf


def curve_summary(steps: np.ndarray, train_acc: np.ndarray, val_acc: np.ndarray) -> dict[str, float]:
    """What the rows read off one run's curves: the step training accuracy reaches :data:`FIT`
    (``fit_step``), the final test level (mean over the last :data:`TAIL` of the rows), the first
    step the test accuracy reaches half that level (``gen_step``), ``delay = gen_step / fit_step``,
    and ``drift``: the mean test accuracy over the last eighth minus that over the eighth before it
    (near 0 when the curve has levelled off)."""
    s = np.asarray(steps, dtype=np.float64)
    tr = np.asarray(train_acc, dtype=np.float64)
    va = np.asarray(val_acc, dtype=np.float64)
    n = len(va)
    tail = max(1, int(round(TAIL * n)))
    final = float(va[-tail:].mean())
    fit = _first(s, tr, FIT)
    gen = _first(s, va, 0.5 * final) if final > 0 else math.inf
    eighth = max(1, n // 8)
    drift = float(va[-eighth:].mean() - va[-2 * eighth:-eighth].mean()) if n >= 2 * eighth + 1 else math.nan
    delay = gen / max(fit, 1.0) if math.isfinite(gen) and math.isfinite(fit) else math.nan
    return {"fit_step": fit, "gen_step": gen, "delay": delay, "final_val_acc": final, "drift": drift,
            "final_train_acc": float(tr[-tail:].mean()), "last_step": float(s[-1])}


def semigroks(row: "pd.Series | dict[str, Any]") -> dict[str, bool]:
    """The three parts of semi-grokking for one run: delayed generalisation, a middling final level,
    levelled off."""
    lo, hi = MIDDLING
    final = float(row["final_val_acc"])
    delayed = bool(final >= lo and not math.isnan(row["delay"]) and row["delay"] >= DELAY)
    middling = bool(lo <= final <= hi)
    settled = bool(not math.isnan(row["drift"]) and abs(row["drift"]) <= SETTLED)
    return {"delayed": delayed, "middling": middling, "settled": settled}


def _table(sweep_dir: str) -> tuple["pd.DataFrame", dict[str, "pd.DataFrame"]]:
    import pandas as pd

    from probe.sweep import load_sweep

    rows, curves = [], {}
    for name, run in load_sweep(sweep_dir).done_runs():
        m = run.metrics
        summary = curve_summary(m["step"].to_numpy(), m["train_acc"].to_numpy(), m["val_acc"].to_numpy())
        rows.append({"run": name, "size": int(run.split.sizes[0]), "seed": int(run.config.seed), **summary})
        curves[name] = m[["step", "train_acc", "val_acc"]].copy()
    cols = ["run", "size", "seed", "fit_step", "gen_step", "delay", "final_val_acc", "drift", "final_train_acc",
            "last_step"]
    table = pd.DataFrame(rows, columns=cols)
    if len(table):
        parts = pd.DataFrame([semigroks(r) for _, r in table.iterrows()], index=table.index)
        table = pd.concat([table, parts], axis=1)
        table["semigroks"] = table["delayed"] & table["middling"] & table["settled"]
    return table, curves


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """The rows, recomputed from the runs: near D_crit (every size but the largest), how many runs
    generalise late, end at a middling test accuracy and level off, and how many do all three; at the
    control size (the largest), full generalisation."""
    table, curves = _table(sweep_dir)
    rows: list[Row] = []
    if len(table):
        control = int(table["size"].max())
        near = table[table["size"] < control]
        ctrl = table[table["size"] == control]
        lo, hi = MIDDLING
        if len(near):
            sizes = ", ".join(str(s) for s in sorted(set(near["size"])))
            n = len(near)
            detail = "; ".join(f"{r['size']}/seed {r['seed']}: fit at {r['fit_step']:,.0f}, half-level at "
                               f"{r['gen_step']:,.0f}, final {r['final_val_acc']:.3f}, drift {r['drift']:+.3f}"
                               for _, r in near.iterrows())
            rows.append(Row(f"near D_crit ({sizes} pairs): delayed generalisation",
                            "generalisation comes late, after the training set is fitted ('delayed generalisation')",
                            ABSTRACT, f"{int(near['delayed'].sum())} of {n} runs ({detail})",
                            f"half the final test accuracy (at least {lo:g}) reached at least {DELAY:g}x later than "
                            f"training accuracy {FIT:g}", "agrees" if near["delayed"].any() else "differs"))
            rows.append(Row("near D_crit: final test accuracy",
                            "middling ('partial rather than perfect test accuracy'; 'only to middling test "
                            "accuracy')", f"{ABSTRACT}; {SEC1}",
                            f"{int(near['middling'].sum())} of {n} runs: "
                            + ", ".join(f"{v:.3f}" for v in near["final_val_acc"]),
                            f"mean over the last tenth between {lo:g} and {hi:g}",
                            "agrees" if near["middling"].any() else "differs"))
            rows.append(Row("near D_crit: the test accuracy levels off",
                            "a phase transition to middling accuracy, not a slow climb to full accuracy", SEC1,
                            f"{int(near['settled'].sum())} of {n} runs; drift over the last quarter "
                            + ", ".join(f"{v:+.3f}" for v in near["drift"]),
                            f"the last quarter's two halves within {SETTLED:g} of each other",
                            "agrees" if near["settled"].any() else "differs"))
            rows.append(Row("near D_crit: semi-grokking (all three)",
                            "demonstrated, though 'quite hard to elicit' (needs the circuits' efficiencies finely "
                            "balanced)", f"{ABSTRACT}; {SEC4}",
                            f"{int(near['semigroks'].sum())} of {n} runs semi-grok",
                            "at least one run", "agrees" if near["semigroks"].any() else "differs"))
        if len(ctrl):
            worst = float(ctrl["final_val_acc"].min())
            rows.append(Row(f"control above D_crit ({control} pairs): final test accuracy",
                            "full generalisation (grokking proper)", SEC4,
                            f"min {worst:.3f} over {len(ctrl)} run(s)", f">= {FULL:g}",
                            "agrees" if worst >= FULL else "differs"))
    return Analysis(tuple(rows), table.reset_index(drop=True), {"scale": scale, "curves": curves,
                                                                "sizes": dict(zip(table["run"], table["size"]))
                                                                if len(table) else {}})


def draw(analysis: Analysis) -> "Figure":
    """Left: training (dashed) and test accuracy against the step for every run, coloured by size, with
    the middling band; right: the final test accuracy against the dataset size."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    curves: dict[str, "pd.DataFrame"] = analysis.extra["curves"]
    sizes: dict[str, int] = analysis.extra["sizes"]
    distinct = sorted(set(sizes.values()))
    cmap = plt.get_cmap("viridis")
    lo, hi = MIDDLING
    ax.axhspan(lo, hi, color="0.93", zorder=0, label=f"middling ({lo:g}-{hi:g})")
    for name, m in curves.items():
        colour = cmap(distinct.index(sizes[name]) / max(1, len(distinct) - 1))
        ax.plot(m["step"], m["val_acc"], color=colour, lw=1.2)
        ax.plot(m["step"], m["train_acc"], color=colour, lw=0.8, ls="--")
    for i, size in enumerate(distinct):
        ax.plot([], [], color=cmap(i / max(1, len(distinct) - 1)), label=f"{size:,} pairs")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (test solid, training dashed)")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("delayed generalisation near D_crit", fontsize=10)
    t = analysis.runs
    if len(t):
        ax2.axhspan(lo, hi, color="0.93", zorder=0)
        ax2.plot(t["size"], t["final_val_acc"], "o", color="tab:blue")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("dataset size (training pairs)")
    ax2.set_ylabel("final test accuracy (mean of the last tenth)")
    ax2.set_title("final test accuracy against dataset size", fontsize=10)
    fig.suptitle(f"Varma et al. 2023, semi-grokking ({analysis.extra['scale']} scale)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="varma-semigrokking",
    paper=TITLE,
    figure="semi-grokking: Sec. 1, Sec. 4 ('Semi-grokking') and Sec. 5 (delayed generalisation to middling test "
           "accuracy at a dataset size near D_crit)",
    artefact=Artefact(REPO, VERSION, "Abstract, Sec. 1, Sec. 4, Sec. 5, App. A, App. A.2",
                      "no code or numbers released: the paper's description (delayed generalisation to partial "
                      "test accuracy at D ~ D_crit) and the ungrokking transition at 800-1,000 pairs that places "
                      "D_crit"),
    trains="networks at dataset sizes near D_crit for long, and a control above it",
    setting=SETTING,
    scales={
        "quick": Scale("quick", QUICK, "about 20 s of CPU (--jobs 1)",
                       "varma-dcrit's quick setting (a ReLU MLP on addition mod 23, parameter norm held at 28): at "
                       "230 pairs, just below its D_crit of about 270, the network fits the training set by step "
                       "100, generalises from about step 5,000 to 9,000 and levels off at 0.65-0.75 test accuracy "
                       "by step 20,000; the control at 480 pairs generalises fully within 800 steps"),
        "paper": Scale("paper", PAPER_SPEC, "unmeasured",
                       "the authors' transformer and training on addition mod 113 at 700-1,200 pairs for 50,000 "
                       "steps and a control at 3,830 for 20,000, 3 seeds (15 runs); about 5 h with --jobs 2 at "
                       "46 ms a step on 1,000 pairs (one core, measured for varma-ungrokking)"),
    },
    analyse=analyse,
    draw=draw,
    claims=("near the critical dataset size a network generalises late and only partially (semi-grokking)",
            "above it the same network generalises fully"),
))
