"""Liu et al. 2022 (grokking-squared), Fig. 6(b): the toy model's phase diagram (addition, p = 10) over
the decoder's learning rate and weight decay, compared cell by cell with the authors' released grid
(docs/reproductions/liu-fig6b/README.md).

The authors' numbers are ``phase_diagram_plot/train_steps.txt`` and ``test_steps.txt`` of
github.com/ejmichaud/grokking-squared (commit 0229df9): 11 x 11 arrays, row i = decoder learning rate
``10 ** linspace(-4, -2, 11)[i]``, column j = decoder weight decay ``j`` (0 to 10), each the 0-based
index of the first step after whose update train (test) accuracy >= 0.9, or 99999 (the last index of
the 1e5-step budget) when it never got there. They were trained by ``phase_diagram_plot/
phase_diagram.ipynb`` (``train``) and turned into phases by ``phase_diagram_plot/
simple_phase_diagram.ipynb`` with the rule of :func:`authors_phase`. probe counts steps as updates
done, so the authors' index ``i`` is probe's step ``i + 1``; the delay is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probe.phases import PHASES, PhaseRule
from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Scale, Setting,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/ejmichaud/grokking-squared"
COMMIT = "0229df94de69b8384e560367280a43a238112bf5"
FOLDER = "phase_diagram_plot"
TRAIN_FILE = f"{FOLDER}/train_steps.txt"
TEST_FILE = f"{FOLDER}/test_steps.txt"
RULE_FILE = f"{FOLDER}/simple_phase_diagram.ipynb"
TRAIN_SCRIPT = f"{FOLDER}/phase_diagram.ipynb"
BUDGET = 100_000  # the notebook's compute_budget (epochs = 1e5)
NEVER = BUDGET - 1  # the authors' step index when accuracy never reached 0.9
DELAY = 1000  # the notebook's threshold: comprehension when test - train < 1e3
#: the authors' test is acc >= 0.9; probe's rule counts acc > threshold, so this threshold makes 9 of 10
#: validation pairs (acc 0.9) count, as theirs does (no accuracy on 45 or 10 samples lies in between)
THRESHOLD = 0.9 - 1e-9
AGREE_SHARE = 0.75  # a share of agreeing cells >= this is "agrees"

#: the decoder learning rates (rows) and weight decays (columns) of the released grid
AUTHORS_LRS: tuple[float, ...] = tuple(float(v) for v in 10 ** np.linspace(-4, -2, 11))
AUTHORS_WDS: tuple[float, ...] = tuple(float(v) for v in range(11))

#: TRAIN_FILE as released: row = learning-rate index, column = weight-decay index
AUTHORS_TRAIN: tuple[tuple[int, ...], ...] = (
    (1650, 1815, 2069, 2310, 2536, 3022, 3984, 8929, 10185, 15875, 18911),
    (1274, 1302, 1487, 1589, 1715, 1968, 2402, 4632, 9513, 14864, 17477),
    (854, 938, 1015, 1134, 1172, 1250, 1605, 3429, 13034, 15800, 18738),
    (938, 1119, 1186, 1376, 2980, 969, 1162, 2239, 3790, 14977, 18817),
    (811, 733, 838, 1029, 1337, 2361, 99999, 99999, 2606, 18775, 23816),
    (489, 732, 906, 703, 934, 1554, 99999, 99999, 99999, 28683, 99999),
    (347, 420, 780, 661, 814, 3044, 99999, 99999, 99999, 99999, 99999),
    (434, 395, 507, 857, 952, 99999, 99999, 99999, 99999, 99999, 99999),
    (362, 690, 488, 1162, 99999, 99999, 99999, 99999, 99999, 99999, 99999),
    (420, 638, 725, 1561, 99999, 99999, 99999, 99999, 99999, 99999, 99999),
    (248, 443, 1425, 99999, 99999, 99999, 99999, 99999, 99999, 99999, 99999),
)
#: TEST_FILE as released, same layout
AUTHORS_TEST: tuple[tuple[int, ...], ...] = (
    (2076, 2402, 2571, 3095, 3906, 5549, 9455, 12424, 16837, 67035, 99999),
    (1504, 1698, 1814, 1818, 2097, 3275, 5636, 8543, 18425, 97186, 99999),
    (923, 1015, 1393, 1476, 1668, 2193, 2790, 7392, 18052, 77518, 99999),
    (99999, 99999, 99999, 99999, 99999, 1400, 1939, 19977, 99999, 99999, 99999),
) + tuple((99999,) * 11 for _ in range(7))


#: the released grid, for the shared phase-diagram machinery (reproduce/liu_phase.py)
GRID = lp.ReleasedGrid(f"{TRAIN_FILE}, {TEST_FILE}", "lr", "weight_decay", "learning rate (decoder)",
                       "weight decay (decoder)", AUTHORS_LRS, AUTHORS_WDS, AUTHORS_TRAIN, AUTHORS_TEST, BUDGET)


def authors_phase(train: float, test: float) -> str:
    """simple_phase_diagram.ipynb's rule on the released indices (:func:`liu_phase.authors_phase` with
    this grid's never, 99999)."""
    return lp.authors_phase(train, test, NEVER, DELAY)


