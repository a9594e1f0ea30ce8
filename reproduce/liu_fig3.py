"""Liu et al. 2022 (grokking-squared), Fig. 3: the network's accuracy Acc and the accuracy Acc-hat
predicted from the parallelograms of its embeddings (App. D), both on the full dataset, against the
training fraction, compared with the authors' released per-seed numbers
(docs/reproductions/liu-fig3/README.md).

The authors' numbers are the files ``toy/results/fig3/{realacc,predacc,trainfrac}_num_N_seed_S.txt``
of github.com/ejmichaud/grokking-squared (commit 0229df9), written by ``toy/produce_figure_data.py``
(``train_many_fig3``: ``train_add(train_num=N, seed=S, steps=5000)``) and plotted by
``toy/Figure3.ipynb``. ``realacc`` is ``acc[-1]``: the accuracy over all 55 samples after the last
step, ``(n_test * test acc + n_train * train acc) / 55``; ``predacc`` is ``pred_acc``: ``|D-bar| / 55``
with ``D-bar`` the training samples plus every validation sample that forms a parallelogram of the
final embeddings with a training sample (App. D, eqs. 12-13, under the code's test: embeddings
centred, each dimension divided by its std, mean squared residual < 0.01). Every released value is
an integer count over 55 samples; the module keeps those counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, reproduction

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/ejmichaud/grokking-squared"
COMMIT = "0229df94de69b8384e560367280a43a238112bf5"
RESULTS = "toy/results/fig3"
TRAIN_SCRIPT = "toy/train_add.py"
DRIVER = "toy/produce_figure_data.py"
NOTEBOOK = "toy/Figure3.ipynb"
N_SAMPLES = 55  # p = 10: the unordered pairs (a, b), a <= b
CONVENTION = "grokking-squared"  # the authors' code's parallelogram test (liu_fig5b uses the same)
DELTA = 0.01  # train_add's threshold_P
ACC_TOL = 0.1  # a median accuracy agrees within this (5.5 of the 55 samples)
GAP_TOL = 0.05  # the mean |Acc - Acc-hat| agrees within this of the authors'

#: RESULTS/realacc_num_{n}_seed_{s}.txt x 55, as released: {n_train: (seed 0, seed 1, seed 2)}
AUTHORS_ACC: dict[int, tuple[int, int, int]] = {
    5: (7, 6, 8), 10: (12, 15, 14), 15: (15, 17, 24), 20: (25, 20, 32), 25: (27, 29, 50), 30: (39, 31, 51),
    35: (42, 41, 54), 40: (50, 43, 55), 45: (50, 55, 55), 50: (53, 53, 54), 54: (51, 53, 54),
}
#: RESULTS/predacc_num_{n}_seed_{s}.txt x 55, as released, same layout
AUTHORS_ACC_HAT: dict[int, tuple[int, int, int]] = {
    5: (5, 5, 6), 10: (11, 14, 12), 15: (15, 15, 21), 20: (25, 20, 25), 25: (26, 30, 50), 30: (39, 31, 51),
    35: (42, 41, 54), 40: (50, 42, 55), 45: (50, 55, 55), 50: (54, 55, 55), 54: (55, 55, 55),
}


def authors_acc(n_train: int) -> list[float]:
    """The authors' Acc (full dataset) per seed for ``n_train`` training pairs."""
    return [c / N_SAMPLES for c in AUTHORS_ACC[n_train]]


def authors_acc_hat(n_train: int) -> list[float]:
    """The authors' Acc-hat (full dataset) per seed for ``n_train`` training pairs."""
    return [c / N_SAMPLES for c in AUTHORS_ACC_HAT[n_train]]


def _files(n_train: int, kind: str) -> str:
    return f"{RESULTS}/{kind}_num_{n_train}_seed_{{0,1,2}}.txt"


def median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


SPEC_TEMPLATE = (
    "preset: liu-toy-add\n"
    "set: {{steps: {steps}, batch_size: 45, checkpoint.schedule: every, checkpoint.every: {steps}, "
    "checkpoint.metrics_every: {steps}, checkpoint.tensors: [embed.W_E], rng: grokking-squared{extra}}}\n"
    "grid:\n  n_train: {n_train}\n"
    "zip:\n  seed: {seeds}\n  split_seed: {seeds}\n"
)


