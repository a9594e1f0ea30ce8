"""Prieto, Barsbey, Mediano and Birdal 2025, "Grokking at the Edge of Numerical Stability", Fig. 1 and
Fig. 2(a): an MLP on addition mod 113 without weight decay overfits (softmax cross-entropy: training
accuracy 1, test accuracy at chance, a growing share of training samples whose loss is exactly zero in
float32: softmax collapse), groks with StableMax, and generalises at once with the orthogonal gradient
(⊥AdamW). Compared with the authors' released figures (docs/reproductions/prieto-softmax-collapse/README.md).

The authors' numbers are read from the figures that ``paper_plots.ipynb`` of
github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability (commit 0cc9e8d) draws from the runs of
``run_main_experiments.sh`` (the notebook's outputs are released; its metrics.csv files are not): each
panel's axes calibrated on its tick marks, each curve read at the run's logging epochs (every 5,000 for
the 80,000-epoch runs, every 10 for the 300-epoch one); resolution about 0.003 in accuracy. Fig. 2(a)'s
vertical lines are the first logged epoch (every 500) with more than 40% of the training samples in
softmax collapse (the notebook's ``softmax_collapse > 0.4``; the legend says 50%), read to the pixel.
The claims' wording is the paper's (arXiv 2501.04697, Sec. 3.2, 3.3, 5.1, Fig. 1, 2, 4).
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

REPO = "github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability"
COMMIT = "0cc9e8dc62ce5ed66d29d80eebbaf14da2f71c67"
PLOTS = "paper_plots.ipynb"
TRAIN = "grokking_experiments.py"
UTILS = "utils.py"
MODELS = "models.py"
DATASETS = "datasets.py"
ORTHO = "orthograd.py"
LOGGER = "logger.py"
PAPER = "Prieto et al. 2025 (arXiv 2501.04697)"

P = 113
N_TRAIN = 5107  # int(0.4 * 113 ** 2): utils.split_dataset's train_size
CHANCE = 1 / P
COLLAPSE_SHARE = 0.4  # Fig. 2(a)'s threshold in the notebook
STALLED = 0.05  # validation accuracy below this: no generalisation (chance 1/113 = 0.009)
FACTOR = 3.0  # tolerance on a step count
ACC_TOL = 0.05

#: the four runs: name -> (figure, what it is)
RUNS: dict[str, str] = {
    "softmax-float32": "Fig. 2(a): softmax cross-entropy in float32, AdamW lr 5e-4, eps 1e-30, 20,000 epochs",
    "stablemax": "Fig. 1(a): StableMax cross-entropy (float64), AdamW lr 1e-2, beta2 0.999, 80,000 epochs",
    "orthograd": "Fig. 1(b): ⊥AdamW, softmax cross-entropy in float32, lr 1e-2, 300 epochs",
    "softmax-float64": "Fig. 1(c): softmax cross-entropy in float64, AdamW lr 1e-2, 80,000 epochs",
}

#: the authors' StableMax run of Fig. 1(a) (run_main_experiments.sh's command, grokking_experiments.py at
#: COMMIT, on this project's 2-core CPU machine: torchvision, which only its MNIST data needs, replaced by an
#: empty module, and one torch thread), its logger's metrics.csv committed beside the reproduction's page
AUTHORS_STABLEMAX_RUN = "docs/reproductions/prieto-softmax-collapse/authors-stablemax-metrics.csv"
#: that run's largest share of training samples with loss exactly 0 (logger.py's zero_terms, StableMax in
#: float64) over its 16 logged epochs
AUTHORS_STABLEMAX_ZERO_TERMS = 0.0

#: Fig. 1(a), StableMax: test accuracy at epochs 0, 5,000, ..., 75,000 (training accuracy 1.0 from 5,000 on)
FIG1A_TEST: tuple[float, ...] = (0.007, 0.004, 0.008, 0.024, 0.058, 0.137, 0.294, 0.520, 0.728, 0.872, 0.939,
                                 0.965, 0.977, 0.982, 0.985, 0.985)
FIG1A_EVERY = 5000
#: Fig. 1(b), ⊥AdamW: (epoch, train accuracy, test accuracy) every 10 epochs to 120 (both 1.0 after)
FIG1B: tuple[tuple[int, float, float], ...] = (
    (0, 0.024, 0.007), (10, 0.055, 0.001), (20, 0.088, 0.001), (30, 0.159, 0.001), (40, 0.231, 0.001),
    (50, 0.300, 0.001), (60, 0.365, 0.003), (70, 0.454, 0.008), (80, 0.593, 0.043), (90, 0.751, 0.214),
    (100, 0.915, 0.630), (110, 0.997, 0.945), (120, 1.000, 1.000),
)
#: Fig. 1(c), softmax in float64: test accuracy never above 0.008 in 75,000 epochs; training 1.0 from 5,000
FIG1C_FINAL_TEST = 0.008
FIG1C_EPOCHS = 75_000
#: Fig. 2(a), 40% training data, lr 5e-4: first logged epoch with > 40% of training samples in SC
FIG2A_COLLAPSE: dict[str, int] = {"float16": 6000, "float32": 11500, "float64": 7000}
FIG2A_EPOCHS = 20_000
#: Fig. 4 (middle), the same StableMax setting run to 100,000 epochs: weight norm (the orange curve: its data
#: are the addition run; the notebook's variable names swap addition and product)
FIG4_NORM: dict[int, float] = {5000: 570, 35000: 2190, 75000: 20000}
#: the expected norm of PyTorch's default initialisation of the bias-free 226-200-200-113 MLP (d_out / 3
#: in squares per layer)
AUTHORS_NORM_INIT = math.sqrt(200 / 3 + 200 / 3 + 113 / 3)


def fig1a_first(threshold: float) -> tuple[int, float, float]:
    """Fig. 1(a)'s first logged epoch with test accuracy >= threshold, its value, the value before."""
    for k, v in enumerate(FIG1A_TEST):
        if v >= threshold:
            return k * FIG1A_EVERY, v, FIG1A_TEST[k - 1]
    raise ValueError(threshold)


