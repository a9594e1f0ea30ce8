"""Liu et al. 2022 (grokking-squared), Fig. 6(d): the toy model's phase diagram for the permutation group
S3 (regression) over the decoder's learning rate and weight decay, compared cell by cell with the
authors' released grid (docs/reproductions/liu-fig6d/README.md).

The authors' numbers are ``phase_diagram_plot/data_perm_r.h5`` of github.com/ejmichaud/grokking-squared
(commit 0229df9): ``train_steps`` and ``test_steps``, 16 x 11 arrays, row i = decoder learning rate
``learning_rate[i] = 10 ** linspace(-5, -2, 16)[i]``, column j = decoder weight decay ``weight_decay[j]``
(0, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200), each the 0-based index of the first step after whose update
train (test) accuracy >= 0.9, or 99999 (the last index of a 1e5-step budget) when it never got there.
The training code closest to the file is ``toy/Figure5d_permutation.ipynb`` (the S3 phase diagram
under its earlier figure number: the same weight decays, decoder rates from 1e-5 to 1e-2; the notebook
as committed trains 10 rates for 1e4 steps, the released grid 16 rates for 1e5), whose last cell
turns the indices into phases with the rule of :func:`probe.reproduce.liu_phase.authors_phase`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Scale, Setting, reproduction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO, COMMIT = lp.REPO, lp.COMMIT
DATA_FILE = f"{lp.FOLDER}/data_perm_r.h5"
TRAIN_SCRIPT = "toy/Figure5d_permutation.ipynb"
BUDGET = 100_000  # 99999 = never in the released file: a 1e5-step budget

#: the released grid's rows (``learning_rate``) and columns (``weight_decay``)
AUTHORS_LRS: tuple[float, ...] = tuple(float(v) for v in 10 ** np.linspace(-5, -2, 16))
AUTHORS_WDS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0)

#: DATA_FILE's ``train_steps`` as released: row = learning-rate index, column = weight-decay index
AUTHORS_TRAIN: tuple[tuple[int, ...], ...] = (
    (487, 489, 491, 493, 498, 509, 534, 563, 640, 1974, 15627),
    (379, 380, 382, 384, 389, 400, 426, 456, 532, 1477, 13811),
    (317, 319, 322, 324, 328, 340, 366, 397, 487, 2308, 16326),
    (268, 269, 269, 270, 272, 278, 307, 345, 483, 3366, 15776),
    (283, 289, 296, 302, 303, 301, 265, 302, 565, 3309, 99999),
    (214, 218, 222, 221, 222, 227, 261, 269, 804, 2508, 99999),
    (137, 138, 138, 140, 146, 169, 189, 235, 779, 3832, 95400),
    (136, 137, 138, 139, 141, 147, 174, 268, 767, 6293, 99999),
    (116, 119, 122, 125, 132, 154, 146, 457, 668, 4492, 73863),
    (110, 111, 113, 114, 113, 133, 187, 439, 593, 4627, 99999),
    (95, 97, 98, 100, 106, 120, 172, 372, 715, 4200, 99999),
    (84, 86, 88, 89, 103, 110, 154, 250, 1301, 10309, 99999),
    (76, 79, 78, 81, 97, 145, 188, 199, 1385, 8529, 99999),
    (54, 67, 69, 72, 81, 124, 203, 184, 1475, 9994, 99999),
    (43, 53, 58, 60, 71, 112, 200, 182, 1425, 12113, 99999),
    (37, 46, 49, 52, 63, 107, 218, 648, 416, 62334, 99999),
)
#: DATA_FILE's ``test_steps`` as released, same layout
AUTHORS_TEST: tuple[tuple[int, ...], ...] = (
    (722, 727, 731, 736, 746, 772, 830, 898, 961, 6084, 99999),
    (667, 671, 675, 679, 688, 714, 797, 908, 1320, 7704, 99999),
    (674, 686, 697, 710, 733, 776, 891, 1098, 2466, 4816, 99999),
    (600, 607, 613, 620, 635, 679, 810, 1131, 2276, 5378, 99999),
    (509, 513, 517, 522, 534, 575, 708, 1064, 1971, 7214, 99999),
    (401, 407, 413, 420, 434, 483, 609, 952, 1936, 99999, 99999),
    (473, 464, 466, 468, 469, 469, 536, 872, 1699, 99999, 99999),
    (99999, 81312, 48590, 28283, 15123, 856, 635, 798, 1635, 99999, 99999),
    (99999, 99999, 99999, 70477, 99999, 65645, 696, 830, 1436, 99999, 99999),
    (99999, 99999, 99999, 44886, 23579, 96099, 5192, 815, 1326, 99999, 99999),
    (99999, 99999, 99999, 99999, 27103, 99999, 7868, 800, 1458, 99999, 99999),
    (99999, 99999, 99999, 99999, 99999, 16512, 74450, 743, 2972, 99999, 99999),
    (99999, 99999, 99999, 99999, 99999, 14570, 99999, 677, 3649, 99999, 99999),
    (99999, 99999, 99999, 99999, 99999, 12867, 99999, 1019, 4553, 99999, 99999),
    (99999, 99999, 99999, 99999, 99999, 15212, 99999, 3628, 99999, 99999, 99999),
    (99999, 99999, 99999, 99999, 99999, 99999, 99999, 3762, 99999, 99999, 99999),
)

GRID = lp.ReleasedGrid(DATA_FILE, "lr", "weight_decay", "learning rate (decoder)", "weight decay (decoder)",
                       AUTHORS_LRS, AUTHORS_WDS, AUTHORS_TRAIN, AUTHORS_TEST, BUDGET)

INIT_SCALE = 0.1  # the notebook's init_scale (the preset's is 1)
L1_COEF = 1e-3  # the notebook's lamb: loss = mse + lamb * mean(|embeddings|)

SPEC_TEMPLATE = (
    "preset: liu-toy-s3\n"
    "set: {{steps: {steps}, model.init_scale: {init!r}, l1.coef: {l1!r}, stop.after_generalization: 200, "
    "stop.threshold: {threshold!r}, checkpoint.schedule: geometric, checkpoint.count: {count}, "
    "checkpoint.metrics_every: {every}{extra}}}\n"
    "{axes}"
)


def _spec(lrs: list[float], wds: list[float], steps: int, every: int, count: int, extra: str = "",
          zipped: bool = False) -> str:
    """A sweep over decoder lr x weight decay (``zipped``: the listed (lr, wd) pairs only)."""
    axes = (f"{'zip' if zipped else 'grid'}:\n  lr: {lp.yaml_list(lrs)}\n  weight_decay: {lp.yaml_list(wds)}\n")
    return SPEC_TEMPLATE.format(steps=steps, init=INIT_SCALE, l1=L1_COEF, threshold=lp.THRESHOLD, count=count,
                                every=every, extra=extra, axes=axes)


#: the quick cells, (lr index, wd index): away from the released grid's phase boundaries
QUICK_CELLS = ((10, 0), (10, 7), (15, 0), (15, 10))  # memorization, comprehension, memorization, confusion
QUICK_STEPS = 3000

SETTING = (
    Setting("task", "composition in S3 (6 elements, 36 ordered pairs; a o b computed as perm_b[perm_a])",
            TRAIN_SCRIPT, "perm, n = 3 (36 ordered pairs)",
            "probe's composition order may be the other one: the same group table up to relabelling"),
    Setting("split", "train_num = 24 of 36, np.random.choice(36, 24, replace=False) after np.random.seed(0)",
            TRAIN_SCRIPT, "n_train 24, split_seed 0, model seed 0 (the preset's)",
            "another draw of the 12 validation pairs and of the initial weights: one run per cell on both "
            "sides, so single cells near a phase boundary may differ by chance"),
    Setting("tokens / targets", "outputs regress random targets y_templates ~ N(0, 1), shape [6, 30]; "
            "prediction: the nearest target", TRAIN_SCRIPT,
            "objective mse_targets, d_out 30 (N(0, 1) targets, nearest-target accuracy)"),
    Setting("block", "3 x 3 embedding matrices multiplied (E_a E_b, flattened to 9), decoder MLP 9-200-200-30, "
            "tanh", TRAIN_SCRIPT, "model toy, d_embed 3, aggregation matrix, decoder [200, 200], tanh"),
    Setting("init", "embeddings (rand - 1/2) * init_scale with init_scale = 0.1; decoder torch nn.Linear default",
            TRAIN_SCRIPT, "model.init_scale 0.1: U(-0.05, 0.05), the same distribution"),
    Setting("loss", "mean squared error + lamb * mean(|embeddings|), lamb = 1e-3", TRAIN_SCRIPT,
            "mean squared error, and l1.coef 1e-3: the penalty's gradient 1e-3 sign(E) / 54 added to the "
            "embeddings' (the same update)"),
    Setting("optimizer", "AdamW embeddings lr 1e-3 wd 0 (wd1 = 0); AdamW decoder lr eta2, weight decay wd2, "
            "betas (0.9, 0.999)", TRAIN_SCRIPT,
            "adamw, embed_lr 1e-3, embed_weight_decay 0, lr = decoder lr, weight_decay = decoder weight decay"),
    Setting("grid", "learning_rate = 10 ** linspace(-5, -2, 16) (rows) x weight_decay 0, 1, 2, 3, 5, 10, 20, 30, "
            "50, 100, 200 (columns) in the released file (the notebook as committed: 10 ** linspace(-5, -2, 10))",
            TRAIN_SCRIPT, "lr logspace [1e-5, 1e-2, 16] x the same weight decays (quick: the cells (1e-3, 0), "
            "(1e-3, 30), (1e-2, 0), (1e-2, 200))"),
    Setting("batches", "batch_size = train_num = 24: every step all 24 training pairs (in a random order)",
            TRAIN_SCRIPT, "batch_size unset (full batch)"),
    Setting("steps", "1e5 steps per cell (99999 = never in the released file; the notebook as committed: "
            "epochs = 1e4), every cell trained to the end", TRAIN_SCRIPT,
            "steps 100000 (quick: 3000); a run stops 200 steps after train and validation accuracy both "
            "passed 0.9", "the phase is decided by then; memorising and confused runs use the whole budget"),
    Setting("loss precision", "float32", TRAIN_SCRIPT, "float32 (mse_targets)"),
    Setting("evaluation cadence", "train and test accuracy after every step's update (0-based indices)",
            TRAIN_SCRIPT, "metrics every 20 steps (quick: 10); probe's step s = the authors' index s - 1",
            "a step known to within 20: a phase changes only for a delay within 20 steps of 1,000"),
    Setting("thresholds", "train / test accuracy >= 0.9", TRAIN_SCRIPT,
            f"PhaseRule threshold {lp.THRESHOLD!r} (probe counts acc > threshold)"),
    Setting("phase rule", "comprehension: both reached, test - train < 1e3; grokking: both reached, > 1e3; "
            "memorization: train only; confusion: neither; anything else drawn as comprehension", TRAIN_SCRIPT,
            "PhaseRule(threshold, budget 100000, delay 1000)", "a delay of exactly 1,000 is comprehension for "
            "them, grokking for probe; validation reached without training accuracy is confusion for probe"),
)


def _cell_label(lr: float, wd: float) -> str:
    return f"phase at decoder lr {lr:.3g}, weight decay {wd:g}"


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per released cell that the sweep trained: the authors' phase (their rule on their file) against
    probe's (PhaseRule on the run's curves), recomputed from the runs; rows for the share of agreeing
    cells overall, per authors' phase, and one per cell."""
    return lp.compare(sweep_dir, scale, GRID, f"{REPO} {DATA_FILE}; rule {TRAIN_SCRIPT}", _cell_label)