def authors_cell(i: int, j: int) -> tuple[float, float, str]:
    """The authors' (train step, test step, phase) of cell (lr index i, wd index j), steps in probe's
    count (inf: never)."""
    return GRID.cell(i, j)


grid_index = lp.grid_index
_yaml_list = lp.yaml_list


SPEC_TEMPLATE = (
    "preset: liu-toy-add\n"
    "set: {{rng: grokking-squared-phase, seed: {seed}, split_seed: {seed}, n_train: 45, steps: {steps}, "
    "stop.after_generalization: 200, stop.threshold: {threshold!r}, "
    "checkpoint.schedule: geometric, checkpoint.count: {count}, checkpoint.metrics_every: {every}{extra}}}\n"
    "grid:\n  lr: {lrs}\n  weight_decay: {wds}\n"
)


def _spec(lrs: list[float], wds: list[float], steps: int, every: int, count: int, extra: str = "") -> str:
    return SPEC_TEMPLATE.format(seed=NOTEBOOK_SEED, steps=steps, threshold=THRESHOLD, count=count, every=every, extra=extra,
                                lrs=_yaml_list(lrs), wds=_yaml_list(wds))


#: the training notebook's seed (phase_diagram.ipynb: seed = 58): its code run at this seed gives the released
#: cells (tests/train/test_rng_grokking_squared.py), so probe's runs are the authors' runs
NOTEBOOK_SEED = 58
QUICK_LRS = [AUTHORS_LRS[0], AUTHORS_LRS[10]]  # 1e-4 and 1e-2
QUICK_WDS = [AUTHORS_WDS[0], AUTHORS_WDS[3]]
QUICK_STEPS = 4000

