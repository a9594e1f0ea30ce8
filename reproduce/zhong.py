"""What Zhong, Liu, Tegmark and Andreas 2023 ("The Clock and the Pizza", NeurIPS) released and how probe
trains their setting: shared by the ``zhong-models`` and ``zhong-phase`` reproductions
(docs/reproductions/zhong-models/README.md, docs/reproductions/zhong-phase/README.md).

Their repository (github.com/fjzzq2002/pizza) trains one-layer transformers on addition mod 59 with
``code/train-main.py``, evaluates them with ``code/eval-main.ipynb`` and releases two saved models (the
paper's Model A, attention rate 0, and Model B, rate 1; ``code/save/``), and two tables of statistics of
every one-layer run of their phase diagrams (``result/1l_fixedwidth.csv``, ``result/1l_varywidth.csv``)
drawn in ``result/1l_fixedwidth.svg`` and ``result/1l_varywidth.svg``.

The metrics, as their code computes them (probe's metrics give their printed values on their saved
models to 1e-7; tests/reproduce/test_zhong_models.py):

- distance irrelevance: ``mean_d std{L[a, b] : a - b = d} / std(L)`` (numpy's std, ddof 0) on the
  ``59 x 59`` table of a logit. The notebook (cell 10) uses the correct label's logit; ``train-main.py``
  (the ``oc`` table) and so the released CSVs and figures use the largest other logit (probe:
  ``--logit correct`` / ``top_incorrect``).
- gradient symmetricity: the mean cosine of d logit_c / d E_a and d logit_c / d E_b (token embeddings
  before the position embedding) over 100 triples (a, b, c): every triple of ``range(59)^3`` shuffled by
  Python's ``random.Random(42)``, the first 100 (notebook cell 12; probe ``--sampling zhong --samples
  100``).
- circularity: per leading principal component of the embeddings (4 of them), the share of its energy in
  its best single Fourier frequency, averaged (notebook cell 14; probe ``circularity --method zhong``).

The released figures colour each run continuously by gradient symmetricity (or distance irrelevance);
they draw exactly the one-layer runs without the appendix's extra tokens whose circularity is above 0.995
(817 of the fixed-width table's 7,843 rows, 466 of the varying-width table's 6,148: every drawn point
matched to its row, and that filter gives the same set). The reference statistics below are the 10th,
50th and 90th percentiles of those runs' columns per attention-rate bin (per width octave too for the
varying-width table), recomputed by :func:`released_bins` from the CSVs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from probe.reproduce.registry import Setting

if TYPE_CHECKING:
    import pandas as pd
    import torch

REPO = "github.com/fjzzq2002/pizza"
COMMIT = "4c7f2f31d215a51522b33f3ae2ef35f9c254ef6f"
TRAIN = "code/train-main.py"
NOTEBOOK = "code/eval-main.ipynb"
FIXED_CSV = "result/1l_fixedwidth.csv"
VARY_CSV = "result/1l_varywidth.csv"
FIXED_SVG = "result/1l_fixedwidth.svg"
VARY_SVG = "result/1l_varywidth.svg"
P = 59
CIRCULAR = 0.995  # the drawn runs' circularity (module doc)
GS_SAMPLES = 100  # notebook cell 12

#: the saved models (code/save/model_ID.pt, config_ID.json): the paper's Model A and Model B (notebook
#: cell 4: modelA='p99zdpze5l', modelB='l8k1hzciux'); their weights ship in data/zhong/ (MIT licence)
MODEL_A, MODEL_B = "p99zdpze5l", "l8k1hzciux"
MODEL_RATES = {MODEL_A: 0.0, MODEL_B: 1.0}
#: Model A: the notebook's printed outputs (cells 10, 12, 14). Model B: the notebook's own code run here on
#: the saved model (the notebook evaluates Model A only); distance irrelevance of the largest other logit
#: as train-main.py computes it for the CSVs
AUTHORS_MODELS: dict[str, dict[str, float]] = {
    MODEL_A: {"di_correct": 0.17173645661473538, "di_top_incorrect": 0.2218073820,
              "gradient_symmetricity": 0.9936651682853699, "circularity": 0.9978184479185687},
    MODEL_B: {"di_correct": 0.8482599248, "di_top_incorrect": 0.8849181798,
              "gradient_symmetricity": 0.3336378, "circularity": 0.9989071},
}
MODEL_SOURCES = {MODEL_A: f"{REPO} {NOTEBOOK} printed outputs (Model A = code/save/model_{MODEL_A}.pt)",
                 MODEL_B: f"{REPO} {NOTEBOOK}'s code run on code/save/model_{MODEL_B}.pt (Model B; the notebook "
                          "prints Model A only)"}

#: released_bins(FIXED_CSV, "fixed"): attention-rate bin i covers [i/10, (i+1)/10); (runs, distance
#: irrelevance (largest other logit) q10/q50/q90, gradient symmetricity q10/q50/q90); d_model 128
FIXED_BINS: dict[int, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    0: (92, (0.1581, 0.2004, 0.5587), (0.9919, 0.9937, 0.9952)),
    1: (97, (0.1515, 0.2101, 0.5652), (0.9907, 0.9931, 0.9949)),
    2: (95, (0.1586, 0.2396, 0.5816), (0.9898, 0.9923, 0.9939)),
    3: (89, (0.1669, 0.2109, 0.5454), (0.9907, 0.9927, 0.9945)),
    4: (73, (0.1937, 0.2556, 0.5793), (0.9907, 0.9934, 0.9943)),
    5: (65, (0.2356, 0.3993, 0.5958), (0.7963, 0.9305, 0.9942)),
    6: (62, (0.5238, 0.6272, 0.7212), (0.588, 0.7502, 0.8487)),
    7: (85, (0.6055, 0.6972, 0.8002), (0.4678, 0.6236, 0.7725)),
    8: (82, (0.7044, 0.7708, 0.8664), (0.4277, 0.5388, 0.6761)),
    9: (77, (0.7215, 0.8284, 0.8984), (0.2961, 0.4509, 0.5826)),
}
#: released_bins(VARY_CSV, "vary"): (width octave [w, 2w), attention-rate bin [j/5, (j+1)/5)) -> as above
VARY_BINS: dict[tuple[int, int], tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    (32, 0): (30, (0.1846, 0.2476, 0.4965), (0.9932, 0.9958, 0.997)),
    (32, 1): (19, (0.182, 0.3025, 0.3817), (0.9758, 0.9943, 0.9973)),
    (32, 2): (25, (0.3633, 0.453, 0.7157), (0.6151, 0.8512, 0.9459)),
    (32, 3): (30, (0.6755, 0.7628, 0.8557), (0.3877, 0.5032, 0.6778)),
    (32, 4): (26, (0.6503, 0.7842, 0.9085), (0.1657, 0.2744, 0.4102)),
    (64, 0): (22, (0.177, 0.2329, 0.5478), (0.9913, 0.9935, 0.9949)),
    (64, 1): (22, (0.1693, 0.2205, 0.4063), (0.9918, 0.9933, 0.9953)),
    (64, 2): (19, (0.2453, 0.3992, 0.5704), (0.7761, 0.9337, 0.9942)),
    (64, 3): (23, (0.5664, 0.7039, 0.7556), (0.5454, 0.6537, 0.7899)),
    (64, 4): (24, (0.713, 0.7921, 0.8468), (0.2704, 0.4338, 0.6541)),
    (128, 0): (31, (0.1773, 0.2751, 0.7124), (0.9906, 0.9929, 0.9939)),
    (128, 1): (19, (0.1579, 0.2821, 0.5859), (0.9902, 0.9918, 0.9937)),
    (128, 2): (19, (0.1862, 0.2775, 0.5126), (0.8916, 0.9929, 0.9946)),
    (128, 3): (20, (0.33, 0.5826, 0.8609), (0.5986, 0.8013, 0.9943)),
    (128, 4): (26, (0.7134, 0.7974, 0.8945), (0.446, 0.5531, 0.6676)),
    (256, 0): (25, (0.1497, 0.2568, 0.7144), (0.9909, 0.9932, 0.994)),
    (256, 1): (21, (0.1912, 0.3542, 0.597), (0.9899, 0.9917, 0.9928)),
    (256, 2): (26, (0.1766, 0.3081, 0.5975), (0.9892, 0.9913, 0.9934)),
    (256, 3): (20, (0.1756, 0.2782, 0.6145), (0.9916, 0.9932, 0.9949)),
    (256, 4): (19, (0.2889, 0.6418, 0.8365), (0.6157, 0.9043, 0.9945)),
}
#: over the 817 drawn fixed-width runs: Pearson correlation of the attention rate with distance
#: irrelevance and with gradient symmetricity
AUTHORS_CORR = {"distance_irrelevance": 0.784, "gradient_symmetricity": -0.873}

SETTING = (
    Setting("task", "(a + b) mod 59 over all 59^2 = 3,481 ordered pairs; inputs [a, b] (no '=' token: diff_vocab "
            "and eqn_sign 0), the answer read at b", TRAIN,
            "task add, p 59, ordered (the full table), model.eq_token false: tokens [a, b]"),
    Setting("split", "torch.utils.data.random_split into 2,784 / 697 (80%) from torch's global generator, never "
            "seeded", TRAIN, "train_fraction 0.8 (2,784 / 697), split_seed = seed (numpy's generator)",
            "another draw of the split and the weights: their runs are not seeded, so runs are compared with "
            "the spread of their released runs, not one by one"),
    Setting("model", "1 layer, d_model 128 (vary-width table: int(2^U(5, 9)), 32..511), 4 heads, d_head d/4, "
            "MLP 4 d ReLU; x = x + attn(x); x = x + mlp(x); no LayerNorm", TRAIN,
            "n_layers 1, d_model 128 (the width grid: 32, 64, 128, 256), n_heads 4, d_mlp 4 d_model, act relu, "
            "layernorm false"),
    Setting("attention", "no mask is applied (the 'casual' buffer is unused), no biases; pattern "
            "attn_coeff * softmax(QK^T / sqrt(d_head)) + (1 - attn_coeff)", TRAIN,
            "model.causal false, model.attn_bias false, model.attention_rate = attn_coeff"),
    Setting("head", "unembedding W_U [d, 59] without bias, logits at the last position over the 59 tokens",
            TRAIN, "model.head_bias false, readout last (59 classes = the vocabulary)"),
    Setting("init", "W_E, W_pos, W_Q, W_K, W_V, W_O N(0, 1/d); W_U N(0, 1/59); W_in N(0, 1/d_mlp); W_out "
            "N(0, 1/d); MLP biases 0", TRAIN, "model.init zhong: the same laws"),
    Setting("optimizer", "AdamW lr 1e-3, weight decay 2, betas (0.9, 0.98), eps 1e-8; LambdaLR min(step/10, 1) "
            "(the first update at factor 0)", TRAIN,
            "adamw, lr 1e-3, weight_decay 2, betas (0.9, 0.98), warmup_steps 10: min(step / 10, 1)"),
    Setting("batches", "full batch (batch_size 3,481 >= 2,784), 20,000 epochs = 20,000 updates", TRAIN,
            "batch_size unset (full batch), steps 20,000"),
    Setting("loss precision", "cross_entropy_high_precision: log_softmax of the logits in float64", TRAIN,
            "softmax_dtype float64 (probe's default)"),
    Setting("evaluation", "metrics on all 3,481 pairs after training (distance irrelevance, in the CSVs of the "
            "largest other logit); gradient symmetricity and circularity by the notebook's code", NOTEBOOK,
            "the same three metrics on the last checkpoint (probe's distance_irrelevance --logit correct and "
            "top_incorrect, gradient_symmetricity --sampling zhong --samples 100, circularity --method zhong)"),
    Setting("which runs count", "the figures draw one-layer runs without extra tokens whose circularity is above "
            "0.995", FIXED_CSV, "the same filter on probe's runs; the rows say how many pass",
            "read off the figure's points (module doc), not stated in the repository"),
)


def spec(rates: list[float], widths: list[int], steps: int, seeds: list[int], p: int = P,
         count: int = 40, mlp_ratio: int = 4) -> str:
    """A sweep spec over attention rates x widths x seeds in their setting (``zhong-pizza`` preset: the
    rate set per run), ``split_seed`` equal to the seed."""
    import itertools

    points = list(itertools.product(widths, rates, seeds))
    return ("preset: zhong-pizza\n"
            f"set: {{p: {p}, steps: {steps}, checkpoint.schedule: geometric, checkpoint.count: {count}, "
            "checkpoint.metrics_every: 10}\n"
            "zip:\n"
            f"  model.d_model: [{', '.join(str(w) for w, _, _ in points)}]\n"
            f"  model.d_mlp: [{', '.join(str(mlp_ratio * w) for w, _, _ in points)}]\n"
            f"  model.attention_rate: [{', '.join(repr(float(r)) for _, r, _ in points)}]\n"
            f"  seed: [{', '.join(str(s) for _, _, s in points)}]\n"
            f"  split_seed: [{', '.join(str(s) for _, _, s in points)}]\n")


def their_params(arrays: Mapping[str, np.ndarray]) -> dict[str, "torch.Tensor"]:
    """A saved state dict of theirs (one layer; names and layouts of train-main.py) -> probe's transformer's
    parameters: W_E [d, V] -> [V, d]; W_Q/W_K/W_V [h, d_head, d] -> [h, d, d_head]; W_O [d, h d_head] (heads
    major) -> [h, d_head, d]; W_in [d_mlp, d] -> [d, d_mlp]; W_out [d, d_mlp] -> [d_mlp, d]; W_pos and W_U as
    they are. Their attention's ``mask`` buffer is unused and dropped."""
    import torch

    def t(x: np.ndarray) -> "torch.Tensor":
        return torch.as_tensor(np.ascontiguousarray(x))

    h = arrays["blocks.0.attn.W_Q"].shape[0]
    d = arrays["embed.W_E"].shape[0]
    out = {"embed.W_E": t(arrays["embed.W_E"].T), "pos_embed.W_pos": t(arrays["pos_embed.W_pos"]),
           "unembed.W_U": t(arrays["unembed.W_U"])}
    for n in "QKV":
        out[f"blocks.0.attn.W_{n}"] = t(np.transpose(arrays[f"blocks.0.attn.W_{n}"], (0, 2, 1)))
    out["blocks.0.attn.W_O"] = t(arrays["blocks.0.attn.W_O"].T.reshape(h, -1, d))
    out["blocks.0.mlp.W_in"] = t(arrays["blocks.0.mlp.W_in"].T)
    out["blocks.0.mlp.b_in"] = t(arrays["blocks.0.mlp.b_in"])
    out["blocks.0.mlp.W_out"] = t(arrays["blocks.0.mlp.W_out"].T)
    out["blocks.0.mlp.b_out"] = t(arrays["blocks.0.mlp.b_out"])
    return out