def fig1b_first(col: int, threshold: float) -> int:
    return next(r[0] for r in FIG1B if r[col] >= threshold)


SPEC_TEMPLATE = (
    "preset: prieto-mlp\n"
    "set: {{p: {p}, {split}, weight_decay: 0.0, model.hidden: {hidden}, "
    "checkpoint.schedule: every{extra}}}\n"
    "zip:\n"
    "  softmax: [softmax, stablemax, softmax, softmax]\n"
    "  softmax_dtype: [float32, float64, float32, float64]\n"
    "  orthogonal_grad: [false, false, true, false]\n"
    "  orthogonal_grad_rescale: [false, false, true, false]\n"
    "  lr: [{lr32!r}, 0.01, 0.01, 0.01]\n"
    "  betas: [[0.9, 0.99], [0.9, 0.999], [0.9, 0.999], [0.9, 0.99]]\n"
    "  eps: [1.0e-30, 1.0e-25, 1.0e-08, 1.0e-25]\n"
    "  steps: [{s32}, {s_stable}, {s_ortho}, {s64}]\n"
    "  checkpoint.metrics_every: [{every}, {every}, {every_ortho}, {every}]\n"
    "  checkpoint.every: [{ck32}, {ck_stable}, {ck_ortho}, {ck64}]\n"
)


def _spec(p: int, split: str, steps: tuple[int, int, int, int], every: int, every_ortho: int,
          checkpoints: tuple[int, int, int, int], lr32: float = 5e-4, hidden: str = "[200, 200]",
          extra: str = "") -> str:
    """The four runs (softmax float32, StableMax, ⊥Grad, softmax float64) zipped; ``steps`` and the
    checkpoint intervals ``checkpoints`` in that order (softmax collapse is read at the checkpoints)."""
    s32, s_stable, s_ortho, s64 = steps
    ck32, ck_stable, ck_ortho, ck64 = checkpoints
    return SPEC_TEMPLATE.format(p=p, split=split, hidden=hidden, every=every,
                                every_ortho=every_ortho, extra=extra, lr32=lr32, s32=s32, s_stable=s_stable,
                                s_ortho=s_ortho, s64=s64, ck32=ck32, ck_stable=ck_stable, ck_ortho=ck_ortho, ck64=ck64)


