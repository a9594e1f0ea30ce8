"""Liu et al. 2022 (grokking-squared), App. G Fig. 13: the toy model's phase diagrams (addition, p = 10;
left regression, right classification) over the decoder's learning rate and the batch size
(docs/reproductions/liu-fig13/README.md).

The authors released no grid for this figure: the phase-diagram files of github.com/ejmichaud/
grokking-squared (commit 0229df9, ``phase_diagram_plot/*.h5``) hold Fig. 6(a) to (d) only, and the
notebooks that trained the addition diagrams train full batch. Their one minibatch loop is the S3
notebook's (``toy/Figure5d_permutation.ipynb``: each step ``np.random.choice(train_num, batch_size,
replace=False)``), which probe's ``batching: random`` matches. The reference is therefore App. G's text:
"the grokking region appears at the top left of the phase diagram (small decoder learning rate and
small batch size)", "large batch size (with small learning rate) leads to comprehension", "smaller batch
size seems harmful" (and the caption: "Small decoder learning rate and large batch size (bottom left)
lead to comprehension"). The rows recompute these claims from probe's grid, per panel, at the
sweep's smallest decoder learning rates (its lowest quarter).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO, COMMIT = lp.REPO, lp.COMMIT
KEY = "batch_size"
SOURCE = f"{lp.PAPER} App. G, Fig. 13 and its caption"
BATCH_NB = "toy/Figure5d_permutation.ipynb"
FULL = 45  # the training set: App. G's default "full batch size 45"

#: probe's paper grid of batch sizes (the figure's own values are not stated): 5 to 45 in steps of 5
PAPER_BATCHES: tuple[int, ...] = tuple(range(5, FULL + 1, 5))
QUICK_LRS = [lp.APPG_LRS[0]]  # 1e-4
QUICK_BATCHES = [5, FULL]
QUICK_STEPS = 4000

AXIS = Setting("batch size (y axis)", "swept as the y axis, small at the top, default full batch 45 (App. G); "
               "the authors' minibatch loop (S3 notebook): each step np.random.choice(train_num, batch_size, "
               "replace=False)", BATCH_NB,
               "batch_size 5, 10, ..., 45 with batching random (batch_size distinct training rows a step; "
               "quick: 5 and 45 at decoder lr 1e-4)",
               "the figure's own values are not stated; the addition notebooks have no minibatch loop, so the "
               "sampling is the S3 notebook's")


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per panel, at the sweep's smallest decoder lrs: the phase with the full batch (the claim:
    comprehension), the phase with the smallest batch (the claim: grokking), and whether generalisation
    comes later with the smallest batch than with the full one (the claim: a small batch is harmful);
    recomputed from the runs."""
    runs, budget = lp.appg_runs(sweep_dir, KEY)
    rows: list[Row] = []
    for task in lp.OBJECTIVES.values():
        part = runs[runs["task"] == task]
        if not len(part):
            continue
        left = part[part["lr"].isin(lp.small_lrs(part))]
        b_min, b_max = left["y"].min(), left["y"].max()
        bottom, top = left[left["y"] == b_max], left[left["y"] == b_min]
        rows.append(lp.share_row(f"{task}: phase at batch size {b_max:g} (bottom left), decoder lr <= "
                                 f"{left['lr'].max():.3g}", "comprehension (\"Small decoder learning rate and "
                                 "large batch size (bottom left) lead to comprehension\")", SOURCE, bottom,
                                 "comprehension", budget))
        rows.append(lp.share_row(f"{task}: phase at batch size {b_min:g} (top left), decoder lr <= "
                                 f"{left['lr'].max():.3g}", "grokking (\"the grokking region appears at the top "
                                 "left of the phase diagram (small decoder learning rate and small batch size)\")",
                                 SOURCE, top, "grokking", budget))
        full = {float(r["lr"]): float(r["val_step"]) for _, r in bottom.iterrows()}
        pairs = [(float(r["lr"]), float(r["val_step"]), full.get(float(r["lr"]), math.nan)) for _, r in top.iterrows()]
        later = [small > big or (math.isinf(small) and not math.isinf(big)) for _, small, big in pairs
                 if not math.isnan(small) and not math.isnan(big)]
        k, n = sum(later), len(later)
        rows.append(Row(f"{task}: validation accuracy passes 0.9 later at batch size {b_min:g} than at {b_max:g}, "
                        f"decoder lr <= {left['lr'].max():.3g}", "later (\"smaller batch size seems harmful\")",
                        f"{lp.PAPER} App. G (batch size)",
                        (f"{k}/{n} = {k / n:.2f} (" if n else "no pairs (")
                        + "; ".join(f"lr {lr:.3g}: {lp.fmt_steps(s)} against {lp.fmt_steps(b)}" for lr, s, b in pairs)
                        + f"; budget {budget:,})", f"share of later >= {lp.AGREE_SHARE:g}",
                        "agrees" if n and k / n >= lp.AGREE_SHARE else "differs"))
    return Analysis(tuple(rows), runs, {"budget": budget, "scale": scale})


