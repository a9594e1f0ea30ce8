"""Zhong et al. 2023's phase diagram over attention rate (and width): distance irrelevance and gradient
symmetricity of one-layer runs across attention rates at width 128 (``result/1l_fixedwidth.svg``) and
across rates and widths (``result/1l_varywidth.svg``), probe's runs against the released runs' spread in
each bin (docs/reproductions/zhong-phase/README.md; the metrics, the released tables and the bins:
:mod:`probe.reproduce.zhong`).

The released figures colour every drawn run continuously by gradient symmetricity (and distance
irrelevance); they have no binary pizza/clock rule, so probe's figure colours the same way, and each row
compares one of probe's runs (or the median of the runs in a bin) with the 10th-90th percentile band of
the released runs in that bin. As in the figures, only runs with circularity above 0.995 are compared.
"""

from __future__ import annotations

import math
from statistics import median
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.reproduce import zhong as z
from probe.reproduce.registry import Analysis, Artefact, Reproduction, Row, Scale, reproduction

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FIXED_RATES = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]  # one run per released bin
VARY_RATES = [0.1, 0.3, 0.5, 0.7, 0.9]
VARY_WIDTHS = [32, 64, 256]  # width 128's cells are filled by the fixed-width runs
PAPER_STEPS = 20_000
QUICK_WIDTH, QUICK_STEPS, QUICK_RATES = 32, 2000, [0.1, 0.9]
COLUMNS = (("gradient_symmetricity", "gradient symmetricity", 2), ("di_top_incorrect", "distance irrelevance", 1))


def _paper_spec() -> str:
    fixed = z.spec(FIXED_RATES, [128], PAPER_STEPS, [0])
    vary = z.spec(VARY_RATES, VARY_WIDTHS, PAPER_STEPS, [0])

    def axes(text: str) -> dict[str, str]:
        return {line.split(":")[0].strip(): line.split(":", 1)[1].strip()[1:-1]
                for line in text.splitlines() if line.startswith("  ")}

    a, b = axes(fixed), axes(vary)
    head = fixed.split("zip:")[0]
    return head + "zip:\n" + "".join(f"  {k}: [{a[k]}, {b[k]}]\n" for k in a)


def _drawn(runs: "pd.DataFrame") -> "pd.DataFrame":
    """The runs the released figures would draw: circularity above 0.995."""
    return runs[runs["circularity"] > z.CIRCULAR]


def _band_row(quantity: str, values: list[float], band: tuple[float, float, float], n: int, source: str,
              total: int) -> Row:
    if not values:
        return Row(quantity, z.band_text(band, n), source,
                   f"no run with circularity > {z.CIRCULAR} ({total} trained)", "inside the released runs' 10-90% band",
                   "differs")
    ours = median(values)
    shown = f"{ours:.3f}" + (f" (median of {len(values)} runs)" if len(values) > 1 else "")
    return Row(quantity, z.band_text(band, n), source, shown, "inside the released runs' 10-90% band",
               "agrees" if z.within(ours, band) else "differs")


