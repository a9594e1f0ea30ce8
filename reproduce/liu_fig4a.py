"""Liu et al. 2022 (grokking-squared), Fig. 4(a): the effective theory's probability that a random
training set implies the unique linear representation ``E_k = a + k b``, against the training fraction,
and its phase transition at ``r_c`` (docs/reproductions/liu-fig4a/README.md).

The authors released no numbers for this panel: ``toy/Figure4ab.ipynb`` of
github.com/ejmichaud/grokking-squared (commit 0229df9) computes it (``train_add(train_num=N, seed=S,
steps=1)`` for ``N = 3, 6, ..., 54`` and ``S = 0, ..., 99``; a split counts when ``dof == 2``, the
nullity of ``A(P0(D))``) and keeps only the plot. The reference numbers are therefore the paper's
text: the transition at ``r_c = 0.4`` (Sec. 3.2, "Degeneracy of ground states", and the Fig. 4
caption), lambda3 = 0 "with high probability" below about 0.4 (Sec. 3.2, "Dependence of grokking on
data size", on Fig. 5(a)), and ``RQI-bar = 1`` (the same criterion) possible with fewer than
``55 x 0.4 = 22`` samples (App. E, on Fig. 10).

The criterion depends on the training set only: each run of the sweep trains one step (as the
authors' notebook does) and is read for its split; probe's ``dof`` is
:func:`probe.analyses.effective.effective_theory` on that split, compared with the ``dof`` of the full
table (2).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/ejmichaud/grokking-squared"
COMMIT = "0229df94de69b8384e560367280a43a238112bf5"
NOTEBOOK = "toy/Figure4ab.ipynb"
TRAIN_SCRIPT = "toy/train_add.py"
N_SAMPLES = 55  # p = 10: the unordered pairs (a, b), a <= b
PAPER = "Liu et al. 2022"

#: the paper's critical fraction (Sec. 3.2 and the Fig. 4 caption: "a phase transition ... around r_c = 0.4")
R_C = 0.4
R_C_TOL = 0.05  # "around 0.4": the authors' grid of sizes is 3/55 = 0.055 apart
#: App. E: "it is possible to have RQI-bar = 1 only with < 40% training data, i.e., 55 x 0.4 = 22 samples"
SMALLEST = 22
ABOVE = 0.5  # above this fraction the transition around r_c = 0.4 is behind (r_c + 0.1)

#: the authors' notebook's grid: train_nums = np.arange(1, 19) * 3, seeds = 100
PAPER_SIZES = [3 * k for k in range(1, 19)]
PAPER_SPLITS = 100
QUICK_SIZES = [12, 18, 21, 24, 30]
QUICK_SPLITS = 10

SPEC_TEMPLATE = (
    "preset: liu-toy-add\n"
    "set: {{steps: 1, checkpoint.schedule: every, checkpoint.every: 1, checkpoint.metrics_every: 1, "
    "checkpoint.tensors: [embed.W_E]{extra}}}\n"
    "grid:\n  n_train: {sizes}\n"
    "split_seeds: {splits}\n"
)


def _spec(sizes: list[int], splits: int, extra: str = "") -> str:
    return SPEC_TEMPLATE.format(sizes=sizes, splits=list(range(splits)), extra=extra)


SETTING = (
    Setting("task", "non-modular addition a + b, p = 10, unordered pairs a <= b: 55 samples", TRAIN_SCRIPT,
            "nonmod-add, p = 10 (55 unordered pairs)"),
    Setting("training-set sizes", "train_nums = np.arange(1, 19) * 3: 3, 6, ..., 54", NOTEBOOK,
            "n_train 3, 6, ..., 54 (quick scale: 12, 18, 21, 24, 30)"),
    Setting("splits", "seeds = 100: np.random.choice(55, train_num, replace=False) after np.random.seed(seed) "
            "(and a draw of the targets), seed 0 to 99", NOTEBOOK,
            "split_seed 0 to 99 (quick scale: 0 to 9), model seed 0",
            "other draws of the training sets: the probabilities agree only within sampling error "
            "(binomial, 100 splits: about 0.05 at P = 0.5)"),
    Setting("criterion", "a split counts when dof == 2: dof = number of eigenvalues < 1e-8 of A^T A, A the rows "
            "e_i + e_j - e_m - e_n of the parallelograms (i, j, m, n) of P0(D) (null_dim)", TRAIN_SCRIPT,
            "effective_theory(task, split.train).dof equal to the full table's (2): the nullity of H = A^T A "
            "(eigenvalues below p x 1e-10 x max(1, largest))", "the eigenvalue tolerance; A^T A is an integer "
            "matrix, whose nonzero eigenvalues lie far above either"),
    Setting("training", "train_add(train_num, seed, steps=1, eff_steps=1): the dof is computed from the split "
            "before training (\"Figure 4 (a) does not require any training\")", NOTEBOOK,
            "steps 1, checkpoints and metrics at steps 0 and 1 (embeddings only); the analysis reads each "
            "run's split"),
    Setting("probability", "probs = success_count / seeds per training-set size, plotted against "
            "train_nums / 55", NOTEBOOK, "share of the finished runs of each size whose split counts"),
    Setting("critical fraction", "not computed in the code; the paper reads r_c = 0.4 off the curve (Sec. 3.2)",
            NOTEBOOK, "the fraction where the probability first reaches 0.5, interpolated linearly between "
            "the sampled sizes"),
)


def run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run: its training-set size, split seed, fraction, the dof of its split
    and whether the split implies the unique linear representation (dof equal to the full table's)."""
    import pandas as pd

    from probe.analyses.effective import effective_theory
    from probe.analyses.parallelograms import Parallelograms
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    states = sw.status().set_index("run")["state"]
    rows = []
    memo: dict[str, tuple[Parallelograms, int]] = {}
    for name in sw.names:
        if states.get(name) != "done":
            continue
        with sw.run(name) as run:
            task, split, cfg = run.task, run.split, run.config
            key = task.describe()
            if key not in memo:
                p0 = Parallelograms.from_labels(task.labels)
                memo[key] = (p0, effective_theory(task, np.arange(task.n_samples), p0).dof)
            p0, full = memo[key]
            dof = effective_theory(task, split.train, p0).dof
            rows.append({"run": name, "n_train": len(split.train), "split_seed": int(cfg.split_seed),
                         "fraction": len(split.train) / task.n_samples, "dof": int(dof), "full_dof": int(full),
                         "linear": bool(dof == full)})
    columns = ["run", "n_train", "split_seed", "fraction", "dof", "full_dof", "linear"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["n_train", "split_seed"]).reset_index(drop=True)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows from the paper's text against the probabilities recomputed from the runs' splits: the
    critical fraction, the probability below 0.4 and above 0.5, and the smallest size with a split
    that implies the linear representation."""
    from probe.analyses.effective import crossing

    table = run_table(sweep_dir)
    per_size = table.groupby("n_train", sort=True)["linear"].agg(["sum", "count"]).reset_index()
    per_size["fraction"] = per_size["n_train"] / N_SAMPLES
    per_size["p_linear"] = per_size["sum"] / per_size["count"]
    fractions = per_size["fraction"].to_numpy(dtype=np.float64)
    prob = per_size["p_linear"].to_numpy(dtype=np.float64)
    splits = int(per_size["count"].max()) if len(per_size) else 0
    sizes = ", ".join(str(int(n)) for n in per_size["n_train"])
    sampled = f"sizes {sizes} of {N_SAMPLES}, {splits} splits each"
    rows: list[Row] = []
    if len(per_size):
        rc = crossing(fractions, prob)
        rows.append(Row(
            "training fraction r_c where P(linear representation) reaches 0.5",
            f"{R_C:g} (\"a phase transition ... around r_c = 0.4\")",
            f"{PAPER} Sec. 3.2 (Degeneracy of ground states) and Fig. 4(a) caption",
            ("never reached" if math.isnan(rc) else f"{rc:.3f}") + f" ({sampled})",
            f"within {R_C_TOL:g}", "agrees" if not math.isnan(rc) and abs(rc - R_C) <= R_C_TOL + 1e-12 else "differs"))
        for label, sel, paper, source, tol, ok in (
                (f"P(linear representation) over the sampled sizes below {R_C:g} x {N_SAMPLES} = {SMALLEST}",
                 per_size["n_train"] < SMALLEST,
                 "low (\"below some threshold (around 0.4), lambda3 is zero with high probability\")",
                 f"{PAPER} Sec. 3.2 (Dependence of grokking on data size), on Fig. 5(a)", "below 0.5",
                 lambda p: p < 0.5),
                (f"P(linear representation) over the sampled sizes above {ABOVE:g} x {N_SAMPLES} = "
                 f"{ABOVE * N_SAMPLES:g}",
                 per_size["fraction"] > ABOVE, "high (past the phase transition around r_c = 0.4)",
                 f"{PAPER} Fig. 4(a) caption and Sec. 3.2", "above 0.5", lambda p: p > 0.5)):
            part = per_size[sel]
            if not len(part):
                continue
            hits, total = int(part["sum"].sum()), int(part["count"].sum())
            rows.append(Row(label, paper, source,
                            f"{hits}/{total} = {hits / total:.2f} (sizes "
                            f"{', '.join(str(int(n)) for n in part['n_train'])})",
                            tol, "agrees" if ok(hits / total) else "differs"))
        some = per_size[per_size["sum"] > 0]
        smallest = int(some["n_train"].min()) if len(some) else None
        rows.append(Row(
            "smallest sampled training-set size with a split implying the linear representation (RQI-bar = 1)",
            f"< {SMALLEST} (\"possible to have RQI-bar = 1 only with < 40% training data, i.e., 55 x 0.4 = 22 "
            "samples\")", f"{PAPER} App. E, on Fig. 10",
            (f"{smallest} = {smallest / N_SAMPLES:.2f} of the samples" if smallest is not None else "none")
            + f" ({sampled})", f"below {SMALLEST}",
            "agrees" if smallest is not None and smallest < SMALLEST else "differs"))
    return Analysis(tuple(rows), table, {"scale": scale, "per_size": per_size, "splits": splits})


def draw(analysis: Analysis) -> "Figure":
    """Like the paper's Fig. 4(a): the probability of the linear representation against the training
    fraction (probe's, from the runs' splits), with the paper's r_c = 0.4 and its tolerance marked."""
    from probe.analyses import plots

    per_size: "pd.DataFrame" = analysis.extra["per_size"]
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    ax.axvspan(R_C - R_C_TOL, R_C + R_C_TOL, color="0.9", label=f"paper: r_c = {R_C:g} (+-{R_C_TOL:g})")
    ax.axvline(R_C, color="0.4", linestyle="--", linewidth=1)
    ax.plot(per_size["fraction"], per_size["p_linear"], marker="o", color="C0",
            label=f"probe ({analysis.extra['scale']} scale, {analysis.extra['splits']} splits per size)")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training data fraction")
    ax.set_ylabel("Probability(linear structure)")
    ax.set_title("Liu et al. Fig. 4(a): effective theory, addition p = 10", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


reproduction(Reproduction(
    name="liu-fig4a",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="Fig. 4(a): probability that the training set implies the unique linear representation against "
           "the training fraction (effective theory)",
    artefact=Artefact(REPO, COMMIT, NOTEBOOK,
                      "the code computing the panel (train_nums 3, 6, ..., 54 x 100 seeds, dof == 2), its output "
                      "kept only as a plot: no released numbers, so the references are the paper's text (r_c = "
                      "0.4, Sec. 3.2 and the Fig. 4 caption; RQI-bar = 1 with < 22 samples, App. E)"),
    trains="one step of the toy model on p = 10 addition (liu-toy-add) per training-set size and split seed, "
           "each run read for its split",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_SIZES, QUICK_SPLITS), "10 s (--jobs 1)",
                       "five sizes (12, 18, 21, 24, 30 of 55) x 10 split seeds, one step each (one vectorised "
                       "ensemble): no split of 12 implies the linear representation, every split of 30 does, "
                       "and the probability reaches 0.5 near a fraction of 0.4; every reference row is produced"),
        "paper": Scale("paper", _spec(PAPER_SIZES, PAPER_SPLITS), "1 min 42 s (--jobs 2)",
                       "the authors' notebook's grid: 18 sizes (3, 6, ..., 54) x 100 split seeds, one step each "
                       "(1,800 runs, trained as vectorised ensembles)"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the probability that a random training set implies the unique linear representation jumps from "
            "about 0 to about 1 around a training fraction of 0.4",
            "some training sets of fewer than 22 samples already imply it"),
))
