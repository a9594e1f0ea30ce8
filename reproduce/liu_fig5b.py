"""Liu et al. 2022 (grokking-squared), Fig. 5(b): steps to RQI > 0.95 against the training fraction,
compared with the authors' released per-seed steps (docs/reproductions/liu-fig5b/README.md).

The authors' numbers are the 33 files ``toy/results/fig4/rqistep_num_N_seed_S.txt`` of
github.com/ejmichaud/grokking-squared (commit 0229df9), written by ``toy/produce_figure_data.py``
(``train_many_fig4``: ``train_add(train_num=N, seed=S, steps=10000)``) and plotted by
``toy/Figure4ab.ipynb`` (titled "Figure 4 (b)" there). Each holds ``iter_rqi``: the 0-based index
of the first step after whose update RQI > 0.95, or 9999 (the last index) when RQI never passed
0.95; probe counts steps as updates done, so the authors' ``i`` is probe's step ``i + 1``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/ejmichaud/grokking-squared"
COMMIT = "0229df94de69b8384e560367280a43a238112bf5"
RESULTS = "toy/results/fig4"
N_SAMPLES = 55  # p = 10: the unordered pairs (a, b), a <= b
NEVER = 9999  # the authors' iter_rqi when RQI never passed 0.95 within 10,000 steps
CONVENTION = "grokking-squared"
FACTOR = 1.5  # tolerance on a median step count

#: iter_rqi from RESULTS/rqistep_num_{n}_seed_{s}.txt, as released: {n_train: (seed 0, seed 1, seed 2)}
AUTHORS_ITER_RQI: dict[int, tuple[int, int, int]] = {
    5: (9999, 9999, 9999), 10: (9999, 9999, 9999), 15: (9999, 9999, 9999), 20: (9999, 9999, 9999),
    25: (9999, 9999, 2553), 30: (9999, 9999, 739), 35: (9999, 9999, 1171), 40: (867, 9999, 943),
    45: (833, 1071, 887), 50: (1011, 1272, 977), 54: (1033, 1086, 850),
}


def authors_steps(n_train: int) -> list[float]:
    """The authors' steps to RQI > 0.95 for ``n_train`` (probe's step count; inf: never)."""
    return [math.inf if v >= NEVER else float(v + 1) for v in AUTHORS_ITER_RQI[n_train]]


def _file(n_train: int) -> str:
    return f"{RESULTS}/rqistep_num_{n_train}_seed_{{0,1,2}}.txt"


def median_steps(values: list[float]) -> float:
    """Median over runs, "never" (inf) counted as the largest value."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)) if len(v) else math.nan


def steps_agree(paper: float, ours: float) -> bool:
    """Both never, or both finite and within a factor FACTOR of each other."""
    if math.isinf(paper) or math.isinf(ours):
        return math.isinf(paper) and math.isinf(ours)
    return max(paper, ours) <= FACTOR * min(paper, ours)


def run_agrees(authors: float, ours: float, every: int) -> bool:
    """One run against the authors' run of the same seed: both never, or probe's step (updates done,
    checked every ``every`` steps) at most ``every`` after the authors' (their 0-based step index is
    the update after which RQI passed, probe's first check at or after that update)."""
    if math.isinf(authors) or math.isinf(ours):
        return math.isinf(authors) and math.isinf(ours)
    return 0 <= ours - authors <= every


def _cadence(sweep_dir: str) -> int:
    """The sweep's metric cadence (checkpoint.metrics_every of its runs)."""
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    with sw.run(sw.names[0]) as run:
        return int(run.config.checkpoint.metrics_every)


SPEC_TEMPLATE = (
    "preset: liu-toy-add\n"
    "set: {{steps: {steps}, batch_size: 45, checkpoint.schedule: every, checkpoint.every: {every}, "
    "checkpoint.metrics_every: {every}, checkpoint.tensors: [embed.W_E], rng: grokking-squared{extra}}}\n"
    "grid:\n  n_train: {n_train}\n"
    "zip:\n  seed: {seeds}\n  split_seed: {seeds}\n"
)


def _spec(n_train: list[int], seeds: list[int], steps: int, every: int) -> str:
    return SPEC_TEMPLATE.format(n_train=n_train, seeds=seeds, steps=steps, every=every, extra="")


PAPER_N = sorted(AUTHORS_ITER_RQI)
QUICK_N = [20, 45]
QUICK_STEPS = 2000
#: the quick scale's spec with the training-set sizes, seeds and extra settings left open
QUICK_SPEC_TEMPLATE = SPEC_TEMPLATE.replace("{steps}", str(QUICK_STEPS)).replace("{every}", "10")