SETTING = (
    Setting("task", "non-modular addition a + b, p = 10, unordered pairs a <= b: 55 samples", TRAIN_SCRIPT,
            "nonmod-add, p = 10 (55 unordered pairs)"),
    Setting("split", "train_num = 45, np.random.choice(55, 45, replace=False) after np.random.seed(58) "
            "(the notebook's seed; the .txt files do not record one)", TRAIN_SCRIPT,
            "rng grokking-squared-phase, seed 58 = split_seed, n_train 45: the notebook's own draws (its "
            "unused x_templates, the targets, then the split; its unused encoder, the decoder, then the "
            "embeddings), so each cell is the authors' run",
            "the same numbers up to floating-point summation order (the cell decoder lr 1e-4, weight decay 0 "
            "gives the released 1,650 / 2,076 exactly)"),
    Setting("tokens / targets", "outputs regress random targets y_templates ~ N(0, 1), shape [19, 30]; "
            "prediction: the nearest target", TRAIN_SCRIPT,
            "objective mse_targets, d_out 30 (N(0, 1) targets, nearest-target accuracy)"),
    Setting("block", "1-d embeddings summed (latent[a] + latent[b]), decoder MLP 1-200-200-30, tanh",
            TRAIN_SCRIPT, "model toy, d_embed 1, aggregation sum, decoder [200, 200], tanh"),
    Setting("init", "embeddings U(-1/2, 1/2) (init_scale 1); decoder torch nn.Linear default", TRAIN_SCRIPT,
            "init_scale 1.0, drawn by rng grokking-squared-phase as the notebook draws them"),
    Setting("optimizer", "AdamW embeddings lr 1e-3 wd 0 (wd1_mode 0); AdamW decoder lr eta2, weight decay "
            "wd2, betas (0.9, 0.999)", TRAIN_SCRIPT,
            "adamw, embed_lr 1e-3, embed_weight_decay 0, lr = decoder lr, weight_decay = decoder weight decay"),
    Setting("grid", "dec_lrs = 10 ** linspace(-4, -2, 11) (rows of the .txt), wds = 0, 1, ..., 10 "
            "(columns; the training notebook adds wd 20, not in the released files)", RULE_FILE,
            "lr logspace [1e-4, 1e-2, 11] x weight_decay linspace [0, 10, 11] (quick: lr {1e-4, 1e-2} x "
            "wd {0, 3})"),
    Setting("batches", "full batch: the 45 training pairs every step", TRAIN_SCRIPT, "batch_size unset (full batch)"),
    Setting("steps", "epochs = 1e5 steps per cell, every cell trained to the end", TRAIN_SCRIPT,
            "steps 100000 (quick: 4000); a run stops 200 steps after train and validation accuracy both "
            "passed 0.9", "the phase is decided by then; memorising and confused runs use the whole budget"),
    Setting("loss precision", "float32 MSE, mean over batch and output dims", TRAIN_SCRIPT,
            "float32 MSE (mse_targets)"),
    Setting("evaluation cadence", "train and test accuracy after every step's update (iter_train, iter_test: "
            "0-based indices, 99999 = never)", TRAIN_SCRIPT,
            "metrics every 10 steps; probe's step s = the authors' index s - 1",
            "a step known to within 10: a phase changes only for a delay within 10 steps of 1,000"),
    Setting("thresholds", "train / test accuracy >= 0.9", TRAIN_SCRIPT,
            f"PhaseRule threshold {THRESHOLD!r} (probe counts acc > threshold: 9 of 10 validation pairs count)"),
    Setting("phase rule", "comprehension: both reached, test - train < 1e3; grokking: both reached, > 1e3; "
            "memorization: train only; confusion: neither; anything else drawn as comprehension", RULE_FILE,
            "PhaseRule(threshold, budget 100000, delay 1000): comprehension when val - train < 1000, else "
            "grokking; memorization, confusion as theirs", "a delay of exactly 1,000 is comprehension for "
            "them, grokking for probe; validation reached without training accuracy is confusion for probe"),
)


def _rule(budget: int) -> PhaseRule:
    return PhaseRule(THRESHOLD, budget, DELAY)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per released cell that the sweep trained: the authors' phase (their rule on their files) against
    probe's (PhaseRule on the run's curves), recomputed from the runs; rows for the share of agreeing
    cells overall, per authors' phase, and one per cell."""
    import pandas as pd

    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    budget = lp.sweep_budget(sw, BUDGET)
    df = sw.phases(_rule(budget))
    records = []
    for _, r in df.iterrows():
        i, j = grid_index(AUTHORS_LRS, r["lr"]), grid_index(AUTHORS_WDS, r["weight_decay"])
        if i is None or j is None:
            continue
        a_train, a_test, a_phase = authors_cell(i, j)
        records.append({"run": r["run"], "lr": float(r["lr"]), "weight_decay": float(r["weight_decay"]),
                        "lr_index": i, "wd_index": j, "train_step": float(r["train_step"]),
                        "val_step": float(r["val_step"]), "phase": str(r["phase"]),
                        "authors_train_step": a_train, "authors_test_step": a_test, "authors_phase": a_phase})
    runs = pd.DataFrame(records, columns=["run", "lr", "weight_decay", "lr_index", "wd_index", "train_step",
                                          "val_step", "phase", "authors_train_step", "authors_test_step",
                                          "authors_phase"])
    runs = runs.sort_values(["lr_index", "wd_index"]).reset_index(drop=True)
    cells = runs.rename(columns={"lr": "row_value", "weight_decay": "col_value", "lr_index": "row_index",
                                 "wd_index": "col_index"})
    rows = lp.share_rows(cells, GRID, budget, f"{REPO} {TRAIN_FILE}, {TEST_FILE}; rule {RULE_FILE}",
                         lambda lr, wd: f"phase at decoder lr {lr:.3g}, weight decay {wd:g}")
    return Analysis(tuple(rows), runs, {"budget": budget, "scale": scale})


