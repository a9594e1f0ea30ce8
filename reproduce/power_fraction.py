"""Power, Burda, Edwards, Babuschkin and Misra 2022, re-run with the authors' code by Arn (2023):
data-fraction curves per operator, the steps to 99% validation accuracy against the training
fraction, and the phases along it (docs/reproductions/power-fraction/README.md).

The authors' code is github.com/openai/grok (commit 3d64b1d); it released no step counts. The
reference claims are the text of Arn's bachelor's thesis (Investigating "Grokking" - Late
Generalisation in Deep Learning, ETH Zurich, March 2023), who trained the authors' code on
operations mod 97:

* Sec. 3 lists the "Operations used for which the model achieved generalization": addition and
  subtraction, multiplication and division, and x^2 + y^2 (each modulo 97), and three groups; not
  the mixed division/subtraction operation nor x^3 + x*y.
* Sec. 4.2: "My experiments highlight a clear relation between the amount of data and the learning
  performance of the model. In all my experiments, if fast generalization occurred, grokking occurred
  too when feeding less data from the same dataset to the model. Conversely, if grokking occurred,
  fast generalization occurred too with more data from the same dataset." (Fig. 4.2 shows the
  phases memorization, grokking and comprehension along the training fraction.)

Power et al.'s own data-efficiency claims (the steps to 99% training accuracy against the fraction,
x-y against x/y, symmetric against non-symmetric operations) are not compared: no primary copy of
their text was at hand to check the quotations against.

probe's numbers are read from each run's metric rows: the first step with validation (training)
accuracy >= 0.99, the median over seeds ("never" the largest), and the phase by Liu's rule at 99%.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.phases import PHASES, PhaseRule, classify
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/openai/grok"
COMMIT = "3d64b1d8c1d595dd8ebdb7771998823f1b14c7b3"
DATA = "grok/data.py"
TRAINING = "grok/training.py"
MODEL = "grok/transformer.py"
ARN = "Arn 2023 (ETH bachelor's thesis)"
#: the operations of OPERATORS as Arn's Sec. 3 names them among those "for which the model achieved generalization"
ARN_GENERALISED = {"add": "addition", "sub": "subtraction", "div": "division", "x2+y2": "x^2 + y^2"}
THRESHOLD = 0.99  # Power et al.'s criterion: validation (training) accuracy reaches 99%
DELAY = 1000  # Liu et al.'s grokking delay, for the phase ordering along the fraction (Arn Sec. 4.2)
#: phases from the least to the most data-efficient, the order Arn finds along the fraction
PHASE_ORDER = ("confusion", "memorization", "grokking", "comprehension")
OPERATORS = ("add", "sub", "div", "x2+y2")
OP_NAMES = {"add": "x+y", "sub": "x-y", "div": "x/y", "x2+y2": "x^2+y^2"}


def power_batch_size(n_train: int) -> int:
    """The authors' batch: ``min(512, ceil(n_train / 2))`` (grok/data.py ``calculate_batchsize``
    with the default batchsize 0)."""
    return min(512, math.ceil(n_train / 2))


def n_samples(task: str, p: int) -> int:
    """Equations in the table: p^2, or p(p - 1) for division (b != 0)."""
    return p * (p - 1) if task == "div" else p * p


def n_train(task: str, p: int, fraction: float) -> int:
    """probe's training-set size: floor(f N) (grok/data.py rounds: round(N f))."""
    return max(1, int(math.floor(fraction * n_samples(task, p) + 1e-9)))


def median_steps(values: list[float]) -> float:
    """Median over seeds, never (inf) counted as the largest value."""
    return float(np.median(np.asarray(values, dtype=np.float64))) if values else math.nan


def non_increasing(values: list[float]) -> bool:
    """No value exceeds the one before it (inf == inf counts as not rising)."""
    return all(not (b > a) for a, b in zip(values, values[1:]))


def critical_fraction(fractions: list[float], steps: list[float]) -> float:
    """The smallest fraction from which on every larger fraction reaches the threshold (inf: none)."""
    crit = math.inf
    for f, s in sorted(zip(fractions, steps), reverse=True):
        if not math.isfinite(s):
            break
        crit = f
    return crit


