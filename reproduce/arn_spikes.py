"""Arn (2023), re-running Power et al.'s code: training-loss spikes (Sec. 4.3 "Timing of Grokking" and
4.4 "Training Loss Spikes", Figs. 4.3-4.6; docs/reproductions/arn-spikes/README.md).

Arn trained the authors' transformer (github.com/openai/grok) with weight decay 0.01 and found that
once the training set is fitted the training loss sinks towards zero and then spikes, "by a factor of
over 10^6", again and again: at almost every training fraction, in runs that never generalise and in
runs that already have, with the validation loss mirroring the training loss, generalisation never
before the first spike, and never a worse minimum after one ("There is no un-grokking"). Thilak et
al. call the same cycles the slingshot mechanism.

The thesis released no numbers (its figures and Arn's scripts are in a GitLab repository outside
the reach of this project), so the rows are the thesis's sentences, each recomputed from probe's runs
with probe's spike rule (:func:`probe.analyses.events.loss_spikes`: a metric row whose training loss
exceeds 10 times its minimum over the 1,000 steps before it starts a spike, which lasts while the
loss stays above that bound). The pure functions here turn one run's metric rows into its spikes and
their surroundings (:func:`spike_records`) and a run's summary (:func:`run_summary`); the rows count
over the runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.reproduce import power_fraction as pf
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps, reproduction

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

ARN = pf.ARN
SEC43 = f"{ARN} Sec. 4.3"
SEC44 = f"{ARN} Sec. 4.4"
APP_A = f"{ARN} App. A"
SPIKE_FACTOR = 10.0  # probe's spike rule (EventRule's defaults): above 10x the running minimum ...
SPIKE_WINDOW = 1000  # ... over the 1,000 steps before
HUGE = 1e6  # "spikes again after some time by a factor of over 10^6" (Sec. 4.3)
ALMOST_EVERY = 0.8  # "almost every training percentage": probe reads it as at least this share of the runs
MIRRORED = 0.8  # "the spikes of the validation and training losses mirror each other": this share of the spikes
PLATEAU_TOL = 0.02  # a plateau after a spike is worse when its validation accuracy is this much below the one before
SETTLE = 200  # a plateau after a spike is read only when it lasts at least this many steps after the loss recovered
THRESHOLD = pf.THRESHOLD  # generalised: validation accuracy >= 0.99 (Power et al.'s criterion)
DELAY = pf.DELAY  # grokking: generalised at least this many steps after training accuracy passed 0.99 (Liu App. A)
WEIGHT_DECAY = 0.01  # Arn App. A


@dataclass(frozen=True)
class SpikeRecord:
    """One training-loss spike with what surrounds it: the validation accuracy on the plateau before
    it (the last metric row before its start) and on the plateau after it (the last row before the
    next spike starts, or the run's last row; NaN when the loss had not come back under the bound
    within the run or came back less than :data:`SETTLE` steps before that row), and whether the validation loss rose with it (at the spike's peak against the
    row before its start)."""

    start: int
    peak: int
    height: float
    floor: float
    recovery: int | None
    val_acc_before: float
    val_acc_after: float
    val_loss_rose: bool


def spike_records(metrics: "pd.DataFrame | dict[str, Any]", factor: float = SPIKE_FACTOR,
                  window: int = SPIKE_WINDOW) -> list[SpikeRecord]:
    """The training-loss spikes of one run's metric rows (``step, train_loss, val_loss, val_acc``) by
    :func:`probe.analyses.events.loss_spikes`, each with its plateaus and its validation loss."""
    from probe.analyses.events import loss_spikes

    steps = np.asarray(metrics["step"], dtype=np.int64)
    val_acc = np.asarray(metrics["val_acc"], dtype=np.float64)
    val_loss = np.asarray(metrics["val_loss"], dtype=np.float64)
    spikes = loss_spikes(steps, np.asarray(metrics["train_loss"], dtype=np.float64), factor, window)
    out = []
    for k, sp in enumerate(spikes):
        i = int(np.searchsorted(steps, sp.start, side="left"))  # the spike's first row
        before = i - 1 if i > 0 else 0
        peak = int(np.searchsorted(steps, sp.peak, side="left"))
        end = spikes[k + 1].start if k + 1 < len(spikes) else int(steps[-1]) + 1
        j = int(np.searchsorted(steps, end, side="left")) - 1  # the last row before the next spike
        settled = sp.recovery is not None and steps[j] - (sp.start + sp.recovery) >= SETTLE
        after = float(val_acc[j]) if settled else math.nan
        out.append(SpikeRecord(start=sp.start, peak=sp.peak, height=sp.height, floor=sp.floor, recovery=sp.recovery,
                               val_acc_before=float(val_acc[before]), val_acc_after=after,
                               val_loss_rose=bool(val_loss[peak] > val_loss[before])))
    return out


def _first(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    hit = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= level)
    return float(steps[hit[0]]) if len(hit) else math.inf


def run_summary(metrics: "pd.DataFrame | dict[str, Any]", spikes: list[SpikeRecord]) -> dict[str, Any]:
    """What the rows read off one run: the steps training and validation accuracy pass 0.99
    (``fit_step``, ``gen_step``; inf when never), whether it grokked (generalised at least
    :data:`DELAY` steps after the fit), its spike count, the largest spike and its floor, the first
    spike's start, the spikes after generalisation, the plateaus after a spike worse than before by
    more than :data:`PLATEAU_TOL` and the spikes the validation loss rose with."""
    steps = np.asarray(metrics["step"], dtype=np.float64)
    fit = _first(steps, np.asarray(metrics["train_acc"], dtype=np.float64), THRESHOLD)
    gen = _first(steps, np.asarray(metrics["val_acc"], dtype=np.float64), THRESHOLD)
    top = max(spikes, key=lambda s: s.height) if spikes else None
    settled = [s for s in spikes if not math.isnan(s.val_acc_after)]
    return {"fit_step": fit, "gen_step": gen, "generalised": math.isfinite(gen),
            "grokked": math.isfinite(gen) and math.isfinite(fit) and gen - fit >= DELAY,
            "spikes": len(spikes), "max_height": top.height if top else math.nan,
            "max_floor": top.floor if top else math.nan, "max_step": top.start if top else math.inf,
            "first_spike": float(spikes[0].start) if spikes else math.inf,
            "spikes_after_gen": sum(s.start > gen for s in spikes),
            "settled": len(settled),
            "worse_plateaus": sum(s.val_acc_after < s.val_acc_before - PLATEAU_TOL for s in settled),
            "val_loss_rose": sum(s.val_loss_rose for s in spikes),
            "final_val_acc": float(np.asarray(metrics["val_acc"], dtype=np.float64)[-1]),
            "min_train_loss": float(np.nanmin(np.asarray(metrics["train_loss"], dtype=np.float64)))}


def _run_table(sweep_dir: str) -> tuple["pd.DataFrame", dict[str, "pd.DataFrame"], dict[str, list[SpikeRecord]]]:
    """One row per finished run (task, fraction, seed, budget and :func:`run_summary`), the metric
    rows per run (for the figure) and the spikes per run."""
    import pandas as pd

    from probe.sweep import load_sweep

    rows, curves, spikes = [], {}, {}
    for name, run in load_sweep(sweep_dir).done_runs():
        m = run.metrics
        if not len(m):
            continue
        sp = spike_records(m)
        cfg = run.config
        rows.append({"run": name, "task": run.task.name, "p": int(cfg.p), "train_fraction": float(cfg.train_fraction),
                     "seed": int(cfg.seed), "weight_decay": float(cfg.weight_decay), "budget": int(cfg.steps),
                     **run_summary(m, sp)})
        curves[name] = m[["step", "train_loss", "val_loss", "val_acc"]].copy()
        spikes[name] = sp
    cols = ["run", "task", "p", "train_fraction", "seed", "weight_decay", "budget", "fit_step", "gen_step",
            "generalised", "grokked", "spikes", "max_height", "max_floor", "max_step", "first_spike",
            "spikes_after_gen", "settled", "worse_plateaus", "val_loss_rose", "final_val_acc", "min_train_loss"]
    table = pd.DataFrame(rows, columns=cols).sort_values(["task", "train_fraction", "seed"]).reset_index(drop=True)
    return table, curves, spikes


def _names(g: "pd.DataFrame") -> str:
    return ", ".join(f"{pf.OP_NAMES.get(r['task'], r['task'])} {r['train_fraction']:g}" for _, r in g.iterrows())


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Arn's spike findings against probe's runs, each counted over the runs (module doc)."""
    table, curves, spikes = _run_table(sweep_dir)
    rows: list[Row] = []
    n = len(table)
    if n:
        where = f"{n} run(s), {int(table['budget'].max()):,} steps, weight decay {_list(table['weight_decay'])}"
        i = int(table["max_height"].fillna(0).to_numpy().argmax())
        best = table.iloc[i]
        height = float(best["max_height"]) if best["spikes"] else 0.0
        rows.append(Row("largest training-loss spike (peak over the running minimum)",
                        "over 10^6 ('our training loss gets very close to zero, but spikes again after some time by "
                        "a factor of over 10^6')", f"{SEC43}, Fig. 4.3",
                        (f"{height:.3g} (from a floor of {best['max_floor']:.2g} at step {best['max_step']:,.0f}, "
                         f"{pf.OP_NAMES.get(best['task'], best['task'])} {best['train_fraction']:g}; {where})")
                        if height else f"no spike ({where})",
                        f">= {HUGE:.0e}", "agrees" if height >= HUGE else "differs"))
        with_spikes = int((table["spikes"] > 0).sum())
        rows.append(Row("runs with at least one training-loss spike",
                        "almost all ('the spikes ... occur for almost every dataset for almost every training "
                        "percentage')", SEC44,
                        f"{with_spikes} of {n} (spikes per run: "
                        + ", ".join(f"{pf.OP_NAMES.get(r['task'], r['task'])} {r['train_fraction']:g}: {r['spikes']}"
                                    for _, r in table.iterrows()) + ")",
                        f"at least {ALMOST_EVERY:.0%} of the runs", "agrees" if with_spikes >= ALMOST_EVERY * n
                        else "differs"))
        never = table[~table["generalised"]]
        spiking = never[never["spikes"] > 0]
        rows.append(Row("spikes in runs that do not generalise",
                        "yes ('They happen even where generalization is not possible')", f"{SEC44}, Fig. 4.6",
                        f"{len(spiking)} of {len(never)} run(s) below {THRESHOLD:g} validation accuracy spike"
                        + (f" ({_names(spiking)})" if len(spiking) else "")
                        if len(never) else "no run stayed below it: not tested",
                        "at least one such run", "agrees" if len(spiking) else "differs"))
        gen = table[table["generalised"]]
        after = gen[gen["spikes_after_gen"] > 0]
        rows.append(Row("spikes after generalisation",
                        "yes ('They also happen when grokking has occurred already and the validation accuracy is "
                        "perfect')", f"{SEC44}, Fig. 4.4",
                        f"{len(after)} of {len(gen)} generalised run(s) spike after validation accuracy "
                        f"{THRESHOLD:g}" + (f" ({_names(after)})" if len(after) else "")
                        if len(gen) else "no run generalised: not tested",
                        "at least one such run", "agrees" if len(after) else "differs"))
        grok = table[table["grokked"]]
        first_ok = grok[grok["first_spike"] < grok["gen_step"]]
        rows.append(Row("grokking runs whose first spike comes before generalisation",
                        "all ('the lower bound for grokking is the first training loss spike')", SEC43,
                        (f"{len(first_ok)} of {len(grok)} (" + "; ".join(
                            f"{pf.OP_NAMES.get(r['task'], r['task'])} {r['train_fraction']:g}: first spike "
                            f"{fmt_steps(r['first_spike'])}, validation {THRESHOLD:g} at {fmt_steps(r['gen_step'])}"
                            for _, r in grok.iterrows()) + ")")
                        if len(grok) else f"no run grokked (validation {THRESHOLD:g} at least {DELAY:,} steps after "
                                          "training): not tested",
                        "every grokking run", "agrees" if len(grok) and len(first_ok) == len(grok) else "differs"))
        settled, worse = int(table["settled"].sum()), int(table["worse_plateaus"].sum())
        rows.append(Row("spikes after which the validation accuracy settles lower than before",
                        "none ('not once in my experiments the model jumped to a minimum that generalized worse. "
                        "In other words: There is no un-grokking.')", SEC44,
                        f"{worse} of {settled} spikes whose plateau after them lasted at least {SETTLE} steps",
                        f"none lower by more than {PLATEAU_TOL:g} (the last row before the next spike against the "
                        "last row before this one)", "agrees" if settled and worse == 0 else "differs"))
        total, rose = int(table["spikes"].sum()), int(table["val_loss_rose"].sum())
        rows.append(Row("spikes with which the validation loss rises too",
                        "all shown ('the spikes of the validation and training losses mirror each other')",
                        f"{SEC43}, Fig. 4.4", f"{rose} of {total}", f"at least {MIRRORED:.0%} of the spikes",
                        "agrees" if total and rose >= MIRRORED * total else "differs"))
    return Analysis(tuple(rows), table, {"scale": scale, "curves": curves, "spikes": spikes})