PAPER_STEPS = (FIG2A_EPOCHS, 80_000, 300, 80_000)
PAPER_CHECKPOINTS = (500, 2000, 10, 2000)  # Fig. 2's logging interval for the float32 run; 41 or 31 per run
#: the quick scale: p = 31 with 70% of the pairs (at 40% no run generalises within a quick budget), the
#: authors' MLP (one-hot inputs, no biases, 200-200), every run at Fig. 1's lr 1e-2
QUICK_P = 31
QUICK_SPLIT = "n_train: null, train_fraction: 0.7"
QUICK_STEPS = (2000, 1200, 300, 500)
QUICK_CHECKPOINTS = (250, 100, 50, 50)
QUICK_LR32 = 0.01
QUICK_HIDDEN = "[200, 200]"

SETTING = (
    Setting("task", "addition mod 113, inputs the concatenated one-hot vectors of a and b (226 dims), all "
            "113^2 pairs", DATASETS, "add, p = 113, ordered pairs (quick: p = 31)"),
    Setting("split", "random_split(dataset, [int(0.4 N), N - int(0.4 N)]): 5,107 training pairs, the other "
            "7,662 for testing; torch.manual_seed(42)", UTILS, "n_train 5,107, "
            "split_seed 0, seed 0 (quick: train_fraction 0.7)", "another draw of the split and of the weights"),
    Setting("model", "MLP(226 -> 200 -> 200 -> 113), ReLU, bias=False (add_mod), nn.Linear's default "
            "initialisation; logits x alpha = 1", MODELS,
            "preset prieto-mlp: model mlp with input onehot (the one-hot vectors of a and b concatenated, "
            "226 inputs; quick: 62), bias false, hidden [200, 200], ReLU; weights U(-1/sqrt(fan_in), "
            "1/sqrt(fan_in)) as nn.Linear's default",
            "another draw of the same law (probe stores W as [in, out] and seeds its own generator)"),
    Setting("optimizer", "AdamW(lr, betas (0.9, beta2), eps adam_epsilon, weight_decay 0); beta2 default "
            "0.99, adam_epsilon default 1e-25; the lr divided by alpha^2 = 1", UTILS,
            "adamw, weight_decay 0, betas and eps per run as the authors'"),
    Setting("runs", "the experiment keys the notebook reads (the arguments of run_main_experiments.sh): Fig. 1 "
            "'add_mod|num_epochs-80000|train_fraction-0.4|loss_function-stablemax|log_frequency-5000|lr-0.01|"
            "batch_size-5107|beta2-0.999', '...|num_epochs-300|...|log_frequency-10|lr-0.01|...|"
            "orthogonal_gradients-True', '...|num_epochs-80000|...|lr-0.01|...|softmax_precision-64'; Fig. 2(a) "
            "'...|num_epochs-20000|train_fraction-0.4|log_frequency-500|lr-0.0005|batch_size-5107|"
            "adam_epsilon-1e-30' with softmax_precision 16 / 32 (default) / 64", PLOTS,
            "four runs zipped: softmax float32 lr 5e-4 eps 1e-30 20,000 steps; StableMax float64 lr 1e-2 "
            "betas (0.9, 0.999) 80,000; ⊥Grad float32 lr 1e-2 300; softmax float64 lr 1e-2 80,000 "
            "(quick: p = 31, 2,000 / 1,200 / 1,000 / 500 steps, the float32 run at lr 1e-2)",
            "the float16 run of Fig. 2(a) is not trained (probe computes the softmax in float32 or float64)"),
    Setting("⊥AdamW", "OrthoGrad wraps AdamW: each tensor's gradient loses its component along the tensor "
            "(w.g / (w.w + 1e-30)) and is rescaled to the gradient's norm; the wrapper builds AdamW with lr "
            "and weight_decay only, so betas (0.9, 0.999) and eps 1e-8 (its beta2 and eps arguments are "
            "not passed on)", ORTHO, "orthogonal_grad and orthogonal_grad_rescale true (g - (w.g / w.w) w "
            "per tensor, times |g| / |g_perp|), betas (0.9, 0.999), eps 1e-8",
            "probe's projection has no 1e-30 guards (it skips a tensor of norm 0)"),
    Setting("losses", "cross_entropy_float32: log_softmax in float32; cross_entropy_float64: in float64; "
            "stablemax_cross_entropy: s(x) = x + 1 (x >= 0), 1 / (1 - x + 1e-30) (x < 0), in float64", UTILS,
            "softmax float32 / float64, stablemax float64 (probe.models.base.cross_entropy)"),
    Setting("batches", "full batch (the training set shuffled each epoch; one step per epoch)", TRAIN,
            "full batch: one step = one epoch"),
    Setting("precision", "model and data in float32 (train_precision 32)", TRAIN, "float32 model"),
    Setting("softmax collapse", "share of training samples whose sum of exp(z - max z) equals 1 exactly in the "
            "softmax precision (compute_softmax_collapse), every log_frequency epochs", LOGGER,
            "softmax_collapse metric: share of training samples whose loss is exactly 0 in the run's softmax "
            "precision, at the run's checkpoints (every 500 steps for the float32 run as their Fig. 2 logs, every "
            "2,000 for the 80,000-step runs, every 10 for ⊥Grad; quick: every 250 / 100 / 50 / 50)",
            "theirs also counts a misclassified sample whose largest logit swamps the rest; at 100% training "
            "accuracy the two agree"),
    Setting("evaluation", "accuracy on all training and test pairs every log_frequency epochs (5,000 for the "
            "80,000-epoch runs, 500 for Fig. 2, 10 for ⊥AdamW)", TRAIN,
            "metrics every 50 steps (⊥Grad: every 10; quick: every 20), validation = the other 7,662 pairs",
            "a finer grid: first steps known to within 50 where theirs are known to within 5,000"),
)