def _spec(task_axis: str, fractions: str, batches: str | None, p: int, steps: int, every: str,
          metrics_every: int, extra: str, seeds: list[int]) -> str:
    batch = "" if batches is None else f"\n  batch_size: {batches}"
    fixed_batch = ", batch_size: 512" if batches is None else ""
    return (
        "preset: power-moddiv\n"
        f"set: {{p: {p}, steps: {steps}, split_seed: 0{fixed_batch}, batching: epochs, model.init: pytorch, "
        f"model.head_bias: false, stop.threshold: {THRESHOLD}, "
        f"stop.after_generalization: 100, {every}, checkpoint.metrics_every: {metrics_every}, "
        f"checkpoint.tensors: [embed.W_E]{extra}}}\n"
        f"{task_axis}"
        f"zip:\n  train_fraction: {fractions}{batch}\n"
        f"seeds: {seeds}\n"
    )


QUICK_P = 31
QUICK_TASK = "x2+y2"
QUICK_FRACTIONS = [0.3, 0.8]
QUICK_STEPS = 250
QUICK_EXTRA = ", task: x2+y2, model.d_model: 64, model.d_mlp: 256"
PAPER_P = 97
PAPER_FRACTIONS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
PAPER_STEPS = 100_000


def quick_spec() -> str:
    batches = [power_batch_size(n_train(QUICK_TASK, QUICK_P, f)) for f in QUICK_FRACTIONS]
    return _spec("", str(QUICK_FRACTIONS), str(batches), QUICK_P, QUICK_STEPS,
                 "checkpoint.schedule: every, checkpoint.every: 400", 10, QUICK_EXTRA, [0])


def paper_spec() -> str:
    # every fraction >= 0.2 of p = 97 has >= 1,862 training equations, so the authors' batch is 512 throughout
    return _spec(f"grid:\n  task: {list(OPERATORS)}\n".replace("'", ""), str(PAPER_FRACTIONS), None, PAPER_P,
                 PAPER_STEPS, "checkpoint.schedule: geometric, checkpoint.count: 100", 50, "", [0, 1, 2])


SETTING = (
    Setting("tasks", "binary operations mod 97 (MODULUS): '+', '-', '/' (b != 0; a = b c mod 97, answer c), "
            "'x**2+y**2_mod_97' among VALID_OPERATORS", DATA,
            "add, sub, div, x2+y2 at p = 97 (quick: x2+y2 at p = 31)"),
    Setting("tokens", "'EOS a op b = c EOS' (EOS_TOKEN); the model reads 'EOS a op b = c' and is scored on the "
            "tokens after '=' (c, then EOS); one vocabulary of 239 tokens (numbers, operators, S5 permutations, "
            "EOS, =)", DATA, "tokens [a, op, b, =] (op_token true), the answer read at '='",
            "no EOS tokens: probe's loss and accuracy are the answer's alone (theirs also predict EOS after c, "
            "which is learned at once); probe's output classes are the p residues"),
    Setting("split", "np.random.RandomState(0).shuffle(equations); the first round(N pct / 100) train: the same "
            "split for every run and seed", DATA, "split_seed 0 for every run (one fixed split per fraction), "
            "floor(f N) training equations", "probe's floor against their round: at most one equation"),
    Setting("fractions", "train_data_pct on the command line (default 5); Arn varies it per operator (\"varying "
            "train-validation-split percentages\", Sec. 3)", TRAINING,
            "train_fraction 0.2, 0.3, ..., 0.9 (quick: 0.3 and 0.8)", "Arn's grid is not stated in his text"),
    Setting("seeds", "random_seed (default -1: unseeded); Arn varied it (App. A) and compared splits at \"the "
            "same random seed to initialize model weights\" (Sec. 4.4)", TRAINING, "seeds 0, 1, 2 (quick: 0)",
            "three seeds per point are probe's choice (the median over them is compared)"),
    Setting("block", "2 decoder blocks, d_model 128, 4 heads of 32, FFN 512 with ReLU, no bias in any linear layer, "
            "post-LayerNorm (LayerNorm(x + sublayer(x))), no final LayerNorm, fixed sinusoidal positions, untied "
            "unembedding", MODEL, "power-moddiv: transformer, n_layers 2, d_model 128, n_heads 4, d_mlp 512, relu, "
            "layernorm true, head_bias false (quick: d_model 64, d_mlp 256)",
            "probe's blocks are pre-LayerNorm with a final LayerNorm (theirs post-LayerNorm, none final), its "
            "positions are learned, and its attention and MLP have biases"),
    Setting("init", "torch defaults: nn.Embedding N(0, 1); nn.Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for "
            "every projection (per-head W_q, W_k, W_v of 128 x 32, W_o, the FFN, the unembedding); LayerNorm 1, 0",
            MODEL, "model.init pytorch: N(0, 1) token and position embeddings, nn.Linear's uniform for the "
            "attention output, MLP and unembedding",
            "probe's query/key/value in-projection is Xavier-uniform over the stacked (3 d, d) matrix, bound "
            "sqrt(6 / 4 d), 1.22 times theirs (1 / sqrt(d)); probe's positions start N(0, 1), theirs are fixed "
            "sinusoids"),
    Setting("optimizer", "CustomAdamW: betas (0.9, 0.98), eps 1e-8, decoupled weight decay p *= 1 - lr wd "
            "('to_zero'); max_lr 1e-3; weight_decay default 0; Arn set weight_decay 0.01 (App. A)", TRAINING,
            "adamw, lr 1e-3, weight_decay 1, betas (0.9, 0.98), eps 1e-8",
            "weight decay 1 is probe's choice: the code's default is 0 and Arn ran 0.01 with 2 x 10^6 steps; the "
            "value Power et al. state could not be checked against their paper here"),
    Setting("schedule", "LambdaLR: lr = step / warmup_steps * max_lr up to warmup_steps 10, then max_lr (no "
            "anneal)", TRAINING, "warmup_steps 10"),
    Setting("batches", "batchsize 0: min(512, ceil(n_train / 2)); each epoch a random permutation cut into "
            "batches, the last one smaller", DATA, "batch_size 512 (quick: ceil(n_train / 2) per fraction, zipped), "
            "batching epochs (a fresh shuffle per epoch, the last batch the remainder)"),
    Setting("steps", "max_steps 100,000 (add_args default); Arn: 2 x 10^6 (\"I doubled the range from the 10^6 "
            "optimization steps in the original paper\", Sec. 4.3)", TRAINING, "steps 100,000; a run stops 100 "
            "steps after training and validation accuracy pass 0.99 (quick: 250)",
            "runs that never generalise train the whole budget; Arn's budget is 20 times longer"),
    Setting("loss", "F.cross_entropy in float32 over the right-hand-side tokens", TRAINING,
            "float64 cross-entropy over the answer", "float64 against their float32"),
    Setting("evaluation cadence", "validation every epoch at first, then at epochs growing by 2% "
            "(next = max(int(1.02 e), e + 1))", TRAINING, "training and validation accuracy every 50 steps (quick: 10)",
            "probe's crossing is known to within 50 steps; theirs to within 2% late in training"),
)


