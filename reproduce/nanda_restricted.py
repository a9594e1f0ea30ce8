"""Nanda, Chan, Lieberum, Smith and Steinhardt 2023: the restricted and excluded losses of the
one-layer transformer on addition mod 113 over training, beside its train and test loss, and the
phases they delimit (docs/reproductions/nanda-restricted/README.md).

The authors released no numbers of these curves: their training code,
``transformers.py`` of github.com/mechanistic-interpretability-grokking/progress-measures-paper
(commit 5bf4dad), computes them (``calculate_trig_loss``, the restricted loss;
``calculate_excluded_loss``; ``calculate_key_freqs``), and the first author's repository of the
analysis, github.com/neelnanda-io/Grokking (commit dfbd38f), holds the figures of the run as plotly
PDF exports, whose curves are stored as polylines in data coordinates:

* ``figs/trig_loss.pdf`` ("Pure Trig-Based Loss"): ``test_loss``, ``train_loss``, ``trig_loss`` (the
  restricted loss over all pairs) and ``trig_loss_train``, one point per 100 epochs to epoch 39,900;
* ``figs/excluded_loss_2D_full.pdf`` ("Excluded Loss over all frequencies vs test and train loss"):
  ``excl_full``, ``train loss``, ``test loss``;
* ``figs/excluded_acc_2D_full.pdf``: ``excl_full``, ``train acc``, ``test acc``;
* ``figs/excluded_loss_2D_key.pdf`` ("Excluded Loss (2D) key freqs"): one curve per key frequency,
  ``excl 14``, ``excl 35``, ``excl 41``, ``excl 42``, ``excl 52``.

:func:`read_plotly_pdf` reads such a file back into curves (plotly drops the points of a polyline
that lie on a straight segment, so a curve is known at its remaining vertices and linearly, in the
plotted scale, between them) and :func:`figure_milestones` applies probe's own rules to them. The
reference numbers below are what they give; each is known to within one 100-epoch checkpoint.

probe's phase boundaries are read off its own curves by the same declared rules: memorisation ends
at the excluded loss's minimum before its peak, circuit formation at the excluded loss's peak.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.reproduce import nanda_fraction as nf
from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO = nf.REPO
CODE_COMMIT = "5bf4dadea2db767c9e6a6be44054ac6a8bb364a8"
TRAIN_CODE = nf.TRAIN_CODE
HELPERS = nf.HELPERS
FIG_REPO = "github.com/neelnanda-io/Grokking"
FIG_COMMIT = "dfbd38f7d23e09aaa5e5c9bd0483b69ca533e580"
FIG_LOSS = "figs/trig_loss.pdf"
FIG_EXCLUDED = "figs/excluded_loss_2D_full.pdf"
FIG_ACC = "figs/excluded_acc_2D_full.pdf"
FIG_KEYS = "figs/excluded_loss_2D_key.pdf"
FIG_EVERY = 100  # the figures' curves have one point per 100 epochs

#: the authors' run, read from the released figures by :func:`figure_milestones` (epochs = full-batch
#: steps; each to within one 100-epoch checkpoint)
AUTHORS: dict[str, float] = {
    "memorisation_end": 1300,  # excl_full's minimum before its peak
    "formation_end": 10300,  # excl_full's peak
    "excluded_low": 0.3108,
    "excluded_peak": 13.54,
    "train_at_low": 5.1e-7,
    "train_at_peak": 1.7e-7,
    "test_acc_0.99": 10600,  # test acc 0.9896 at epoch 10,500, 0.9977 at 10,700
    "test_loss_1": 9900,
    "test_loss_0.1": 10400,  # 0.1065 at epoch 10,300
    "restricted_1": 6000,  # trig_loss crosses 1 between epochs 5,900 and 6,100
}
AUTHORS_KEY_FREQS = (14, 35, 41, 42, 52)  # the legend of FIG_KEYS
AUTHORS_LAST_EPOCH = 39900  # the figures' last point

FACTOR = 1.5
LOSS_LEVEL = 1.0  # "falls": first step below 1 nat (chance is ln p, 4.7 for p = 113)
RISE = 2.0  # "rises": the excluded loss at least doubles from its minimum to its peak
KEY_RULE = "neurons"  # Nanda et al.'s neuron clusters (transformers.py calculate_key_freqs), threshold 0.85

SPEC_TEMPLATE = (
    "preset: nanda-modadd\n"
    "set: {{p: {p}, train_fraction: {fraction}, steps: {steps}, split_seed: 0, checkpoint.schedule: every, "
    "checkpoint.every: {every}, checkpoint.metrics_every: 10, model.head_bias: false{extra}}}\n"
    "seeds: [0]\n"
)


def _spec(p: int, fraction: float, steps: int, every: int, extra: str = "") -> str:
    return SPEC_TEMPLATE.format(p=p, fraction=fraction, steps=steps, every=every, extra=extra)


QUICK_P = 31
QUICK_FRACTION = 0.7
QUICK_STEPS = 1000
QUICK_MODEL = ", model.d_model: 64, model.d_mlp: 256"
PAPER_STEPS = 40_000

# --- the released figures ---------------------------------------------------------------------

_SI = {"n": 1e-9, "μ": 1e-6, "µ": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6}
_TOKEN = re.compile(rb"<[0-9A-Fa-f]*>|/[^\s/<>\[\]()]+|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[A-Za-z*']+")
_WHITE = (1.0, 1.0, 1.0)


def _number(text: str) -> float:
    """A tick label as a number ("10k", "100μ", "0.01", "−2"); ValueError when it is not one."""
    t = text.replace("−", "-").strip()
    scale = 1.0
    if t and t[-1] in _SI:
        scale, t = _SI[t[-1]], t[:-1]
    return float(t) * scale


def _streams(data: bytes) -> list[bytes]:
    out = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(raw))
        except zlib.error:
            continue
    return out


def _to_unicode(streams: Sequence[bytes]) -> dict[int, str]:
    """Glyph code to text, from the fonts' ToUnicode CMaps (bfchar and bfrange)."""
    table: dict[int, str] = {}
    for s in streams:
        if b"begincmap" not in s:
            continue
        t = s.decode("latin-1")
        for block in re.findall(r"beginbfchar(.*?)endbfchar", t, re.S):
            for a, b in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                table[int(a, 16)] = bytes.fromhex(b).decode("utf-16-be")
        for block in re.findall(r"beginbfrange(.*?)endbfrange", t, re.S):
            for a, b, c in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                for k in range(int(a, 16), int(b, 16) + 1):
                    table[k] = chr(int(c, 16) + k - int(a, 16))
    return table