def draw(analysis: Analysis) -> "Figure":
    """The authors' grid and probe's cells: decoder learning rate across (1e-5 at the left), weight decay
    down (0 at the top), as the paper's Fig. 6(d)."""
    return lp.draw_grid(analysis, GRID, "Liu et al. Fig. 6(d): toy model, permutation group S3 (regression)",
                        [(0, "1e-5"), (5, "1e-4"), (10, "1e-3"), (15, "1e-2")],
                        [(k, f"{AUTHORS_WDS[k]:g}") for k in (0, 5, 10)])


reproduction(Reproduction(
    name="liu-fig6d",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="Fig. 6(d): phase diagram of the toy model (permutation group S3, regression) over decoder "
           "learning rate x weight decay",
    artefact=Artefact(REPO, COMMIT, DATA_FILE,
                      "16 x 11 steps to train / test accuracy >= 0.9 (train_steps, test_steps; rows: decoder lr "
                      "1e-5 to 1e-2, log; columns: decoder weight decay 0 to 200; 99999 = never), phases by the "
                      f"rule of {TRAIN_SCRIPT}"),
    trains="the toy model on S3 composition (liu-toy-s3, embeddings initialised at scale 0.1), one run per "
           "(decoder lr, decoder weight decay) cell",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec([AUTHORS_LRS[i] for i, _ in QUICK_CELLS],
                                      [AUTHORS_WDS[j] for _, j in QUICK_CELLS], QUICK_STEPS, 10, 20, zipped=True),
                       "11 s (--jobs 1)",
                       "four cells away from the released grid's phase boundaries, 3,000 steps: at decoder lr "
                       "1e-2 without weight decay and at 1e-3 without weight decay the model memorises, at 1e-3 "
                       "with weight decay 30 it comprehends, at 1e-2 with weight decay 200 it stays confused; "
                       "the grokking cells (validation after 3,600 to 96,000 steps) need the paper budget"),
        "paper": Scale("paper", _spec(list(AUTHORS_LRS), list(AUTHORS_WDS), BUDGET, 20, 60),
                       "56 min 20 s (--jobs 2, beside other work; with the L1 penalty)",
                       "the authors' 16 x 11 grid, 100,000 steps per cell (early stop 200 steps after both "
                       "accuracies pass 0.9), metrics every 20 steps; the cells train as two batched models"),
    },
    analyse=analyse,
    draw=draw,
    claims=("a fast decoder without weight decay (top right) memorises; a fast decoder with large weight decay "
            "(bottom right) stays confused",
            "a moderate decoder rate with weight decay 30 comprehends; grokking lies between comprehension and "
            "memorization"),
))