def kind_of(cfg: Any) -> str:
    if cfg.orthogonal_grad:
        return "orthograd"
    if cfg.softmax == "stablemax":
        return "stablemax"
    return f"softmax-{cfg.softmax_dtype}"


def first_step(m: "pd.DataFrame", col: str, threshold: float) -> float:
    hit = m.loc[m[col] >= threshold, "step"]
    return float(hit.iloc[0]) if len(hit) else math.inf


def _runs(sweep_dir: str) -> list[dict[str, Any]]:
    """Per run: its kind, metric rows, and per checkpoint the zero-loss share (softmax collapse, in the
    run's softmax and precision) and the total weight norm."""
    from probe.analyses.runner import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    out = []
    for r in sw.index["runs"]:
        with sw.run(r["name"]) as run:
            cfg = run.config
            m = run.metrics
            ck = compute(run, ["softmax_collapse", "param_norm"], cache=False)
        out.append({"run": r["name"], "kind": kind_of(cfg), "budget": int(cfg.steps), "lr": float(cfg.lr),
                    "metrics": m, "ck_steps": ck["step"].to_numpy(dtype=float),
                    "zero_loss": ck["zero_loss_frac"].to_numpy(dtype=float),
                    "nlm_cos": ck["nlm_cos"].to_numpy(dtype=float), "norms": ck["norm_total"].to_numpy(dtype=float)})
    return out


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    m = r["metrics"]
    last = m.iloc[-1]
    over = np.nonzero(r["zero_loss"] > COLLAPSE_SHARE)[0]
    return {"run": r["run"], "kind": r["kind"], "budget": r["budget"], "lr": r["lr"],
            "train_step": first_step(m, "train_acc", 0.9), "val_step_05": first_step(m, "val_acc", 0.5),
            "val_step_09": first_step(m, "val_acc", 0.9), "final_train": float(last["train_acc"]),
            "final_val": float(last["val_acc"]), "max_val": float(m["val_acc"].max()),
            "max_zero_loss": float(r["zero_loss"].max()),
            "collapse_step": float(r["ck_steps"][over[0]]) if len(over) else math.inf,
            "norm_init": float(r["norms"][0]), "norm_final": float(r["norms"][-1]),
            "nlm_cos_final": float(r["nlm_cos"][-1])}