def _spec(n_train: list[int], seeds: list[int], steps: int, extra: str = "") -> str:
    return SPEC_TEMPLATE.format(n_train=n_train, seeds=seeds, steps=steps, extra=extra)


PAPER_N = sorted(AUTHORS_ACC)
PAPER_STEPS = 5000
QUICK_N = [10, 45]
QUICK_SEEDS = [0, 1]
QUICK_STEPS = 2000

SETTING = (
    Setting("task", "non-modular addition a + b, p = 10, unordered pairs a <= b: 55 samples", TRAIN_SCRIPT,
            "nonmod-add, p = 10 (55 unordered pairs)"),
    Setting("split", "train_num in {5, 10, ..., 50, 54}, np.random.choice(55, train_num, replace=False) after "
            "np.random.seed(seed) and the targets' draw, seed in {0, 1, 2}", DRIVER,
            "n_train in the same list, seed = split_seed in {0, 1, 2} (zipped), rng grokking-squared: the same "
            "numpy draws, so seed S trains on the authors' training set S"),
    Setting("tokens / targets", "outputs regress random targets y_templates ~ N(0, 1), shape [19, 30]; "
            "prediction: the nearest target", TRAIN_SCRIPT,
            "objective mse_targets, d_out 30 (N(0, 1) targets, nearest-target accuracy)"),
    Setting("block", "1-d embeddings summed (E_a + E_b), decoder MLP 1-200-200-30, tanh", TRAIN_SCRIPT,
            "model toy, d_embed 1, aggregation sum, decoder [200, 200], tanh"),
    Setting("init", "torch.manual_seed(seed): embeddings torch.rand(10, 1) - 1/2 (init_scale_reprs 1), then "
            "nn.Linear l1, l2, l3 with torch's defaults (init_scale_nn 1); targets y_templates ~ N(0, 1) from "
            "numpy", TRAIN_SCRIPT, "rng grokking-squared: the same draws in the same order, so seed S starts "
            "from the authors' weights and targets S (checked against their code: tests/train/"
            "test_rng_grokking_squared.py)"),
    Setting("optimizer", "AdamW embeddings lr 1e-3 wd 0; AdamW decoder lr 1e-4 wd 0, betas (0.9, 0.999)",
            TRAIN_SCRIPT, "adamw, embed_lr 1e-3, lr 1e-4, weight decays 0, betas (0.9, 0.999)"),
    Setting("batches", "batch_size 45: full batch when train_num <= 45, else 45 random samples without "
            "replacement per step (np.random.choice)", TRAIN_SCRIPT, "batch_size 45 (full batch when n_train <= "
            "45), the minibatches from the same numpy stream (rng grokking-squared)"),
    Setting("steps", "steps = 5000 for Fig. 3 (train_many_fig3)", DRIVER,
            f"steps {PAPER_STEPS} (quick scale: {QUICK_STEPS})"),
    Setting("loss precision", "float32 MSE, mean over batch and output dims", TRAIN_SCRIPT,
            "float32 MSE (mse_targets)"),
    Setting("Acc", "acc[-1] = (n_test * test acc + n_train * train acc) / 55 at the last step: train accuracy "
            "after the last update, test accuracy from the outputs computed before it", TRAIN_SCRIPT,
            "the last metric row (after the last update): (n_val * val_acc + n_train * train_acc) / 55",
            "the test accuracy is one update later than theirs (of 5,000)"),
    Setting("Acc-hat", "pred_acc = |D-bar| / 55: training samples plus every test sample i + j with a training "
            "sample m + n = i + j such that (i, j, m, n) is a parallelogram of the last step's embeddings "
            "(centred, each dimension divided by its std, ddof 1; mean over dimensions of the squared residual "
            "< threshold_P = 0.01)", TRAIN_SCRIPT,
            f"metric acc_hat --convention {CONVENTION} --delta {DELTA:g} at the last checkpoint (float64 "
            "where theirs is float32)"),
    Setting("evaluation cadence", "only the last step's Acc and Acc-hat are saved (the files hold one number)",
            DRIVER, "checkpoints (embeddings only) and metric rows at step 0 and the last step only"),
    Setting("figure", "three scatter plots, one dot per run: Acc and Acc-hat against the training fraction, "
            "Acc against Acc-hat, each with the diagonal", NOTEBOOK,
            "the same three panels, the authors' dots beside probe's"),
)


