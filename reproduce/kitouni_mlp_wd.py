"""Kitouni 2022 ("Some thoughts on Grokking", section "Simple Grokking"; code
github.com/okitouni/simple-grokking): a two-layer MLP on addition modulo 53 groks at weight decay 0.03
and generalises without delay ("comprehension") at weight decay 5 (docs/reproductions/kitouni-mlp-wd/
README.md).

The authors released no metric files (``log/`` is in the repository's ``.gitignore``); their numbers
are the two figures ``metrics_grokking.jpg`` (``python train.py --grok``: weight decay 0.03) and
``metrics_comprehension.jpg`` (``python train.py``: weight decay 5) of commit 8ff526c, the ones the
post shows, drawn by ``plot.py`` from the logged curves: loss and accuracy in percent against the
epoch, log x axis. The steps below were read off those JPEGs (1280 x 960 pixels): the x axis calibrated
on its major ticks (epoch 10^0 at pixel column 210.5 ... 10^4 at 1200.5, 247.5 pixels a decade), the
y axis on its ticks (accuracy 0 at pixel row 823, 100 at 467.5); a curve's value in a column is the
mean row of its colour (train royal blue, validation forest green, legend box masked), and a
threshold's epoch is the first column whose value is at or above it. One pixel is 0.93% of the epoch,
so every step below is known to about 1% (the line is 3 pixels wide: about 0.5% in accuracy).

The authors' epoch ``e`` is one full-batch update; ``train.py`` takes the training accuracy from the
forward pass before update ``e + 1`` (after ``e`` updates) and the validation accuracy after it (after
``e + 1`` updates). probe's step ``s`` is the state after ``s`` updates, so the authors' training
epoch ``e`` is probe's step ``e`` and their validation epoch ``e`` is probe's step ``e + 1``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/okitouni/simple-grokking"
COMMIT = "8ff526cb39d1c9d21ecf2892550c9759916104d3"
FIG_GROK = "metrics_grokking.jpg"
FIG_COMP = "metrics_comprehension.jpg"
TRAIN_SCRIPT = "train.py"
PLOT_SCRIPT = "plot.py"
LOG_SCRIPT = "log.py"
POST = "Kitouni 2022, Some thoughts on Grokking (blog post), section \"Simple Grokking\""
BUDGET = 10_000  # train.py's num_epochs
WD_GROK, WD_COMP = 0.03, 5.0
FIGURES = {WD_GROK: FIG_GROK, WD_COMP: FIG_COMP}
NAMES = {WD_GROK: "grokking", WD_COMP: "comprehension"}
THRESHOLDS = (0.5, 0.9, 0.99)  # probe events' accuracy thresholds
DELAY_AT = 0.9  # the grokking delay: val step - train step at this accuracy (probe events)
GROK_DELAY = 1000  # Liu et al. App. A Table 1: grokking when the delay exceeds 1e3 steps
FACTOR = 1.5  # tolerance on a step count (median over runs)
ACC_TOL = 0.01  # tolerance on a final accuracy

#: the epochs read off the released figures (see the module doc): {weight decay: {curve: {threshold: epoch}}}
AUTHORS_EPOCHS: dict[float, dict[str, dict[float, int]]] = {
    WD_GROK: {"train": {0.5: 7, 0.9: 11, 0.99: 14}, "val": {0.5: 2583, 0.9: 3678, 0.99: 4729}},
    WD_COMP: {"train": {0.5: 19, 0.9: 35, 0.99: 43}, "val": {0.5: 60, 0.9: 91, 0.99: 122}},
}
#: accuracies at the last epoch (9,999) read off the figures: both curves end on the 100% line
AUTHORS_FINAL: dict[float, dict[str, float]] = {WD_GROK: {"train": 1.0, "val": 1.0},
                                                 WD_COMP: {"train": 1.0, "val": 1.0}}


def authors_step(wd: float, curve: str, threshold: float) -> float:
    """The authors' step (probe's count: updates done) at which ``curve`` passed ``threshold``."""
    epoch = AUTHORS_EPOCHS[wd][curve][threshold]
    return float(epoch + 1 if curve == "val" else epoch)


def authors_delay(wd: float) -> float:
    """The authors' grokking delay at DELAY_AT, in steps (probe events' definition)."""
    return authors_step(wd, "val", DELAY_AT) - authors_step(wd, "train", DELAY_AT)


def steps_agree(paper: float, ours: float) -> bool:
    """Both never, or both finite and within a factor FACTOR of each other."""
    if math.isinf(paper) or math.isinf(ours) or math.isnan(ours):
        return math.isinf(paper) and math.isinf(ours)
    return max(paper, ours) <= FACTOR * min(paper, ours)


def median(values: list[float]) -> float:
    """Median over runs, never (inf) counted as the largest value; NaN for no runs."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)) if len(v) else math.nan