def _run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run: task, fraction, seed, budget, steps to 99% training and validation
    accuracy, the best validation accuracy, the phase at 99%, and the validation-accuracy curve."""
    import pandas as pd

    from probe.sweep import load_sweep, read_status

    sw = load_sweep(sweep_dir)
    rows = []
    for name in sw.names:
        rec = read_status(sw.root, name)
        if rec is None or rec.state != "done":
            continue
        with sw.run(name) as run:
            cfg, m = run.config, run.metrics
            frac = len(run.split.train) / run.task.n_samples
            task = run.task.name
        steps = m["step"].to_numpy(dtype=np.float64)
        tr, va = m["train_acc"].to_numpy(dtype=np.float64), m["val_acc"].to_numpy(dtype=np.float64)

        def first(a: np.ndarray) -> float:
            hit = np.flatnonzero(a >= THRESHOLD)
            return float(steps[hit[0]]) if len(hit) else math.inf

        phase = classify(steps, tr, va, PhaseRule(THRESHOLD - 1e-9, int(cfg.steps), DELAY)).phase
        rows.append({"run": name, "task": task, "train_fraction": float(cfg.train_fraction), "fraction": frac,
                     "seed": int(cfg.seed), "p": int(cfg.p), "budget": int(cfg.steps),
                     "batch_size": int(cfg.batch_size) if cfg.batch_size else 0,
                     "train_step": first(tr), "val_step": first(va), "best_val_acc": float(np.max(va)),
                     "phase": phase, "curve_step": steps, "curve_val_acc": va})
    cols = ["run", "task", "train_fraction", "fraction", "seed", "p", "budget", "batch_size", "train_step",
            "val_step", "best_val_acc", "phase", "curve_step", "curve_val_acc"]
    return pd.DataFrame(rows, columns=cols).sort_values(["task", "train_fraction", "seed"]).reset_index(drop=True)


def per_operator(table: "pd.DataFrame") -> dict[str, dict[str, Any]]:
    """Per task: the fractions, median steps to 99% validation and training accuracy, the majority
    phase per fraction and the critical fraction."""
    from probe.phases import majority

    out: dict[str, dict[str, Any]] = {}
    for task, g in table.groupby("task", sort=True):
        fr, val, train, phases = [], [], [], []
        for f, h in g.groupby("train_fraction", sort=True):
            fr.append(float(f))
            val.append(median_steps([float(v) for v in h["val_step"]]))
            train.append(median_steps([float(v) for v in h["train_step"]]))
            phases.append(majority(list(h["phase"]))[0])
        out[str(task)] = {"fractions": fr, "val": val, "train": train, "phases": phases,
                          "critical": critical_fraction(fr, val), "budget": int(g["budget"].max()),
                          "p": int(g["p"].iloc[0]), "seeds": int(g["seed"].nunique())}
    return out


def _frac_list(fr: list[float], vals: list[float]) -> str:
    return ", ".join(f"{f:g}: {fmt_steps(v)}" for f, v in zip(fr, vals))


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per operator, against Arn's findings with the authors' code: the steps to 99% validation
    accuracy fall as the fraction rises; the operator generalises at its largest fraction; the
    phases are ordered along the fraction."""
    table = _run_table(sweep_dir)
    ops = per_operator(table)
    rows: list[Row] = []
    for task, o in ops.items():
        name = OP_NAMES.get(task, task)
        where = f"p = {o['p']}, budget {o['budget']:,}, median of {o['seeds']} seed(s)"
        fr = o["fractions"]
        ok = non_increasing(o["val"]) and any(math.isfinite(v) for v in o["val"])
        rows.append(Row(f"{name}: steps to 99% validation accuracy fall as the training fraction rises",
                        "yes (\"a clear relation between the amount of data and the learning performance\"; with "
                        "less data, fast generalization turns into grokking)", f"{ARN} Sec. 4.2",
                        f"{_frac_list(fr, o['val'])} ({where})", "non-increasing in the fraction, some reached",
                        "agrees" if ok else "differs"))
        top = o["val"][-1] if o["val"] else math.inf
        arn = ARN_GENERALISED.get(task)
        rows.append(Row(f"{name}: reaches 99% validation accuracy at the largest fraction trained ({fr[-1]:g})",
                        f"yes ({arn} mod 97 is among the operations \"for which the model achieved generalization\")"
                        if arn else "not stated for this operation", f"{ARN} Sec. 3", f"{fmt_steps(top)} ({where})",
                        "reached within the budget", "agrees" if math.isfinite(top) and arn else "differs"))
        ranks = [PHASE_ORDER.index(ph) if ph in PHASE_ORDER else -1 for ph in o["phases"]]
        ordered = all(r >= 0 for r in ranks) and all(b >= a for a, b in zip(ranks, ranks[1:]))
        rows.append(Row(f"{name}: phases ordered along the fraction (memorization, grokking, comprehension)",
                        "yes (\"if fast generalization occurred, grokking occurred too when feeding less data from "
                        "the same dataset to the model\")", f"{ARN} Sec. 4.2, Fig. 4.2",
                        ", ".join(f"{f:g}: {ph}" for f, ph in zip(fr, o["phases"]))
                        + f" (99% threshold, delay {DELAY:,})", "never a less data-efficient phase at a larger "
                        "fraction", "agrees" if ordered else "differs"))
    runs = table.drop(columns=["curve_step", "curve_val_acc"])
    budget = int(table["budget"].max()) if len(table) else 0
    return Analysis(tuple(rows), runs, {"operators": ops, "scale": scale, "budget": budget})