def within_factor(a: float, b: float, factor: float = FACTOR) -> bool:
    return math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0 and max(a, b) <= factor * min(a, b)


def _v(ok: bool) -> str:
    return "agrees" if ok else "differs"


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows per run kind against the released figures, probe's numbers recomputed from the runs' metrics
    and checkpoints (softmax collapse and weight norm by probe's analyses)."""
    import pandas as pd

    runs = _runs(sweep_dir)
    table = pd.DataFrame([summarise(r) for r in runs])
    by = {row["kind"]: row for _, row in table.iterrows()}
    rows: list[Row] = []
    fig = f"{REPO} {PLOTS}"
    if "softmax-float32" in by:
        s = by["softmax-float32"]
        b = f"budget {int(s['budget']):,}, lr {s['lr']:g}"
        rows.append(Row("softmax float32: final validation accuracy (overfits: no generalisation)",
                        f"about 0 (Fig. 2a, {FIG2A_EPOCHS:,} epochs; chance {CHANCE:.3f})", f"{fig} (Fig. 2a)",
                        f"{s['final_val']:.3f} ({b})", f"both below {STALLED}", _v(s["final_val"] < STALLED)))
        rows.append(Row("softmax float32: final training accuracy", "1.000 (Fig. 2a)", f"{fig} (Fig. 2a)",
                        f"{s['final_train']:.3f}", "within 0.01", _v(abs(s["final_train"] - 1.0) <= 0.01)))
        rows.append(Row(f"softmax float32: first step with > {COLLAPSE_SHARE:.0%} of training samples in softmax "
                        "collapse (loss exactly 0)", f"{FIG2A_COLLAPSE['float32']:,} (Fig. 2a, lr 5e-4)",
                        f"{fig} (Fig. 2a); {LOGGER}",
                        f"{fmt_steps(s['collapse_step'])} (largest share {s['max_zero_loss']:.3f}; {b})",
                        f"within a factor {FACTOR:g}",
                        _v(within_factor(s["collapse_step"], FIG2A_COLLAPSE["float32"]))))
    if "softmax-float64" in by:
        s = by["softmax-float64"]
        rows.append(Row("softmax float64: final validation accuracy (still overfits)",
                        f"{FIG1C_FINAL_TEST:.3f} (Fig. 1c, epoch {FIG1C_EPOCHS:,})", f"{fig} (Fig. 1c)",
                        f"{s['final_val']:.3f} (budget {int(s['budget']):,})", f"both below {STALLED}",
                        _v(s["final_val"] < STALLED)))
    if "stablemax" in by:
        s = by["stablemax"]
        e05, v05, p05 = fig1a_first(0.5)
        e09, v09, _ = fig1a_first(0.9)
        b = f"budget {int(s['budget']):,}"
        rows.append(Row("StableMax: first step with validation accuracy >= 0.5 (grokking without weight decay)",
                        f"{e05:,} ({v05:.2f}; {p05:.2f} at {e05 - FIG1A_EVERY:,})", f"{fig} (Fig. 1a)",
                        f"{fmt_steps(s['val_step_05'])} ({b})", f"within a factor {FACTOR:g}",
                        _v(within_factor(s["val_step_05"], e05))))
        rows.append(Row("StableMax: first step with validation accuracy >= 0.9", f"{e09:,} ({v09:.2f})",
                        f"{fig} (Fig. 1a)", f"{fmt_steps(s['val_step_09'])} ({b})", f"within a factor {FACTOR:g}",
                        _v(within_factor(s["val_step_09"], e09))))
        rows.append(Row("StableMax: final validation accuracy", f"{FIG1A_TEST[-1]:.3f} (epoch 75,000)",
                        f"{fig} (Fig. 1a)", f"{s['final_val']:.3f} (step {int(s['budget']):,})", f"within {ACC_TOL:g}",
                        _v(abs(s["final_val"] - FIG1A_TEST[-1]) <= ACC_TOL)))
        rows.append(Row("StableMax: largest share of training samples with loss exactly 0 (no softmax collapse)",
                        "0 (StableMax keeps every sample's loss positive: Sec. 3.3); their code run here: "
                        f"{AUTHORS_STABLEMAX_ZERO_TERMS:.3f} at all 16 logged epochs (zero_terms)",
                        f"{PAPER} Sec. 3.3; {TRAIN} run here ({AUTHORS_STABLEMAX_RUN})",
                        f"{s['max_zero_loss']:.3f}", "below 0.01", _v(s["max_zero_loss"] < 0.01)))
        rows.append(Row("StableMax: weight norm, end of training over initialisation (grows without weight decay)",
                        f"about {FIG4_NORM[75000] / AUTHORS_NORM_INIT:,.0f} ({FIG4_NORM[75000]:,} at epoch 75,000 "
                        f"over the expected initial {AUTHORS_NORM_INIT:.1f})", f"{fig} (Fig. 4, middle)",
                        f"{s['norm_final'] / s['norm_init']:.2f} ({s['norm_init']:.1f} -> {s['norm_final']:.1f})",
                        "above 2 on both sides (the norm grows)", _v(s["norm_final"] > 2 * s["norm_init"])))
    if "orthograd" in by:
        s = by["orthograd"]
        a05, a09, t09 = fig1b_first(2, 0.5), fig1b_first(2, 0.9), fig1b_first(1, 0.9)
        b = f"budget {int(s['budget']):,}"
        rows.append(Row("⊥AdamW: first step with validation accuracy >= 0.5", f"{a05}", f"{fig} (Fig. 1b)",
                        f"{fmt_steps(s['val_step_05'])} ({b})", f"within a factor {FACTOR:g}",
                        _v(within_factor(s["val_step_05"], a05))))
        rows.append(Row("⊥AdamW: first step with validation accuracy >= 0.9", f"{a09}", f"{fig} (Fig. 1b)",
                        f"{fmt_steps(s['val_step_09'])} ({b})", f"within a factor {FACTOR:g}",
                        _v(within_factor(s["val_step_09"], a09))))
        ratio_a = a09 / t09
        ratio = s["val_step_09"] / s["train_step"] if math.isfinite(s["train_step"]) else math.nan
        rows.append(Row("⊥AdamW: no overfitting phase, steps to validation 0.9 over steps to training 0.9",
                        f"{ratio_a:.2f} ({a09} / {t09})", f"{fig} (Fig. 1b)",
                        "n/a" if math.isnan(ratio) else f"{ratio:.2f}", "at most 2 on both sides",
                        _v(math.isfinite(ratio) and ratio <= 2)))
        rows.append(Row("⊥AdamW: final validation accuracy", "1.000 (epoch 290)", f"{fig} (Fig. 1b)",
                        f"{s['final_val']:.3f} (step {int(s['budget']):,})", f"within {ACC_TOL:g}",
                        _v(abs(s["final_val"] - 1.0) <= ACC_TOL)))
    curves = {r["kind"]: {"metrics": r["metrics"][["step", "train_acc", "val_acc"]].copy(),
                          "ck_steps": r["ck_steps"], "zero_loss": r["zero_loss"]} for r in runs}
    return Analysis(tuple(rows), table, {"scale": scale, "curves": curves})


def draw(analysis: Analysis) -> "Figure":
    """Fig. 1's three panels (StableMax, ⊥AdamW, softmax) and Fig. 2(a)'s float32 panel: training (dashed)
    and validation accuracy against steps, probe's curves over the authors' read-off points, and the
    share of training samples in softmax collapse for the softmax runs."""
    from probe.analyses import plots

    plt = plots._plt()
    curves = analysis.extra["curves"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), constrained_layout=True)
    authors: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "stablemax": (np.arange(len(FIG1A_TEST)) * FIG1A_EVERY, np.array(FIG1A_TEST)),
        "orthograd": (np.array([r[0] for r in FIG1B]), np.array([r[2] for r in FIG1B])),
        "softmax-float64": (np.array([0, FIG1C_EPOCHS]), np.array([0.0, FIG1C_FINAL_TEST])),
    }
    titles = {"stablemax": "(a) StableMax", "orthograd": "(b) ⊥AdamW", "softmax-float64": "(c) softmax, float64",
              "softmax-float32": "Fig. 2(a): softmax, float32"}
    for ax, kind in zip(axes, ("stablemax", "orthograd", "softmax-float64", "softmax-float32")):
        if kind in authors:
            x, y = authors[kind]
            ax.plot(x, y, "o", color="0.45", ms=3, label="authors' test accuracy (read off)")
        if kind == "softmax-float32":
            ax.axvline(FIG2A_COLLAPSE["float32"], color="0.45", ls=":",
                       label=f"authors: > {COLLAPSE_SHARE:.0%} collapsed (lr 5e-4)")
        if kind in curves:
            c = curves[kind]
            m = c["metrics"]
            ax.plot(m["step"], m["train_acc"], color="C0", ls="--", label="probe training")
            ax.plot(m["step"], m["val_acc"], color="C1", label="probe validation")
            if kind.startswith("softmax"):
                ax.plot(c["ck_steps"], c["zero_loss"], color="C3", lw=1, label="probe: share with loss 0")
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("step (= epoch, full batch)")
        ax.set_title(titles[kind], fontsize=10)
        ax.legend(fontsize=6, frameon=False, loc="center right")
    axes[0].set_ylabel("accuracy")
    fig.suptitle(f"Prieto et al. 2025, MLP on addition mod {P}, no weight decay (probe {analysis.extra['scale']} "
                 "scale)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="prieto-softmax-collapse",
    paper="Prieto, Barsbey, Mediano, Birdal 2025, Grokking at the Edge of Numerical Stability (ICLR 2025, "
          "arXiv 2501.04697)",
    figure="Fig. 1 (StableMax groks, ⊥AdamW generalises at once, softmax overfits) and Fig. 2(a) (softmax "
           "collapse in float32), MLP on addition mod 113 with 40% of the pairs, no weight decay",
    artefact=Artefact(REPO, COMMIT, PLOTS,
                      "the released outputs of the notebook's Fig. 1, 2(a) and 4 cells, read off: StableMax test "
                      "accuracy >= 0.5 at epoch 35,000 and 0.985 at 75,000; ⊥AdamW test accuracy >= 0.5 at epoch "
                      "100 and >= 0.9 at 110; softmax float64 test accuracy <= 0.008 for 75,000 epochs; float32 "
                      "softmax collapse of > 40% of the training samples at epoch 11,500"),
    trains="the authors' MLP on addition mod 113 (prieto-mlp: one-hot inputs, no biases) four times: softmax float32, "
           "StableMax, ⊥Grad, softmax float64, all without weight decay",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_P, QUICK_SPLIT, QUICK_STEPS, 20, 20, QUICK_CHECKPOINTS,
                                      lr32=QUICK_LR32, hidden=QUICK_HIDDEN), "20 s (--jobs 1)",
                       "p = 31 with 70% of the pairs (672), the authors' MLP, every run at lr 1e-2: softmax "
                       "float32 2,000 steps (its share of zero-loss samples passes 40%), StableMax 1,200 (no "
                       "collapse, the norm grows; its grokking needs the paper scale), ⊥Grad 300 (generalises "
                       "as it fits), softmax float64 500 (overfits)"),
        "paper": Scale("paper", _spec(P, f"n_train: {N_TRAIN}", PAPER_STEPS, 50, 10, PAPER_CHECKPOINTS),
                       "2 h 17 min (--jobs 2, beside other work)",
                       "the authors' four runs at p = 113 (5,107 training pairs), widths 200-200: 20,000 / 80,000 / "
                       "300 / 80,000 full-batch steps, metrics every 50 steps (⊥Grad: 10); about 20 ms a step "
                       "alone on one core"),
    },
    analyse=analyse,
    draw=draw,
    claims=("without weight decay, softmax cross-entropy overfits: training accuracy 1, test accuracy at chance, "
            "and in float32 a growing share of the training samples has loss exactly zero (softmax collapse)",
            "StableMax prevents the collapse and the MLP groks without weight decay while its weight norm grows",
            "⊥AdamW generalises without an overfitting phase"),
))