def _marks(data: bytes) -> tuple[list[tuple[float, float, str]], list[tuple[tuple[float, ...], np.ndarray]]]:
    """The texts (page x, y, string) and stroked polylines (colour, page points) of a PDF page."""
    streams = _streams(data)
    glyphs = _to_unicode(streams)
    texts: list[tuple[float, float, str]] = []
    paths: list[tuple[tuple[float, ...], np.ndarray]] = []
    for s in streams:
        if b"BT\n" not in s or b" cm\n" not in s:  # not a page's content stream
            continue
        ctm = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        saved: list[tuple[list[float], tuple[float, ...]]] = []
        colour: tuple[float, ...] = (0.0, 0.0, 0.0)
        args: list[Any] = []
        current: list[tuple[float, float]] = []
        text, where = "", (math.nan, math.nan)

        def page(x: float, y: float) -> tuple[float, float]:
            a, b, c, d, e, f = ctm
            return a * x + c * y + e, b * x + d * y + f

        for tok in _TOKEN.findall(s):
            word = tok.decode("latin-1")
            if word[0] in "<":
                args.append(word[1:-1])
                continue
            if word[0] == "/":
                args.append(word)
                continue
            try:
                args.append(float(word))
                continue
            except ValueError:
                pass
            op = word
            if op == "q":
                saved.append((ctm[:], colour))
            elif op == "Q" and saved:
                ctm, colour = saved.pop()
            elif op == "cm" and len(args) >= 6:
                a, b, c, d, e, f = args[-6:]
                A, B, C, D, E, F = ctm
                ctm = [a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E,
                       e * B + f * D + F]
            elif op == "RG" and len(args) >= 3:
                colour = tuple(round(float(v), 4) for v in args[-3:])
            elif op == "m" and len(args) >= 2:
                current = [page(args[-2], args[-1])]
            elif op in ("l", "c") and len(args) >= 2:
                current.append(page(args[-2], args[-1]))
            elif op == "S":
                if len(current) >= 2:
                    paths.append((colour, np.asarray(current, dtype=np.float64)))
                current = []
            elif op in ("f", "n"):
                current = []
            elif op == "Tm" and len(args) >= 6:
                text, where = "", page(args[-2], args[-1])
            elif op == "Tj" and args and isinstance(args[-1], str):
                h = args[-1]
                text += "".join(glyphs.get(int(h[i:i + 4], 16), "?") for i in range(0, len(h), 4))
            elif op == "ET":
                texts.append((where[0], where[1], text))
                text = ""
            args = []
    return texts, paths