def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Rows per released bin that probe has runs in (width 128: the fixed-width table's 0.1-wide rate bins;
    every width: the varying-width table's width octave x 0.2-wide rate cells), and the correlation of the
    attention rate with both metrics over the drawn width-128 runs; recomputed from the runs every time."""
    runs = z.run_table(sweep_dir)
    drawn = _drawn(runs)
    rows: list[Row] = []
    fixed_src = f"{z.REPO} {z.FIXED_CSV} (drawn in {z.FIXED_SVG})"
    vary_src = f"{z.REPO} {z.VARY_CSV} (drawn in {z.VARY_SVG})"
    at128 = runs[runs["d_model"] == 128]
    for b in sorted({z.fixed_bin(r) for r in at128["attention_rate"]}):
        n, di, gs = z.FIXED_BINS[b]
        total = int(sum(z.fixed_bin(r) == b for r in at128["attention_rate"]))
        sel = drawn[(drawn["d_model"] == 128) & (drawn["attention_rate"].map(z.fixed_bin) == b)]
        for col, name, k in COLUMNS:
            band = gs if k == 2 else di
            rows.append(_band_row(f"{name}, width 128, attention rate {b / 10:.1f}-{(b + 1) / 10:.1f}",
                                  [float(v) for v in sel[col]], band, n, fixed_src, total))
    cells = sorted({c for c in (z.vary_cell(int(w), float(r)) for w, r in zip(runs["d_model"], runs["attention_rate"]))
                    if c is not None})
    for cell in cells:
        n, di, gs = z.VARY_BINS[cell]
        width, j = cell

        def in_cell(frame: "pd.DataFrame") -> "pd.Series":
            return frame.apply(lambda r: z.vary_cell(int(r["d_model"]), float(r["attention_rate"])) == cell, axis=1)

        total = int(in_cell(runs).sum())
        sel = drawn[in_cell(drawn)] if len(drawn) else drawn
        for col, name, k in COLUMNS:
            band = gs if k == 2 else di
            rows.append(_band_row(f"{name}, width {width}-{2 * width - 1}, attention rate {j / 5:.1f}-{(j + 1) / 5:.1f}",
                                  [float(v) for v in sel[col]], band, n, vary_src, total))
    fixed_drawn = drawn[drawn["d_model"] == 128]
    if len(fixed_drawn) >= 3:
        for col, name, _ in COLUMNS:
            theirs = z.AUTHORS_CORR[col]
            ours = float(np.corrcoef(fixed_drawn["attention_rate"], fixed_drawn[col])[0, 1])
            ok = not math.isnan(ours) and np.sign(ours) == np.sign(theirs) and abs(ours) >= 0.5
            rows.append(Row(f"correlation of attention rate with {name}, width 128 (Pearson)", f"{theirs:+.3f} "
                            "(817 drawn runs)", fixed_src, f"{ours:+.3f} ({len(fixed_drawn)} drawn runs)",
                            "the same sign, |r| >= 0.5", "agrees" if ok else "differs"))
    return Analysis(tuple(rows), runs, {"scale": scale})


def _cmap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("pizza", ["#ffffff", "#f28807", "#db3c14"])  # the released figures'


def draw(analysis: Analysis) -> "Figure":
    """Laid out like the released figures: attention rate against distance irrelevance coloured by gradient
    symmetricity, and against gradient symmetricity coloured by distance irrelevance (width 128); attention
    rate against width coloured by gradient symmetricity. The released runs' bins as grey bands (10-90%)
    and medians; probe's runs as large points (hollow: not drawn by the authors' filter)."""
    from probe.analyses import plots

    plt = plots._plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    runs = analysis.runs
    cmap = _cmap()
    at128 = runs[runs["d_model"] == 128]
    for ax, (col, name, k), (ccol, cname, _) in ((axes[0], COLUMNS[1], COLUMNS[0]), (axes[1], COLUMNS[0], COLUMNS[1])):
        for b, (n, di, gs) in z.FIXED_BINS.items():
            band = gs if k == 2 else di
            ax.fill_between([b / 10, (b + 1) / 10], band[0], band[2], color="0.85", lw=0)
            ax.plot([b / 10, (b + 1) / 10], [band[1], band[1]], color="0.45", lw=1.2)
        if len(at128):
            circ = at128["circularity"] > z.CIRCULAR
            sc = ax.scatter(at128["attention_rate"], at128[col], c=at128[ccol], cmap=cmap, vmin=0, vmax=1, s=70,
                            edgecolors="black", linewidths=np.where(circ, 0.8, 1.6))
            fig.colorbar(sc, ax=ax, orientation="horizontal", location="top", label=cname, shrink=0.8)
        ax.set_xlabel("attention rate")
        ax.set_ylabel(name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    ax = axes[2]
    for (width, j), (n, di, gs) in z.VARY_BINS.items():
        ax.add_patch(plt.Rectangle((j / 5, math.log2(width)), 0.2, 1, color=cmap(gs[1]), ec="white", lw=1))
    if len(runs):
        sc = ax.scatter(runs["attention_rate"], np.log2(runs["d_model"]) + 0.5, c=runs["gradient_symmetricity"],
                        cmap=cmap, vmin=0, vmax=1, s=70, edgecolors="black")
        fig.colorbar(sc, ax=ax, orientation="horizontal", location="top",
                     label="gradient symmetricity (squares: released median per cell)", shrink=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(5, 9)
    ax.set_yticks([5, 6, 7, 8, 9], ["32", "64", "128", "256", "512"])
    ax.set_xlabel("attention rate")
    ax.set_ylabel("model width")
    fig.suptitle(f"The Clock and the Pizza: phase over attention rate and width, {analysis.extra['scale']} scale "
                 "(grey: released runs' 10-90% band and median per bin)", fontsize=10)
    return fig


reproduction(Reproduction(
    name="zhong-phase",
    paper="Zhong, Liu, Tegmark, Andreas 2023, The Clock and the Pizza: Two Stories in Mechanistic Explanation of "
          "Neural Networks (NeurIPS; arXiv 2306.17844)",
    figure="the phase diagrams over attention rate at width 128 and over attention rate and width "
           f"({z.FIXED_SVG}, {z.VARY_SVG}, the paper's phase-transition figures)",
    artefact=Artefact(z.REPO, z.COMMIT, f"{z.FIXED_CSV}, {z.VARY_CSV}",
                      "metrics of every one-layer run of the two phase diagrams (817 and 466 drawn runs)"),
    trains="one-layer transformers in their setting (the zhong-pizza preset) at 10 attention rates at width 128 "
           "and 5 rates at widths 32, 64 and 256",
    setting=z.SETTING,
    scales={
        "quick": Scale("quick", z.spec(QUICK_RATES, [QUICK_WIDTH], QUICK_STEPS, [0]),
                       "92 s (--jobs 1, measured beside two other training processes)",
                       f"two rates ({', '.join(map(str, QUICK_RATES))}) at width {QUICK_WIDTH}, {QUICK_STEPS:,} "
                       "steps: the two sides of the transition against the released width-32 cells"),
        "paper": Scale("paper", _paper_spec(), "unmeasured",
                       f"their setting ({PAPER_STEPS:,} full-batch steps): rates {FIXED_RATES} at width 128 and "
                       f"{VARY_RATES} at widths {VARY_WIDTHS}, one seed each (25 runs); the rates at one width "
                       "train as one ensemble: 65 ms per member and step at width 128 (5 members, one core, "
                       "100 steps) against 82 ms for one run, so the 10 width-128 runs take about 3.6 h of one "
                       "core (about 1.8 h with --jobs 2); the 15 runs at the other widths are not timed"),
    },
    analyse=analyse,
    draw=draw,
    claims=("gradient symmetricity stays near 0.99 (pizza) up to an attention rate of about 0.5 and falls "
            "beyond it (clock); distance irrelevance rises with the rate",
            "wider models stay pizza up to higher attention rates"),
))
