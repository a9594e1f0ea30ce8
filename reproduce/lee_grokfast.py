"""Lee, Kang, Kim and Lee 2024 (Grokfast), the algorithmic-data result: iterations to 95% validation
accuracy with the EMA gradient filter against the unfiltered run, compared with the numbers of the
authors' repository (docs/reproductions/lee-grokfast/README.md).

The authors' numbers: github.com/ironjr/grokfast (commit 93b2248) ``README.md``, section
"Algorithmic Data (Transformer decoder, *Grokfast*)": 910 iterations to 95% validation accuracy for
``python main.py --label test --filter ema --alpha 0.98 --lamb 2.0 --weight_decay 0.005`` and 39,890
for the baseline ``python main.py --label test`` (no filter, weight decay 0). The unfiltered run at the
filter's weight decay 0.005 is not in the README; the authors' ``main.py`` run with
``--weight_decay 0.005`` and no filter (seed 0) has not generalised by iteration 1,520. ``main.py``
counts an iteration per optimizer update and evaluates after every epoch of 10 updates (4,656 training
equations in batches of 512), so its iteration counts are multiples of 10; probe's step is the number
of updates done and its metrics every 10 steps fall on the same iterations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.errors import ProbeError
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/ironjr/grokfast"
COMMIT = "93b2248e351d4bb9e4dda8ac32a6999b8970404b"
README = "README.md"
MAIN = "main.py"
FILTERS = "grokfast.py"
THRESHOLD = 0.95  # "Iterations to Reach 95% Val. Acc." (README.md)
FACTOR = 1.5  # tolerance on a step count

#: README.md, "Algorithmic Data (Transformer decoder, *Grokfast*)": iterations to 95% validation accuracy
AUTHORS_EMA_STEPS = 910  # --filter ema --alpha 0.98 --lamb 2.0 --weight_decay 0.005
AUTHORS_BASELINE_STEPS = 39_890  # no filter, weight decay 0 (main.py's default)
#: main.py with --weight_decay 0.005 and no filter, seed 0: validation accuracy not at 95% by this iteration
AUTHORS_UNFILTERED_NOT_BY = 1_520
AUTHORS_SPEEDUP = 43.84  # README.md's "x 43.84" (39,890 / 910)

EMA_WD = 0.005
QUICK_STEPS = 400
QUICK_WIDTH = 32

SOURCE_EMA = f"{REPO} {README} (Grokfast table, the --filter ema --alpha 0.98 --lamb 2.0 --weight_decay 0.005 run)"
SOURCE_BASELINE = f"{REPO} {README} (Grokfast table, Baseline: python main.py, no filter, weight decay 0)"
SOURCE_UNFILTERED = (f"{REPO} {MAIN} run with --weight_decay 0.005 and no filter (seed 0, to iteration 1,520; "
                     f"not in {README})")

QUICK_SPEC = (
    "preset: lee-grokfast\n"
    f"set: {{steps: {QUICK_STEPS}, model.d_model: {QUICK_WIDTH}, model.d_mlp: {4 * QUICK_WIDTH}, "
    "checkpoint.schedule: every, checkpoint.every: 200, checkpoint.metrics_every: 50}\n"
    "grid:\n  grokfast.filter: [ema, none]\n"
)
PAPER_STEPS = 60_000  # past FACTOR x the baseline's 39,890: every verdict is decided within it
PAPER_SPEC = (
    "preset: lee-grokfast\n"
    f"set: {{steps: {PAPER_STEPS}, stop.after_generalization: 100, stop.threshold: {THRESHOLD}, "
    "checkpoint.schedule: geometric, checkpoint.count: 60, checkpoint.metrics_every: 10}\n"
    "zip:\n  grokfast.filter: [ema, none, none]\n  weight_decay: [0.005, 0.005, 0.0]\n"
)

SETTING = (
    Setting("task", "a * b mod 97 for 0 <= a < 97, 0 < b < 97 (multiplication_mod_p_data: 9,312 equations; the "
            "docstring says x / y, the code multiplies); tokens [a, op, b, =], loss and accuracy on the answer",
            MAIN, "task mul-b-nonzero, p = 97 (9,312 equations), model.op_token true: tokens [a, op, b, =]"),
    Setting("split", "torch.randperm(9312).split(4656): the first half trains, the second validates, drawn "
            "from torch's global generator after torch.manual_seed(seed) and the model's initialisation",
            MAIN, "train_fraction 0.5 (4,656 / 4,656), split_seed 0 (numpy's generator)",
            "another draw of the split, the initial weights and the batch order: single runs on both sides, so "
            "step counts are compared within a factor, not exactly"),
    Setting("block", "2 layers, width 128, 4 heads (nn.MultiheadAttention, causal mask), MLP 128-512-128 GELU; "
            "x = ln_1(x); x = x + attn(x); x = x + mlp(ln_2(x))", MAIN,
            "model.block ln_replaces_residual, n_layers 2, d_model 128, n_heads 4, d_mlp 512, act gelu, layernorm "
            "true, dropout 0"),
    Setting("init", "torch defaults: nn.Embedding N(0, 1) for tokens (vocabulary p + 2) and 5 positions; "
            "nn.MultiheadAttention Xavier-uniform in-projection, zero biases; nn.Linear U(+-1/sqrt(fan_in))",
            MAIN, "model.init pytorch: the same laws; 4 position rows",
            "the fifth position row of theirs is never used (sequences have 4 tokens)"),
    Setting("head", "final nn.LayerNorm, then nn.Linear(128, p + 2, bias=False): logits over the whole token "
            "vocabulary, the '=' and 'op' tokens included", MAIN,
            "ln_final, model.head_bias false, logits over the 97 answers",
            "their two extra logits (never the answer) share the softmax; probe's head has the answers only"),
    Setting("optimizer", "torch.optim.Adam (L2 weight decay inside the gradient), lr 1e-3, betas (0.9, 0.98), "
            "eps 1e-8; weight decay 0.005 for Grokfast (README.md's command line), 0 for the baseline", MAIN,
            "optimizer adam, lr 1e-3, betas (0.9, 0.98), eps 1e-8, weight_decay 0.005 (the baseline: 0)"),
    Setting("warmup", "LambdaLR: factor update / 10 for the first 10 updates (0 at the first), then 1", MAIN,
            "warmup_steps 10: min(step / 10, 1), the same factors"),
    Setting("batches", "each epoch shuffles the training set (torch.randperm) and walks it with torch.split in "
            "batches of 512: 9 of 512 and one of 48, 10 updates per epoch", MAIN,
            "batch_size 512, batching epochs: the same slices of a shuffle drawn per epoch"),
    Setting("Grokfast filter", "gradfilter_ema between loss.backward() and optimizer.step(): mu = alpha mu + "
            "(1 - alpha) g (mu starts at the first gradient), g = g + lamb mu, alpha 0.98, lamb 2.0 (README.md's "
            "command line; main.py's defaults are 0.99 and 5.0)", FILTERS,
            "grokfast.filter ema, alpha 0.98, lamb 2 (the same recursion, before the optimizer step)"),
    Setting("loss precision", "F.cross_entropy on float32 logits, mean over the batch", MAIN,
            "softmax_dtype float32"),
    Setting("evaluation", "after every epoch (10 updates): validation accuracy over the 4,656 validation "
            "equations; training accuracy as the mean over the epoch's batches during training", MAIN,
            "metrics every 10 steps on the whole training and validation splits",
            "probe's training accuracy is the weights' accuracy at the step, not the running mean over an epoch"),
    Setting("budget", "--budget 3e5 iterations (30,000 epochs), no early stop", MAIN,
            f"steps {PAPER_STEPS:,} with a stop 100 steps after training and validation accuracy pass 0.95 "
            f"(quick: {QUICK_STEPS} steps)", f"{PAPER_STEPS:,} is past a factor {FACTOR:g} of the baseline's 39,890, "
            "so every verdict is decided within it"),
)


def first_reached(steps: np.ndarray, acc: np.ndarray, threshold: float = THRESHOLD) -> float:
    """The first step whose accuracy is >= ``threshold`` (inf: never within the run)."""
    hit = np.nonzero(np.asarray(acc, dtype=np.float64) >= threshold)[0]
    return float(steps[hit[0]]) if len(hit) else math.inf


def steps_agree(paper: float, ours: float) -> bool:
    """Both never, or both finite and within a factor FACTOR of each other."""
    if math.isinf(paper) or math.isinf(ours):
        return math.isinf(paper) and math.isinf(ours)
    return max(paper, ours) <= FACTOR * min(paper, ours)


def _runs(sweep_dir: str) -> tuple["pd.DataFrame", dict[str, "pd.DataFrame"]]:
    """One row per run the sweep planned (its filter and weight decay as the sweep's index records
    them) with what its run file's metrics say, and each run's metric rows."""
    import pandas as pd

    from probe.config import TrainConfig
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    records, curves = [], {}
    for entry in sw.index["runs"]:
        name = entry["name"]
        cfg = TrainConfig.from_dict(entry["config"])
        try:
            with sw.run(name) as run:
                metrics = run.metrics
        except (OSError, ProbeError):  # not trained (yet): no curve to read
            continue
        curves[name] = metrics
        steps = metrics["step"].to_numpy()
        records.append({
            "run": name, "filter": cfg.grokfast.filter, "weight_decay": float(cfg.weight_decay),
            "d_model": int(cfg.model.d_model), "budget": int(cfg.steps), "last_step": int(steps[-1]),
            "train_step": first_reached(steps, metrics["train_acc"].to_numpy()),
            "val_step": first_reached(steps, metrics["val_acc"].to_numpy()),
            "final_train_loss": float(metrics["train_loss"].iloc[-1]),
            "final_val_acc": float(metrics["val_acc"].iloc[-1])})
    columns = ["run", "filter", "weight_decay", "d_model", "budget", "last_step", "train_step", "val_step",
               "final_train_loss", "final_val_acc"]
    return pd.DataFrame(records, columns=columns), curves


def _pick(runs: "pd.DataFrame", filt: str, wd: float) -> Any:
    sel = runs[(runs["filter"] == filt) & np.isclose(runs["weight_decay"], wd)]
    return sel.iloc[0] if len(sel) else None


def _loss_at(curve: "pd.DataFrame", step: int) -> float:
    row = curve[curve["step"] == step]
    return float(row["train_loss"].iloc[0]) if len(row) else math.nan


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows recomputed from the runs' metrics: the fitting row (both scales), and at the paper scale the
    steps to 95% validation accuracy of each run against the README's numbers, the speed-up, and
    whether the filtered run generalises first."""
    runs, curves = _runs(sweep_dir)
    rows: list[Row] = []
    ema, plain = _pick(runs, "ema", EMA_WD), _pick(runs, "none", EMA_WD)
    base = _pick(runs, "none", 0.0)
    claim = (f"Grokfast ahead: 95% validation accuracy at {AUTHORS_EMA_STEPS:,}; unfiltered (wd {EMA_WD:g}) "
             f"not by {AUTHORS_UNFILTERED_NOT_BY:,}")
    if ema is not None and plain is not None:
        at = int(min(ema["last_step"], plain["last_step"], QUICK_STEPS))
        a, b = _loss_at(curves[ema["run"]], at), _loss_at(curves[plain["run"]], at)
        rows.append(Row(
            f"training loss at step {at}, EMA filter against none (weight decay {EMA_WD:g}, width "
            f"{int(ema['d_model'])})", claim, f"{SOURCE_EMA}; {SOURCE_UNFILTERED}",
            f"EMA {a:.3f}, none {b:.3f}", "the filtered run's loss lower (it leaves the initial plateau first)",
            "agrees" if a < b else "differs"))
    if scale != "paper":
        return Analysis(tuple(rows), runs, {"scale": scale, "curves": curves})
    if ema is not None:
        ours = float(ema["val_step"])
        rows.append(Row(
            f"iterations to validation accuracy >= {THRESHOLD:g}, EMA filter (alpha 0.98, lamb 2, weight decay "
            f"{EMA_WD:g})", f"{AUTHORS_EMA_STEPS:,}", SOURCE_EMA, f"{fmt_steps(ours)} (budget {int(ema['budget']):,})",
            f"within a factor {FACTOR:g}", "agrees" if steps_agree(AUTHORS_EMA_STEPS, ours) else "differs"))
    if plain is not None:
        ours = float(plain["val_step"])
        rows.append(Row(
            f"iterations to validation accuracy >= {THRESHOLD:g}, no filter, weight decay {EMA_WD:g}",
            f"not by {AUTHORS_UNFILTERED_NOT_BY:,}", SOURCE_UNFILTERED,
            f"{fmt_steps(ours)} (budget {int(plain['budget']):,})", f"not before {AUTHORS_UNFILTERED_NOT_BY:,}",
            "agrees" if ours > AUTHORS_UNFILTERED_NOT_BY else "differs"))
    if base is not None:
        ours = float(base["val_step"])
        rows.append(Row(
            f"iterations to validation accuracy >= {THRESHOLD:g}, baseline (no filter, weight decay 0)",
            f"{AUTHORS_BASELINE_STEPS:,}", SOURCE_BASELINE, f"{fmt_steps(ours)} (budget {int(base['budget']):,})",
            f"within a factor {FACTOR:g}", "agrees" if steps_agree(AUTHORS_BASELINE_STEPS, ours) else "differs"))
    if ema is not None and base is not None:
        e, b = float(ema["val_step"]), float(base["val_step"])
        ratio = b / e if math.isfinite(e) and math.isfinite(b) else math.nan
        rows.append(Row(
            "speed-up: baseline's iterations over the EMA filter's", f"{AUTHORS_SPEEDUP:g}", SOURCE_BASELINE,
            "n/a (a run did not reach 95%)" if math.isnan(ratio) else f"{ratio:.2f}", f"within a factor {FACTOR:g}",
            "agrees" if not math.isnan(ratio) and steps_agree(AUTHORS_SPEEDUP, ratio) else "differs"))
    if ema is not None and plain is not None:
        e, n = float(ema["val_step"]), float(plain["val_step"])
        rows.append(Row(
            f"the EMA-filtered run reaches validation accuracy >= {THRESHOLD:g} before the unfiltered one "
            f"(weight decay {EMA_WD:g})", claim, f"{SOURCE_EMA}; {SOURCE_UNFILTERED}",
            f"EMA {fmt_steps(e)}, none {fmt_steps(n)}", "EMA first", "agrees" if e < n else "differs"))
    return Analysis(tuple(rows), runs, {"scale": scale, "curves": curves})