def _list(values: Any) -> str:
    return ", ".join(f"{v:g}" for v in sorted(set(float(x) for x in values)))


def draw(analysis: Analysis) -> "Figure":
    """One panel per run, as Arn's Figs. 4.4-4.6: training and validation loss (log) against the
    step, validation accuracy on the right axis, each spike's start marked."""
    from probe.analyses import plots

    plt = plots._plt()
    table: "pd.DataFrame" = analysis.runs
    curves: dict[str, "pd.DataFrame"] = analysis.extra["curves"]
    spikes: dict[str, list[SpikeRecord]] = analysis.extra["spikes"]
    n = max(1, len(table))
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.4 * n), squeeze=False, constrained_layout=True)
    for k, (_, r) in enumerate(table.iterrows()):
        ax = axes[k, 0]
        m = curves[r["run"]]
        ax.plot(m["step"], m["train_loss"], color="tab:blue", lw=0.8, label="training loss")
        ax.plot(m["step"], m["val_loss"], color="tab:orange", lw=0.8, label="validation loss")
        for s in spikes[r["run"]]:
            ax.axvline(s.start, color="tab:red", lw=0.5, alpha=0.5)
        ax.set_yscale("log")
        ax.set_ylabel("loss")
        acc = ax.twinx()
        acc.plot(m["step"], m["val_acc"], color="tab:green", lw=0.8, label="validation accuracy")
        acc.set_ylim(-0.03, 1.03)
        acc.set_ylabel("val acc")
        ax.set_title(f"{pf.OP_NAMES.get(r['task'], r['task'])} mod {r['p']}, training fraction {r['train_fraction']:g}: "
                     f"{r['spikes']} spikes (red), largest {r['max_height']:.3g}x", fontsize=9)
        if k == 0:
            lines = ax.get_lines()[:2] + acc.get_lines()
            ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, frameon=False, loc="upper right")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"Training-loss spikes (Arn 2023, Sec. 4.3-4.4), probe {analysis.extra['scale']} scale", fontsize=10)
    return fig