def run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run: its training-set size, seeds, fraction, the last step, train and
    validation accuracy there, Acc over the full dataset, and Acc-hat (full and validation only) of
    its last checkpoint, recomputed from the run."""
    import pandas as pd

    from probe.analyses import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    states = sw.status().set_index("run")["state"]
    rows = []
    for name in sw.names:
        if states.get(name) != "done":
            continue
        with sw.run(name) as run:
            cfg, task, split = run.config, run.task, run.split
            last = run.metrics.iloc[-1]
            n_tr, n_val = len(split.train), len(split.val)
            val_acc = float(last["val_acc"]) if n_val else 0.0
            acc = (n_tr * float(last["train_acc"]) + n_val * val_acc) / task.n_samples
            hat = compute(run, "acc_hat", steps="last", convention=CONVENTION, delta=DELTA).iloc[-1]
            rows.append({"run": name, "n_train": n_tr, "seed": int(cfg.seed), "split_seed": int(cfg.split_seed),
                         "fraction": n_tr / task.n_samples, "budget": int(cfg.steps), "step": int(last["step"]),
                         "train_acc": float(last["train_acc"]), "val_acc": float(last["val_acc"]),
                         "acc": acc, "acc_hat": float(hat["acc_hat"]), "acc_hat_test": float(hat["acc_hat_test"])})
    columns = ["run", "n_train", "seed", "split_seed", "fraction", "budget", "step", "train_acc", "val_acc", "acc",
               "acc_hat", "acc_hat_test"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["n_train", "seed"]).reset_index(drop=True)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Comparison rows per training-set size (the median Acc and the median Acc-hat over seeds) and
    one row for the agreement of the two (mean |Acc - Acc-hat| over runs), probe's recomputed from the
    runs against the authors' files."""
    table = run_table(sweep_dir)
    budget = int(table["budget"].max()) if len(table) else 0
    rows: list[Row] = []
    compared: list[int] = []
    for n, g in table.groupby("n_train", sort=True):
        n = int(n)
        if n not in AUTHORS_ACC:
            continue
        compared.append(n)
        frac = f"{n}/{N_SAMPLES} = {n / N_SAMPLES:.2f}"
        for label, kind, paper, ours in (
                ("Acc (full dataset, network)", "realacc", authors_acc(n), list(g["acc"])),
                ("Acc-hat (full dataset, from parallelograms)", "predacc", authors_acc_hat(n), list(g["acc_hat"]))):
            p_med, o_med = median(paper), median(ours)
            rows.append(Row(
                f"{label} after training, median over seeds, train fraction {frac}",
                f"{p_med:.3f} (seeds: {_fmt(paper)})", f"{REPO} {_files(n, kind)}",
                f"{o_med:.3f} (runs: {_fmt(ours)}; {budget:,} steps)",
                f"within {ACC_TOL:g} ({ACC_TOL * N_SAMPLES:g} of the {N_SAMPLES} samples)",
                "agrees" if abs(p_med - o_med) <= ACC_TOL + 1e-12 else "differs"))
    if compared:
        paper_gap = np.abs(np.array([a - h for n in compared for a, h in zip(authors_acc(n), authors_acc_hat(n))]))
        sel = table[table["n_train"].isin(compared)]
        ours_gap = np.abs(sel["acc"].to_numpy() - sel["acc_hat"].to_numpy())
        sizes = ", ".join(str(n) for n in compared)
        rows.append(Row(
            f"mean |Acc - Acc-hat| over runs, training-set sizes {sizes} of {N_SAMPLES}",
            f"{paper_gap.mean():.3f} ({len(paper_gap)} runs, largest {paper_gap.max():.3f})",
            f"{REPO} {RESULTS}/realacc_num_N_seed_S.txt, predacc_num_N_seed_S.txt",
            f"{ours_gap.mean():.3f} ({len(ours_gap)} runs, largest {ours_gap.max():.3f})",
            f"within {GAP_TOL:g} of the authors'",
            "agrees" if abs(paper_gap.mean() - ours_gap.mean()) <= GAP_TOL + 1e-12 else "differs"))
        seeded = sel[sel["seed"].isin([0, 1, 2]) & (sel["seed"] == sel["split_seed"])]
        if len(seeded):
            for label, kind, col, ref in (("Acc", "realacc", "acc", authors_acc),
                                          ("Acc-hat", "predacc", "acc_hat", authors_acc_hat)):
                diffs = [round(abs(float(r[col]) - ref(int(r["n_train"]))[int(r["seed"])]) * N_SAMPLES)
                         for _, r in seeded.iterrows()]
                same, near = sum(d == 0 for d in diffs), sum(d <= 1 for d in diffs)
                rows.append(Row(
                    f"{label} run by run (seed S against the authors' seed S: the same training set, initial "
                    "weights and batches)", f"{len(diffs)} runs ({kind}_num_N_seed_S.txt)",
                    f"{REPO} {RESULTS}/{kind}_num_N_seed_S.txt",
                    f"{same} of {len(diffs)} give the authors' count exactly, {near} within one sample "
                    f"(largest gap {max(diffs)} of {N_SAMPLES})",
                    "within one sample in every run", "agrees" if near == len(diffs) else "differs"))
    return Analysis(tuple(rows), table, {"budget": budget, "scale": scale})