def read_plotly_pdf(data: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The curves of a one-panel line plot exported to PDF by plotly (Chromium), in data units, by
    legend name: ``{name: (x, y)}``. The axes are calibrated from the white grid lines and their tick
    labels (a log axis when the labels grow by a constant factor); a curve is named by the legend
    entry whose sample line has its colour. ValueError when the page is not such a plot."""
    texts, paths = _marks(data)
    grid = [p for c, p in paths if c == _WHITE and len(p) == 2]
    vertical = sorted({round(float(p[0, 0]), 3) for p in grid if abs(p[0, 0] - p[1, 0]) < 1e-6})
    horizontal = sorted({round(float(p[0, 1]), 3) for p in grid if abs(p[0, 1] - p[1, 1]) < 1e-6})
    rows = [p for p in grid if abs(p[0, 1] - p[1, 1]) < 1e-6]
    if not vertical or not rows:
        raise ValueError("no grid lines: not a plotly line plot")
    left = min(float(p[:, 0].min()) for p in rows)
    right = max(float(p[:, 0].max()) for p in rows)
    bottom = min(horizontal)
    numbers = []
    for x, y, t in texts:
        try:
            numbers.append((x, y, t, _number(t)))
        except ValueError:
            continue
    # tick labels sit centred under their grid line (x axis) or left of it, 3 to 4 points below (y axis)
    xs, xv, ys, yv = [], [], [], []
    for x, y, t, v in numbers:
        if y < bottom and x >= left - 20:
            centre = x + 3.3 * len(t)
            d = [abs(g - centre) for g in vertical]
            i = int(np.argmin(d))
            if d[i] < 8 and v != 0:  # a zero line is drawn half a line width off its position
                xs.append(vertical[i]), xv.append(v)
        elif x < left:
            d = [abs(g - (y + 3.15)) for g in horizontal]
            i = int(np.argmin(d))
            if d[i] < 4 and v != 0:
                ys.append(horizontal[i]), yv.append(v)
    if len(xs) < 2 or len(ys) < 2:
        raise ValueError("fewer than two labelled grid lines on an axis")
    ax, bx = np.polyfit(xs, xv, 1)
    yv_a = np.asarray(yv, dtype=np.float64)
    ratios = yv_a[1:] / yv_a[:-1] if np.all(yv_a > 0) else np.array([1.0])
    log_y = bool(np.all(yv_a > 0) and len(ratios) and np.allclose(ratios, ratios[0], rtol=1e-6) and ratios[0] > 1.5)
    ay, by = np.polyfit(ys, np.log10(yv_a) if log_y else yv_a, 1)
    legend = [(y, t) for x, y, t in texts if x > right and t.strip()]
    samples = [(c, float(p[0, 1])) for c, p in paths if c != _WHITE and len(p) == 2 and p[0, 0] > right]
    names: dict[tuple[float, ...], str] = {}
    for c, y in samples:
        if legend:
            names[c] = min(legend, key=lambda e: abs(e[0] - y))[1]
    pieces: dict[str, list[np.ndarray]] = {}
    for c, p in paths:  # a trace drawn in several pieces is joined
        if c != _WHITE and c in names and p[:, 0].min() >= left - 1 and p[:, 0].max() <= right + 1:
            pieces.setdefault(names[c], []).append(p)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, parts in pieces.items():
        p = np.concatenate(parts)
        p = p[np.argsort(p[:, 0], kind="stable")]
        y = ay * p[:, 1] + by
        out[name] = (ax * p[:, 0] + bx, 10 ** y if log_y else y)
    return out


def first_plotted(x: Sequence[float], y: Sequence[float], level: float, every: int = FIG_EVERY,
                  below: bool = True, log: bool = True) -> float:
    """The first checkpoint (a multiple of ``every``) at which a plotted polyline is below ``level``
    (at or above it when ``below`` is False), interpolating between its vertices in the plotted
    scale; inf when it never is."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    f = np.log10 if log else (lambda a: a)
    hit = np.flatnonzero(ya < level if below else ya >= level)
    if not len(hit):
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(every * round(xa[0] / every))
    y0, y1, lv = f(ya[i - 1]), f(ya[i]), f(level)
    cross = xa[i - 1] + (xa[i] - xa[i - 1]) * (y0 - lv) / (y0 - y1)
    return float(every * math.ceil(cross / every - 0.005))  # the figures' x is read to half an epoch


def _at(x: np.ndarray, y: np.ndarray, step: float) -> float:
    return float(10 ** np.interp(step, x, np.log10(y)))


def figure_milestones(loss: dict[str, tuple[np.ndarray, np.ndarray]],
                      excluded: dict[str, tuple[np.ndarray, np.ndarray]],
                      acc: dict[str, tuple[np.ndarray, np.ndarray]], every: int = FIG_EVERY) -> dict[str, float]:
    """The reference numbers from the curves of FIG_LOSS, FIG_EXCLUDED and FIG_ACC (as
    :func:`read_plotly_pdf` returns them), by the rules probe applies to its own runs."""
    ex, ey = excluded["excl_full"]
    low, peak = boundaries(ex, ey)
    tx, ty = excluded["train loss"]
    test_x, test_y = loss["test_loss"]
    rx, ry = loss["trig_loss"]
    ax_, ay_ = acc["test acc"]
    return {
        "memorisation_end": float(every * round(low / every)), "formation_end": float(every * round(peak / every)),
        "excluded_low": float(np.interp(low, ex, ey)), "excluded_peak": float(np.interp(peak, ex, ey)),
        "train_at_low": _at(tx, ty, low), "train_at_peak": _at(tx, ty, peak),
        "test_acc_0.99": first_plotted(ax_, ay_, 0.99, every, below=False, log=False),
        "test_loss_1": first_plotted(test_x, test_y, LOSS_LEVEL, every),
        "test_loss_0.1": first_plotted(test_x, test_y, 0.1, every),
        "restricted_1": first_plotted(rx, ry, LOSS_LEVEL, every),
    }


def key_frequencies(keys: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int, ...]:
    """The key frequencies named in FIG_KEYS's legend ("excl 14", ...)."""
    return tuple(sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"excl\s*(\d+)", k.strip()))))