def _spec(p: int, task: str, fractions: list[float], batches: list[int], steps: int, weight_decay: float,
          metrics_every: int, extra: str) -> str:
    return ("preset: power-moddiv\n"
            f"set: {{p: {p}, task: {task}, steps: {steps}, split_seed: 0, batching: epochs, model.init: pytorch, "
            f"model.head_bias: false, weight_decay: {weight_decay}, softmax_dtype: float32, "
            "checkpoint.schedule: geometric, checkpoint.count: 30, "
            f"checkpoint.metrics_every: {metrics_every}, checkpoint.tensors: [embed.W_E]{extra}}}\n"
            f"zip:\n  train_fraction: {fractions}\n  batch_size: {batches}\n"
            "seeds: [0]\n")


def _batches(task: str, p: int, fractions: list[float]) -> list[int]:
    return [pf.power_batch_size(pf.n_train(task, p, f)) for f in fractions]


QUICK_P, QUICK_TASK, QUICK_FRACTIONS, QUICK_STEPS, QUICK_WD = 31, "x2+y2", [0.3, 0.8], 900, 1.0
QUICK = _spec(QUICK_P, QUICK_TASK, QUICK_FRACTIONS, _batches(QUICK_TASK, QUICK_P, QUICK_FRACTIONS), QUICK_STEPS,
              QUICK_WD, 10, ", model.d_model: 64, model.d_mlp: 256")