def draw(analysis: Analysis) -> "Figure":
    """Laid out like the paper's Fig. 3 (and toy/Figure3.ipynb): (a) Acc and (b) Acc-hat against the
    training fraction, (c) Acc against Acc-hat, one dot per run (probe's circles, the authors'
    crosses), the dashed red diagonal in each."""
    from probe.analyses import plots

    runs: "pd.DataFrame" = analysis.runs
    plt = plots._plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), constrained_layout=True)
    a_frac = [n / N_SAMPLES for n in PAPER_N for _ in range(3)]
    a_acc = [v for n in PAPER_N for v in authors_acc(n)]
    a_hat = [v for n in PAPER_N for v in authors_acc_hat(n)]
    probe_label = f"probe ({analysis.extra['scale']} scale, {analysis.extra['budget']:,} steps)"
    panels = (
        (axes[0], a_frac, a_acc, runs["fraction"], runs["acc"], "training data fraction", "Acc", "(a)"),
        (axes[1], a_frac, a_hat, runs["fraction"], runs["acc_hat"], "training data fraction",
         r"$\widehat{\rm Acc}$", "(b)"),
        (axes[2], a_hat, a_acc, runs["acc_hat"], runs["acc"], r"$\widehat{\rm Acc}$", "Acc", "(c)"),
    )
    for ax, ax_x, ax_y, px, py, xlabel, ylabel, tag in panels:
        ax.plot([0, 1], [0, 1], ls="--", color="red", linewidth=1)
        ax.scatter(ax_x, ax_y, marker="x", color="0.35", label="authors (released, 5,000 steps)")
        ax.scatter(px, py, facecolors="none", edgecolors="C0", s=40, label=probe_label)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"Liu et al. Fig. 3{tag}", fontsize=10)
    axes[0].legend(fontsize=7, frameon=False, loc="lower right")
    return fig


reproduction(Reproduction(
    name="liu-fig3",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="Fig. 3: accuracy Acc and predicted accuracy Acc-hat (App. D) on the full dataset against the "
           "training fraction, and Acc against Acc-hat",
    artefact=Artefact(REPO, COMMIT, f"{RESULTS}/realacc_num_N_seed_S.txt, predacc_num_N_seed_S.txt",
                      "Acc and Acc-hat over all 55 samples after 5,000 steps per training-set size N in {5, 10, "
                      "..., 50, 54} and seed S in {0, 1, 2} (mean |Acc - Acc-hat| 0.019 over the 33 runs)"),
    trains="the toy model on p = 10 addition (liu-toy-add), one run per training-set size and seed",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_N, QUICK_SEEDS, QUICK_STEPS), "14 s (--jobs 1)",
                       "two fractions (10/55, 45/55), two seeds, 2,000 steps, only the last step kept: at the "
                       "small fraction the network and the parallelograms get little beyond the training "
                       "samples, at the large one nearly everything, and Acc and Acc-hat agree; every reference "
                       "row is produced"),
        "paper": Scale("paper", _spec(PAPER_N, [0, 1, 2], PAPER_STEPS), "4 min 59 s (--jobs 2, cores shared)",
                       "the authors' 11 training-set sizes x 3 seeds, 5,000 steps, Acc and Acc-hat at the last "
                       "step"),
    },
    analyse=analyse,
    draw=draw,
    claims=("Acc and Acc-hat rise with the training fraction from about the fraction itself (memorisation only) "
            "to about 1 above a fraction of about 0.4",
            "Acc-hat predicts Acc: the two differ by about 0.02 on average, one sample of 55"),
))
