"""probe reproduce prieto-softmax-collapse (docs/design.md, "Reproductions"): the numbers read off the
authors' released figures, the quick scale end to end (golden: float32 softmax overfits and collapses,
StableMax does not collapse, ⊥Grad generalises), and rows recomputed from the runs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import probe.reproduce.prieto_softmax_collapse as m  # registers it (until the catalogue lists it)
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.train.sweep import iter_grid, parse_spec

NAME = "prieto-softmax-collapse"


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction(NAME)


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction(NAME)
    assert rec.artefact.commit == m.COMMIT and rec.artefact.path == m.PLOTS
    assert {s.authors_file for s in rec.setting} == {m.DATASETS, m.UTILS, m.MODELS, m.PLOTS, m.ORTHO, m.TRAIN,
                                                     m.LOGGER}
    model = next(s for s in rec.setting if s.setting == "model")
    assert "bias=False" in model.authors and model.difference


def test_both_scales_train_the_four_runs():
    for scale, p in (("quick", m.QUICK_P), ("paper", m.P)):
        spec = parse_spec(get_reproduction(NAME).scales[scale].spec)
        cfgs = [pt.config for pt in iter_grid(spec)]
        assert [m.kind_of(c) for c in cfgs] == list(m.RUNS)
        assert all(c.p == p and c.weight_decay == 0 for c in cfgs)
    paper = [pt.config for pt in iter_grid(parse_spec(get_reproduction(NAME).scales["paper"].spec))]
    assert [c.steps for c in paper] == list(m.PAPER_STEPS) and all(c.n_train == m.N_TRAIN for c in paper)
    assert [c.lr for c in paper] == [5e-4, 0.01, 0.01, 0.01] and paper[2].betas == (0.9, 0.999)
    assert paper[1].softmax == "stablemax" and paper[1].softmax_dtype == "float64"


def test_the_reference_numbers_are_the_released_ones():
    assert m.fig1a_first(0.5) == (35000, 0.52, 0.294) and m.fig1a_first(0.9)[0] == 50000
    assert (m.fig1b_first(2, 0.5), m.fig1b_first(2, 0.9), m.fig1b_first(1, 0.9)) == (100, 110, 100)
    assert len(m.FIG1A_TEST) == 16 and max(m.FIG1A_TEST[:7]) < 0.3 and m.FIG1A_TEST[-1] == 0.985
    assert m.FIG2A_COLLAPSE["float32"] == 11500 and all(v % 500 == 0 for v in m.FIG2A_COLLAPSE.values())
    assert m.N_TRAIN == int(0.4 * m.P**2) and m.AUTHORS_NORM_INIT == pytest.approx(13.08, abs=0.01)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": NAME, "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 13
    assert all(m.REPO in s or m.PAPER in s for s in table["source"])
    runs = pd.read_csv(out / "runs.csv").set_index("kind")
    assert list(runs.index) == list(m.RUNS)
    # the claims: softmax without weight decay overfits (float32 with a collapsing share of samples);
    # StableMax keeps every loss positive while its norm grows; ⊥Grad generalises
    for kind in ("softmax-float32", "softmax-float64"):
        assert runs.loc[kind, "final_train"] == 1.0 and runs.loc[kind, "final_val"] < m.STALLED
    assert runs.loc["softmax-float32", "max_zero_loss"] > m.COLLAPSE_SHARE
    assert runs.loc["softmax-float64", "max_zero_loss"] == 0
    assert runs.loc["stablemax", "max_zero_loss"] == 0
    assert runs.loc["stablemax", "norm_final"] > 2 * runs.loc["stablemax", "norm_init"]
    assert runs.loc["orthograd", "final_val"] > 0.9 and runs.loc["orthograd", "max_zero_loss"] == 0
    assert math.isinf(runs.loc["softmax-float32", "val_step_05"])


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """A sweep of one ⊥Grad run stopped at 300 steps: the ⊥Grad rows change with the run (validation 0.9
    not reached), the authors' side stays, and the other runs' rows are absent."""
    from probe.train.sweep import ExecutorOptions, run_sweep

    _, res = quick
    spec = ("preset: kitouni-mlp\nset: {p: 31, train_fraction: 0.7, weight_decay: 0.0, lr: 0.01, "
            "orthogonal_grad: true, softmax_dtype: float32, betas: [0.9, 0.999], eps: 1.0e-08, "
            "checkpoint.schedule: geometric, checkpoint.count: 5, checkpoint.metrics_every: 10}\n"
            "grid:\n  steps: [300]\n")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert [r.quantity for r in changed.rows] == [q for q in before if q.startswith("⊥AdamW")]
    r09 = next(r for r in changed.rows if r.quantity == "⊥AdamW: first step with validation accuracy >= 0.9")
    assert r09.paper == before[r09.quantity].paper and r09.probe != before[r09.quantity].probe
    assert r09.probe.startswith("never") and r09.verdict == "differs"
