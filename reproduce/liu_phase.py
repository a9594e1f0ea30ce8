"""The machinery shared by the reproductions of Liu et al. 2022's toy-model phase diagrams (Fig. 6 and
App. G of "Towards Understanding Grokking"): the authors' phase rule on their released step counts, a
released grid as data, the cell-by-cell comparison of a probe sweep with it, and the figure.

The authors' grids (github.com/ejmichaud/grokking-squared, commit 0229df9, ``phase_diagram_plot/``)
hold, per cell, the 0-based index of the first step after whose update training (test) accuracy was
>= 0.9, or ``budget - 1`` when it never was; their notebooks (``simple_phase_diagram.ipynb``,
``toy/Figure5d_permutation.ipynb``) turn the two indices into a phase with :func:`authors_phase`.
probe counts steps as updates done, so the authors' index ``i`` is probe's step ``i + 1``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from probe.errors import ProbeError
from probe.phases import PHASES, PhaseRule
from probe.reproduce.registry import Analysis, Row, Setting, fmt_steps

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/ejmichaud/grokking-squared"
COMMIT = "0229df94de69b8384e560367280a43a238112bf5"
FOLDER = "phase_diagram_plot"
RULE_FILE = f"{FOLDER}/simple_phase_diagram.ipynb"
DELAY = 1000  # the notebooks' threshold: comprehension when test - train < 1e3
#: the authors' test is acc >= 0.9; probe's rule counts acc > threshold, so this threshold makes 9 of 10
#: validation samples (acc 0.9) count, as theirs does
THRESHOLD = 0.9 - 1e-9
AGREE_SHARE = 0.75  # a share of agreeing cells >= this is "agrees"

#: the notebooks' palette: comprehension, grokking, memorization, confusion
PALETTE = np.array([[160, 218, 57], [253, 231, 37], [70, 50, 126], [30, 30, 30]]) / 255.0


def authors_phase(train: float, test: float, never: int, delay: int = DELAY) -> str:
    """The notebooks' rule on the released indices (``never`` = budget - 1): comprehension when both
    are reached and test - train < delay, grokking when both are reached and test - train > delay,
    memorization when only train is, confusion when neither is; a cell none of these fits
    (test - train == delay, or test reached without train) is drawn as comprehension (index 0)."""
    t_ok, v_ok = train < never, test < never
    if t_ok and v_ok and test - train > delay:
        return "grokking"
    if t_ok and not v_ok:
        return "memorization"
    if not t_ok and not v_ok:
        return "confusion"
    return "comprehension"


def authors_step(v: float, never: int) -> float:
    """A released index as probe's step (updates done; inf: never)."""
    return math.inf if v >= never else float(v + 1)


def grid_index(values: Sequence[float], x: float) -> int | None:
    """The index of the grid value equal to ``x`` (to 1e-6 relative), or None."""
    for k, v in enumerate(values):
        if math.isclose(v, float(x), rel_tol=1e-6, abs_tol=1e-12):
            return k
    return None


def yaml_list(xs: Sequence[float]) -> str:
    return "[" + ", ".join(repr(float(x)) for x in xs) + "]"


@dataclass(frozen=True)
class ReleasedGrid:
    """One released phase diagram: ``train[i][j]`` and ``test[i][j]`` are the authors' indices at row
    value ``rows[i]`` (probe config key ``row_key``) and column value ``cols[j]`` (``col_key``)."""

    file: str  # the released file, in the repository
    row_key: str
    col_key: str
    row_label: str
    col_label: str
    rows: tuple[float, ...]
    cols: tuple[float, ...]
    train: tuple[tuple[int, ...], ...]
    test: tuple[tuple[int, ...], ...]
    budget: int  # the authors' steps per cell (never = budget - 1)

    def __post_init__(self) -> None:
        shape = (len(self.rows), len(self.cols))
        for name in ("train", "test"):
            arr = getattr(self, name)
            if len(arr) != shape[0] or any(len(r) != shape[1] for r in arr):
                raise ValueError(f"{self.file}: {name} is not {shape[0]} x {shape[1]}")

    @property
    def never(self) -> int:
        return self.budget - 1

    def cell(self, i: int, j: int) -> tuple[float, float, str]:
        """The authors' (train step, test step, phase) of cell (i, j), steps in probe's count."""
        tr, te = self.train[i][j], self.test[i][j]
        return authors_step(tr, self.never), authors_step(te, self.never), authors_phase(tr, te, self.never)

    def phases(self) -> Counter:
        return Counter(self.cell(i, j)[2] for i in range(len(self.rows)) for j in range(len(self.cols)))


