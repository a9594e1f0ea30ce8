"""Liu et al. 2022 (grokking-squared), Fig. 7 (left): the effective dimension ``e^S`` of a transformer's
input embeddings over training, ``S = -sum_i r_i log r_i`` the entropy of the PCA explained-variance
ratios ``r_i`` (Sec. 4.2: "the entropy increases up to generalization time then decreases drastically
afterwards"), evaluated over 100 seeds (docs/reproductions/liu-fig7/README.md).

The transformer experiments live on the ``prototype`` branch of github.com/ejmichaud/grokking-squared
(commit 7270d57): ``scripts/transformer_grokking.py`` trains (its model in ``phasegrok/models.py``,
its data in ``phasegrok/data_gen.py``, its options in ``phasegrok/config.py``), and
``plotting_nbs/EntropyAndTraining.ipynb`` draws the panel (cell 15, ``entropy_vs_step_square.pdf``):
one faint line per run of ``exp(S)`` with ``S`` from ``sklearn.decomposition.PCA().fit(embedding)
.explained_variance_ratio_``, their mean, and the mean steps at which training and test accuracy
first exceed 0.99 ("memorization" and "generalization"), log step axis. The runs
(``modular-addition59-deep-entropyEdition``) were not released, so the reference numbers are read off
the released plot (823 x 819 pixels): the axes calibrated on their tick marks (step 10^0 at pixel
column 154, 10^2 at 449, 10^4 at 743: 147.25 pixels a decade; e^S 55 at row 46 ... 30 at row 611:
22.6 pixels a unit), the mean line (colour #4169e1) followed column by column (its mean row), the
two dashed verticals located by their colours. A value is known to about 0.1, a step to about 2%.

The run's settings are the hyperparameters recorded for the authors' run
``modular-addition59-deep/0427-1456`` (its ``hparams.txt``, printed by cell 0 of
``scripts/toy_grokking.ipynb``; the same values as ``hparams_defaults`` in ``scripts/snake/
generate_config.py`` and as the Namespace of the earlier one-layer run ``0425-1047/modular-59-59`` in
``scripts/plot.py``'s comment): p = m = 59, split 0.8, 256-d embeddings, decoder width 128, dropout
0.05, decoder learning rate 2e-4 and weight decay 1.0, embedding learning rate 1e-3, full batch,
20,000 epochs, logged every 20. The run predates the ``decoder_depth`` option: its hparams.txt has
none, and the notebook adds ``decoder_depth = 2`` by hand to rebuild it ("-deep": one layer deeper
than the one-layer default of April 2022). It was trained by the code before commit f0b520b, where
the embeddings are ``torch.randn(p, 256)`` rather than ``nn.Embedding`` (the same distribution and
optimizer group). :data:`TRANSFORMER_SETTING` and
:func:`transformer_spec` are shared with ``liu_fig1`` and ``liu_fig22``, which read the same runs.
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

REPO = "github.com/ejmichaud/grokking-squared"
COMMIT = "7270d57230ae0773365692fe562ef42ab362dd27"  # head of the prototype branch
PAPER = "Liu et al. 2022"
NOTEBOOK = "plotting_nbs/EntropyAndTraining.ipynb"
TRAIN_SCRIPT = "scripts/transformer_grokking.py"
MODELS = "phasegrok/models.py"
DATA = "phasegrok/data_gen.py"
CONFIG = "phasegrok/config.py"
UTILS = "phasegrok/utils/utils.py"
HPARAMS = "scripts/toy_grokking.ipynb"  # cell 0 prints the deep run's hparams.txt (= generate_config.py's defaults)

ACC = 0.99  # the notebook's memorization / generalization threshold (acc > 0.99)
FACTOR = 1.5  # tolerance on a step count
DIM_TOL = 1.0  # tolerance on the initial e^S
RATIO_TOL = 0.1  # tolerance on e^S relative to its initial value
RISE_TOL = 0.02  # tolerance on the rise before generalisation (relative)

#: read off the released panel (module doc): the mean over runs of e^S against the step (step + 1 on
#: the notebook's axis), at these steps
AUTHORS_CURVE: tuple[tuple[int, float], ...] = (
    (1, 51.73), (10, 51.70), (100, 51.83), (200, 52.26), (300, 52.46), (500, 52.65), (700, 52.79),
    (1000, 52.91), (1400, 53.01), (2000, 53.10), (2500, 53.05), (3000, 52.94), (3500, 52.77),
    (4130, 52.32), (5000, 51.83), (6000, 50.97), (7000, 49.93), (8500, 48.18), (10000, 46.28),
    (12000, 43.67), (14000, 41.01), (16000, 38.32), (18000, 35.68), (19981, 33.69),
)
AUTHORS_INIT = 51.7  # e^S at the first logged step (initialisation)
AUTHORS_PEAK = 53.1  # the largest mean e^S ...
AUTHORS_PEAK_STEP = 1970  # ... at this step (within 0.1 of it from 1,330 to 2,770)
AUTHORS_AT_GEN = 52.3  # mean e^S at the mean generalization step
AUTHORS_END = 33.7  # mean e^S at the last step (19,981 on the notebook's axis)
AUTHORS_MEM = 1620  # mean step of train acc > 0.99 (the purple dashed line)
AUTHORS_GEN = 4130  # mean step of test acc > 0.99 (the green dashed line)
AUTHORS_RUNS = 100  # "evaluated over 100 seeds" (Fig. 7 caption)


def steps_agree(paper: float, ours: float) -> bool:
    """Both never, or both finite and within a factor FACTOR of each other."""
    if math.isinf(paper) or math.isinf(ours) or math.isnan(ours):
        return math.isinf(paper) and math.isinf(ours)
    return max(paper, ours) <= FACTOR * min(paper, ours)


def effective_dimension(ratios: np.ndarray) -> float:
    """``exp(-sum r log r)`` over the nonzero explained-variance ratios (the notebook's ``exp(S)``;
    probe's ``effective_dim`` metric computes the same from the embeddings)."""
    r = np.asarray(ratios, dtype=np.float64)
    r = r[r > 0]
    return float(np.exp(-np.sum(r * np.log(r))))


# ----------------------------------------------------------------------------------------------------
# The authors' transformer setting, shared with liu_fig1 and liu_fig22


#: probe's paper-scale values of the authors' run (p, steps, learning rates, widths)
PAPER_RUN = {"p": 59, "steps": 20_000, "lr": 2.0e-4, "embed_lr": 1.0e-3, "d_model": 256, "d_mlp": 128}
#: the quick scale: a smaller problem and model at 25 times the learning rates, 800 steps (p = 31: at
#: p = 23 the authors' model generalises in 2 of 5 seeds within the 800 steps, at p = 31 in 5 of 5)
QUICK_RUN = {"p": 31, "steps": 800, "lr": 5.0e-3, "embed_lr": 2.5e-2, "d_model": 32, "d_mlp": 32}
QUICK_SEED = 1  # the quick scale's seed (= split seed)

SPEC_TEMPLATE = (
    "preset: nanda-modadd\n"
    "set: {{p: {p}, train_fraction: 0.8, steps: {steps}, optimizer: adamw, lr: {lr}, weight_decay: 1.0, "
    "embed_lr: {embed_lr}, embed_weight_decay: 0.01, betas: [0.9, 0.999], eps: 1.0e-8, warmup_steps: 0, "
    "softmax_dtype: float32, model.n_layers: 2, model.d_model: {d_model}, model.n_heads: 1, "
    "model.d_mlp: {d_mlp}, model.act: relu, model.layernorm: true, model.dropout: 0.05, model.init: pytorch, "
    "model.eq_token: false, model.positional: none, model.causal: false, model.readout: concat, "
    "model.dropout_at: mlp, model.ln_final: false, "
    "{checkpoints}, checkpoint.metrics_every: 20, checkpoint.tensors: {tensors}}}\n"
    "zip:\n  seed: {seeds}\n  split_seed: {seeds}\n"
)


def transformer_spec(run: dict[str, Any], seeds: list[int], checkpoints: str, tensors: str = "[embed.W_E]") -> str:
    """The sweep spec of the authors' transformer run at ``run``'s size (PAPER_RUN or QUICK_RUN), one
    run per seed (seed = split seed); ``checkpoints``: the schedule keys, e.g.
    ``checkpoint.schedule: every, checkpoint.every: 20``."""
    return SPEC_TEMPLATE.format(seeds=list(seeds), checkpoints=checkpoints, tensors=tensors,
                                **{k: repr(v) if isinstance(v, float) else v for k, v in run.items()})


TRANSFORMER_SETTING = (
    Setting("task", "(a + b) mod 59 over all 59 x 59 = 3,481 ordered pairs (generate_data(ignore_symmetric=False), "
            "Y = (a + b) % m, p = m = 59)", TRAIN_SCRIPT, "task add, p = 59 (3,481 ordered pairs); quick: p = 31"),
    Setting("split", "np.random.seed(seed); np.random.choice(3481, int(0.8 x 3481) = 2,784, replace=False), "
            "then the pairs with index 0 and 1, (0, 0) and (0, 1), added to the training set", DATA,
            "train_fraction 0.8 (2,784 pairs), split_seed = seed",
            "another draw of the training pairs (and of the initial weights); the two forced pairs are not "
            "forced (at most 2 of 2,786 training pairs)"),
    Setting("inputs", "the two symbols only: nn.Embedding(p, 256) of a and b, no operation or '=' token, no "
            "positional encoding, no attention mask (nn.TransformerEncoderLayer sees both tokens)", MODELS,
            "model.eq_token false (tokens [a, b], a vocabulary of the p symbols), model.positional none, "
            "model.causal false"),
    Setting("block", "2 x nn.TransformerEncoderLayer(d_model 256, nhead 1, dim_feedforward 128, dropout 0.05, "
            "ReLU, norm_first=True): pre-LN, dropout on the attention weights, after attention, inside the MLP "
            "(after the ReLU) and after the MLP, no final LayerNorm; the run name '-deep': one layer deeper than "
            "the one-layer decoder of April 2022 (decoder_depth 2)", MODELS,
            "n_layers 2, d_model 256, n_heads 1 (d_head 256), d_mlp 128, relu, layernorm true (pre_ln), "
            "model.ln_final false, dropout 0.05 with model.dropout_at mlp (the pattern, the attention output, "
            "the MLP's hidden activations and its output); quick: d_model 32, d_mlp 32"),
    Setting("readout", "the last layer's two outputs concatenated (512) -> nn.Linear(512, 59)", MODELS,
            "model.readout concat: both positions' final residual streams concatenated -> unembedding "
            "(512 -> 59) with bias"),
    Setting("init", "torch defaults: nn.Embedding N(0, 1); nn.MultiheadAttention Xavier-uniform in-projection, "
            "zero biases; nn.Linear U(+-1/sqrt(fan_in)); LayerNorm ones and zeros", MODELS,
            "model.init pytorch: the same distributions (the head's fan-in 512)"),
    Setting("optimizer", "AdamW(param_groups): embeddings lr_rep 1e-3 with AdamW's default weight decay 0.01 "
            "(the group sets none; the paper says zero), the transformer and the head lr_decoder 2e-4 with "
            "weight_decay 1.0; betas (0.9, 0.999), eps 1e-8; no warm-up", TRAIN_SCRIPT,
            "adamw, embed_lr 1e-3, embed_weight_decay 0.01, lr 2e-4, weight_decay 1.0, betas (0.9, 0.999), "
            "warmup_steps 0; quick: embed_lr 2.5e-2, lr 5e-3"),
    Setting("hyperparameters", "the run's hparams.txt (modular-addition59-deep/0427-1456, printed by cell 0): "
            "batch_size -1, epochs 20000, lr_decoder 0.0002, lr_rep 0.001, dropout 0.05, weight_decay 1.0, seed 1, "
            "p 59, m 59, split_ratio 0.8, latent_dim 256, decoder_width 128, log 20, loss cross_entropy; no "
            "decoder_depth (the notebook sets 2 by hand to rebuild the run)", HPARAMS, "the values in the rows above",
            "the depth of 2 is the authors' own reconstruction of the run, not a recorded value"),
    Setting("batches", "batch_size -1: the whole training set every epoch (one update)", DATA,
            "batch_size unset (full batch)"),
    Setting("steps", "epochs 20,000 (one full-batch update each)", HPARAMS, "steps 20000 (quick: 800)",
            "quick: 800 steps at 25 times the learning rates (20,000 x 1e-3 = 800 x 2.5e-2 in the embeddings)"),
    Setting("loss precision", "F.cross_entropy on float32 logits", UTILS, "cross_entropy, softmax_dtype float32"),
    Setting("evaluation cadence", "Logger(log=20): accuracies and the embeddings every 20 epochs (1,000 files); "
            "train accuracy from the update's own forward pass (model.train(): dropout on, before the update), "
            "test accuracy after it (model.eval())", UTILS,
            "metrics every 20 steps (accuracies without dropout at the step)",
            "the authors' training accuracy is measured with dropout on, one update earlier"),
)


# ----------------------------------------------------------------------------------------------------
# This panel


def _spec(run: dict[str, Any], seeds: list[int], checkpoints: str) -> str:
    return transformer_spec(run, seeds, checkpoints)


QUICK_CHECKPOINTS = "checkpoint.schedule: every, checkpoint.every: 20"
PAPER_CHECKPOINTS = "checkpoint.schedule: geometric, checkpoint.count: 200"
PAPER_SEEDS = list(range(AUTHORS_RUNS))

SETTING = TRANSFORMER_SETTING + (
    Setting("runs", "100 seeds (Fig. 7 caption), the runs of modular-addition59-deep-entropyEdition, not released",
            NOTEBOOK, "seeds 0 to 99, seed = split seed (quick: one run, seed 1)",
            "other seeds; the quick scale has one run, so its mean is that run"),
    Setting("effective dimension", "exp(S), S = -sum r log r of PCA().fit(embedding).explained_variance_ratio_ "
            "(sklearn: centred, all 58 components of 59 points), every logged epoch", NOTEBOOK,
            "effective_dim metric (the same formula from the SVD of the centred symbol embeddings) at every "
            "checkpoint: 200 log-spaced steps (quick: every 20)",
            "log-spaced checkpoints instead of every 20 epochs: about 2% apart at step 4,000"),
    Setting("memorization / generalization", "per run, the first logged step with acc/train > 0.99 and acc/test "
            "> 0.99; their means over runs drawn as dashed lines", NOTEBOOK,
            "per run, the first metrics step with train / val accuracy >= 0.99; their mean over the runs that "
            "reach it"),
    Setting("reference numbers", "the panel's plot only (the notebook's output; entropy_list.npy and the step "
            "files it loads are not released)", NOTEBOOK,
            "the mean curve and the two means read off the plot (module doc): about 0.1 in e^S, 2% in steps",
            "digitised, not logged values"),
)


def run_table(sweep_dir: str) -> tuple["pd.DataFrame", dict[str, "pd.DataFrame"]]:
    """One row per finished run (seeds, budget, the steps of train / val accuracy >= 0.99, e^S at
    step 0 and at the end) and each run's e^S curve merged with its accuracies (by run name)."""
    import pandas as pd

    from probe.analyses import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    rows, curves = [], {}
    for name, run in sw.done_runs():
        cfg, metrics = run.config, run.metrics
        ed = compute(run, "effective_dim")
        curve = ed[["step", "effective_dim"]].merge(metrics[["step", "train_acc", "val_acc"]], on="step", how="left")
        curves[name] = curve
        rows.append({"run": name, "seed": int(cfg.seed), "split_seed": int(cfg.split_seed), "p": int(cfg.p),
                     "budget": int(cfg.steps), "mem_step": first_step(metrics, "train_acc"),
                     "gen_step": first_step(metrics, "val_acc"),
                     "eff_dim_init": float(curve["effective_dim"].iloc[0]),
                     "eff_dim_end": float(curve["effective_dim"].iloc[-1]),
                     "final_val_acc": float(metrics["val_acc"].iloc[-1])})
    columns = ["run", "seed", "split_seed", "p", "budget", "mem_step", "gen_step", "eff_dim_init", "eff_dim_end",
               "final_val_acc"]
    table = pd.DataFrame(rows, columns=columns).sort_values("seed").reset_index(drop=True)
    return table, curves


def first_step(metrics: "pd.DataFrame", column: str, threshold: float = ACC) -> float:
    """The first metrics step with ``column >= threshold`` (inf: never)."""
    hit = metrics[metrics[column] >= threshold]
    return float(hit["step"].iloc[0]) if len(hit) else math.inf


def mean_curve(curves: list["pd.DataFrame"]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the mean e^S over the runs at the steps every run has (the notebook's
    ``np.mean(np.exp(entropy_list), axis=0)``)."""
    if not curves:
        return np.zeros(0), np.zeros(0)
    common = set(int(s) for s in curves[0]["step"])
    for c in curves[1:]:
        common &= set(int(s) for s in c["step"])
    steps = np.array(sorted(common), dtype=np.int64)
    stack = np.stack([c.set_index("step").loc[steps, "effective_dim"].to_numpy(dtype=np.float64) for c in curves])
    return steps, stack.mean(axis=0)


def mean_steps(values: list[float]) -> tuple[float, int]:
    """Mean over the runs that reach it (inf if none) and how many do."""
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else math.inf), len(finite)


def value_at(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """The curve at ``step``, linear between checkpoints (NaN outside)."""
    if not len(steps) or not math.isfinite(step) or step < steps[0] or step > steps[-1]:
        return math.nan
    return float(np.interp(step, steps, values))


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows on the mean e^S curve over the runs (its initial value, its rise before generalisation and
    where it peaks, its value at generalisation and at the end) and the mean memorisation and
    generalisation steps, recomputed from the runs against the values read off the authors' panel."""
    table, curves = run_table(sweep_dir)
    src = f"{REPO} {NOTEBOOK}, cell 15 (entropy_vs_step_square.pdf, read off)"
    text = f"{PAPER} Sec. 4.2 and Fig. 7 (left); {src}"
    steps, mean = mean_curve([curves[r] for r in table["run"]])
    n = len(table)
    budget = int(table["budget"].max()) if n else 0
    note = f"{n} run{'s' if n != 1 else ''}, {budget:,} steps"
    mem, n_mem = mean_steps(list(table["mem_step"]))
    gen, n_gen = mean_steps(list(table["gen_step"]))
    rows: list[Row] = []
    if len(steps):
        init = float(mean[0])
        i_max = int(np.argmax(mean))
        peak, peak_step = float(mean[i_max]), int(steps[i_max])
        before = mean[steps <= gen] if math.isfinite(gen) else mean
        rise = float(before.max()) / init
        at_gen = value_at(steps, mean, gen)
        end = float(mean[-1])
        rows.append(Row("mean e^S at initialisation (step 0)", f"{AUTHORS_INIT:.1f} (59 symbols, 256 dimensions)",
                        src, f"{init:.2f} ({note}; p = {int(table['p'].iloc[0])})", f"within {DIM_TOL:g}",
                        "agrees" if abs(init - AUTHORS_INIT) <= DIM_TOL else "differs"))
        paper_rise = AUTHORS_PEAK / AUTHORS_INIT
        rows.append(Row("largest mean e^S up to the mean generalisation step, relative to step 0",
                        f"{paper_rise:.3f} ({AUTHORS_PEAK:.1f} / {AUTHORS_INIT:.1f}: \"the entropy increases up to "
                        "generalization time\")", text, f"{rise:.3f} ({note})", f"within {RISE_TOL:g}",
                        "agrees" if abs(rise - paper_rise) <= RISE_TOL else "differs"))
        rows.append(Row("step of the largest mean e^S, against the mean generalisation step",
                        f"{AUTHORS_PEAK_STEP:,} (flat within 0.1 from 1,330 to 2,770), before {AUTHORS_GEN:,}", text,
                        f"{peak_step:,} ({peak:.2f}), mean generalisation step {fmt_steps(gen)}",
                        "after step 0 and at or before the mean generalisation step",
                        "agrees" if math.isfinite(gen) and 0 < peak_step <= gen else "differs"))
        paper_gen = AUTHORS_AT_GEN / AUTHORS_INIT
        rows.append(Row("mean e^S at the mean generalisation step, relative to step 0",
                        f"{paper_gen:.3f} ({AUTHORS_AT_GEN:.1f} at step {AUTHORS_GEN:,})", src,
                        ("n/a (no run generalises)" if math.isnan(at_gen)
                         else f"{at_gen / init:.3f} ({at_gen:.2f} at step {gen:,.0f})"),
                        f"within {RATIO_TOL:g}",
                        "agrees" if not math.isnan(at_gen) and abs(at_gen / init - paper_gen) <= RATIO_TOL
                        else "differs"))
        paper_end = AUTHORS_END / AUTHORS_INIT
        rows.append(Row("mean e^S at the last step, relative to step 0",
                        f"{paper_end:.3f} ({AUTHORS_END:.1f} at step 20,000: \"then decreases drastically "
                        "afterwards\")", text, f"{end / init:.3f} ({end:.2f} at step {int(steps[-1]):,})",
                        f"within {RATIO_TOL:g}", "agrees" if abs(end / init - paper_end) <= RATIO_TOL else "differs"))
    for label, paper, ours, hits in (("memorisation: train acc >= 0.99", AUTHORS_MEM, mem, n_mem),
                                     ("generalisation: val acc >= 0.99", AUTHORS_GEN, gen, n_gen)):
        rows.append(Row(f"mean step of {label}", f"{paper:,} (mean over {AUTHORS_RUNS} runs)", src,
                        f"{fmt_steps(ours)} ({hits} of {n} runs reach it; budget {budget:,})",
                        f"within a factor {FACTOR:g}", "agrees" if steps_agree(float(paper), ours) else "differs"))
    return Analysis(tuple(rows), table, {"scale": scale, "curves": curves, "mean": (steps, mean),
                                         "mem": mem, "gen": gen, "budget": budget})


def draw(analysis: Analysis) -> "Figure":
    """Like the notebook's panel: e^S against the step (log axis, step + 1), one faint line per run, their
    mean, dashed verticals at the mean memorisation and generalisation steps; beside it the authors'
    mean curve read off the released panel, with its two dashed lines."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    ax = axes[0]
    for curve in analysis.extra["curves"].values():
        ax.plot(curve["step"] + 1, curve["effective_dim"], color="navy", alpha=0.15, linewidth=1)
    steps, mean = analysis.extra["mean"]
    if len(steps):
        ax.plot(steps + 1, mean, color="C0", linewidth=2, label="$e^S$ (mean over runs)")
    for key, colour, label in (("gen", "forestgreen", "generalisation"), ("mem", "rebeccapurple", "memorisation")):
        if math.isfinite(analysis.extra[key]):
            ax.axvline(analysis.extra[key], color=colour, linestyle="--", label=label)
    ax.set_title(f"probe ({analysis.extra['scale']} scale, {len(analysis.extra['curves'])} run(s), "
                 f"{analysis.extra['budget']:,} steps)", fontsize=10)
    ax = axes[1]
    a_steps = [s for s, _ in AUTHORS_CURVE]
    ax.plot(a_steps, [v for _, v in AUTHORS_CURVE], color="C0", linewidth=2, marker="x", markersize=4,
            label="$e^S$ (mean over 100 runs, read off)")
    ax.axvline(AUTHORS_GEN, color="forestgreen", linestyle="--", label="generalisation")
    ax.axvline(AUTHORS_MEM, color="rebeccapurple", linestyle="--", label="memorisation")
    ax.set_title("authors (p = 59, released panel, 20,000 steps)", fontsize=10)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("effective dimension $e^S$")
        ax.legend(fontsize=7, frameon=False, loc="lower left")
    fig.suptitle("Liu et al. Fig. 7 (left): effective dimension of the embeddings, transformer on addition mod p",
                 fontsize=10)
    return fig


reproduction(Reproduction(
    name="liu-fig7",
    paper="Liu, Kitouni, Nolte, Michaud, Tegmark, Williams 2022, Towards Understanding Grokking: An "
          "Effective Theory of Representation Learning (NeurIPS)",
    figure="Fig. 7 (left): effective dimension e^S of the transformer's embeddings during training, over 100 seeds",
    artefact=Artefact(REPO, COMMIT, NOTEBOOK,
                      "cell 15's output (entropy_vs_step_square.pdf): e^S per run and its mean over the runs "
                      "against the step, mean memorization and generalization steps; read off: 51.7 at "
                      "initialisation, 53.1 at about 2,000 steps, 52.3 at generalisation (4,130), 33.7 at "
                      "20,000; memorization 1,620"),
    trains="the authors' transformer on addition mod 59 (two pre-LN layers, d_model 256, one head, d_mlp 128, "
           "dropout 0.05; embeddings lr 1e-3, the rest lr 2e-4 with weight decay 1), one run per seed",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_RUN, [QUICK_SEED], QUICK_CHECKPOINTS), "15 s (--jobs 1; 10 s of training)",
                       "one run, p = 31, d_model 32, d_mlp 32, 800 steps at 25 times the learning rates, a "
                       "checkpoint every 20 steps: training accuracy passes 0.99 before validation accuracy, e^S "
                       "rises first, peaks before generalisation and ends well below its initial value; every "
                       "reference row is produced"),
        "paper": Scale("paper", _spec(PAPER_RUN, PAPER_SEEDS, PAPER_CHECKPOINTS), "unmeasured",
                       "the authors' setting, 100 seeds x 20,000 full-batch steps, 200 log-spaced checkpoints "
                       "of the embeddings; estimated 185 h on one core (0.33 s a step at p = 59, d_model 256, "
                       "timed over 40 steps), 92 h with --jobs 2"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the effective dimension of the embeddings rises slightly (about 3%) until about the memorisation "
            "step, stays up to generalisation and then falls to about two thirds of its initial value by "
            "20,000 steps",),
))