SETTING = (
    Setting("task", "a + b mod 113, inputs [a, b, =] (= is token 113), all 12,769 ordered pairs (Config p 113, "
            "fn_name 'add')", TRAIN_CODE, "add, p = 113, tokens [a, b, =] (quick: p = 31)"),
    Setting("split", "random.seed(seed); random.shuffle(pairs); the first int(frac_train * 12,769) train; Config "
            "defaults frac_train 0.3 (3,830 pairs train, 8,939 test), seed 0. The released figures do not state "
            "the run's fraction", TRAIN_CODE, "train_fraction 0.3 (3,830 pairs), split_seed 0, seed 0 (quick: 0.7)",
            "another draw of the training pairs and initial weights: one run on each side"),
    Setting("block", "one layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm, learned positional "
            "embeddings; biases only in the MLP", TRAIN_CODE,
            "transformer, n_layers 1, d_model 128, n_heads 4, d_mlp 512, relu, layernorm false, head_bias false "
            "(quick: d_model 64, d_mlp 256)", "probe's attention biases (zero-initialised, decayed)"),
    Setting("head", "114 logits (the = token's too) at the last position; the progress measures use the 113 "
            "answer logits ([:, -1, :-1])", TRAIN_CODE, "113 answer logits at the last position",
            "the = class is absent from probe's training softmax"),
    Setting("optimizer", "AdamW lr 1e-3, weight_decay 1.0, betas (0.9, 0.98), LambdaLR min(step / 10, 1)",
            TRAIN_CODE, "adamw, lr 1e-3, weight_decay 1, betas (0.9, 0.98), warmup_steps 10"),
    Setting("batches", "full batch (the whole training set every epoch, batch_style 'full')", TRAIN_CODE,
            "full batch"),
    Setting("loss precision", "cross_entropy_high_precision: log_softmax of the logits cast to float32 (its comment "
            "speaks of float64)", HELPERS, "float64 cross-entropy, float64 in the progress measures",
            "a train loss near 1e-7 is not resolved by float32 log-softmax; the compared steps are far above it"),
    Setting("steps", "num_epochs 50,000 (Config default); the released figures run to epoch 39,900", TRAIN_CODE,
            "steps 40,000 (quick: 1,000)"),
    Setting("checkpoints", "save_every 100 epochs; take_metrics every 1,000 epochs (the released figures have a "
            "point every 100 epochs)", TRAIN_CODE, "a checkpoint every 100 steps (quick: 50), metrics every 10",
            "none at the paper scale (progress measures every 100 steps, as the figures)"),
    Setting("key frequencies", "calculate_key_freqs: each neuron's best frequency (share of its centred "
            "activation's variance in the 3x3 Fourier block of that frequency, k = 1..p//2 - 1), unique over all "
            "neurons, recomputed at every take_metrics; the released per-frequency figure uses one fixed set, "
            "14, 35, 41, 42, 52", TRAIN_CODE,
            "key_freqs --key-rule neurons (frequencies explaining >= 0.85 of some neuron's variance) at the "
            "final checkpoint, fixed for every checkpoint",
            "probe keeps only neurons above 0.85 (their unthresholded unique keeps weak neurons' frequencies) "
            "and fixes the set from the final model"),
    Setting("restricted loss", "calculate_trig_loss: the logits projected on cos/sin(w_k(a+b)) of the key "
            "frequencies over all p^2 inputs, the mean logit restored (test_logits bias_correction), loss on all "
            "pairs (mode 'all'; the figure's trig_loss)", TRAIN_CODE,
            "restricted_loss --convention nanda --loss-split all: the neurons' mean plus their cos/sin(w_k(a+b)) "
            "components, read out through W_out and W_U with the mean logit restored",
            "probe restricts the neurons (read out through W_out W_U), theirs the logits; the attention path's "
            "key-frequency part, which theirs keeps, is dropped"),
    Setting("excluded loss", "calculate_excluded_loss: the logits minus their cos/sin(w_k(a+b)) components, one "
            "value per key frequency, loss on the training pairs, no bias correction; the compared curve is the "
            "figure's excl_full ('Excluded Loss over all frequencies'), the components removed together",
            TRAIN_CODE, "excluded_loss (train split): every key frequency's cos/sin(w_k(a+b)) removed from the "
            "neurons at once, run through the rest of the network",
            "probe removes the key frequencies from the neurons rather than the logits; the released files do "
            "not say whether excl_full removes the five key frequencies or all 56"),
)