def draw(analysis: Analysis) -> "Figure":
    """Like the authors' plots (main.py: accuracy and loss against optimization steps, log scale, train
    and validation), one colour per run, with the README's iterations to 95% marked."""
    from probe.analyses import plots

    runs: "pd.DataFrame" = analysis.runs
    curves: dict[str, "pd.DataFrame"] = analysis.extra["curves"]
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for k, (_, r) in enumerate(runs.iterrows()):
        c = curves[r["run"]]
        steps = np.maximum(c["step"].to_numpy(dtype=np.float64), 1.0)
        label = f"{'Grokfast EMA' if r['filter'] == 'ema' else 'no filter'}, wd {r['weight_decay']:g}"
        colour = f"C{k}"
        axes[0].plot(steps, c["val_acc"], color=colour, label=f"{label}: val")
        axes[0].plot(steps, c["train_acc"], color=colour, linestyle="--", linewidth=0.8, label=f"{label}: train")
        axes[1].plot(steps, c["val_loss"], color=colour, label=f"{label}: val")
        axes[1].plot(steps, c["train_loss"], color=colour, linestyle="--", linewidth=0.8, label=f"{label}: train")
    for x, text in ((AUTHORS_EMA_STEPS, "authors: EMA 95%"), (AUTHORS_BASELINE_STEPS, "authors: baseline 95%"),
                    (AUTHORS_UNFILTERED_NOT_BY, "authors: none at wd 0.005\nnot yet by here")):
        axes[0].axvline(x, color="0.6", linestyle=":", linewidth=0.8)
        axes[0].text(x, 0.02, f" {text}", fontsize=6, color="0.35", rotation=90, va="bottom")
    axes[0].axhline(THRESHOLD, color="0.8", linewidth=0.6)
    for ax, what in zip(axes, ("accuracy", "loss")):
        ax.set_xscale("log")
        ax.set_xlabel("optimization steps")
        ax.set_ylabel(what)
        ax.grid(True, linewidth=0.3)
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=6, frameon=False, loc="center left")
    fig.suptitle(f"Lee et al. 2024, modular multiplication p = 97 (training on 50% of data); probe, "
                 f"{analysis.extra['scale']} scale", fontsize=10)
    return fig