PAPER_P, PAPER_TASK, PAPER_FRACTIONS, PAPER_STEPS = pf.PAPER_P, "div", [0.3, 0.5, 0.7], pf.PAPER_STEPS
PAPER = _spec(PAPER_P, PAPER_TASK, PAPER_FRACTIONS, _batches(PAPER_TASK, PAPER_P, PAPER_FRACTIONS), PAPER_STEPS,
              WEIGHT_DECAY, 20, "")

_CHANGED = {
    "tasks": Setting("tasks", "binary operations mod 97 (MODULUS) among VALID_OPERATORS; Arn's figures of the "
                     "spikes show several of them, not named in his text", pf.DATA,
                     "x/y mod 97 (quick: x^2+y^2 mod 31)", "one operation: which ones Arn's figures show is not "
                     "in the text read here"),
    "fractions": Setting("fractions", "train_data_pct; Fig. 4.5 compares several splits of one dataset", pf.TRAINING,
                         "train_fraction 0.3, 0.5, 0.7 (quick: 0.3 and 0.8)", "Arn's fractions are not stated in "
                         "his text"),
    "seeds": Setting("seeds", "random_seed; Fig. 4.5: \"different parts of the same dataset, same random seed\"",
                     pf.TRAINING, "seed 0 for every run"),
    "optimizer": Setting("optimizer", "CustomAdamW: betas (0.9, 0.98), eps 1e-8, decoupled weight decay; max_lr "
                         "1e-3; Arn: weight_decay 0.01 (App. A)", pf.TRAINING,
                         "adamw, lr 1e-3, weight_decay 0.01, betas (0.9, 0.98), eps 1e-8 (quick: weight decay 1)",
                         "quick: weight decay 1 spikes every few hundred steps at p = 31, where 0.01 first spikes "
                         "after about 1,400"),
    "steps": Setting("steps", "max_steps; Arn: 2 x 10^6 (\"I doubled the range from the 10^6 optimization steps in "
                     "the original paper\", Sec. 4.3)", pf.TRAINING,
                     "steps 100,000 (the code's max_steps default), no early stop (quick: 900)",
                     "Arn's budget is 20 times longer: spikes he saw late are not reached"),
    "loss": Setting("loss", "F.cross_entropy in float32 over the right-hand-side tokens", pf.TRAINING,
                    "cross_entropy, softmax_dtype float32 (probe's default is float64)"),
    "evaluation cadence": Setting("evaluation cadence", "train_loss: the mean of the epoch's minibatch losses, logged "
                                  "at epochs growing by 1% (next = max(int(1.01 e), e + 1)); validation and "
                                  "full_train_loss at epochs growing by 2%", pf.TRAINING,
                                  "training loss over the whole training set (eval mode) and validation every 20 "
                                  "steps (quick: 10)",
                                  "probe samples the loss far more densely late in training (theirs about every "
                                  "1,000 steps at step 100,000), so it sees at least the spikes theirs shows"),
}
SETTING = tuple(_CHANGED.get(s.setting, s) for s in pf.SETTING)