def _yaml_list(xs: list[Any]) -> str:
    return "[" + ", ".join(repr(x) for x in xs) + "]"


SPEC_TEMPLATE = (
    "preset: kitouni-mlp\n"
    "set: {{softmax_dtype: float32, checkpoint.schedule: geometric, checkpoint.count: 30, "
    "checkpoint.metrics_every: {every}, checkpoint.tensors: [embed.W_E]{extra}}}\n"
    "zip:\n  weight_decay: {wds}\n  steps: {steps}\n  seed: {seeds}\n  split_seed: {seeds}\n"
)


def _spec(points: list[tuple[float, int, int]], every: int = 5, extra: str = "") -> str:
    """A spec of (weight decay, steps, seed) runs; the split seed is the seed."""
    return SPEC_TEMPLATE.format(every=every, extra=extra, wds=_yaml_list([float(w) for w, _, _ in points]),
                                steps=_yaml_list([int(n) for _, n, _ in points]),
                                seeds=_yaml_list([int(s) for _, _, s in points]))


QUICK_STEPS = {WD_GROK: 1500, WD_COMP: 300}
QUICK_POINTS = [(WD_GROK, QUICK_STEPS[WD_GROK], 0), (WD_COMP, QUICK_STEPS[WD_COMP], 0)]
PAPER_SEEDS = (0, 1, 2)
PAPER_POINTS = [(wd, BUDGET, s) for wd in (WD_GROK, WD_COMP) for s in PAPER_SEEDS]

SETTING = (
    Setting("task", "(a + b) mod 53 over all 53 x 53 = 2,809 ordered pairs", TRAIN_SCRIPT,
            "task add, p = 53 (ordered pairs, 2,809 samples)"),
    Setting("split", "torch.manual_seed(2); torch.randperm(2809); the first int(0.6 * 2809) = 1,685 pairs train, "
            "the other 1,124 validate", TRAIN_SCRIPT,
            "train_fraction 0.6 (floor: 1,685 pairs), split_seed = seed in {0, 1, 2} (quick: 0)",
            "other draws of the split (and of the initial weights): the authors ran one seed, probe three, "
            "compared through the median"),
    Setting("model", "nn.Embedding(53, 128); the two embeddings concatenated (256) -> nn.Linear(256, 128) -> "
            "ReLU -> nn.Linear(128, 53)", TRAIN_SCRIPT, "model mlp, d_embed 128, hidden [128], act relu"),
    Setting("init", "torch defaults: embeddings N(0, 1); linear weights and biases U(-1/sqrt(fan_in), "
            "1/sqrt(fan_in)); one torch.manual_seed(2) for split and weights", TRAIN_SCRIPT,
            "the same distributions (ConcatMLP); model seed = split seed in {0, 1, 2}"),
    Setting("optimizer", "AdamW over all parameters (embeddings and biases included), lr 3e-2, betas "
            "(0.9, 0.999), eps 1e-8; weight decay 3e-2 with --grok, else 5", TRAIN_SCRIPT,
            "adamw, lr 0.03, betas (0.9, 0.999), eps 1e-8, weight_decay 0.03 or 5 on every parameter"),
    Setting("batches", "full batch: the 1,685 training pairs every epoch", TRAIN_SCRIPT,
            "batch_size unset (full batch)"),
    Setting("steps", "num_epochs = 10,000 updates for both runs", TRAIN_SCRIPT,
            "steps 10000 (quick: 1,500 at weight decay 0.03, 300 at weight decay 5)"),
    Setting("loss precision", "nn.CrossEntropyLoss on float32 logits (mean over the batch)", TRAIN_SCRIPT,
            "cross_entropy, softmax_dtype float32 (probe's default is float64)"),
    Setting("evaluation cadence", "every epoch: train accuracy of the forward pass before the update, validation "
            "accuracy after it, logged to log/NAME/metrics.csv", LOG_SCRIPT,
            "metrics every 5 steps (train accuracy from the step's own forward pass); probe's step = the "
            "authors' train epoch = their validation epoch + 1",
            "5-step resolution: the comprehension run's steps (35 to 123) are known to within 5, inside the "
            "factor-1.5 tolerance"),
    Setting("reference numbers", "no metric files released (log/ is git-ignored); figures "
            f"{FIG_GROK} and {FIG_COMP} drawn from the logs: loss (log) and accuracy (%) against the epoch, "
            "log x axis", PLOT_SCRIPT, "steps read off the JPEGs' pixels (module doc): about 1% of a step",
            "digitised, not logged: a step is known to about 1%, an accuracy to about 0.5%"),
)