def sweep_budget(sw: object, default: int) -> int:
    """The largest ``steps`` among the sweep's written runs (``default`` when none is written yet)."""
    budgets = []
    for name in sw.names:  # type: ignore[attr-defined]
        if sw.run_dir(name).is_dir():  # type: ignore[attr-defined]
            try:
                with sw.run(name) as run:  # type: ignore[attr-defined]
                    budgets.append(int(run.config.steps))
            except (OSError, ProbeError):  # a run not written yet has no budget to read
                continue
    return max(budgets) if budgets else default


RUN_COLUMNS = ["run", "row_value", "col_value", "row_index", "col_index", "train_step", "val_step", "phase",
               "authors_train_step", "authors_test_step", "authors_phase"]


def compare_cells(sweep_dir: str, grid: ReleasedGrid) -> tuple["pd.DataFrame", int]:
    """Per released cell that the sweep trained: the authors' steps and phase beside probe's
    (PhaseRule on the run's curves, budget = the sweep's steps); and that budget."""
    import pandas as pd

    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    budget = sweep_budget(sw, grid.budget)
    df = sw.phases(PhaseRule(THRESHOLD, budget, DELAY))
    records = []
    for _, r in df.iterrows():
        i, j = grid_index(grid.rows, r[grid.row_key]), grid_index(grid.cols, r[grid.col_key])
        if i is None or j is None:
            continue
        a_train, a_test, a_phase = grid.cell(i, j)
        done = str(r["phase"]) in PHASES  # a finished run: a threshold never passed is "never" (inf)
        t, v = (float(r[k]) for k in ("train_step", "val_step"))
        records.append({"run": r["run"], "row_value": float(r[grid.row_key]), "col_value": float(r[grid.col_key]),
                        "row_index": i, "col_index": j, "train_step": math.inf if done and math.isnan(t) else t,
                        "val_step": math.inf if done and math.isnan(v) else v, "phase": str(r["phase"]),
                        "authors_train_step": a_train,
                        "authors_test_step": a_test, "authors_phase": a_phase})
    runs = pd.DataFrame(records, columns=RUN_COLUMNS)
    return runs.sort_values(["row_index", "col_index"]).reset_index(drop=True), budget


def share_rows(runs: "pd.DataFrame", grid: ReleasedGrid, budget: int, source: str,
               cell_label: Callable[[float, float], str]) -> list[Row]:
    """The comparison rows: the share of cells with the authors' phase overall, the same share among
    the authors' cells of each phase, and one row per cell (``cell_label(row value, column value)``)."""
    agree = runs["phase"] == runs["authors_phase"]
    tol = f"share of agreeing cells >= {AGREE_SHARE:g}"
    rows: list[Row] = []
    n = len(runs)
    if n:
        k = int(agree.sum())
        rows.append(Row(f"cells with the same phase, all {n} compared cells", f"{n}/{n} (the released phases)",
                        source, f"{k}/{n} = {k / n:.2f} (budget {budget:,})", tol,
                        "agrees" if k / n >= AGREE_SHARE else "differs"))
    for ph in PHASES:
        sel = runs["authors_phase"] == ph
        m = int(sel.sum())
        if not m:
            continue
        k = int(agree[sel].sum())
        ours = runs.loc[sel, "phase"].value_counts()
        rows.append(Row(f"cells with the same phase, among the authors' {ph} cells", f"{m} {ph}", source,
                        f"{k}/{m} = {k / m:.2f} (probe: " + ", ".join(f"{c} {p}" for p, c in ours.items()) + ")",
                        tol, "agrees" if k / m >= AGREE_SHARE else "differs"))
    for _, r in runs.iterrows():
        rows.append(Row(
            cell_label(r["row_value"], r["col_value"]),
            f"{r['authors_phase']} (train {fmt_steps(r['authors_train_step'])}, test "
            f"{fmt_steps(r['authors_test_step'])})",
            f"{REPO} {grid.file} [{int(r['row_index'])}, {int(r['col_index'])}]",
            f"{r['phase']} (train {fmt_steps(r['train_step'])}, val {fmt_steps(r['val_step'])}; budget {budget:,})",
            "the same phase", "agrees" if r["phase"] == r["authors_phase"] else "differs"))
    return rows