def draw(analysis: Analysis) -> "Figure":
    """Three panels, one curve per operator: the median steps to 99% validation accuracy against the
    training fraction (log scale, never-reached at the top, each seed a faint point); the best
    validation accuracy within the budget (mean over seeds); and the phase per fraction (the ordering
    of Arn's Sec. 4.2 and Fig. 4.2)."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    runs: "pd.DataFrame" = analysis.runs
    ops: dict[str, dict[str, Any]] = analysis.extra["operators"]
    top = max(float(analysis.extra["budget"]), 10.0) * 1.5
    ax, acc_ax = axes[0], axes[1]
    for k, (task, o) in enumerate(sorted(ops.items())):
        colour = f"C{k}"
        sub = runs[runs["task"] == task]
        ax.scatter(sub["train_fraction"], np.minimum(sub["val_step"].to_numpy(dtype=np.float64), top),
                   color=colour, alpha=0.35, s=14)
        ax.plot(o["fractions"], np.minimum(np.asarray(o["val"], dtype=np.float64), top), marker="o", color=colour,
                label=OP_NAMES.get(task, task))
        best = sub.groupby("train_fraction")["best_val_acc"].mean()
        acc_ax.plot(best.index, 100 * best.to_numpy(), marker="o", color=colour, label=OP_NAMES.get(task, task))
    ax.axhline(top, color="0.7", linewidth=0.6)
    ax.text(0.01, top, " never", va="bottom", fontsize=7, color="0.4", transform=ax.get_yaxis_transform())
    ax.set_yscale("log")
    ax.set_ylabel("steps to 99% validation accuracy (median)")
    ax.set_title(f"steps to 99% validation accuracy, probe {analysis.extra['scale']} scale", fontsize=10)
    acc_ax.set_ylim(0, 102)
    acc_ax.set_ylabel(f"best validation accuracy within {analysis.extra['budget']:,} steps (%)")
    acc_ax.set_title("best validation accuracy within the budget", fontsize=10)
    for a in (ax, acc_ax):
        a.set_xlim(0, 1)
        a.set_xlabel("training data fraction")
        a.legend(fontsize=7, frameon=False)
    ax = axes[2]
    names = sorted(ops)
    colours = {ph: f"C{i}" for i, ph in enumerate(PHASES)}
    for y, task in enumerate(names):
        o = ops[task]
        for f, ph in zip(o["fractions"], o["phases"]):
            ax.scatter([f], [y], color=colours.get(ph, "0.5"), s=80, marker="s")
    for ph, c in colours.items():
        ax.scatter([], [], color=c, marker="s", label=ph)
    ax.set_yticks(range(len(names)), [OP_NAMES.get(t, t) for t in names])
    ax.set_ylim(-0.8, len(names) - 0.2)
    ax.set_xlim(0, 1)
    ax.set_xlabel("training data fraction")
    ax.set_title(f"majority phase at 99% (delay {DELAY:,} steps; Arn Sec. 4.2)", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


reproduction(Reproduction(
    name="power-fraction",
    paper="Power, Burda, Edwards, Babuschkin, Misra 2022, Grokking: Generalization Beyond Overfitting on Small "
          "Algorithmic Datasets; Arn 2023, Investigating \"Grokking\" (ETH Zurich bachelor's thesis)",
    figure="data-fraction curves per operator: steps to 99% validation accuracy against the training fraction, "
           "and the phases along it (Arn Sec. 4.2, Fig. 4.2)",
    artefact=Artefact(REPO, COMMIT, TRAINING,
                      "the authors' training code (no released step counts); the reference claims are the text of "
                      "Arn's bachelor's thesis (ETH Zurich, March 2023), who ran this code (Sec. 3, 4.2)"),
    trains="Power et al.'s two-layer transformer (power-moddiv) on x+y, x-y, x/y and x^2+y^2 mod 97, one run per "
           "operator, training fraction and seed",
    setting=SETTING,
    scales={
        "quick": Scale("quick", quick_spec(), "13 s (--jobs 1)",
                       "x^2+y^2 mod 31, d_model 64, d_mlp 256, fractions 0.3 and 0.8 (batch half the training set), "
                       "250 steps: 0.8 reaches 99% validation accuracy at step 170 (140 and 160 with seeds 2 and 1; "
                       "comprehension), 0.3 not within the budget (best 31%, memorization)"),
        "paper": Scale("paper", paper_spec(), "unmeasured",
                       "four operators mod 97 x fractions 0.2 to 0.9 x seeds 0, 1, 2 (96 runs), 100,000 steps each "
                       "unless 99% validation accuracy stops it; at 21 steps/s a run that uses its budget takes "
                       "80 min on one core: at most 128 h for the sweep, about half that if half the runs "
                       "generalise early"),
    },
    analyse=analyse,
    draw=draw,
    claims=("for every operator the steps to 99% validation accuracy rise as the training fraction falls, and "
            "below an operator-dependent fraction the budget is not enough (Arn Sec. 4.2)",
            "addition, subtraction, division and x^2+y^2 mod 97 generalise at a large enough fraction (Arn Sec. 3)",
            "the phases are ordered along the fraction: memorization, then grokking, then comprehension as the "
            "fraction rises (Arn Sec. 4.2)"),
))