def their_metrics(model: Any, rate: float) -> dict[str, float]:
    """The four numbers of :data:`AUTHORS_MODELS` for a probe transformer over the whole 59 x 59 table,
    through probe's metric functions with the authors' conventions."""
    import torch

    from probe.analyses.families.clock_pizza import embedding_gradients
    from probe.analyses.representations import (circularity_of, distance_irrelevance_of, gradient_symmetricity_of,
                                                grid, symmetricity_triples, top_incorrect_logits)
    from probe.tasks import make_task

    task = make_task("add", p=P, ordered=True)
    x = model.model_inputs(torch.as_tensor(task.inputs))
    with torch.no_grad():
        out = model.answer(x).double().numpy()
    idx, c = symmetricity_triples(task.inputs, P, P, GS_SAMPLES, "zhong")
    g_a, g_b = embedding_gradients(model, x[torch.as_tensor(idx)], torch.as_tensor(c))
    return {"di_correct": distance_irrelevance_of(grid(out[np.arange(len(out)), task.labels], task)),
            "di_top_incorrect": distance_irrelevance_of(grid(top_incorrect_logits(out, task.labels), task)),
            "gradient_symmetricity": gradient_symmetricity_of(g_a, g_b),
            "circularity": circularity_of(model.embed.W_E.detach().double().numpy(), P, 4, "zhong"),
            "accuracy": float(np.mean(out.argmax(1) == task.labels))}


