"""Nanda, Chan, Lieberum, Smith and Steinhardt 2023, the training-fraction sweep of the one-layer
transformer on modular addition (p = 113): test-loss curves per training fraction, compared with the
authors' released curves (docs/reproductions/nanda-fraction/README.md).

The authors' numbers are ``saved_runs/mod_addition_frac_train_sweep.pth`` of
github.com/mechanistic-interpretability-grokking/progress-measures-paper (commit 1dc9f5b): a
``torch.save`` of ``[frac_trains, losses]`` with ``frac_trains = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4,
0.3, 0.28, 0.25]`` and ``losses`` the per-epoch full-batch train and test losses of each run, train
and test alternating (``losses[2k]``, ``losses[2k + 1]`` for ``frac_trains[k]``: the first author's plot
of the file, ``pages/3_page_3_grokky.py`` of github.com/neelnanda-io/Grokking at commit 346d3c9, draws
``losses[1::2]`` as the curves ``test_<fraction>``, and his figure ``figs/mod_add_frac_train_all.pdf``
(commit dfbd38f) lists them as train_0.95, test_0.95, train_0.9, ...; the file's loader is
``load_mod_addition_frac_train_sweep`` in the authors' ``helpers.py``). They are plain Python
floats, as the authors' ``Trainer.do_a_training_step`` (``transformers.py``) appends them: entry ``i``
is the loss before update ``i``, i.e. after ``i`` updates, which is probe's step ``i`` (probe records a
metric row before the update of its step, and its warmup, like theirs, makes update 0 a zero step).
Every run ends at its first epoch with test loss below 3e-6 (``train_model`` breaks when
``test_loss < config.stopping_thresh``), so each curve's last index is that epoch. The module holds
three numbers per curve, parsed from the file by :func:`milestones`: the first epoch with test loss
below 1, below 0.1, and below 3e-6.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

REPO = "github.com/mechanistic-interpretability-grokking/progress-measures-paper"
COMMIT = "1dc9f5b6b8aa8947a086e2c4963f3ab56f17a197"  # adds saved_runs/; transformers.py from 5bf4dad, unchanged
RESULTS = "saved_runs/mod_addition_frac_train_sweep.pth"
TRAIN_CODE = "transformers.py"
HELPERS = "helpers.py"
P = 113
N_PAIRS = P * P
#: the authors' stopping threshold, read off the released curves (each ends at its first test loss below it)
STOP_LOSS = 3e-6
#: the test-loss levels whose first crossing is compared, with their names in the tables
LEVELS: tuple[tuple[str, float], ...] = (("test loss < 1", 1.0), ("test loss < 0.1", 0.1),
                                         ("test loss < 3e-6", STOP_LOSS))
FACTOR = 1.5  # tolerance on a step count

#: first epoch with test loss < 1, < 0.1 and < 3e-6 (the run's last epoch) per training fraction, as
#: :func:`milestones` reads them from RESULTS
AUTHORS_MILESTONES: dict[float, tuple[int, int, int]] = {
    0.95: (123, 157, 969),
    0.9: (156, 222, 1056),
    0.8: (177, 252, 1338),
    0.7: (129, 222, 896),
    0.6: (270, 440, 1090),
    0.5: (744, 956, 1617),
    0.4: (2615, 3109, 3666),
    0.3: (7583, 7930, 8995),
    0.28: (14465, 15037, 16613),
    0.25: (21419, 21848, 23275),
}
AUTHORS_FRACTIONS: tuple[float, ...] = tuple(sorted(AUTHORS_MILESTONES))


def first_below(values: Sequence[float], level: float, steps: Sequence[float] | None = None) -> float:
    """The first step (index when ``steps`` is None) whose value is below ``level``; inf when none is."""
    v = np.asarray(values, dtype=np.float64)
    hit = np.flatnonzero(v < level)
    if not len(hit):
        return math.inf
    return float(hit[0]) if steps is None else float(np.asarray(steps, dtype=np.float64)[hit[0]])


def parse_released(obj: Any) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """The released ``[frac_trains, losses]`` as ``{fraction: (train losses, test losses)}``; a
    structure that is not that raises ValueError."""
    try:
        fracs, losses = obj
        fracs = [float(f) for f in fracs]
    except (TypeError, ValueError):
        raise ValueError("expected [frac_trains, losses]") from None
    if len(losses) != 2 * len(fracs):
        raise ValueError(f"{len(fracs)} fractions need {2 * len(fracs)} loss curves, got {len(losses)}")
    out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for k, f in enumerate(fracs):
        train = np.asarray(losses[2 * k], dtype=np.float64)
        test = np.asarray(losses[2 * k + 1], dtype=np.float64)
        if train.ndim != 1 or train.shape != test.shape:
            raise ValueError(f"fraction {f}: train and test curves differ in shape")
        out[f] = (train, test)
    return out


def milestones(test: Sequence[float]) -> tuple[int, int, int]:
    """The first epochs (indices) with test loss below each of LEVELS' levels (-1: never)."""
    steps = [first_below(test, level) for _, level in LEVELS]
    return tuple(int(s) if math.isfinite(s) else -1 for s in steps)  # type: ignore[return-value]