SETTING = (
    Setting("task", "non-modular addition a + b, p = 10, unordered pairs a <= b: 55 samples",
            "toy/train_add.py", "nonmod-add, p = 10 (55 unordered pairs)"),
    Setting("split", "train_num in {5, 10, ..., 50, 54}, np.random.choice(55, train_num) after "
            "np.random.seed(seed), seed in {0, 1, 2}", "toy/produce_figure_data.py",
            "n_train in the same list, seed = split_seed in {0, 1, 2} (zipped), rng grokking-squared: the same "
            "numpy draws, so seed S trains on the authors' training set S"),
    Setting("tokens / targets", "outputs regress random targets y_templates ~ N(0, 1), shape [19, 30]; "
            "prediction: the nearest target", "toy/train_add.py",
            "objective mse_targets, d_out 30 (N(0, 1) targets, nearest-target accuracy)"),
    Setting("block", "1-d embeddings summed (E_a + E_b), decoder MLP 1-200-200-30, tanh",
            "toy/train_add.py", "model toy, d_embed 1, aggregation sum, decoder [200, 200], tanh"),
    Setting("init", "torch.manual_seed(seed): embeddings torch.rand(10, 1) - 1/2 (init_scale_reprs 1), then "
            "nn.Linear l1, l2, l3 with torch's defaults (init_scale_nn 1); targets y_templates ~ N(0, 1) from "
            "numpy", "toy/train_add.py", "rng grokking-squared: the same draws in the same order, so seed S "
            "starts from the authors' weights and targets S (checked against their code: tests/train/"
            "test_rng_grokking_squared.py)"),
    Setting("head", "linear 200 -> 30 (nn.Linear l3)", "toy/train_add.py", "the toy decoder's output layer"),
    Setting("optimizer", "AdamW embeddings lr 1e-3 wd 0; AdamW decoder lr 1e-4 wd 0, betas (0.9, 0.999)",
            "toy/train_add.py", "adamw, embed_lr 1e-3, lr 1e-4, weight decays 0, betas (0.9, 0.999)"),
    Setting("batches", "batch_size 45: full batch when train_num <= 45, else 45 random samples without "
            "replacement per step (np.random.choice)", "toy/train_add.py", "batch_size 45 (full batch when "
            "n_train <= 45), the minibatches from the same numpy stream (rng grokking-squared)"),
    Setting("steps", "steps = 1e4 for Fig. 4/5b (train_many_fig4)", "toy/produce_figure_data.py",
            "steps 10000 (quick scale: 2000)"),
    Setting("loss precision", "float32 MSE, mean over batch and output dims", "toy/train_add.py",
            "float32 MSE (mse_targets)"),
    Setting("evaluation cadence", "RQI after every step's update (iter_rqi: 0-based step index)",
            "toy/train_add.py", "checkpoint (embeddings only) and metrics every 10 steps; probe's step s = "
            "the authors' index s - 1", "10-step resolution: a step is known to within 10 (well inside the "
            "factor-1.5 tolerance); every step, with an HDF5 commit each, would take hours on 2 CPU cores"),
    Setting("metric convention", "RQI: embeddings centred, each dimension divided by its std (ddof 1); a "
            "parallelogram (i, n, j, m), i < j <= m < n, i + n = j + m, counts when the mean over dimensions "
            "of the squared residual < 0.01; threshold RQI > 0.95", "toy/train_add.py",
            "rqi --convention grokking-squared, delta 0.01, first checkpoint with RQI > 0.95"),
    Setting("validation threshold", "iter_test: first step with test accuracy >= 0.9 (not released for "
            "this figure)", "toy/train_add.py", "first metrics step with val acc >= 0.9 (reported, no "
            "reference number to compare)"),
)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Comparison rows per training-set size: the median steps to RQI > 0.95 over seeds and the
    number of runs that get there, probe's recomputed from the runs against the authors' files."""
    from probe.analyses.sweeps import fraction_table
    from probe.sweep import load_sweep

    table = fraction_table(load_sweep(sweep_dir), convention=CONVENTION)
    table = table.sort_values(["n_train", "seed"]).reset_index(drop=True)
    budget = int(table["budget"].max())
    rows: list[Row] = []
    for n, g in table.groupby("n_train", sort=True):
        n = int(n)
        if n not in AUTHORS_ITER_RQI:
            continue
        paper = authors_steps(n)
        ours = [float(v) for v in g["rqi_step"]]
        frac = f"{n}/{N_SAMPLES} = {n / N_SAMPLES:.2f}"
        p_med, o_med = median_steps(paper), median_steps(ours)
        rows.append(Row(
            f"steps to RQI > 0.95, median over seeds, train fraction {frac}",
            f"{fmt_steps(p_med)} (seeds: {', '.join(fmt_steps(v) for v in paper)})", f"{REPO} {_file(n)}",
            f"{fmt_steps(o_med)} (runs: {', '.join(fmt_steps(v) for v in ours)}; budget {budget:,})",
            f"both never, or within a factor {FACTOR:g}",
            "agrees" if steps_agree(p_med, o_med) else "differs"))
        p_hit = sum(math.isfinite(v) for v in paper) / len(paper)
        o_hit = sum(math.isfinite(v) for v in ours) / len(ours)
        rows.append(Row(
            f"share of runs reaching RQI > 0.95, train fraction {frac}",
            f"{sum(math.isfinite(v) for v in paper)}/{len(paper)}", f"{REPO} {_file(n)}",
            f"{sum(math.isfinite(v) for v in ours)}/{len(ours)} (budget {budget:,})",
            "within 1/3 (one run of three)",
            "agrees" if abs(p_hit - o_hit) <= 1 / 3 + 1e-9 else "differs"))
    seeded = table[table["n_train"].isin(list(AUTHORS_ITER_RQI)) & table["seed"].isin([0, 1, 2])
                   & (table["seed"] == table["split_seed"])]
    if len(seeded):
        every = _cadence(sweep_dir)
        pairs = [(authors_steps(int(r["n_train"]))[int(r["seed"])], float(r["rqi_step"])) for _, r in seeded.iterrows()]
        same = sum(run_agrees(a, o, every) for a, o in pairs)
        gaps = [o - a for a, o in pairs if math.isfinite(a) and math.isfinite(o)]
        rows.append(Row(
            "steps to RQI > 0.95 run by run (seed S against the authors' seed S: the same training set, initial "
            "weights and batches)", f"{len(pairs)} runs", f"{REPO} {RESULTS}/rqistep_num_N_seed_S.txt",
            f"{same} of {len(pairs)} within the metric cadence ({every} steps) of the authors' step, or both never"
            + (f"; probe - authors from {min(gaps):+,.0f} to {max(gaps):+,.0f} steps" if gaps else ""),
            f"every run: both never, or probe's step - the authors' in [0, {every}]",
            "agrees" if same == len(pairs) else "differs"))
    runs = table[["run", "n_train", "seed", "split_seed", "fraction", "budget", "rqi_step", "val_step",
                  "predicted"]].copy()
    return Analysis(tuple(rows), runs, {"budget": budget, "scale": scale})


def draw(analysis: Analysis) -> "Figure":
    """Like the paper's panel: steps to high RQI against the training fraction, one point per run
    (probe's circles, the authors' crosses, never-reached runs at the top), beside probe's steps to
    90% validation accuracy (the authors released none for this figure)."""
    from probe.analyses import plots

    runs: "pd.DataFrame" = analysis.runs
    budget = float(analysis.extra["budget"])
    top = max(budget, 10_000.0) * 1.3
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    ax = axes[0]
    xs_a, ys_a = [], []
    for n in PAPER_N:
        for v in authors_steps(n):
            xs_a.append(n / N_SAMPLES)
            ys_a.append(min(v, top))
    ax.scatter(xs_a, ys_a, marker="x", color="0.35", label="authors (released, 10,000 steps)")
    ys = np.minimum(runs["rqi_step"].to_numpy(dtype=np.float64), top)
    ax.scatter(runs["fraction"], ys, facecolors="none", edgecolors="C0", s=40,
               label=f"probe ({analysis.extra['scale']} scale, {budget:,.0f} steps)")
    for panel in axes:
        panel.axhline(top, color="0.7", linewidth=0.6)
        panel.text(0.01, top, " never", va="bottom", fontsize=7, color="0.4", transform=panel.get_yaxis_transform())
        panel.set_xlabel("training data fraction")
        panel.set_xlim(0, 1)
        panel.set_ylim(0, top * 1.06)
    ax.set_ylabel("steps to high RQI (RQI > 0.95)")
    ax.set_title(f"Liu et al. Fig. 5(b), RQI convention {CONVENTION}", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="center right")
    ax = axes[1]
    ax.scatter(runs["fraction"], np.minimum(runs["val_step"].to_numpy(dtype=np.float64), top),
               facecolors="none", edgecolors="C1", s=40, label="probe")
    ax.set_ylabel("steps to validation accuracy >= 0.9")
    ax.set_title("generalisation (no released numbers)", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return fig


reproduction(Reproduction(
    name="liu-fig5b",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="Fig. 5(b): steps to RQI > 0.95 against the training fraction",
    artefact=Artefact(REPO, COMMIT, f"{RESULTS}/rqistep_num_N_seed_S.txt",
                      "iter_rqi per training-set size N in {5, 10, ..., 50, 54} and seed S in {0, 1, 2} "
                      "(739 to 2,553 steps where reached; 9999 = never)"),
    trains="the toy model on p = 10 addition (liu-toy-add), one run per training-set size and seed",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_N, [0, 1], QUICK_STEPS, 10), "26 s",
                       "two fractions (20/55, 45/55), two seeds, 2,000 steps: the small fraction stays below "
                       "RQI 0.95, the large one passes it; every reference row is produced"),
        "paper": Scale("paper", _spec(PAPER_N, [0, 1, 2], 10_000, 10), "11 min 25 s (--jobs 2, cores shared)",
                       "the authors' 11 training-set sizes x 3 seeds, 10,000 steps, RQI every 10 steps"),
    },
    analyse=analyse,
    draw=draw,
    claims=("below the critical fraction (about 0.4) no run's RQI passes 0.95",
            "above it the steps to RQI > 0.95 are about a thousand and fall with the fraction"),
))