#: the same table before the figures' circularity filter, at the two rate bins of Model A (0) and B (9):
#: (one-layer runs without extra tokens that have all three measures, of them circular (> 0.995),
#: distance irrelevance (largest other logit), gradient symmetricity and circularity, each q10/q50/q90)
FIXED_ALL: dict[int, tuple[int, int, tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    0: (241, 92, (0.1685, 0.3617, 0.7642), (0.9911, 0.9929, 0.9948), (0.8433, 0.9919, 0.9995)),
    9: (226, 77, (0.7489, 0.8527, 0.9315), (0.3246, 0.4831, 0.6105), (0.8686, 0.991, 0.9978)),
}


def _plain_one_layer(csv_path: str | Path) -> "pd.DataFrame":
    """The released table's one-layer runs without extra tokens."""
    import pandas as pd

    d = pd.read_csv(csv_path)
    plain = d["diff_vocab"].astype(str).isin(["0", "False"]) & d["eqn_sign"].astype(str).isin(["0", "False"])
    return d[(d["n_layers"] == 1) & plain]


def _q(t: "pd.DataFrame", col: str) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in np.percentile(t[col], [10, 50, 90]))


def released_all(csv_path: str | Path) -> dict[int, tuple[int, int, tuple[float, ...], tuple[float, ...],
                                                            tuple[float, ...]]]:
    """:data:`FIXED_ALL` recomputed from the fixed-width table (rate bins 0 and 9, no circularity filter)."""
    s = _plain_one_layer(csv_path)
    s = s[s["circularity"].notna() & s["distance_irrelevance"].notna() & s["gradient_sim"].notna()]
    bins = np.minimum((s["attn_coeff"] * 10).astype(int), 9)
    out = {}
    for k in (0, 9):
        t = s[bins == k]
        out[k] = (len(t), int((t["circularity"] > CIRCULAR).sum()), _q(t, "distance_irrelevance"),
                  _q(t, "gradient_sim"), _q(t, "circularity"))
    return out