def _progress(sweep_dir: str) -> list[dict[str, Any]]:
    """Per finished run: its metric rows and its restricted and excluded losses per checkpoint."""
    from probe.analyses import compute
    from probe.sweep import load_sweep, read_status

    sw = load_sweep(sweep_dir)
    out = []
    for name in sw.names:
        rec = read_status(sw.root, name)
        if rec is None or rec.state != "done":
            continue
        with sw.run(name) as run:
            cfg, m = run.config, run.metrics
            keys = compute(run, "key_freqs", key_rule=KEY_RULE)
            res = compute(run, "restricted_loss", key_rule=KEY_RULE, convention="nanda", loss_split="all")
            exc = compute(run, "excluded_loss", key_rule=KEY_RULE)
        key_freqs = [int(k) for k in str(keys["key_freqs"].iloc[-1]).split(",") if k.strip()]
        out.append({"run": name, "p": int(cfg.p), "train_fraction": float(cfg.train_fraction),
                    "budget": int(cfg.steps), "metrics": m, "ckpt_step": res["step"].to_numpy(dtype=np.float64),
                    "restricted": res["restricted_loss"].to_numpy(dtype=np.float64),
                    "excluded": exc["excluded_loss"].to_numpy(dtype=np.float64), "key_freqs": key_freqs})
    return out