def draw(analysis: Analysis) -> "Figure":
    return lp.draw_appg(analysis, "batch size", "Liu et al. App. G Fig. 13: toy model, addition p = 10, decoder "
                        "lr x batch size (the authors released no grid)", lambda v: f"{v:g}")


reproduction(Reproduction(
    name="liu-fig13",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="App. G Fig. 13: phase diagrams of the toy model (addition; regression and classification) over "
           "decoder learning rate x batch size",
    artefact=Artefact(REPO, COMMIT, f"{lp.REGRESSION_NB}, {lp.CLASSIFICATION_NB}, {BATCH_NB}",
                      "the training code of the toy phase diagrams (full batch) and the authors' minibatch loop "
                      "(S3); no released grid for Fig. 13, so the references are the paper's text (App. G: "
                      "grokking at small decoder lr and small batch, comprehension at small lr and large batch)"),
    trains="the toy model on p = 10 addition (liu-toy-add), regression and classification, one run per "
           "(objective, decoder lr, batch size) cell",
    setting=lp.appg_setting(AXIS, QUICK_STEPS),
    scales={
        "quick": Scale("quick", lp.appg_spec(KEY, QUICK_BATCHES, QUICK_LRS, QUICK_STEPS, 10, 20, integer=True),
                       "14 s (--jobs 1)",
                       "four cells, regression and classification x decoder lr 1e-4 x batch size {5, 45}, 4,000 "
                       "steps: with the full batch both comprehend within 2,000 steps; with batch size 5 neither "
                       "has generalised by 4,000 steps (the grokking the paper reports there needs the paper "
                       "budget)"),
        "paper": Scale("paper", lp.appg_spec(KEY, PAPER_BATCHES, lp.APPG_LRS, lp.APPG_BUDGET, 20, 60, integer=True),
                       "2.1 core-hours one by one for 75 cells, then 52 min 29 s (--jobs 2, beside other work) "
                       "for the other 123 as four vectorised ensembles",
                       "both objectives x decoder lr logspace [1e-4, 1e-2, 11] x batch size 5, 10, ..., 45 (198 "
                       "cells), 100,000 steps per cell (early stop 200 steps after both accuracies pass 0.9), "
                       "metrics every 20 steps; the cells of one objective train as vectorised ensembles (each "
                       "member draws its own batches; two ensembles of 49-50 per objective with --jobs 2); the "
                       "recorded run trained its first 75 cells one by one (109 to 113 s for a cell that uses the "
                       "whole budget on one core), before minibatch runs vectorised"),
    },
    analyse=analyse,
    draw=draw,
    claims=("at decoder lr 1e-4 the full batch (45) comprehends, regression and classification",
            "a small batch (5) delays generalisation at a small decoder learning rate"),
))