def binomial_consistent(hits: int, n: int, share: float, tail: float = 0.05) -> bool:
    """Whether ``hits`` of ``n`` is inside the central ``1 - 2 tail`` range of a binomial(n, share): neither
    ``P(X <= hits)`` nor ``P(X >= hits)`` is below ``tail``."""
    pmf = [math.comb(n, k) * share**k * (1 - share) ** (n - k) for k in range(n + 1)]
    return sum(pmf[: hits + 1]) >= tail and sum(pmf[hits:]) >= tail


def released_bins(csv_path: str | Path, kind: str) -> dict[Any, tuple[int, tuple[float, ...], tuple[float, ...]]]:
    """:data:`FIXED_BINS` (``kind='fixed'``) or :data:`VARY_BINS` (``'vary'``) recomputed from a released
    table: one-layer runs without extra tokens, circularity above 0.995; percentiles 10/50/90 of
    ``distance_irrelevance`` and ``gradient_sim`` per bin."""
    s = _plain_one_layer(csv_path)
    s = s[s["circularity"] > CIRCULAR]
    q = _q
    out: dict[Any, tuple[int, tuple[float, ...], tuple[float, ...]]] = {}
    if kind == "fixed":
        bins = np.minimum((s["attn_coeff"] * 10).astype(int), 9)
        keys: list[Any] = list(range(10))
        groups = {k: s[bins == k] for k in keys}
    else:
        octave = np.floor(np.log2(s["d_model"])).astype(int)
        rbin = np.minimum((s["attn_coeff"] * 5).astype(int), 4)
        groups = {(2**w, j): s[(octave == w) & (rbin == j)] for w in range(5, 9) for j in range(5)}
    for k, t in groups.items():
        out[k] = (len(t), q(t, "distance_irrelevance"), q(t, "gradient_sim"))
    return out