def boundaries(steps: Sequence[float], excluded: Sequence[float]) -> tuple[float, float]:
    """(end of memorisation, end of circuit formation): the step of the excluded loss's minimum at or
    before its peak, and the step of its peak."""
    steps = np.asarray(steps, dtype=np.float64)
    excluded = np.asarray(excluded, dtype=np.float64)
    if not len(steps):
        return math.nan, math.nan
    peak = int(np.nanargmax(excluded))
    low = int(np.nanargmin(excluded[: peak + 1]))
    return float(steps[low]), float(steps[peak])


def measures(r: dict[str, Any]) -> dict[str, Any]:
    """probe's numbers for one run, recomputed from its curves."""
    m = r["metrics"]
    ms = m["step"].to_numpy(dtype=np.float64)
    cs = r["ckpt_step"]
    mem_end, form_end = boundaries(cs, r["excluded"])
    by_step = m.set_index("step")

    def train_at(step: float) -> float:
        return float(by_step.loc[int(step), "train_loss"]) if math.isfinite(step) and int(step) in by_step.index \
            else math.nan

    acc = np.flatnonzero(m["val_acc"].to_numpy() >= 0.99)
    i_low = int(np.argmin(np.abs(cs - mem_end))) if math.isfinite(mem_end) else 0
    i_peak = int(np.argmin(np.abs(cs - form_end))) if math.isfinite(form_end) else 0
    return {
        "memorisation_end": mem_end, "formation_end": form_end,
        "test_acc_0.99": float(ms[acc[0]]) if len(acc) else math.inf,
        "test_loss_1": nf.first_below(m["val_loss"], LOSS_LEVEL, ms),
        "test_loss_0.1": nf.first_below(m["val_loss"], 0.1, ms),
        "restricted_1": nf.first_below(r["restricted"], LOSS_LEVEL, cs),
        "excluded_low": float(r["excluded"][i_low]) if len(cs) else math.nan,
        "excluded_peak": float(r["excluded"][i_peak]) if len(cs) else math.nan,
        "train_at_low": train_at(mem_end), "train_at_peak": train_at(form_end),
        "n_key_freqs": len(r["key_freqs"]), "key_freqs": ",".join(map(str, r["key_freqs"])),
    }