def load_released(path: str) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Read RESULTS (a torch zip archive holding plain lists, no other object) without torch: only
    the pickle's lists and floats are accepted."""
    import pickle
    import zipfile

    class Plain(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:  # the file holds no class; refuse any
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")

    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        import io

        obj = Plain(io.BytesIO(z.read(name))).load()
    return parse_released(obj)


def authors_steps(fraction: float) -> tuple[float, float, float]:
    """The authors' first epochs below each level for ``fraction`` (probe's step count)."""
    return tuple(float(v) for v in AUTHORS_MILESTONES[fraction])  # type: ignore[return-value]


def authors_key(fraction: float) -> float | None:
    """The released fraction equal to ``fraction`` (to 1e-9), or None."""
    for f in AUTHORS_FRACTIONS:
        if math.isclose(f, float(fraction), abs_tol=1e-9):
            return f
    return None


def steps_agree(paper: float, ours: float) -> bool:
    """Both never, or both finite and within a factor FACTOR of each other."""
    if math.isinf(paper) or math.isinf(ours):
        return math.isinf(paper) and math.isinf(ours)
    return max(paper, ours) <= FACTOR * max(min(paper, ours), 1.0)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties: average ranks; inf ranks above every finite value); NaN
    when either side has a single rank."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for val in np.unique(a):
            sel = a == val
            r[sel] = r[sel].mean()
        return r

    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


SPEC_TEMPLATE = (
    "preset: nanda-modadd\n"
    "set: {{p: {p}, steps: {steps}, seed: 0, split_seed: 0, stop.threshold: 0.99, "
    "stop.after_generalization: {after}, checkpoint.schedule: every, checkpoint.every: {every}, "
    "checkpoint.metrics_every: 10, checkpoint.tensors: [embed.W_E], model.head_bias: false{extra}}}\n"
    "grid:\n  train_fraction: {fractions}\n"
)


def _spec(p: int, fractions: list[float], steps: int, after: int, every: int, extra: str = "") -> str:
    return SPEC_TEMPLATE.format(p=p, fractions=fractions, steps=steps, after=after, every=every, extra=extra)


QUICK_P = 31
QUICK_FRACTIONS = [0.5, 0.9]
QUICK_STEPS = 250
QUICK_MODEL = ", model.d_model: 64, model.d_mlp: 256"
PAPER_STEPS = 50_000

SETTING = (
    Setting("task", "a + b mod 113, inputs [a, b, =] with = the token 113 (d_vocab 114), every ordered pair",
            TRAIN_CODE, "add, p = 113 (12,769 ordered pairs), tokens [a, b, =] (quick: p = 31)"),
    Setting("split", "random.seed(seed); random.shuffle(pairs); the first int(frac_train * 12,769) train, the "
            "rest test; seed 0 is the Config default (the released file records no seed)", TRAIN_CODE,
            "train_fraction in the released list, floor(f * 12,769) training pairs (the same counts), split_seed "
            "0, seed 0", "another random draw of the training pairs and of the initial weights: one run per "
            "fraction on both sides, compared per fraction"),
    Setting("fractions", "0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.28, 0.25 (the released file's frac_trains, "
            "loaded by load_mod_addition_frac_train_sweep)", HELPERS, "the same ten (quick: 0.5 and 0.9)"),
    Setting("block", "one layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm (use_ln False), learned "
            "positional embeddings; no attention or unembedding biases, MLP biases b_in, b_out", TRAIN_CODE,
            "model transformer, n_layers 1, d_model 128, n_heads 4, d_mlp 512, act relu, layernorm false, "
            "head_bias false (quick: d_model 64, d_mlp 256)",
            "probe's attention has biases (b_Q, b_K, b_V, b_O), initialised to zero and decayed"),
    Setting("init", "W_E, W_pos, W_Q, W_K, W_V, W_O, W_in, W_out ~ N(0, 1/d_model); W_U ~ N(0, 1/d_vocab) with "
            "d_vocab 114", TRAIN_CODE, "the same normal initialisations; W_U ~ N(0, 1/113)",
            "probe's unembedding has 113 outputs (the answers), theirs 114 (the = token too)"),
    Setting("head", "logits over all 114 tokens at the last position; training loss over the 114 classes",
            TRAIN_CODE, "113 answer logits at the last position", "the = class is absent from probe's softmax "
            "(its logit is trained towards -inf in theirs; about 1% of the first losses, ln 114 vs ln 113)"),
    Setting("optimizer", "AdamW lr 1e-3, weight_decay 1.0, betas (0.9, 0.98); LambdaLR min(step / 10, 1) "
            "(update 0 at lr 0)", TRAIN_CODE, "adamw, lr 1e-3, weight_decay 1, betas (0.9, 0.98), warmup_steps 10 "
            "(the same schedule)"),
    Setting("batches", "full batch: the whole training set every epoch (batch_style 'full')", TRAIN_CODE,
            "batch_size unset (full batch)"),
    Setting("loss precision", "cross_entropy_high_precision: log_softmax of the logits cast to float32 (the "
            "comment speaks of float64)", HELPERS, "float64 cross-entropy (softmax_dtype float64)",
            "below about 1e-6 float32 log-softmax loses digits; the compared levels (1, 0.1) are unaffected, "
            "3e-6 is near the edge"),
    Setting("steps", "num_epochs 50,000 (Config default); the run stops at its first test loss below "
            "stopping_thresh, 3e-6 for the released curves (each ends there)", TRAIN_CODE,
            "steps 50,000; a run stops 2,000 steps after validation accuracy passes 0.99 (quick: 250 steps)",
            "probe has no loss-based stop; 2,000 steps exceed every released gap from test loss 0.1 to 3e-6 "
            "(557 to 1,576 epochs)"),
    Setting("evaluation cadence", "train and test loss of every epoch (before its update)", TRAIN_CODE,
            "train and validation loss every 10 steps (before the step's update); embeddings checkpointed every "
            "1,000 steps", "a crossing is known to within 10 steps"),
)