def _run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run: its weight decay, seeds, budget, the steps probe events finds and its
    final accuracies; the metric rows in the ``metrics`` column (for the figure)."""
    import pandas as pd

    from probe.analyses.events import EventRule, find_events
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    rule = EventRule(thresholds=THRESHOLDS, delay_threshold=DELAY_AT)
    records = []
    for name, run in sw.done_runs():
        cfg, metrics = run.config, run.metrics
        if cfg is None or not len(metrics):
            continue
        ev = find_events(metrics, rule)

        def step(v: int | None) -> float:
            return math.inf if v is None else float(v)

        last = metrics.iloc[-1]
        rec: dict[str, Any] = {"run": name, "weight_decay": float(cfg.weight_decay), "seed": int(cfg.seed),
                               "split_seed": int(cfg.split_seed), "budget": int(cfg.steps),
                               "last_step": int(last["step"])}
        for t in THRESHOLDS:
            rec[f"train_{t:g}"] = step(ev.train_passes[t])
            rec[f"val_{t:g}"] = step(ev.val_passes[t])
        rec["delay"] = math.nan if ev.delay is None else float(ev.delay)
        rec["final_train_acc"] = float(last["train_acc"])
        rec["final_val_acc"] = float(last["val_acc"])
        rec["metrics"] = metrics[["step", "train_loss", "train_acc", "val_loss", "val_acc"]].copy()
        records.append(rec)
    cols = ["run", "weight_decay", "seed", "split_seed", "budget", "last_step",
            *[f"{c}_{t:g}" for c in ("train", "val") for t in THRESHOLDS], "delay", "final_train_acc",
            "final_val_acc", "metrics"]
    return pd.DataFrame(records, columns=cols)


def _delay_text(r: "pd.Series") -> tuple[str, bool | None]:
    """A run's grokking delay in words and whether it is at least GROK_DELAY. A run whose validation
    accuracy stayed below DELAY_AT has a delay of more than its last step minus its training step (a
    lower bound: True when that bound reaches GROK_DELAY, else None, undecided); None too when training
    accuracy never passed DELAY_AT."""
    t_train, t_val = r[f"train_{DELAY_AT:g}"], r[f"val_{DELAY_AT:g}"]
    if math.isinf(t_train):
        return f"training accuracy never passed {DELAY_AT:g}", None
    if math.isinf(t_val):
        bound = r["last_step"] - t_train
        return (f"> {bound:,.0f} (val < {DELAY_AT:g} at step {int(r['last_step']):,})",
                True if bound >= GROK_DELAY else None)
    return f"{t_val - t_train:,.0f}", bool(t_val - t_train >= GROK_DELAY)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per weight decay: the steps at which training and validation accuracy pass 0.5 / 0.9 / 0.99 and
    the grokking delay (probe events), median over runs, the final accuracies, and the post's claim
    (grokking at 0.03, validation following training at 5), recomputed from the runs."""
    table = _run_table(sweep_dir)
    rows: list[Row] = []
    for wd in (WD_GROK, WD_COMP):
        g = table[np.isclose(table["weight_decay"], wd)]
        if not len(g):
            continue
        src = f"{REPO} {FIGURES[wd]} (digitised)"
        label = f"weight decay {wd:g} ({NAMES[wd]})"
        budget = int(g["budget"].max())
        runs_note = f"{len(g)} run{'s' if len(g) > 1 else ''}, budget {budget:,}"

        def step_row(quantity: str, paper: float, values: list[float]) -> Row:
            ours = median(values)
            per_run = ", ".join(fmt_steps(v) for v in values)
            return Row(f"{quantity}, {label}", fmt_steps(paper), src,
                       f"{fmt_steps(ours)} (runs: {per_run}; {runs_note})",
                       f"within a factor {FACTOR:g}", "agrees" if steps_agree(paper, ours) else "differs")

        rows.append(step_row("steps to train acc >= 0.99", authors_step(wd, "train", 0.99),
                             [float(v) for v in g["train_0.99"]]))
        for t in THRESHOLDS:
            rows.append(step_row(f"steps to val acc >= {t:g}", authors_step(wd, "val", t),
                                 [float(v) for v in g[f"val_{t:g}"]]))
        delays = [math.inf if math.isnan(d) else float(d) for d in g["delay"]]
        rows.append(step_row(f"grokking delay (val - train step at acc {DELAY_AT:g})", authors_delay(wd), delays))
        for curve in ("train", "val"):
            paper = AUTHORS_FINAL[wd][curve]
            values = [float(v) for v in g[f"final_{curve}_acc"]]
            ours = median(values)
            rows.append(Row(f"{curve} accuracy at the last step, {label}", f"{paper:.2f} (epoch {BUDGET - 1:,})",
                            src, f"{ours:.3f} (runs: {', '.join(f'{v:.3f}' for v in values)}; {runs_note})",
                            f"within {ACC_TOL:g}", "agrees" if abs(ours - paper) <= ACC_TOL else "differs"))
        texts = [_delay_text(r) for _, r in g.iterrows()]
        if wd == WD_GROK:
            hits = sum(ok is True for _, ok in texts)
            claim = (f"train acc passes 0.9 long before val acc (grokking delay >= {GROK_DELAY:,} steps, "
                     f"Liu et al. App. A), {label}")
            paper = f"yes (delay {authors_delay(wd):,.0f})"
        else:
            hits = sum(ok is False for _, ok in texts)
            claim = f"val acc follows train acc (delay < {GROK_DELAY:,} steps), {label}"
            paper = f"yes (delay {authors_delay(wd):,.0f})"
        rows.append(Row(claim, paper, f"{POST}; {src}",
                        f"{hits}/{len(texts)} runs (delays: {'; '.join(t for t, _ in texts)})",
                        "more than half of the runs", "agrees" if hits > len(texts) / 2 else "differs"))
    runs = table.drop(columns=["metrics"]).reset_index(drop=True)
    curves = {str(r["run"]): (float(r["weight_decay"]), r["metrics"]) for _, r in table.iterrows()}
    return Analysis(tuple(rows), runs, {"scale": scale, "curves": curves})


