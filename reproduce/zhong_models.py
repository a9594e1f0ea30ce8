"""Zhong et al. 2023, Model A (pizza, attention rate 0) and Model B (clock, attention rate 1): distance
irrelevance, gradient symmetricity and circularity of probe's runs in their setting against the values
of their released models (docs/reproductions/zhong-models/README.md; the metrics and the released files:
:mod:`probe.reproduce.zhong`).

Each model is one unseeded run of theirs; probe trains seeds 0, 1, 2 of each and compares the median
with the released model's value, within the spread (10th-90th percentile) of all their released runs at
that attention rate (``result/1l_fixedwidth.csv``, rate bins [0, 0.1) and [0.9, 1)), for the columns that
table has (distance irrelevance of the largest other logit, gradient symmetricity). The notebook's
distance irrelevance of the correct logit has no released spread; its tolerance is the width of that
band around the model's value (stated in the row). The figures draw only runs with circularity above
0.995, and the bands above are of those; probe's seeds are not filtered, so each measure is also
compared with the spread of all their runs at that rate (:data:`probe.reproduce.zhong.FIXED_ALL`, no
filter: circularity included), and the number of probe's seeds that pass the filter with the share of
theirs that do (38% at rate 0, 34% at rate 1), within the central 90% of the binomial.
"""

from __future__ import annotations

from statistics import median
from typing import TYPE_CHECKING

from probe.reproduce import zhong as z
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, reproduction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

QUICK_WIDTH, QUICK_STEPS = 32, 2000
PAPER_STEPS = 20_000
SEEDS = [0, 1, 2]
MODELS = ((z.MODEL_A, "Model A (pizza)"), (z.MODEL_B, "Model B (clock)"))


def _rows_for(model: str, label: str, runs: "object") -> list[Row]:
    import pandas as pd

    assert isinstance(runs, pd.DataFrame)
    rate = z.MODEL_RATES[model]
    ours = runs[runs["attention_rate"] == rate]
    if not len(ours):
        return []
    theirs = z.AUTHORS_MODELS[model]
    n_bin, di_band, gs_band = z.FIXED_BINS[z.fixed_bin(rate)]
    src = z.MODEL_SOURCES[model]
    where = f"{label}, attention rate {rate:g}"
    per_run = {col: [float(v) for v in ours[col]] for col in ("di_correct", "di_top_incorrect",
                                                              "gradient_symmetricity", "circularity")}

    def show(col: str) -> str:
        values = per_run[col]
        return f"{median(values):.4f} (seeds: {', '.join(f'{v:.4f}' for v in values)})"

    rows = []
    for col, name, band in (("di_top_incorrect", "distance irrelevance (largest other logit, as the CSVs)", di_band),
                            ("gradient_symmetricity", "gradient symmetricity (100 triples, as the notebook)", gs_band)):
        ours_v = median(per_run[col])
        rows.append(Row(f"{name}, {where}", f"{theirs[col]:.4f}; released runs at rate bin: {z.band_text(band, n_bin)}",
                        f"{src}; {z.REPO} {z.FIXED_CSV}", show(col),
                        "inside the released runs' 10-90% band at that rate",
                        "agrees" if z.within(ours_v, band) else "differs"))
    half = (di_band[2] - di_band[0]) / 2
    ours_v = median(per_run["di_correct"])
    rows.append(Row(f"distance irrelevance (correct logit, as the notebook), {where}", f"{theirs['di_correct']:.4f}",
                    src, show("di_correct"), f"within {half:.3f} (half the released band of the other logit's)",
                    "agrees" if abs(ours_v - theirs["di_correct"]) <= half else "differs"))
    # against all their runs at that rate, before the figures' circularity filter (probe's seeds are not
    # filtered either): the spread of each measure, and how many runs pass the filter
    n_all, n_circ, *bands = z.FIXED_ALL[z.fixed_bin(rate)]
    all_src = f"{z.REPO} {z.FIXED_CSV} (all {n_all} one-layer runs at rate bin {z.fixed_bin(rate) / 10:g}-" \
              f"{(z.fixed_bin(rate) + 1) / 10:g}, no circularity filter)"
    for col, name, band in zip(("di_top_incorrect", "gradient_symmetricity", "circularity"),
                               ("distance irrelevance (largest other logit)", "gradient symmetricity",
                                "circularity (4 principal components, as the notebook)"), bands):
        ours_v = median(per_run[col])
        rows.append(Row(f"{name} against all released runs at that rate, {where}",
                        f"{theirs[col]:.4f}; all released runs: {z.band_text(band, n_all)}", f"{src}; {all_src}",
                        show(col), "inside their 10-90% band", "agrees" if z.within(ours_v, band) else "differs"))
    hits = sum(v > z.CIRCULAR for v in per_run["circularity"])
    share = n_circ / n_all
    rows.append(Row(f"runs with circularity above {z.CIRCULAR} (the figures' filter), {where}",
                    f"{n_circ}/{n_all} = {share:.2f}", all_src, f"{hits}/{len(per_run['circularity'])}",
                    f"within the central 90% of binomial({len(per_run['circularity'])}, {share:.2f})",
                    "agrees" if z.binomial_consistent(hits, len(per_run["circularity"]), share) else "differs"))
    return rows


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per model: the four numbers over probe's seeds at the last step, against the released model's and
    the released runs' spread at that attention rate; recomputed from the runs every time."""
    runs = z.run_table(sweep_dir)
    rows: list[Row] = []
    for model, label in MODELS:
        rows.extend(_rows_for(model, label, runs))
    if len(runs):
        pizza = runs[runs["attention_rate"] == 0.0]["gradient_symmetricity"]
        clock = runs[runs["attention_rate"] == 1.0]["gradient_symmetricity"]
        if len(pizza) and len(clock):
            a, b = median(pizza), median(clock)
            rows.append(Row("Model A's gradient symmetricity above Model B's (pizza vs clock)",
                            f"yes ({z.AUTHORS_MODELS[z.MODEL_A]['gradient_symmetricity']:.3f} vs "
                            f"{z.AUTHORS_MODELS[z.MODEL_B]['gradient_symmetricity']:.3f})",
                            z.MODEL_SOURCES[z.MODEL_A], f"{'yes' if a > b else 'no'} ({a:.3f} vs {b:.3f})",
                            "the same order", "agrees" if a > b else "differs"))
    return Analysis(tuple(rows), runs, {"scale": scale})