def _rises(v: dict[str, float]) -> tuple[float, bool]:
    """The excluded loss's rise from its minimum to its peak, and whether it counts (x RISE or more,
    the train loss not higher at the peak)."""
    ratio = v["excluded_peak"] / v["excluded_low"] if v["excluded_low"] > 0 else math.nan
    return ratio, bool(ratio >= RISE and v["train_at_peak"] <= v["train_at_low"])


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows per run: the phase boundaries, the steps to 99% test accuracy and to test loss 0.1 against
    the authors' run (read from their released figures), the orderings of those curves (restricted
    loss falls before test loss; excluded loss rises while train loss does not; test loss falls after
    the excluded loss's peak) and the number of key frequencies."""
    import pandas as pd

    progress = _progress(sweep_dir)
    rows: list[Row] = []
    records = []
    a = AUTHORS
    fig = f"{FIG_REPO} {{}} (commit {FIG_COMMIT[:7]})"
    src_ex, src_loss, src_acc, src_keys = (fig.format(f) for f in (FIG_EXCLUDED, FIG_LOSS, FIG_ACC, FIG_KEYS))
    for r in progress:
        v = measures(r)
        tag = f" ({r['run']})" if len(progress) > 1 else ""
        where = f"p = {r['p']}, fraction {r['train_fraction']:g}, budget {r['budget']:,}"

        def near(paper: float, ours: float, quantity: str, source: str) -> None:
            ok = math.isfinite(ours) and nf.steps_agree(paper, ours)
            rows.append(Row(quantity + tag, fmt_steps(paper), source, f"{fmt_steps(ours)} ({where})",
                            f"within a factor {FACTOR:g}", "agrees" if ok else "differs"))

        near(a["memorisation_end"], v["memorisation_end"], "end of memorisation: the excluded loss's minimum "
             "before its peak", src_ex)
        near(a["formation_end"], v["formation_end"], "end of circuit formation: the excluded loss's peak", src_ex)
        near(a["test_acc_0.99"], v["test_acc_0.99"], "steps to test accuracy >= 99%", src_acc)
        near(a["test_loss_0.1"], v["test_loss_0.1"], "steps to test loss < 0.1", src_loss)
        first = v["restricted_1"] < v["test_loss_1"]
        rows.append(Row("restricted loss falls below 1 before the test loss does" + tag,
                        f"yes: restricted < 1 at {fmt_steps(a['restricted_1'])}, test < 1 at "
                        f"{fmt_steps(a['test_loss_1'])}", src_loss,
                        f"restricted < 1 at {fmt_steps(v['restricted_1'])}, test < 1 at {fmt_steps(v['test_loss_1'])} "
                        f"({where})", "restricted first", "agrees" if first else "differs"))
        ratio, rises = _rises(v)
        a_ratio, _ = _rises(a)
        rows.append(Row("excluded loss rises during circuit formation while the train loss does not" + tag,
                        f"yes: excluded x{a_ratio:.1f} ({a['excluded_low']:.3g} at {fmt_steps(a['memorisation_end'])} "
                        f"to {a['excluded_peak']:.3g} at {fmt_steps(a['formation_end'])}); train loss "
                        f"{a['train_at_low']:.2g} to {a['train_at_peak']:.2g}", src_ex,
                        f"excluded x{ratio:.2f} ({v['excluded_low']:.3g} at {fmt_steps(v['memorisation_end'])} to "
                        f"{v['excluded_peak']:.3g} at {fmt_steps(v['formation_end'])}); train loss "
                        f"{v['train_at_low']:.2g} to {v['train_at_peak']:.2g}",
                        f"excluded loss x{RISE:g} or more, train loss not higher at the peak",
                        "agrees" if rises else "differs"))
        after = math.isfinite(v["test_loss_0.1"]) and v["test_loss_0.1"] >= v["formation_end"]
        rows.append(Row("test loss falls below 0.1 after the excluded loss's peak" + tag,
                        f"yes: test < 0.1 at {fmt_steps(a['test_loss_0.1'])}, peak at {fmt_steps(a['formation_end'])}",
                        f"{src_loss}; {src_ex}",
                        f"test < 0.1 at {fmt_steps(v['test_loss_0.1'])}, peak at {fmt_steps(v['formation_end'])}",
                        "at or after the peak", "agrees" if after else "differs"))
        rows.append(Row("number of key frequencies" + tag,
                        f"{len(AUTHORS_KEY_FREQS)} ({', '.join(map(str, AUTHORS_KEY_FREQS))})", src_keys,
                        f"{v['n_key_freqs']} ({v['key_freqs']}; rule {KEY_RULE})", "the same number",
                        "agrees" if v["n_key_freqs"] == len(AUTHORS_KEY_FREQS) else "differs"))
        records.append({"run": r["run"], "p": r["p"], "train_fraction": r["train_fraction"], "budget": r["budget"],
                        **v})
    runs = pd.DataFrame(records)
    return Analysis(tuple(rows), runs, {"progress": progress, "scale": scale})


