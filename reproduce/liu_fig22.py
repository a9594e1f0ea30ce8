"""Liu et al. 2022 (grokking-squared), App. K, Fig. 22: a transformer's train and test accuracy on
addition mod 59 over training with its embeddings as they are (dashed), projected onto and
reconstructed from their current first n principal components (dotted), and from the first n
principal components of the embeddings at the end of training (solid) (docs/reproductions/liu-fig22/
README.md).

Claims (App. K): "the first few principal components contain enough information to reach 99%
accuracy", and "embeddings reconstructed from the PCA at the end of training (solid lines) perform
better than current highest variance axes (dotted line)", "consistent across seeds".

The computation is released for the dotted curves with n = 10 only: ``plotting_nbs/
EntropyAndTraining.ipynb`` on the ``prototype`` branch of github.com/ejmichaud/grokking-squared (commit
7270d57), ``get_accs``: at every logged epoch, ``PCA(n_components=10)`` fitted on that epoch's
embeddings, ``inverse_transform(fit_transform(embedding))`` fed to the model of the same epoch, the
training split evaluated in ``model.train()`` (dropout on), the test split in ``model.eval()``; cell 21
plots one run of the 100 (``experiment_dir[6]``): "train", "test", "train10", "test10" against the
step (log axis), with dashed verticals at the first step where train and test accuracy exceed 0.99.
The run was not released, so the reference numbers are read off that plot (1415 x 798 pixels): the
axes calibrated on their ticks (step 10^0 at pixel column 165 ... 10^4 at 1246: 270.25 pixels a decade;
accuracy 0 at row 678, 1 at row 61), each curve followed column by column by its colour, a
threshold's step the first column at or above it, the dashed lines located by their colours; a step
is known to about 2%, an accuracy to about 0.01. The solid (final-axes) curves and other n are not
in the released code: they are compared with the paper's text. Settings: :mod:`liu_fig7`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from probe.reproduce import liu_fig7 as f7
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = f7.REPO
COMMIT = f7.COMMIT
NOTEBOOK = f7.NOTEBOOK
PAPER = f7.PAPER
FACTOR = f7.FACTOR
N_RELEASED = 10  # the notebook's n_components
N_COMPONENTS = "1,2,4,6,10,16,all"  # probe's counts of principal components
FEW = 10  # "the first few principal components": at most the released n
ACC = 0.99
ACC_TOL = 0.2  # tolerance on a mid-transition accuracy read off the plot
FINAL_TOL = 0.01  # tolerance on an end-of-training accuracy

#: read off cell 21's plot (module doc), probe's step = the notebook's step
AUTHORS_TRAIN_099 = 1500  # the blue dashed line: first step with train acc > 0.99
AUTHORS_TEST_099 = 4790  # the green dashed line: first step with test acc > 0.99
AUTHORS_TEST10_STEPS = {0.5: 4300, 0.9: 6210, 0.99: 9030}  # test10: first step at or above
AUTHORS_TRAIN10_099 = 11360  # train10: first step at or above 0.99
AUTHORS_TEST10_AT_GEN = 0.65  # test10 at step 4,800 (test acc just past 0.99)
AUTHORS_TEST10_END = 1.00  # test10 and train10 at step 20,000
AUTHORS_TRAIN10_END = 1.00

QUICK_CHECKPOINTS = "checkpoint.schedule: every, checkpoint.every: 40"
PAPER_CHECKPOINTS = "checkpoint.schedule: geometric, checkpoint.count: 100"
PAPER_SEED = 1

SETTING = f7.TRANSFORMER_SETTING + (
    Setting("run", "one run of the 100 of Fig. 7 (experiment_dir[6] of modular-addition59-deep-entropyEdition; "
            "its seed is not recorded)", NOTEBOOK, "one run, seed = split seed = 1 (quick: 1)",
            "another draw of the split and the initial weights"),
    Setting("projection", "dotted: sklearn PCA(n_components=10) fitted on the current embeddings, "
            "inverse_transform(fit_transform(E)) = mean + (E - mean) V^T V, the current model; solid (paper "
            "only): the first n PCs of the embeddings at the end of training", NOTEBOOK,
            f"pca_projection_accuracy metric, n_components {N_COMPONENTS}: the current axes (cur) and the final "
            "checkpoint's (final), mean + (E - mean) V^T V with the current mean, the embedding table replaced "
            "through hook_embed in the current model",
            "the final-axes variant's code is not released (the final mean or the current one is not known; "
            "probe keeps the current mean)"),
    Setting("evaluation", "at every logged epoch (every 20, 1,000 files): train split in model.train() (dropout "
            "on), test split in model.eval()", NOTEBOOK,
            "at every checkpoint (log-spaced, 100; quick: every 40 steps), both splits without dropout",
            "fewer evaluation steps; no dropout in probe's training-split accuracy"),
    Setting("reference numbers", "cell 21's plot only (accuracies_df.pkl, which it loads, is not released)",
            NOTEBOOK, "steps and accuracies read off the plot (module doc); the solid curves from the paper's text",
            "digitised: steps to about 2%, accuracies to about 0.01"),
)


def _spec(run: dict, seed: int, checkpoints: str) -> str:
    return f7.transformer_spec(run, [seed], checkpoints, tensors='["*"]')


def _col(split: str, axes: str, n: int | str) -> str:
    return f"{split}_acc_{axes}_{n}"


def counts(columns: list[str]) -> list[int]:
    """The numbers of principal components present in a pca_projection_accuracy frame."""
    return sorted({int(c.rsplit("_", 1)[1]) for c in columns if c.startswith("test_acc_cur_")})


def first_at(frame: "pd.DataFrame", column: str, threshold: float = ACC) -> float:
    """The first step of ``frame`` with ``column >= threshold`` (inf: never)."""
    hit = frame[frame[column] >= threshold]
    return float(hit["step"].iloc[0]) if len(hit) else math.inf


def run_table(sweep_dir: str) -> tuple["pd.DataFrame", dict[str, "pd.DataFrame"]]:
    """One row per finished run (seeds, budget, steps to 0.99 of the actual accuracies, the largest
    count of components present) and per run its projection accuracies at every checkpoint, with the
    actual accuracies (metrics) merged in."""
    import pandas as pd

    from probe.analyses import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    rows, curves = [], {}
    for name, run in sw.done_runs():
        cfg, metrics = run.config, run.metrics
        proj = compute(run, "pca_projection_accuracy", n_components=n_components_for(int(cfg.model.d_model)))
        curve = proj.merge(metrics[["step", "train_acc", "val_acc"]], on="step", how="left")
        curves[name] = curve
        rows.append({"run": name, "seed": int(cfg.seed), "split_seed": int(cfg.split_seed), "p": int(cfg.p),
                     "d_model": int(cfg.model.d_model), "budget": int(cfg.steps),
                     "train_099": f7.first_step(metrics, "train_acc"), "val_099": f7.first_step(metrics, "val_acc"),
                     "final_val_acc": float(metrics["val_acc"].iloc[-1])})
    columns = ["run", "seed", "split_seed", "p", "d_model", "budget", "train_099", "val_099", "final_val_acc"]
    return pd.DataFrame(rows, columns=columns).sort_values("seed").reset_index(drop=True), curves


def n_components_for(d: int) -> str:
    """N_COMPONENTS cut to the embedding dimension ``d`` ("all" stays)."""
    parts = [x for x in N_COMPONENTS.split(",") if x == "all" or int(x) < d]
    return ",".join(parts)


def smallest_sufficient(curve: "pd.DataFrame", split: str = "test") -> float:
    """The smallest n whose projection on the final top-n principal components gives, at the last
    checkpoint, the model's own accuracy within FINAL_TOL (inf: none does); at the paper scale the model
    is at 100%, so this is the paper's "first few principal components ... reach 99% accuracy"."""
    last = curve.iloc[-1]
    own = float(last[_col(split, "final", max(counts(list(curve.columns))))])
    for n in counts(list(curve.columns)):
        if float(last[_col(split, "final", n)]) >= own - FINAL_TOL:
            return float(n)
    return math.inf


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per run: the steps of train / test accuracy >= 0.99 (actual embeddings) and of test accuracy >=
    0.5 / 0.9 / 0.99 on the current top-10 principal components, the current-top-10 accuracies when
    the model generalises and at the end (against cell 21's plot), and the paper's two claims (final
    axes above current ones; a few final components reach 99%), recomputed from the runs."""
    table, curves = run_table(sweep_dir)
    src = f"{REPO} {NOTEBOOK}, cell 21 (read off)"
    rows: list[Row] = []
    for _, r in table.iterrows():
        name = str(r["run"])
        curve = curves[name]
        tag = f"run {name}" if len(table) > 1 else "the run"
        budget = int(r["budget"])
        n10 = N_RELEASED if N_RELEASED in counts(list(curve.columns)) else max(counts(list(curve.columns)))
        note = f"budget {budget:,}"

        def step_row(quantity: str, paper: float, ours: float) -> Row:
            return Row(f"{quantity}, {tag}", f"{paper:,.0f}", src, f"{fmt_steps(ours)} ({note})",
                       f"within a factor {FACTOR:g}", "agrees" if f7.steps_agree(paper, ours) else "differs")

        rows.append(step_row("first step with train acc >= 0.99 (embeddings as they are)", AUTHORS_TRAIN_099,
                             float(r["train_099"])))
        rows.append(step_row("first step with test acc >= 0.99 (embeddings as they are)", AUTHORS_TEST_099,
                             float(r["val_099"])))
        for t, paper in AUTHORS_TEST10_STEPS.items():
            rows.append(step_row(f"first step with test acc >= {t:g} on the current top-{n10} PCs", paper,
                                 first_at(curve, _col("test", "cur", n10), t)))
        rows.append(step_row(f"first step with train acc >= 0.99 on the current top-{n10} PCs", AUTHORS_TRAIN10_099,
                             first_at(curve, _col("train", "cur", n10))))
        gen = float(r["val_099"])
        at_gen = curve[curve["step"] >= gen] if math.isfinite(gen) else curve.iloc[0:0]
        if len(at_gen):
            g = at_gen.iloc[0]
            ours = f"{float(g[_col('test', 'cur', n10)]):.2f} (step {int(g['step']):,})"
            ok = abs(float(g[_col("test", "cur", n10)]) - AUTHORS_TEST10_AT_GEN) <= ACC_TOL
        else:
            ours, ok = "n/a (test acc never reaches 0.99)", False
        rows.append(Row(f"test acc on the current top-{n10} PCs when test acc first reaches 0.99, {tag}",
                        f"{AUTHORS_TEST10_AT_GEN:.2f} (step 4,800)", src, ours, f"within {ACC_TOL:g}",
                        "agrees" if ok else "differs"))
        last = curve.iloc[-1]
        for split, paper in (("test", AUTHORS_TEST10_END), ("train", AUTHORS_TRAIN10_END)):
            v = float(last[_col(split, "cur", n10)])
            rows.append(Row(f"{split} acc on the current top-{n10} PCs at the end, {tag}", f"{paper:.2f} (step 20,000)",
                            src, f"{v:.3f} (step {int(last['step']):,})", f"within {FINAL_TOL:g}",
                            "agrees" if abs(v - paper) <= FINAL_TOL else "differs"))
        body = curve.iloc[:-1]  # the final axes are the current ones at the last checkpoint
        diff = body[_col("test", "final", n10)] - body[_col("test", "cur", n10)]
        gap = float(diff.mean()) if len(body) else math.nan
        rows.append(Row(f"mean over checkpoints of test acc on the final minus the current top-{n10} PCs, {tag}",
                        "> 0 (\"embeddings reconstructed from the PCA at the end of training (solid lines) perform "
                        "better than current highest variance axes (dotted line)\")", f"{PAPER} App. K, Fig. 22",
                        "n/a" if math.isnan(gap) else f"{gap:+.3f} ({len(body)} checkpoints)", "above 0",
                        "agrees" if not math.isnan(gap) and gap > 0 else "differs"))
        few = smallest_sufficient(curve)
        rows.append(Row(f"smallest n whose top-n PCs give the model's test acc (within {FINAL_TOL:g}) at the "
                        f"end, {tag}",
                        f"a few (\"the first few principal components contain enough information to reach 99% "
                        f"accuracy\"; the released n = {N_RELEASED} reaches 1.00)", f"{PAPER} App. K, Fig. 22; {src}",
                        f"{fmt_steps(few)} (n in {n_components_for(int(r['d_model']))}; d = {int(r['d_model'])}; "
                        f"test acc {float(curve.iloc[-1]['val_acc']):.3f})",
                        f"at most {FEW}", "agrees" if few <= FEW else "differs"))
    return Analysis(tuple(rows), table, {"scale": scale, "curves": curves})


def draw(analysis: Analysis) -> "Figure":
    """Like Fig. 22: train (left) and test (right) accuracy against the step (log axis), the embeddings
    as they are (dashed), on the current top-n PCs (dotted) and on the final top-n PCs (solid), one
    colour per n, for probe's first run; the values read off the authors' released plot (n = 10, current
    axes) as crosses."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True, sharey=True)
    curves = analysis.extra["curves"]
    name = sorted(curves)[0] if curves else None
    if name is not None:
        curve = curves[name]
        x = curve["step"] + 1
        ns = [n for n in counts(list(curve.columns)) if n in (1, 2, 4, N_RELEASED)] or counts(list(curve.columns))[:4]
        for ax, split, actual in ((axes[0], "train", "train_acc"), (axes[1], "test", "val_acc")):
            ax.plot(x, curve[actual], color="black", linestyle="--", label="embeddings as they are")
            for k, n in enumerate(ns):
                ax.plot(x, curve[_col(split, "cur", n)], color=f"C{k}", linestyle=":", label=f"current top-{n}")
                ax.plot(x, curve[_col(split, "final", n)], color=f"C{k}", linestyle="-", label=f"final top-{n}")
    axes[0].scatter([AUTHORS_TRAIN_099, AUTHORS_TRAIN10_099], [ACC, ACC], marker="x", color="0.3", zorder=5,
                    label="authors: 0.99 actual / current top-10 (read off)")
    a_steps = [AUTHORS_TEST_099] + list(AUTHORS_TEST10_STEPS.values()) + [4800]
    a_vals = [ACC] + list(AUTHORS_TEST10_STEPS) + [AUTHORS_TEST10_AT_GEN]
    axes[1].scatter(a_steps, a_vals, marker="x", color="0.3", zorder=5, label="authors (read off)")
    for ax, title in ((axes[0], "train accuracy"), (axes[1], "test accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.16), ncol=3)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(f"Liu et al. Fig. 22: accuracy with the embeddings projected on their principal components "
                 f"({analysis.extra['scale']} scale)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="liu-fig22",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="App. K, Fig. 22: train and test accuracy with the embeddings as they are, projected on their current "
           "first n principal components, and on those of the end of training",
    artefact=Artefact(REPO, COMMIT, NOTEBOOK,
                      "cell 21's output: one run's train / test accuracy with its embeddings and with their current "
                      "top-10 principal components (get_accs) against the step; read off: train and test acc pass "
                      "0.99 at 1,500 and 4,790, current top-10 test acc at 4,300 (0.5), 6,210 (0.9), 9,030 (0.99), "
                      "1.00 at the end"),
    trains="the authors' transformer on addition mod 59 (liu-fig7's setting), one run with full checkpoints",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(f7.QUICK_RUN, f7.QUICK_SEED, QUICK_CHECKPOINTS),
                       "15 s (--jobs 1; 9 s of training)",
                       "one run, p = 31, d_model 32, d_mlp 32, 800 steps at 25 times the learning rates, full "
                       "checkpoints every 40 steps: some final principal components (10 to 16 of 32) reach "
                       "the model's test accuracy and one or two do not; every reference row is produced"),
        "paper": Scale("paper", _spec(f7.PAPER_RUN, PAPER_SEED, PAPER_CHECKPOINTS),
                       "2 h 25 min of training and 5 min of projections (--jobs 1, one core, beside other work)",
                       "the authors' run: p = 59, 20,000 full-batch steps, seed 1, 100 log-spaced full "
                       "checkpoints, projections on n = 1, 2, 4, 6, 10, 16 and all 256 components; estimated "
                       "1.9 h of training on one core (0.33 s a step, timed over 40 steps) and about 10 min of "
                       "projections"),
    },
    analyse=analyse,
    draw=draw,
    claims=("on the current top-10 principal components the accuracy lags the model's by about a factor 2 in "
            "steps and reaches 1 by the end",
            "on the final principal components a few components suffice for 99% accuracy, and they do better "
            "than the current ones during training"),
))