reproduction(Reproduction(
    name="lee-grokfast",
    paper="Lee, Kang, Kim, Lee 2024, Grokfast: Accelerated Grokking by Amplifying Slow Gradients (arXiv 2405.20233)",
    figure="the algorithmic-data result (README.md's Grokfast table): iterations to 95% validation accuracy, "
           "EMA filter against the unfiltered baseline",
    artefact=Artefact(REPO, COMMIT, README,
                      "iterations to 95% validation accuracy on modular multiplication p = 97: Grokfast (EMA, "
                      "alpha 0.98, lamb 2, weight decay 0.005) 910, baseline (no filter, weight decay 0) 39,890; "
                      "the unfiltered run at weight decay 0.005 from running main.py: not by 1,520"),
    trains="the authors' two-layer transformer on a * b mod 97 (lee-grokfast), with and without the EMA filter",
    setting=SETTING,
    scales={
        "quick": Scale("quick", QUICK_SPEC, "16 s (--jobs 1)",
                       f"the EMA and the unfiltered run at weight decay {EMA_WD:g}, width {QUICK_WIDTH} (d_mlp "
                       f"{4 * QUICK_WIDTH}), {QUICK_STEPS} steps, metrics every 50: only the fitting row (the "
                       "filtered run's training loss below the unfiltered one's as it leaves the initial plateau); "
                       "generalisation needs about 1,000 steps at full width (the paper scale)"),
        "paper": Scale("paper", PAPER_SPEC, "1 h 50 min (--jobs 2 --no-vectorize, beside other work; the "
                       "baseline alone 1 h 48 min)",
                       f"the authors' setting: EMA at weight decay {EMA_WD:g}, no filter at {EMA_WD:g}, the baseline "
                       f"(no filter, weight decay 0); up to {PAPER_STEPS:,} steps, stopped 100 steps after both "
                       "accuracies pass 0.95, metrics every 10 steps"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the EMA filter reaches 95% validation accuracy in about a thousand iterations (910)",
            "without it, at the same weight decay, the model has not generalised by 1,520 iterations; at weight "
            "decay 0 it takes 39,890"),
))