def compare(sweep_dir: str, scale: str, grid: ReleasedGrid, source: str,
            cell_label: Callable[[float, float], str]) -> Analysis:
    """:func:`compare_cells` and :func:`share_rows` as an :class:`Analysis` (recomputed from the runs)."""
    runs, budget = compare_cells(sweep_dir, grid)
    return Analysis(tuple(share_rows(runs, grid, budget, source, cell_label)), runs,
                    {"budget": budget, "scale": scale})


def phase_image(cells: dict[tuple[int, int], str], n_rows: int, n_cols: int) -> np.ndarray:
    """An RGBA image with the grid's columns down (first at the top) and its rows across (first at the
    left), as the notebooks draw their transposed arrays; cells not given are white, cells without a
    phase grey."""
    img = np.ones((n_cols, n_rows, 4))
    for (i, j), ph in cells.items():
        img[j, i, :3] = PALETTE[PHASES.index(ph)] if ph in PHASES else 0.8
    return img


def draw_grid(analysis: Analysis, grid: ReleasedGrid, title: str, xticks: Sequence[tuple[int, str]],
              yticks: Sequence[tuple[int, str]]) -> "Figure":
    """Two panels laid out like the paper's (the grid's rows across, its columns down, the notebooks'
    colours, without their bicubic smoothing): the authors' released grid and probe's cells, with the
    trained cells outlined in red on the authors' panel."""
    from matplotlib.patches import Patch

    from probe.analyses import plots

    runs: "pd.DataFrame" = analysis.runs
    n_rows, n_cols = len(grid.rows), len(grid.cols)
    authors = {(i, j): grid.cell(i, j)[2] for i in range(n_rows) for j in range(n_cols)}
    ours = {(int(r["row_index"]), int(r["col_index"])): str(r["phase"]) for _, r in runs.iterrows()}
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    titles = (f"authors (released, {grid.budget:,} steps)",
              f"probe ({analysis.extra['scale']} scale, {analysis.extra['budget']:,} steps)")
    for ax, cells, sub in zip(axes, (authors, ours), titles):
        ax.imshow(phase_image(cells, n_rows, n_cols), interpolation="nearest", aspect="auto")
        ax.set_xticks([k for k, _ in xticks], [s for _, s in xticks])
        ax.set_yticks([k for k, _ in yticks], [s for _, s in yticks])
        ax.set_xlabel(grid.row_label)
        ax.set_ylabel(grid.col_label)
        ax.set_title(sub, fontsize=10)
    for (i, j) in ours:
        axes[0].add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    fig.legend(handles=[Patch(color=PALETTE[k], label=p) for k, p in enumerate(PHASES)], loc="lower center",
               ncol=4, frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title + " (red: cells probe trained)", fontsize=10)
    return fig


# --- App. G (Figs. 13 to 15): decoder lr x another hyperparameter, regression and classification ---------

#: the App. G sweeps' decoder learning rates ("in range [1e-4, 1e-2] as the x axis"; the grid of Fig. 6(b))
APPG_LRS: tuple[float, ...] = tuple(float(v) for v in 10 ** np.linspace(-4, -2, 11))
#: the two panels of each App. G figure: probe's objective for each (one sweep, an axis over the objective)
OBJECTIVES: dict[str, str] = {"mse_targets": "regression", "cross_entropy": "classification"}
APPG_BUDGET = 100_000  # Table 1's budget (App. G gives none of its own)
PAPER = "Liu et al. 2022"
REGRESSION_NB = f"{FOLDER}/phase_diagram.ipynb"
CLASSIFICATION_NB = f"{FOLDER}/phase_diagram-classification.ipynb"

APPG_TEMPLATE = (
    "preset: liu-toy-add\n"
    "set: {{steps: {steps}, stop.after_generalization: 200, stop.threshold: {threshold!r}, "
    "checkpoint.schedule: geometric, checkpoint.count: {count}, checkpoint.metrics_every: {every}{extra}}}\n"
    "grid:\n  model.objective: [{objectives}]\n  lr: {lrs}\n  {key}: {values}\n"
)


def appg_spec(key: str, values: Sequence[float], lrs: Sequence[float], steps: int, every: int, count: int,
              extra: str = "", integer: bool = False) -> str:
    """A sweep over both objectives x decoder lr x ``key`` (``integer``: the values are written as ints)."""
    vals = ("[" + ", ".join(str(int(v)) for v in values) + "]") if integer else yaml_list(values)
    return APPG_TEMPLATE.format(steps=steps, threshold=THRESHOLD, count=count, every=every, extra=extra,
                                objectives=", ".join(OBJECTIVES), lrs=yaml_list(lrs), key=key, values=vals)