reproduction(Reproduction(
    name="arn-spikes",
    paper="Arn 2023, Investigating \"Grokking\" (ETH Zurich bachelor's thesis), re-running Power, Burda, Edwards, "
          "Babuschkin, Misra 2022 with their code",
    figure="training-loss spikes: Sec. 4.3 (Timing of Grokking) and 4.4 (Training Loss Spikes), Figs. 4.3-4.6",
    artefact=Artefact(pf.REPO, pf.COMMIT, pf.TRAINING,
                      "the authors' training code (no released curves); the reference claims are the text of Arn's "
                      "thesis (Sec. 4.3, 4.4), who ran this code with weight decay 0.01 (App. A)"),
    trains="Power et al.'s two-layer transformer (power-moddiv) on x/y mod 97 at three training fractions, one seed, "
           "weight decay 0.01 and float32 loss, without early stop",
    setting=SETTING,
    scales={
        "quick": Scale("quick", QUICK, "about 40 s of CPU (--jobs 1; 65 s of wall time beside two other training jobs)",
                       "x^2+y^2 mod 31, d_model 64, d_mlp 256, weight decay 1, fractions 0.3 and 0.8, 900 steps, "
                       "metrics every 10: both runs fit by step 120 and spike every few hundred steps after (heights "
                       "10^1-10^3); 0.8 generalises at once and spikes after, 0.3 does not generalise and spikes "
                       "anyway, its validation accuracy higher after each spike"),
        "paper": Scale("paper", PAPER, "unmeasured",
                       "x/y mod 97 at fractions 0.3, 0.5, 0.7, seed 0, weight decay 0.01, 100,000 steps each "
                       "(no early stop), metrics every 20 steps; estimated 5 to 6 h of one core (about 65 ms a step, "
                       "timed over 300 steps on one core beside two other training jobs), about 3 h with --jobs 2"),
    },
    analyse=analyse,
    draw=draw,
    claims=("once the training set is fitted the training loss sinks towards zero and then spikes by orders of "
            "magnitude, again and again, at almost every fraction (Arn Sec. 4.3, 4.4)",
            "spikes happen in runs that never generalise and in runs that already have; the validation loss "
            "rises with them (Sec. 4.3, 4.4)",
            "generalisation comes no earlier than the first spike, and no spike leaves the model generalising "
            "worse (Sec. 4.3, 4.4)"),
))
