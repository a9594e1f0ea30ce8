"""Liu et al. 2022 (grokking-squared), App. G Fig. 14: the toy model's phase diagrams (addition, p = 10;
left regression, right classification) over the decoder's learning rate and the embeddings'
initialisation scale (docs/reproductions/liu-fig14/README.md).

The authors released no grid for this figure: the phase-diagram files of github.com/ejmichaud/
grokking-squared (commit 0229df9, ``phase_diagram_plot/*.h5``) hold Fig. 6(a) to (d) only, and the
notebooks that trained the addition diagrams (``phase_diagram.ipynb``, ``phase_diagram-classification.ipynb``)
keep the initialisation scale fixed (``init_scale = 1``). The reference is therefore App. G's text:
embeddings are drawn from ``U[-s/2, s/2]``, ``s`` the initialisation scale; "Small initialization scale
(top) leads to comprehension" (the caption) and "it is beneficial to use a smaller initialization
scale". The rows recompute both claims from probe's grid, per panel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO, COMMIT = lp.REPO, lp.COMMIT
KEY = "model.init_scale"
SOURCE = f"{lp.PAPER} App. G, Fig. 14 and its caption"

#: probe's paper grid of initialisation scales (the figure's own values are not stated): 0.1 to 10, log
PAPER_SCALES: tuple[float, ...] = tuple(float(v) for v in 10 ** np.linspace(-1, 1, 11))
QUICK_LRS = [lp.APPG_LRS[5], lp.APPG_LRS[10]]  # 1e-3 and 1e-2
QUICK_SCALES = [0.1, 10.0]
QUICK_STEPS = 2000

AXIS = Setting("initialisation scale (y axis)", "embeddings U[-s/2, s/2], s the initialisation scale, swept "
               "as the y axis, small at the top (App. G); the notebooks' latent = (torch.rand(p, 1) - 1/2) * "
               "init_scale with init_scale = 1", lp.REGRESSION_NB,
               "model.init_scale logspace [0.1, 10, 11] (quick: 0.1 and 10, at decoder lr 1e-3 and 1e-2)",
               "the figure's own values are not stated; 0.1 to 10 spans the default s = 1 by a decade each way")


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per panel: the share of comprehension cells at the smallest initialisation scale (the claim: all),
    and that share against the one at the largest scale (the claim: smaller is better); recomputed
    from the runs."""
    runs, budget = lp.appg_runs(sweep_dir, KEY)
    rows: list[Row] = []
    for task in lp.OBJECTIVES.values():
        part = runs[runs["task"] == task]
        if not len(part):
            continue
        s_min, s_max = part["y"].min(), part["y"].max()
        top, bottom = part[part["y"] == s_min], part[part["y"] == s_max]
        rows.append(lp.share_row(f"{task}: phase at the smallest initialisation scale ({s_min:g}), every "
                                 "decoder lr", "comprehension (\"Small initialization scale (top) leads to "
                                 "comprehension\")", SOURCE, top, "comprehension", budget))
        k_top = float((top["phase"] == "comprehension").mean())
        k_bottom = float((bottom["phase"] == "comprehension").mean())
        rows.append(Row(f"{task}: share of comprehension cells at initialisation scale {s_min:g} against "
                        f"{s_max:g}", "larger at the small scale (\"it is beneficial to use a smaller "
                        "initialization scale\")", f"{lp.PAPER} App. G (initialization scale)",
                        f"{k_top:.2f} against {k_bottom:.2f} (at {s_max:g}: {lp.phase_list(bottom)})",
                        "larger at the smallest scale", "agrees" if k_top > k_bottom else "differs"))
    return Analysis(tuple(rows), runs, {"budget": budget, "scale": scale})


def draw(analysis: Analysis) -> "Figure":
    return lp.draw_appg(analysis, "initialisation scale s (embeddings)",
                        "Liu et al. App. G Fig. 14: toy model, addition p = 10, decoder lr x initialisation scale "
                        "(the authors released no grid)", lambda v: f"{v:.2g}")


reproduction(Reproduction(
    name="liu-fig14",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="App. G Fig. 14: phase diagrams of the toy model (addition; regression and classification) over "
           "decoder learning rate x initialisation scale",
    artefact=Artefact(REPO, COMMIT, f"{lp.REGRESSION_NB}, {lp.CLASSIFICATION_NB}",
                      "the training code of the toy phase diagrams (init_scale fixed at 1); no released grid for "
                      "Fig. 14, so the references are the paper's text (App. G: small initialisation scale "
                      "leads to comprehension, a smaller scale is beneficial)"),
    trains="the toy model on p = 10 addition (liu-toy-add), regression and classification, one run per "
           "(objective, decoder lr, initialisation scale) cell",
    setting=lp.appg_setting(AXIS, QUICK_STEPS),
    scales={
        "quick": Scale("quick", lp.appg_spec(KEY, QUICK_SCALES, QUICK_LRS, QUICK_STEPS, 10, 20), "11 s (--jobs 1)",
                       "eight cells, regression and classification x decoder lr {1e-3, 1e-2} x initialisation "
                       "scale {0.1, 10}, 2,000 steps: at scale 0.1 every cell comprehends, at scale 10 every "
                       "cell memorises (training accuracy within a few hundred steps, validation never)"),
        "paper": Scale("paper", lp.appg_spec(KEY, PAPER_SCALES, lp.APPG_LRS, lp.APPG_BUDGET, 20, 60),
                       "1 h 50 min (--jobs 2, beside other work)",
                       "both objectives x decoder lr logspace [1e-4, 1e-2, 11] x initialisation scale logspace "
                       "[0.1, 10, 11] (242 cells), 100,000 steps per cell (early stop 200 steps after both "
                       "accuracies pass 0.9), metrics every 20 steps; the cells that stop early train first, the "
                       "rest as four batched models of about 60 cells (two per objective) that use the whole "
                       "budget, 40 to 75 steps a second each on one core"),
    },
    analyse=analyse,
    draw=draw,
    claims=("a small initialisation scale (0.1) leads to comprehension at every decoder learning rate, "
            "regression and classification",
            "a large initialisation scale (10) memorises where the small one comprehends"),
))