def fixed_bin(rate: float) -> int:
    return min(int(math.floor(rate * 10)), 9)


def vary_cell(width: int, rate: float) -> tuple[int, int] | None:
    octave = 2 ** int(math.floor(math.log2(width)))
    return (octave, min(int(math.floor(rate * 5)), 4)) if 32 <= octave <= 256 else None


def run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run of a sweep: width, rate, seed, and at its last checkpoint the distance
    irrelevance (correct and largest other logit), the gradient symmetricity and circularity by the
    authors' conventions, the accuracy on all pairs and on the validation split."""
    import pandas as pd

    from probe.analyses.runner import compute
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    records = []
    for name, run in sw.done_runs():
        cfg = run.config
        if cfg is None:
            continue
        last = run.metrics.iloc[-1]
        di = compute(run, "distance_irrelevance", "last", logit="correct")
        di_top = compute(run, "distance_irrelevance", "last", logit="top_incorrect")
        gs = compute(run, "gradient_symmetricity", "last", sampling="zhong", samples=GS_SAMPLES)
        circ = compute(run, "circularity", "last", method="zhong")
        records.append({
            "run": name, "d_model": int(cfg.model.d_model), "attention_rate": float(cfg.model.attention_rate),
            "seed": int(cfg.seed), "p": int(cfg.p or 0), "steps": int(last["step"]),
            "di_correct": float(di["distance_irrelevance"].iloc[-1]),
            "di_top_incorrect": float(di_top["distance_irrelevance"].iloc[-1]),
            "gradient_symmetricity": float(gs["gradient_symmetricity"].iloc[-1]),
            "circularity": float(circ["circularity"].iloc[-1]),
            "train_acc": float(last["train_acc"]), "val_acc": float(last["val_acc"])})
    cols = ["run", "d_model", "attention_rate", "seed", "p", "steps", "di_correct", "di_top_incorrect",
            "gradient_symmetricity", "circularity", "train_acc", "val_acc"]
    return pd.DataFrame(records, columns=cols).sort_values(["d_model", "attention_rate", "seed"]).reset_index(drop=True)


def within(value: float, band: tuple[float, float, float]) -> bool:
    """Inside the released runs' 10th-90th percentile band."""
    return band[0] <= value <= band[2]


def band_text(band: tuple[float, float, float], n: int) -> str:
    return f"{band[1]:.3f} (10-90%: {band[0]:.3f}-{band[2]:.3f}, {n} runs)"