APPG_COLUMNS = ["run", "task", "lr", "y", "train_step", "val_step", "phase"]


def appg_runs(sweep_dir: str, key: str) -> tuple["pd.DataFrame", int]:
    """Per run of an App. G sweep: its task (regression / classification), decoder lr, value of ``key``
    (column ``y``), first steps past the threshold (inf: never within the budget) and phase (PhaseRule,
    budget = the sweep's steps); and that budget."""
    import pandas as pd

    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    budget = sweep_budget(sw, APPG_BUDGET)
    df = sw.phases(PhaseRule(THRESHOLD, budget, DELAY))
    records = []
    for _, r in df.iterrows():
        done = str(r["phase"]) in PHASES
        t, v = (float(r[k]) for k in ("train_step", "val_step"))
        records.append({"run": r["run"], "task": OBJECTIVES.get(str(r["model.objective"]), str(r["model.objective"])),
                        "lr": float(r["lr"]), "y": float(r[key]),
                        "train_step": math.inf if done and math.isnan(t) else t,
                        "val_step": math.inf if done and math.isnan(v) else v, "phase": str(r["phase"])})
    runs = pd.DataFrame(records, columns=APPG_COLUMNS)
    return runs.sort_values(["task", "lr", "y"], ascending=[False, True, True]).reset_index(drop=True), budget