def draw(analysis: Analysis) -> "Figure":
    """Distance irrelevance against gradient symmetricity (the paper's two axes of pizza vs clock): the
    released models as stars, their released runs' bands at rates 0 and 1 as boxes, probe's seeds as
    circles; coloured by attention rate."""
    from matplotlib.patches import Rectangle

    from probe.analyses import plots

    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.8), constrained_layout=True)
    colours = {0.0: "#1f77b4", 1.0: "#d62728"}
    for model, label in MODELS:
        rate = z.MODEL_RATES[model]
        n, di, gs = z.FIXED_BINS[z.fixed_bin(rate)]
        ax.add_patch(Rectangle((gs[0], di[0]), gs[2] - gs[0], di[2] - di[0], alpha=0.15, color=colours[rate],
                               label=f"released runs, rate bin of {rate:g} (10-90%, {n} runs)"))
        v = z.AUTHORS_MODELS[model]
        ax.plot(v["gradient_symmetricity"], v["di_top_incorrect"], "*", ms=14, color=colours[rate],
                mec="black", label=f"authors' {label}")
    runs = analysis.runs
    for rate, g in runs.groupby("attention_rate"):
        ax.plot(g["gradient_symmetricity"], g["di_top_incorrect"], "o", ms=7, mfc="none", mew=1.6,
                color=colours.get(float(rate), "grey"), label=f"probe, rate {float(rate):g} ({len(g)} seeds)")
    ax.set_xlabel("gradient symmetricity")
    ax.set_ylabel("distance irrelevance (largest other logit)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.set_title(f"The Clock and the Pizza: Model A and B, {analysis.extra['scale']} scale", fontsize=10)
    return fig


reproduction(Reproduction(
    name="zhong-models",
    paper="Zhong, Liu, Tegmark, Andreas 2023, The Clock and the Pizza: Two Stories in Mechanistic Explanation of "
          "Neural Networks (NeurIPS; arXiv 2306.17844)",
    figure="Model A (pizza, attention rate 0) and Model B (clock, rate 1): distance irrelevance, gradient "
           "symmetricity, circularity",
    artefact=Artefact(z.REPO, z.COMMIT, f"code/save/model_{z.MODEL_A}.pt, code/save/model_{z.MODEL_B}.pt, "
                      f"{z.NOTEBOOK}, {z.FIXED_CSV}",
                      "the saved Model A and B (their metrics: the notebook's printed outputs for A, its code run "
                      "here for B) and the released one-layer runs' metrics per attention rate"),
    trains="the zhong-pizza and zhong-clock presets (one-layer transformer, addition mod 59, attention rate 0 and "
           "1), three seeds each",
    setting=z.SETTING,
    scales={
        "quick": Scale("quick", z.spec([0.0, 1.0], [QUICK_WIDTH], QUICK_STEPS, [0]),
                       "about 90 s (--jobs 1, measured beside two other training processes)",
                       f"one seed per model at width {QUICK_WIDTH} and {QUICK_STEPS:,} steps: the pizza/clock "
                       "contrast of the two rates (the rows against the width-128 models are computed, and may "
                       "differ at this size)"),
        "paper": Scale("paper", z.spec([0.0, 1.0], [128], PAPER_STEPS, SEEDS),
                       "1 h 10 min (--jobs 2: two vectorised ensembles of three runs, one per core, beside other work)",
                       f"their setting (width 128, {PAPER_STEPS:,} full-batch steps), seeds {SEEDS} per model"),
    },
    analyse=analyse,
    draw=draw,
    claims=("attention rate 0 gives a pizza: high gradient symmetricity (about 0.99), low distance irrelevance",
            "attention rate 1 gives a clock: low gradient symmetricity, distance irrelevance near 1"),
))
