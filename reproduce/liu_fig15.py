"""Liu et al. 2022 (grokking-squared), App. G Fig. 15: the toy model's phase diagrams (addition, p = 10;
left regression, right classification) over the decoder's learning rate and the representation's
(embeddings') weight decay (docs/reproductions/liu-fig15/README.md).

The authors released no grid for this figure: the phase-diagram files of github.com/ejmichaud/
grokking-squared (commit 0229df9, ``phase_diagram_plot/*.h5``) hold Fig. 6(a) to (d) only, and the
notebooks that trained the addition diagrams keep the representation's weight decay at 0 (``wd1_mode =
0``; mode 1 would tie it to the decoder's). The reference is therefore App. G's text: "the
representation weight decay in general does not affect model performance much" (and the caption). The
row recomputes the claim from probe's grid, per panel: the share of cells whose phase is the one the
same decoder learning rate has without representation weight decay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO, COMMIT = lp.REPO, lp.COMMIT
KEY = "embed_weight_decay"
SOURCE = f"{lp.PAPER} App. G, Fig. 15 and its caption"

#: probe's paper grid of representation weight decays (the figure's own values are not stated): the
#: decoder weight decays of Fig. 6(b), 0 to 10
PAPER_WDS: tuple[float, ...] = tuple(float(v) for v in range(11))
QUICK_LRS = [lp.APPG_LRS[0], lp.APPG_LRS[10]]  # 1e-4 and 1e-2
QUICK_WDS = [0.0, 1.0]
QUICK_STEPS = 2500

AXIS = Setting("representation weight decay (y axis)", "the embeddings' AdamW weight decay wd1, swept as the y "
               "axis (App. G: \"representation weight decay controls the magnitude of embedding vectors\"); "
               "the notebook's default wd1 = 0 (wd1_mode = 0)", lp.REGRESSION_NB,
               "embed_weight_decay linspace [0, 10, 11] (AdamW, decoupled; quick: 0 and 1, at decoder lr 1e-4 "
               "and 1e-2)", "the figure's own values are not stated; 0 to 10 is the decoder's range of Fig. 6(b)")


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per panel: the share of cells with representation weight decay > 0 whose phase is that of the
    same decoder lr at weight decay 0 (the claim: most), recomputed from the runs."""
    runs, budget = lp.appg_runs(sweep_dir, KEY)
    rows: list[Row] = []
    for task in lp.OBJECTIVES.values():
        part = runs[runs["task"] == task]
        base = {float(r["lr"]): str(r["phase"]) for _, r in part[part["y"] == 0.0].iterrows()}
        cells = part[(part["y"] > 0) & part["lr"].isin(list(base))]
        if not len(cells):
            continue
        same = [str(r["phase"]) == base[float(r["lr"])] for _, r in cells.iterrows()]
        k, n = sum(same), len(same)
        changed = [f"lr {r['lr']:.3g}, wd {r['y']:g}: {r['phase']} (at wd 0: {base[float(r['lr'])]})"
                   for (_, r), s in zip(cells.iterrows(), same) if not s]
        rows.append(Row(f"{task}: cells with the phase of the same decoder lr at representation weight decay 0",
                        "most (\"the representation weight decay in general does not affect model performance "
                        "much\")", SOURCE,
                        f"{k}/{n} = {k / n:.2f} (representation weight decay {cells['y'].min():g} to "
                        f"{cells['y'].max():g}; " + ("; ".join(changed) if changed else "none changed")
                        + f"; at wd 0: {lp.phase_list(part[part['y'] == 0.0])}; budget {budget:,})",
                        f"share >= {lp.AGREE_SHARE:g}", "agrees" if k / n >= lp.AGREE_SHARE else "differs"))
    return Analysis(tuple(rows), runs, {"budget": budget, "scale": scale})


def draw(analysis: Analysis) -> "Figure":
    return lp.draw_appg(analysis, "weight decay (representation)",
                        "Liu et al. App. G Fig. 15: toy model, addition p = 10, decoder lr x representation weight "
                        "decay (the authors released no grid)", lambda v: f"{v:g}")


reproduction(Reproduction(
    name="liu-fig15",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="App. G Fig. 15: phase diagrams of the toy model (addition; regression and classification) over "
           "decoder learning rate x representation weight decay",
    artefact=Artefact(REPO, COMMIT, f"{lp.REGRESSION_NB}, {lp.CLASSIFICATION_NB}",
                      "the training code of the toy phase diagrams (representation weight decay wd1 = 0); no "
                      "released grid for Fig. 15, so the reference is the paper's text (App. G: the "
                      "representation weight decay does not affect model performance much)"),
    trains="the toy model on p = 10 addition (liu-toy-add), regression and classification, one run per "
           "(objective, decoder lr, representation weight decay) cell",
    setting=lp.appg_setting(AXIS, QUICK_STEPS),
    scales={
        "quick": Scale("quick", lp.appg_spec(KEY, QUICK_WDS, QUICK_LRS, QUICK_STEPS, 10, 20), "14 s (--jobs 1)",
                       "eight cells, regression and classification x decoder lr {1e-4, 1e-2} x representation "
                       "weight decay {0, 1}, 2,500 steps: the weight decay changes no phase (lr 1e-4 "
                       "comprehends, lr 1e-2 memorises, with and without it)"),
        "paper": Scale("paper", lp.appg_spec(KEY, PAPER_WDS, lp.APPG_LRS, lp.APPG_BUDGET, 20, 60),
                       "1 h 43 min (--jobs 2, beside a test run and other work)",
                       "both objectives x decoder lr logspace [1e-4, 1e-2, 11] x representation weight decay 0 "
                       "to 10 (242 cells), 100,000 steps per cell (early stop 200 steps after both accuracies "
                       "pass 0.9), metrics every 20 steps; the cells that stop early train first, the rest as "
                       "four batched models of about 60 cells that use the whole budget"),
    },
    analyse=analyse,
    draw=draw,
    claims=("a small representation weight decay changes no phase: at decoder lr 1e-4 the model comprehends and "
            "at 1e-2 it memorises with weight decay 0 and 1, regression and classification",),
))
