"""Varma, Shah, Kenton, Kramár, Kumar 2023, "Explaining grokking through circuit efficiency" (arXiv
2309.02390): the efficiency of each circuit against the dataset size and the critical dataset size
D_crit where they cross (Sec. 1, Sec. 4, Sec. 5; docs/reproductions/varma-dcrit/README.md).

The paper predicts that the memorising circuit's efficiency falls as the training set grows while the
generalising circuit's does not, so that there is a crossover size D_crit: below it memorising is the
more efficient, above it generalising. probe measures each circuit on networks that can hold only
that one (memorising: shuffled labels, ``labels=shuffled``; generalising: the task's labels, counted
where validation accuracy shows the network generalised), every network trained with its parameter
norm held at one value ``N0`` (``constraint.norm``), and takes each circuit's efficiency to be the
logit scale it reaches at that norm (:mod:`probe.analyses.circuits`). D_crit is each seed's crossing of
the two curves (linear in log size), summarised by the median and the range over seeds.

The authors released no code and no numbers, and their text as read here gives no D_crit as a number
for modular addition. The rows are the paper's qualitative predictions, each with its section, and at
the paper scale the estimate against the dataset sizes the authors chose around the ungrokking
transition, which they place at D_crit (Fig. 7: 390 to 1,494 pairs; App. A.2: test accuracy about 0.7
at 800 to 1,000 pairs).

The module also holds what relates varma-ungrokking to D_crit: :func:`dcrit_stage` (a sweep spec of
memorising and generalising networks in a given setting, to train as a further stage),
:func:`ungrokking_row` and :func:`ungrokking_against_dcrit` (a row and a figure panel setting the
ungrokking transition beside the estimate).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction
from probe.reproduce.varma import (APP_A, FIG7, MODEL, OPTIMIZER_TEXT, PAPER, REPO, SEC1, SEC5, TASK, TITLE,
                                   VERSION)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from probe.analyses.circuits import CriticalSize

SEC4 = f"{PAPER} Sec. 4"
FIG3 = f"{PAPER} Sec. 5, Fig. 3 (logits of networks trained on random labels against parameter norm)"
#: Fig. 7's dataset sizes (7 geometric sizes in [390, 1494]), chosen around the ungrokking transition,
#: which Sec. 5 places at D_crit ("ungrokking shows a phase transition around D_crit")
AUTHORS_RANGE = (390, 1494)
AUTHORS_P = 113
GENERALISED = 0.9  # a network on the task's labels counts as generalising from this final validation accuracy
FLAT = 1.25  # the generalising efficiency counts as independent of size within this factor (largest / smallest)


def _list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def dcrit_spec(base: str, mem_sizes: Sequence[int], gen_sizes: Sequence[int], seeds: Sequence[int]) -> str:
    """A sweep spec of memorising (``labels=shuffled``) networks at ``mem_sizes`` and generalising
    (the task's labels) networks at ``gen_sizes``, each at every seed. ``base`` is the spec's opening
    (``preset: NAME`` and/or ``set: {...}``); it must hold every run at one ``constraint.norm``."""
    labels = ["shuffled"] * len(mem_sizes) + ["task"] * len(gen_sizes)
    return (f"{base.rstrip()}\nzip:\n  labels: {_list(labels)}\n  n_train: {_list([*mem_sizes, *gen_sizes])}\n"
            f"seeds: {_list(seeds)}\n")


def dcrit_stage(base: str, mem_sizes: Sequence[int], gen_sizes: Sequence[int], seeds: Sequence[int],
                name: str = "dcrit") -> Any:
    """The same spec as a further stage of another reproduction (``OUT/NAME``): for varma-ungrokking,
    memorising and generalising networks in its own setting, whose D_crit :func:`ungrokking_row` and
    :func:`ungrokking_against_dcrit` set beside the ungrokking transition."""
    from probe.reproduce.registry import Stage

    return Stage(name, dcrit_spec(base, mem_sizes, gen_sizes, seeds))


# quick: a ReLU MLP (Kitouni's concatenating MLP, narrower) on addition mod 23 (529 pairs), every run
# with its parameter norm held at 28 (about its initial norm, and the norm weight decay 1 holds it at)
# for 800 full-batch AdamW steps; memorising networks at 4 sizes, generalising ones at the 2 sizes where
# they generalise within the budget, 2 seeds
QUICK_NORM = 28.0
QUICK_MEM = [120, 240, 360, 480]
QUICK_GEN = [400, 480]
QUICK_SEEDS = [0, 1]
QUICK_BASE = ("set: {task: add, p: 23, steps: 800, optimizer: adamw, lr: 0.02, weight_decay: 0.0, betas: [0.9, 0.999], "
              "model.kind: mlp, model.d_embed: 32, model.hidden: [64], model.act: relu, "
              f"constraint.norm: {QUICK_NORM}, checkpoint.schedule: every, checkpoint.every: 800, "
              "checkpoint.metrics_every: 100}")
QUICK = dcrit_spec(QUICK_BASE, QUICK_MEM, QUICK_GEN, QUICK_SEEDS)
# paper: the authors' transformer on addition mod 113 at a norm of 37 (its initial norm is 42.2; probe's
# shipped grokked transformer, data/runs/modadd-p53, ends at 0.87 of its initial norm under weight decay
# 1), memorising networks at 7 sizes from 300 to 3,000, generalising ones at 4 from 1,400 to 4,400
PAPER_NORM = 37.0
PAPER_MEM = [300, 440, 650, 950, 1400, 2050, 3000]
PAPER_GEN = [1400, 2050, 3000, 4400]
PAPER_SEEDS = [0, 1, 2]
PAPER_BASE = ("preset: nanda-modadd\nset: {weight_decay: 0.0, steps: 10000, "
              f"constraint.norm: {PAPER_NORM}, checkpoint.schedule: geometric, checkpoint.count: 10, "
              "checkpoint.metrics_every: 100}")
PAPER_SPEC = dcrit_spec(PAPER_BASE, PAPER_MEM, PAPER_GEN, PAPER_SEEDS)

SETTING = (
    TASK,
    MODEL,
    Setting("memorising networks", "networks trained on random labels, which only a memorising circuit can fit "
            "(the logits of Fig. 3)", FIG3, "labels=shuffled: the task's labels permuted once (label_seed 0, the "
            "class counts kept), trained at each size",
            "a permutation of the true labels rather than labels drawn anew: the same class counts"),
    Setting("generalising networks", "not described in the text read here", SEC5,
            f"the task's labels at each size; a run counts when its final validation accuracy is at least "
            f"{GENERALISED:g} (below that it is reported as neither circuit)", "probe's choice"),
    Setting("efficiency", "larger logits with the same parameter norm ('circuits that require less parameter norm "
            "to produce a given logit value')", SEC1,
            f"the logit scale (correct-class logit minus the mean of the others, mean over the training pairs) of "
            f"a network trained with its parameter norm held at {PAPER_NORM:g} (constraint.norm)",
            "the equation the paper measures with could not be read here; holding the norm fixed measures the "
            "logits at one norm directly, where a weight-decay run would settle at a different norm per size"),
    Setting("optimizer", OPTIMIZER_TEXT, APP_A,
            "adamw, lr 0.001, betas (0.9, 0.98), weight decay 0 with the norm held fixed, full batch, 10,000 steps",
            "the norm constraint replaces weight decay so that every network is compared at one norm"),
    Setting("sizes and seeds", "not given for the efficiency measurements in the text read here", SEC5,
            f"memorising at {', '.join(map(str, PAPER_MEM))} pairs, generalising at "
            f"{', '.join(map(str, PAPER_GEN))}, seeds {', '.join(map(str, PAPER_SEEDS))} (33 runs)",
            "probe's choice: geometric sizes around Fig. 7's range"),
    Setting("D_crit", "the crossover size of the two efficiencies; no number given for modular addition in the text "
            "read here, the ungrokking transition placed at it", SEC4,
            "each seed's crossing of the memorising curve with the generalising level (linear in log size; the "
            "level held constant outside the sizes it was measured at), median and range over seeds"),
)


def _estimate(table: "pd.DataFrame", curves: "pd.DataFrame") -> "CriticalSize | None":
    from probe.analyses.circuits import critical_size
    from probe.errors import ProbeError

    mem = curves.pivot(index="seed", columns="size", values="memorising")
    gen = curves.pivot(index="seed", columns="size", values="generalising").reindex_like(mem)
    try:
        return critical_size(mem.columns.to_numpy(), mem.to_numpy(), gen.to_numpy(), tuple(mem.index))
    except ProbeError:
        return None


def _tables(sweep_dir: str) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """The per-run table and the per-(size, seed) efficiency curves of a sweep (empty when no run is
    done), without the checks the command line applies (a reproduction reports what it has)."""
    import pandas as pd

    from probe.analyses.theory import circuit_curves, circuit_runs

    runs = circuit_runs(sweep_dir, GENERALISED)
    if not len(runs):
        return runs, pd.DataFrame(columns=["size", "seed", "memorising", "generalising"])
    return runs, circuit_curves(runs)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """The rows of the paper's predictions, recomputed from the runs: the memorising efficiency falls
    with the dataset size, the generalising one does not, memorising is the more efficient at the
    smallest size, the curves cross (D_crit, with its range over seeds), and for runs on addition mod
    113 the estimate against Fig. 7's sizes."""
    from probe.analyses.circuits import falls, spread

    runs, curves = _tables(sweep_dir)
    rows: list[Row] = []
    by_size = curves.groupby("size")[["memorising", "generalising"]].median() if len(curves) else None
    if by_size is not None:
        mem = by_size["memorising"].dropna()
        gen = by_size["generalising"].dropna()
        norm = float(runs["norm"].median())
        rows.append(Row("memorising circuit: efficiency (logit scale at a fixed norm) against dataset size",
                        "falls as the dataset grows ('memorising circuits become more inefficient with larger "
                        "training datasets')", f"{SEC1}; {SEC4}",
                        _curve(mem) + f" at norm {norm:.3g}", "strictly decreasing median over seeds",
                        "agrees" if falls(mem.to_numpy()) else "differs"))
        ratio = spread(gen.to_numpy())
        rows.append(Row("generalising circuit: efficiency against dataset size",
                        "does not depend on the dataset size ('generalising circuits do not')", f"{SEC1}; {SEC4}",
                        (_curve(gen) + (f"; largest / smallest {ratio:.3f}" if not math.isnan(ratio) else
                                        "; measured at fewer than two sizes")),
                        f"largest / smallest at most {FLAT:g}, over at least two sizes",
                        "agrees" if not math.isnan(ratio) and ratio <= FLAT else "differs"))
        if len(mem) and len(gen):
            small = float(mem.index.min())
            m0 = float(mem.iloc[0])
            g0 = float(gen.loc[gen.index.min()])
            rows.append(Row(f"at the smallest size ({small:,.0f} pairs): memorising against generalising efficiency",
                            "memorising the more efficient below D_crit (C_gen 'becomes more efficient' only past "
                            "the crossover)", SEC1, f"{m0:.3g} against {g0:.3g} (the generalising level held "
                            f"constant below {gen.index.min():,.0f})", "memorising larger",
                            "agrees" if m0 > g0 else "differs"))
    est = _estimate(runs, curves) if len(curves) else None
    if est is not None:
        every = est.crossed == len(est.seeds)
        rows.append(Row("critical dataset size D_crit (the curves' crossing)",
                        "a crossover size exists ('there exists a crossover point at which C_gen becomes more "
                        "efficient than C_mem, which we call the critical dataset size')", f"{SEC1}; {SEC4}",
                        est.describe(), "every seed crosses inside the sizes trained",
                        "agrees" if every else "differs"))
        p = _modulus(sweep_dir)
        if p == AUTHORS_P:
            lo, hi = AUTHORS_RANGE
            ok = not math.isnan(est.estimate) and lo <= est.estimate <= hi
            rows.append(Row("D_crit against the sizes of the authors' ungrokking sweep",
                            f"the ungrokking transition, at D_crit (Sec. 5), inside Fig. 7's {lo:,}-{hi:,} pairs "
                            "(App. A.2: test accuracy ~0.7 at 800-1,000)", f"{FIG7}; {SEC5}", est.describe(),
                            f"median inside {lo:,}-{hi:,}", "agrees" if ok else "differs"))
    elif len(curves):
        rows.append(Row("critical dataset size D_crit (the curves' crossing)",
                        "a crossover size exists", f"{SEC1}; {SEC4}",
                        "not estimated: memorising networks at fewer than 3 sizes or both circuits for fewer than "
                        "2 seeds", "every seed crosses inside the sizes trained", "differs"))
    return Analysis(tuple(rows), runs.reset_index(drop=True),
                    {"scale": scale, "curves": curves, "estimate": est,
                     "norm": float(runs["norm"].median()) if len(runs) else math.nan})


def _modulus(sweep_dir: str) -> int | None:
    from probe.sweep import load_sweep

    sweep = load_sweep(sweep_dir)
    ps = {r["config"].get("p") for r in sweep.index["runs"]}
    return ps.pop() if len(ps) == 1 else None


def _curve(series: "pd.Series") -> str:
    return ", ".join(f"{int(s):,}: {v:.3g}" for s, v in series.items()) if len(series) else "none measured"


def draw_efficiency(ax: "Axes", curves: "pd.DataFrame", est: "CriticalSize | None", norm: float) -> None:
    """Both circuits' efficiency against the dataset size (each seed's points, the median lines; the
    generalising level held constant below the sizes it was measured at, dashed) and D_crit with its
    range over seeds."""
    colours = {"memorising": "tab:red", "generalising": "tab:blue"}
    for col, colour in colours.items():
        pts = curves.dropna(subset=[col])
        if not len(pts):
            continue
        ax.plot(pts["size"], pts[col], "o", color=colour, alpha=0.45, ms=4)
        med = pts.groupby("size")[col].median()
        ax.plot(med.index, med.values, "-", color=colour, lw=1.6, label=f"{col} networks (median)")
        if col == "generalising" and len(curves):
            lo = float(curves["size"].min())
            if lo < med.index.min():
                ax.plot([lo, med.index.min()], [med.iloc[0], med.iloc[0]], "--", color=colour, lw=1.0,
                        label="generalising level held constant")
    if est is not None and not math.isnan(est.estimate):
        ax.axvspan(est.low, est.high, color="0.85", zorder=0, label=f"D_crit range over {len(est.seeds)} seeds")
        ax.axvline(est.estimate, color="k", lw=1.2, label=f"D_crit ~ {est.estimate:,.0f}")
    ax.set_xscale("log")
    ax.set_xlabel("dataset size (training pairs)")
    ax.set_ylabel(f"logit scale at parameter norm {norm:.3g}")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("efficiency of each circuit against dataset size", fontsize=10)


def draw(analysis: Analysis) -> "Figure":
    """Left: each circuit's efficiency against the dataset size with D_crit; right: the final
    validation accuracy of the networks on the task's labels against the size (which generalised)."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    curves = analysis.extra["curves"]
    est = analysis.extra["estimate"]
    draw_efficiency(ax, curves, est, analysis.extra["norm"])
    runs = analysis.runs
    for labels, colour, name in (("task", "tab:blue", "task's labels"), ("shuffled", "tab:red", "shuffled labels")):
        sel = runs[runs["labels"] == labels] if len(runs) else runs
        if len(sel):
            ax2.plot(sel["size"], sel["val_acc"], "o", color=colour, alpha=0.7, label=name)
    ax2.axhline(GENERALISED, color="0.5", lw=0.8, ls=":", label=f"generalising from {GENERALISED:g}")
    if est is not None and not math.isnan(est.estimate):
        ax2.axvspan(est.low, est.high, color="0.85", zorder=0)
        ax2.axvline(est.estimate, color="k", lw=1.2, label="D_crit")
    ax2.set_xscale("log")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("dataset size (training pairs)")
    ax2.set_ylabel("final validation accuracy")
    ax2.legend(fontsize=7, frameon=False)
    ax2.set_title("which networks generalised", fontsize=10)
    fig.suptitle(f"Varma et al. 2023, circuit efficiency and D_crit ({analysis.extra['scale']} scale)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# ungrokking beside D_crit (for varma-ungrokking: its reduced-set results and a D_crit stage)
# --------------------------------------------------------------------------------------------------
UNGROK_LEVEL = 0.5  # the ungrokking transition: where the median final test accuracy passes this
NEAR = 1.5  # the transition counts as at D_crit within this factor of the D_crit range
BRACKET = 2.0  # a transition is placed only between trained sizes at most this factor apart


def stage_estimate(stage_dir: str | Path) -> "CriticalSize | None":
    """D_crit from a finished D_crit stage (:func:`dcrit_stage`), None when it has too few runs."""
    if not Path(stage_dir).is_dir():
        return None
    runs, curves = _tables(str(stage_dir))
    return _estimate(runs, curves) if len(curves) else None


def ungrokking_transition(sizes: np.ndarray, final_acc: np.ndarray,
                          level: float = UNGROK_LEVEL) -> tuple[float, float, float]:
    """``(size, below, above)``: the size at which the median final test accuracy of the reduced-set
    runs first rises through ``level``, linear in log size between the two trained sizes around it
    (``below``, ``above``); all NaN when it never does."""
    s = np.asarray(sizes, dtype=np.float64)
    a = np.asarray(final_acc, dtype=np.float64)
    order = np.argsort(s)
    s, a = s[order], a[order]
    for i in range(1, len(s)):
        if a[i - 1] < level <= a[i]:
            t = (level - a[i - 1]) / (a[i] - a[i - 1])
            return float(np.exp(np.log(s[i - 1]) + t * (np.log(s[i]) - np.log(s[i - 1])))), s[i - 1], s[i]
    return math.nan, math.nan, math.nan


def ungrokking_row(by_size: "pd.Series", est: "CriticalSize | None") -> Row:
    """The row relating ungrokking to D_crit (``by_size``: size -> median final test accuracy of the
    reduced-set runs). Where the trained sizes around the transition (accuracy passing 0.5) are at most
    :data:`BRACKET` apart, it agrees when the transition lies within a factor :data:`NEAR` of the
    D_crit range; where they are further apart, the transition is only bracketed, and it agrees when
    the whole D_crit range lies inside the bracket (ungrokked below, kept above)."""
    cross, below, above = (ungrokking_transition(by_size.index.to_numpy(), by_size.to_numpy()) if len(by_size)
                           else (math.nan, math.nan, math.nan))
    paper = ("ungrokking below D_crit: 'a sharp transition from very strong to near-random test accuracy (around "
             "D_crit)'")
    source = f"{SEC4} (Ungrokking); {SEC5}"
    tolerance = (f"within a factor {NEAR:g} of the D_crit range (sizes around the transition at most {BRACKET:g}x "
                 "apart), else the D_crit range inside the bracket")
    if math.isnan(cross):
        where = "the median final test accuracy never passes 0.5 between the sizes trained"
    elif above > BRACKET * below:
        where = f"transition between {below:,.0f} and {above:,.0f} (sizes more than {BRACKET:g}x apart: not placed)"
    else:
        where = f"transition (median final test accuracy passes {UNGROK_LEVEL:g}) at {cross:,.0f}"
    if est is None or math.isnan(est.estimate):
        return Row("ungrokking transition against D_crit", paper, source, f"{where}; D_crit not estimated",
                   tolerance, "differs")
    if math.isnan(cross):
        ok = False
    elif above > BRACKET * below:
        ok = below <= est.low and est.high <= above
    else:
        ok = est.low / NEAR <= cross <= est.high * NEAR
    return Row("ungrokking transition against D_crit", paper, source, f"{where}; D_crit {est.describe()}",
               tolerance, "agrees" if ok else "differs")


def ungrokking_against_dcrit(ax: "Axes", sizes: Sequence[float], final_acc: Sequence[float],
                             est: "CriticalSize | None", by_size: "pd.Series | None" = None) -> None:
    """A panel: the reduced-set runs' final test accuracy against their dataset size (each run, and
    the median per size when given), with D_crit and its range over seeds: ungrokking below D_crit,
    test accuracy kept above it."""
    ax.plot(list(sizes), list(final_acc), "o", color="tab:blue", alpha=0.5, label="reduced-set runs")
    if by_size is not None and len(by_size):
        ax.plot(by_size.index, by_size.values, "-", color="tab:blue", lw=1.5, label="median")
    if est is not None and not math.isnan(est.estimate):
        ax.axvspan(est.low, est.high, color="0.85", zorder=0, label=f"D_crit range ({len(est.seeds)} seeds)")
        ax.axvline(est.estimate, color="k", lw=1.2, label=f"D_crit ~ {est.estimate:,.0f}")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("dataset size of the further training (pairs)")
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("ungrokking against the estimated D_crit", fontsize=10)


reproduction(Reproduction(
    name="varma-dcrit",
    paper=TITLE,
    figure="the efficiency of the memorising and the generalising circuit against the dataset size and the "
           "critical dataset size D_crit where they cross (Sec. 1, Sec. 4 predictions; Sec. 5 measurements)",
    artefact=Artefact(REPO, VERSION, "Sec. 1, Sec. 4, Sec. 5, App. A, App. A.2 (Fig. 7 caption)",
                      "no code or numbers released: the paper's predictions (C_mem's efficiency falls with the "
                      "dataset size, C_gen's does not, they cross at D_crit) and Fig. 7's ungrokking sizes "
                      "(390-1,494 pairs around D_crit)"),
    trains="memorising networks (shuffled labels) and generalising networks (the task's labels) at several dataset "
           "sizes and seeds, every one with its parameter norm held at one value",
    setting=SETTING,
    scales={
        "quick": Scale("quick", QUICK, "11 s of CPU (--jobs 1), 15 s with the analysis",
                       "a ReLU MLP (embeddings 32, hidden 64) on addition mod 23 at parameter norm 28, 800 steps: "
                       "memorising networks at 120-480 pairs, generalising ones at 400 and 480, 2 seeds; the "
                       "memorising logit scale falls from about 14 to 7, the generalising one stays at 10-11, and "
                       "they cross near 270 pairs"),
        "paper": Scale("paper", PAPER_SPEC, "unmeasured",
                       "the authors' transformer on addition mod 113 at parameter norm 37, 10,000 steps: memorising "
                       "networks at 7 sizes from 300 to 3,000 pairs, generalising ones at 1,400-4,400, 3 seeds (33 "
                       "runs); about 3 h with --jobs 2 at 46 ms a step on 1,000 pairs (one core, measured for "
                       "varma-ungrokking), longer for the larger sets"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the memorising circuit's efficiency falls as the dataset grows, the generalising circuit's does not",
            "the two cross at a critical dataset size D_crit"),
))