def _run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run: its fraction, budget, first steps below each level, the steps to 99%
    training accuracy, and its curves (for the figure)."""
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
        steps = m["step"].to_numpy(dtype=np.float64)
        row: dict[str, Any] = {"run": name, "train_fraction": float(cfg.train_fraction), "fraction": frac,
                               "p": int(cfg.p), "budget": int(cfg.steps), "last_step": float(steps[-1])}
        for (label, level), key in zip(LEVELS, ("step_loss_1", "step_loss_0.1", "step_loss_3e-6")):
            row[key] = first_below(m["val_loss"], level, steps)
        hit = np.flatnonzero(m["train_acc"].to_numpy() >= 0.99)
        row["step_train_acc_0.99"] = float(steps[hit[0]]) if len(hit) else math.inf
        row["curve_step"] = steps
        row["curve_val_loss"] = m["val_loss"].to_numpy(dtype=np.float64)
        row["curve_train_loss"] = m["train_loss"].to_numpy(dtype=np.float64)
        rows.append(row)
    cols = ["run", "train_fraction", "fraction", "p", "budget", "last_step", "step_loss_1", "step_loss_0.1",
            "step_loss_3e-6", "step_train_acc_0.99", "curve_step", "curve_val_loss", "curve_train_loss"]
    return pd.DataFrame(rows, columns=cols).sort_values("train_fraction").reset_index(drop=True)


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per released fraction that the sweep trained, the first steps with test loss below 1, 0.1 and
    3e-6 against the authors' curves; and one row on the ordering: the rank correlation between the
    fraction and the steps to test loss < 1, the onset of generalisation (a larger fraction
    generalises in fewer steps)."""
    table = _run_table(sweep_dir)
    rows: list[Row] = []
    src = f"{REPO} {RESULTS}"
    keys = ("step_loss_1", "step_loss_0.1", "step_loss_3e-6")
    compared_f, paper_1, ours_1 = [], [], []
    for _, r in table.iterrows():
        f = authors_key(r["train_fraction"])
        if f is None:
            continue
        paper = authors_steps(f)
        budget = int(r["budget"])
        for (label, _), key, pv in zip(LEVELS, keys, paper):
            ov = float(r[key])
            rows.append(Row(f"steps to {label}, train fraction {f:g}", fmt_steps(pv), f"{src} (fraction {f:g})",
                            f"{fmt_steps(ov)} (p = {int(r['p'])}; budget {budget:,}, stopped at {r['last_step']:,.0f})",
                            f"both never, or within a factor {FACTOR:g}",
                            "agrees" if steps_agree(pv, ov) else "differs"))
        compared_f.append(f)
        paper_1.append(paper[0])
        ours_1.append(float(r["step_loss_1"]))
    if len(compared_f) >= 2:
        rho_p, rho_o = rank_correlation(compared_f, paper_1), rank_correlation(compared_f, ours_1)

        def show(rho: float) -> str:
            return "n/a" if math.isnan(rho) else f"{rho:+.2f}"

        rows.append(Row(f"rank correlation of the training fraction and the steps to test loss < 1, over the "
                        f"fractions {', '.join(f'{f:g}' for f in compared_f)}", show(rho_p), src,
                        f"{show(rho_o)} (steps: {', '.join(fmt_steps(v) for v in ours_1)}; never ranks last)",
                        "both negative (a larger fraction generalises in fewer steps)",
                        "agrees" if rho_p < 0 and rho_o < 0 else "differs"))
    runs = table.drop(columns=["curve_step", "curve_val_loss", "curve_train_loss"])
    curves = {float(r["train_fraction"]): (r["curve_step"], r["curve_val_loss"], r["curve_train_loss"])
              for _, r in table.iterrows()}
    budget = int(table["budget"].max()) if len(table) else 0
    return Analysis(tuple(rows), runs, {"curves": curves, "scale": scale, "budget": budget})