def draw(analysis: Analysis) -> "Figure":
    """The released figures' layout for the first run: excluded loss beside train and test loss (left),
    restricted loss beside them (right), log scale; probe's phase boundaries dashed, the authors'
    (1,300 and 10,300, read from their figure) dotted where they fall inside the run."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    progress = analysis.extra["progress"]
    if not progress:
        for ax in axes:
            ax.text(0.5, 0.5, "no finished run", ha="center", transform=ax.transAxes)
        return fig
    r = progress[0]
    m = r["metrics"]
    v = measures(r)
    panels = ((axes[0], "excluded", "Excluded loss", "C3"), (axes[1], "restricted", "Restricted loss", "C2"))
    for ax, key, label, colour in panels:
        ax.plot(r["ckpt_step"], np.maximum(r[key], 1e-12), color=colour, label=label)
        ax.plot(m["step"], np.maximum(m["train_loss"], 1e-12), color="C0", linewidth=0.8, label="Train loss")
        ax.plot(m["step"], np.maximum(m["val_loss"], 1e-12), color="C1", linewidth=0.8, label="Test loss")
        for s in (v["memorisation_end"], v["formation_end"]):
            if math.isfinite(s):
                ax.axvline(s, color="0.3", linestyle="--", linewidth=0.8)
        for s in (AUTHORS["memorisation_end"], AUTHORS["formation_end"]):
            if s <= r["budget"]:
                ax.axvline(s, color="0.6", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("step (full-batch epoch)")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_title(f"{label_of(r)}: excluded loss (dashed: probe's phase boundaries)", fontsize=9)
    axes[1].set_title(f"restricted loss (key frequencies {v['key_freqs']}; dotted: the authors')", fontsize=9)
    return fig


def label_of(r: dict[str, Any]) -> str:
    return f"p = {r['p']}, fraction {r['train_fraction']:g}"


reproduction(Reproduction(
    name="nanda-restricted",
    paper="Nanda, Chan, Lieberum, Smith, Steinhardt 2023, Progress measures for grokking via mechanistic "
          "interpretability (ICLR)",
    figure="the progress measures over training: excluded and restricted loss beside train and test loss, and "
           "the phases they delimit (the authors' figures trig_loss, excluded_loss_2D_full, excluded_acc_2D_full)",
    artefact=Artefact(FIG_REPO, FIG_COMMIT, "figs/",
                      f"the first author's figures of the run, plotly PDFs whose curves are read back by "
                      f"read_plotly_pdf: {FIG_LOSS} (test, train and restricted loss), {FIG_EXCLUDED} (excluded "
                      f"loss), {FIG_ACC} (test accuracy), {FIG_KEYS} (key frequencies 14, 35, 41, 42, 52); the "
                      f"code that computes the measures is {REPO} {TRAIN_CODE} (commit {CODE_COMMIT[:7]})"),
    trains="the one-layer transformer on addition mod 113 at training fraction 0.3 (nanda-modadd), one run with a "
           "checkpoint every 100 steps, its restricted and excluded losses at every checkpoint",
    setting=SETTING,
    scales={
        "quick": Scale("quick", _spec(QUICK_P, QUICK_FRACTION, QUICK_STEPS, 50, QUICK_MODEL), "14 s (--jobs 1)",
                       "p = 31, d_model 64, d_mlp 256, fraction 0.7, 1,000 steps, a checkpoint every 50: the "
                       "restricted loss falls below 1 long before the test loss (150 against 690 steps) and the "
                       "excluded loss rises x2.7 from its minimum while the train loss falls; the step counts are "
                       "far below the authors' (a smaller problem), and the excluded loss is still rising at the "
                       "end of the budget"),
        "paper": Scale("paper", _spec(nf.P, 0.3, PAPER_STEPS, 100),
                       "1 h 57 min (--jobs 1, one core, beside other work; about 9 steps/s alone)",
                       "p = 113, fraction 0.3, 40,000 steps, a checkpoint every 100 steps (401), restricted and "
                       "excluded loss at each (29 s for all 401 with the batched passes)"),
    },
    analyse=analyse,
    draw=draw,
    claims=("the restricted loss falls below 1 before the test loss does (the authors' run: epoch 6,000 against "
            "9,900)",
            "the excluded loss rises from its minimum (epoch 1,300) to its peak (10,300) while the train loss stays "
            "below 1e-6, and the test loss falls below 0.1 only after that peak (10,400)"),
))