PALETTE = lp.PALETTE


def phase_image(cells: dict[tuple[int, int], str]) -> np.ndarray:
    """An RGBA image, rows = weight decay (0 at the top), columns = learning rate, as the notebook
    draws it (transposed); cells not given are white."""
    return lp.phase_image(cells, len(AUTHORS_LRS), len(AUTHORS_WDS))


def draw(analysis: Analysis) -> "Figure":
    """Two panels laid out like the paper's (learning rate across, weight decay down, the notebook's
    colours, without its bicubic smoothing): the authors' released grid and probe's cells."""
    from matplotlib.patches import Patch

    from probe.analyses import plots

    runs: "pd.DataFrame" = analysis.runs
    authors = {(i, j): authors_cell(i, j)[2] for i in range(len(AUTHORS_LRS)) for j in range(len(AUTHORS_WDS))}
    ours = {(int(r["lr_index"]), int(r["wd_index"])): str(r["phase"]) for _, r in runs.iterrows()}
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    titles = ("authors (released, 100,000 steps)",
              f"probe ({analysis.extra['scale']} scale, {analysis.extra['budget']:,} steps)")
    for ax, cells, title in zip(axes, (authors, ours), titles):
        ax.imshow(phase_image(cells), interpolation="nearest")
        ax.set_xticks([0, 5, 10], ["1e-4", "1e-3", "1e-2"])
        ax.set_yticks([0, 5, 10], ["0", "5", "10"])
        ax.set_xlabel("learning rate (decoder)")
        ax.set_ylabel("weight decay (decoder)")
        ax.set_title(title, fontsize=10)
    for (i, j) in ours:  # mark the compared cells on the authors' panel
        axes[0].add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    fig.legend(handles=[Patch(color=PALETTE[k], label=p) for k, p in enumerate(PHASES)], loc="lower center",
               ncol=4, frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Liu et al. Fig. 6(b): toy model, addition p = 10 (red: cells probe trained)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="liu-fig6b",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="Fig. 6(b): phase diagram of the toy model (addition) over decoder learning rate x weight decay",
    artefact=Artefact(REPO, COMMIT, f"{TRAIN_FILE}, {TEST_FILE}",
                      "11 x 11 steps to train / test accuracy >= 0.9 (rows: decoder lr 1e-4 to 1e-2, log; "
                      "columns: decoder weight decay 0 to 10; 99999 = never), phases by the rule of "
                      f"{RULE_FILE}"),
    trains="the toy model on p = 10 addition (liu-toy-add), one run per (decoder lr, decoder weight decay) cell",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_LRS, QUICK_WDS, QUICK_STEPS, 10, 20), "11 s (--jobs 2)",
                       "four cells, decoder lr {1e-4, 1e-2} x weight decay {0, 3}, 4,000 steps: at the high "
                       "rate without weight decay the model memorises, at the low rate it comprehends with or "
                       "without weight decay, at the high rate with weight decay 3 it stays confused; every "
                       "reference row is produced"),
        "paper": Scale("paper", _spec(list(AUTHORS_LRS), list(AUTHORS_WDS), BUDGET, 10, 60),
                       "80 min (--jobs 2, beside other work)",
                       "the authors' 11 x 11 grid at the notebook's seed 58, 100,000 steps per cell (early stop "
                       "200 steps after both accuracies pass 0.9), metrics every 10 steps"),
    },
    analyse=analyse,
    draw=draw,
    claims=("a high decoder learning rate without weight decay memorises (train accuracy within a few hundred "
            "steps, validation never)",
            "a low learning rate comprehends; grokking sits at low rate and large weight decay; confusion at "
            "high rate and large weight decay"),
))