def draw(analysis: Analysis) -> "Figure":
    """Two panels: probe's test-loss curves per fraction (log scale, like the authors' plot of the
    released file), and the first steps with test loss below 1 and below 0.1 against the fraction,
    the authors' released values (crosses) beside probe's (circles; never-reached at the top)."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    curves: dict[float, Any] = analysis.extra["curves"]
    ax = axes[0]
    cmap = plt.get_cmap("viridis")
    for k, (f, (steps, val, _)) in enumerate(sorted(curves.items())):
        ax.plot(steps, np.maximum(val, 1e-12), color=cmap(k / max(len(curves) - 1, 1)), linewidth=1,
                label=f"test, fraction {f:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step (full-batch epoch)")
    ax.set_ylabel("test loss")
    ax.set_title(f"probe, {analysis.extra['scale']} scale: test loss per training fraction", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax = axes[1]
    runs: "pd.DataFrame" = analysis.runs
    top = max([float(analysis.extra["budget"]), *(v[1] for v in AUTHORS_MILESTONES.values())]) * 1.3
    for k, (label, key, colour) in enumerate((("test loss < 1", "step_loss_1", "C1"),
                                              ("test loss < 0.1", "step_loss_0.1", "C0"))):
        ax.scatter(list(AUTHORS_FRACTIONS), [AUTHORS_MILESTONES[f][k] for f in AUTHORS_FRACTIONS],
                   marker="x", color=colour, label=f"authors, {label} (released curves, p = 113)")
        if len(runs):
            ax.scatter(runs["train_fraction"], np.minimum(runs[key].to_numpy(dtype=np.float64), top),
                       facecolors="none", edgecolors=colour, s=40,
                       label=f"probe, {label} ({analysis.extra['scale']} scale)")
    ax.axhline(top, color="0.7", linewidth=0.6)
    ax.text(0.01, top, " never", va="bottom", fontsize=7, color="0.4", transform=ax.get_yaxis_transform())
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("training data fraction")
    ax.set_ylabel("first step below the test-loss level")
    ax.set_title("Nanda et al.: training-fraction sweep (mod 113 addition)", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    return fig


reproduction(Reproduction(
    name="nanda-fraction",
    paper="Nanda, Chan, Lieberum, Smith, Steinhardt 2023, Progress measures for grokking via mechanistic "
          "interpretability (ICLR)",
    figure="the training-fraction sweep of the one-layer transformer on addition mod 113: test loss per "
           "training fraction (released as saved_runs/mod_addition_frac_train_sweep.pth)",
    artefact=Artefact(REPO, COMMIT, RESULTS,
                      "per-epoch train and test losses of one run per training fraction (0.25 to 0.95), each "
                      "stopped at its first test loss below 3e-6; test loss passes 0.1 at epoch 157 (0.95) to "
                      "21,848 (0.25)"),
    trains="the one-layer transformer on addition mod 113 (nanda-modadd), one run per training fraction",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_P, QUICK_FRACTIONS, QUICK_STEPS, 50, 500, QUICK_MODEL), "13 s (--jobs 1)",
                       "p = 31, d_model 64, d_mlp 256, fractions 0.5 and 0.9, 250 steps: the larger fraction's "
                       "test loss falls below 1 within the budget (at step 150; 170 with seeds 1 and 2), the "
                       "smaller's does not (it stays above 3.4); every reference row of the two fractions is "
                       "produced"),
        "paper": Scale("paper", _spec(P, list(AUTHORS_FRACTIONS), PAPER_STEPS, 2000, 1000), "unmeasured",
                       "the authors' ten fractions at p = 113, one run each, up to 50,000 steps (stopped 2,000 "
                       "steps after 99% validation accuracy); estimated 2.4 h on one core if probe's runs "
                       "generalise when the authors' did (3.1 steps/s at fraction 0.95, 10 at 0.3)"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the steps to generalise rise steeply as the training fraction falls: test loss passes 0.1 within "
            "about 450 epochs at fractions 0.6 and above, at 956 at 0.5, 3,109 at 0.4, 7,930 at 0.3 and 21,848 "
            "at 0.25",
            "memorisation is fast at every fraction (train loss below 0.01 within 155 to 323 epochs)"),
))