def draw(analysis: Analysis) -> "Figure":
    """Laid out like the authors' figures (plot.py: loss on a log scale above accuracy, log epoch axis,
    train blue and validation green), one column per weight decay; probe's runs as lines, the steps
    read off the authors' figures as crosses at their thresholds."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex="col", constrained_layout=True)
    curves: dict[str, tuple[float, "pd.DataFrame"]] = analysis.extra["curves"]
    for col, wd in enumerate((WD_GROK, WD_COMP)):
        ax_loss, ax_acc = axes[0, col], axes[1, col]
        first = True
        for name, (w, m) in sorted(curves.items()):
            if not math.isclose(w, wd):
                continue
            m = m[m["step"] > 0]  # a log axis: the authors' figures start at epoch 1 too
            for key, colour, lab in (("train", "royalblue", "train"), ("val", "forestgreen", "val")):
                ax_loss.plot(m["step"], m[f"{key}_loss"], color=colour, lw=1.2, alpha=0.8,
                             label=f"probe {lab}" if first else None)
                ax_acc.plot(m["step"], m[f"{key}_acc"], color=colour, lw=1.2, alpha=0.8,
                            label=f"probe {lab}" if first else None)
            first = False
        for curve, colour in (("train", "navy"), ("val", "darkgreen")):
            xs = [authors_step(wd, curve, t) for t in THRESHOLDS]
            ax_acc.plot(xs, THRESHOLDS, "x", color=colour, ms=7, mew=2,
                        label=f"authors {curve} (read off {FIGURES[wd]})")
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title(f"weight decay {wd:g} ({NAMES[wd]})", fontsize=10)
        ax_acc.set_xscale("log")
        ax_acc.set_xlabel("step")
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_ylim(-0.03, 1.03)
        ax_acc.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=2)
    fig.suptitle(f"Kitouni's simple grokking (p = 53), {analysis.extra['scale']} scale: probe's runs against "
                 "the released figures", fontsize=10)
    return fig


reproduction(Reproduction(
    name="kitouni-mlp-wd",
    paper=f"{POST}; code {REPO}",
    figure=f"the two training-curve figures of the post ({FIG_GROK}: weight decay 0.03; {FIG_COMP}: weight "
           "decay 5)",
    artefact=Artefact(REPO, COMMIT, f"{FIG_GROK}, {FIG_COMP}",
                      "training and validation loss and accuracy over 10,000 full-batch epochs, log epoch axis "
                      "(steps read off the figures: weight decay 0.03: train acc 99% at epoch 14, val acc 90% "
                      "at 3,678; weight decay 5: 43 and 91)"),
    trains="Kitouni's MLP on addition mod 53 (kitouni-mlp preset, float32 cross-entropy) at weight decay 0.03 "
           "and 5",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_POINTS), "14 s (--jobs 1)",
                       "one seed per weight decay: 1,500 steps at 0.03 (memorised, validation still low: a "
                       "lower bound on the delay), 300 at 5 (comprehension); every reference row is produced, "
                       "those of the grokking run's validation steps with the budget too short to reach them"),
        "paper": Scale("paper", _spec(PAPER_POINTS), "3 min 12 s (--jobs 2)",
                       "the authors' 10,000 full-batch steps at weight decay 0.03 and 5, three seeds each, "
                       "metrics every 5 steps"),
    },
    analyse=analyse,
    draw=draw,
    claims=("weight decay 0.03: training accuracy reaches 1 within tens of steps and validation accuracy "
            "follows thousands of steps later (grokking)",
            "weight decay 5: validation accuracy follows training accuracy within tens of steps "
            "(comprehension)"),
))