def small_lrs(runs: "pd.DataFrame") -> list[float]:
    """The sweep's smallest decoder learning rates (the left edge of the diagram): the lowest quarter
    of its rates, at least one."""
    lrs = sorted(set(runs["lr"]))
    return lrs[:max(1, len(lrs) // 4)]


def phase_list(part: "pd.DataFrame") -> str:
    """``lr 1e-4: comprehension (train 1,470, val 1,680), ...`` for the rows' probe column."""
    return "; ".join(f"lr {r['lr']:.3g}: {r['phase']} (train {fmt_steps(r['train_step'])}, val "
                     f"{fmt_steps(r['val_step'])})" for _, r in part.iterrows())


def share_row(quantity: str, paper: str, source: str, part: "pd.DataFrame", want: str, budget: int) -> Row:
    """A row: the share of ``part``'s cells in phase ``want`` (agrees when >= AGREE_SHARE)."""
    n = len(part)
    k = int((part["phase"] == want).sum())
    share = k / n if n else float("nan")
    probe = (f"{k}/{n} = {share:.2f} {want} ({phase_list(part)}; budget {budget:,})" if n
             else "no such cells in the sweep")
    return Row(quantity, paper, source, probe, f"share of {want} cells >= {AGREE_SHARE:g}",
               "agrees" if n and share >= AGREE_SHARE else "differs")


def draw_appg(analysis: Analysis, y_label: str, title: str, y_fmt: Callable[[float], str]) -> "Figure":
    """probe's two phase diagrams laid out like the paper's App. G figures (left: regression, right:
    classification; decoder learning rate across, the other hyperparameter down, smallest at the top;
    the notebooks' colours). The authors released no grid for these figures."""
    from matplotlib.patches import Patch

    from probe.analyses import plots

    runs: "pd.DataFrame" = analysis.runs
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    for ax, task in zip(axes, OBJECTIVES.values()):
        part = runs[runs["task"] == task]
        lrs, ys = sorted(set(part["lr"])), sorted(set(part["y"]))
        cells = {(lrs.index(r["lr"]), ys.index(r["y"])): str(r["phase"]) for _, r in part.iterrows()}
        ax.imshow(phase_image(cells, max(len(lrs), 1), max(len(ys), 1)), interpolation="nearest", aspect="auto")
        ax.set_xticks(range(len(lrs)), [f"{v:.0e}" if k in (0, len(lrs) - 1, len(lrs) // 2) else ""
                                        for k, v in enumerate(lrs)])
        ax.set_yticks(range(len(ys)), [y_fmt(v) for v in ys])
        ax.set_xlabel("learning rate (decoder)")
        ax.set_ylabel(y_label)
        ax.set_title(f"{task} (probe, {analysis.extra['scale']} scale, {analysis.extra['budget']:,} steps)",
                     fontsize=10)
    fig.legend(handles=[Patch(color=PALETTE[k], label=p) for k, p in enumerate(PHASES)], loc="lower center",
               ncol=4, frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title, fontsize=10)
    return fig


def appg_setting(axis: Setting, steps_quick: int, budget_note: str = "") -> tuple[Setting, ...]:
    """The setting table of an App. G reproduction: the toy setup App. G states, read beside the two
    notebooks that trained the addition phase diagrams (Fig. 6(b), (c)), with ``axis`` (the swept
    hyperparameter) in the middle."""
    return (
        Setting("task", "non-modular addition a + b, p = 10, unordered pairs a <= b (55); App. G: \"addition "
                "without modulo (p = 10)\"", REGRESSION_NB, "nonmod-add, p = 10 (55 unordered pairs)"),
        Setting("split", "train_num = 45 (App. G: \"training/validation is split into 45/10\"), "
                "np.random.choice(55, 45) after np.random.seed(58) (regression) or seed(6) (classification)",
                REGRESSION_NB, "n_train 45, split_seed 1, model seed 0 (the preset's)",
                "another draw of split and initial weights; the seed of the App. G runs is not stated; one run "
                "per cell, so cells near a phase boundary may differ by chance"),
        Setting("regression", "outputs regress random targets y_templates ~ N(0, 1), shape [19, 30]; prediction: "
                "the nearest target; loss mean squared error", REGRESSION_NB,
                "model.objective mse_targets, d_out 30"),
        Setting("classification", "softmax over 19 classes; loss mean(-log(softmax) * one-hot) over samples and "
                "classes (cross-entropy / 19); prediction: the nearest one-hot vector (the argmax)",
                CLASSIFICATION_NB, "model.objective cross_entropy (mean over samples)",
                "the authors' loss is probe's divided by 19; Adam's steps do not depend on the loss scale "
                "(up to eps = 1e-8)"),
        Setting("block", "1-d embeddings summed (latent[a] + latent[b]), decoder MLP 1-200-200-30 (regression) "
                "or 1-200-200-19 (classification), tanh", REGRESSION_NB,
                "model toy, d_embed 1, aggregation sum, decoder [200, 200], tanh"),
        Setting("optimizer", "embeddings lr 1e-3 (App. G: \"the learning rate of the representation is 1e-3\"), "
                "AdamW wd 0 (regression) / Adam (classification); decoder AdamW lr eta2, betas (0.9, 0.999); "
                "defaults: full batch 45, init scale 1, representation weight decay 0 (App. G)", REGRESSION_NB,
                "adamw, embed_lr 1e-3, embed_weight_decay 0, lr = decoder lr, weight_decay 0, full batch, "
                "model.init_scale 1 (except the swept one)"),
        axis,
        Setting("decoder learning rate", "App. G: \"we sweep the learning rate of the decoder in range [1e-4, "
                "1e-2] as the x axis\" (the notebooks' dec_lrs = 10 ** linspace(-4, -2, 11))", REGRESSION_NB,
                "lr logspace [1e-4, 1e-2, 11]"),
        Setting("steps", "1e5 steps per cell (the notebooks' epochs; App. A Table 1's budget)", REGRESSION_NB,
                f"steps 100000 (quick: {steps_quick:,}); a run stops 200 steps after train and validation "
                "accuracy both passed 0.9" + budget_note,
                "the phase is decided by then; memorising and confused runs use the whole budget"),
        Setting("evaluation cadence", "train and test accuracy after every step's update (0-based indices)",
                REGRESSION_NB, "metrics every 20 steps (quick: 10)",
                "a step known to within 20: a phase changes only for a delay within 20 steps of 1,000"),
        Setting("phase rule", "train / test accuracy >= 0.9; comprehension: both reached, test - train < 1e3; "
                "grokking: > 1e3; memorization: train only; confusion: neither (App. A Table 1)", RULE_FILE,
                f"PhaseRule(threshold {THRESHOLD!r}, budget 100000, delay 1000)",
                "a delay of exactly 1,000 is comprehension for them, grokking for probe"),
        Setting("reference", "no grid released for this figure (the released .h5 files hold Fig. 6(a)-(d)); "
                "the reference is the text of App. G and the figure's caption", REGRESSION_NB,
                "rows recompute the text's claims from probe's grid",
                "the figure's own grid of y values is not stated: probe's grid is a choice spanning the "
                "defaults App. G names"),
    )
