"""probe reproduce varma-dcrit (docs/design.md, "Reproductions"): memorising and generalising networks
at several dataset sizes, every one at one parameter norm; the quick scale end to end (golden: the
memorising efficiency falls, the generalising one stays flat, and they cross between the sizes trained),
rows recomputed from the runs, and the pieces that set varma-ungrokking beside D_crit."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.varma_dcrit as m  # registers the reproduction
from probe.analyses.circuits import CriticalSize
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.train.sweep import parse_spec

REPRODUCTION = "varma-dcrit"


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction(REPRODUCTION)


def test_registered_with_the_papers_sections_as_sources():
    rec = get_reproduction(REPRODUCTION)
    assert rec.artefact.repository == m.REPO
    assert all(s.authors_file.startswith("arXiv 2309.02390") for s in rec.setting)
    for scale, mem, gen, seeds in (("quick", m.QUICK_MEM, m.QUICK_GEN, m.QUICK_SEEDS),
                                   ("paper", m.PAPER_MEM, m.PAPER_GEN, m.PAPER_SEEDS)):
        spec = parse_spec(rec.scales[scale].spec)
        axes = {k: [v[i] for v in a.values] for a in spec.axes for i, k in enumerate(a.keys)}
        assert axes["labels"] == ["shuffled"] * len(mem) + ["task"] * len(gen)
        assert axes["n_train"] == [*mem, *gen] and axes["seed"] == seeds
        assert "constraint.norm" in spec.fixed and spec.fixed.get("weight_decay") == 0.0
    assert "preset: nanda-modadd" in rec.scales["paper"].spec


def test_quick_scale_golden(quick):
    out, res = quick
    assert json.loads((out / RECORD).read_text()) == {"reproduction": REPRODUCTION, "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 4
    assert set(table["verdict"]) == {"agrees"}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 12 and runs["norm"].to_numpy() == pytest.approx(m.QUICK_NORM, rel=1e-5)
    mem = runs[runs["circuit"] == "memorising"].groupby("size")["logit_scale"].median()
    gen = runs[runs["circuit"] == "generalising"].groupby("size")["logit_scale"].median()
    assert list(mem.index) == m.QUICK_MEM and np.all(np.diff(mem.to_numpy()) < 0)  # falls with the size
    assert list(gen.index) == m.QUICK_GEN and gen.max() / gen.min() < m.FLAT  # flat
    est = res.analysis.extra["estimate"]
    assert est.crossed == 2 and 240 < est.low <= est.estimate <= est.high < 400  # crosses between the sizes
    assert est == m.stage_estimate(out / "sweep")  # the same estimate from the sweep alone


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """Take away the generalising runs at 400 pairs: the generalising efficiency is then measured at one
    size only, so its row differs and reads otherwise."""
    out, res = quick
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for status in (copy / "sweep" / "status").glob("labels=task__n_train=400__*.json"):
        status.unlink()
    again = m.analyse(str(copy / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    after = {r.quantity: r for r in again.rows}
    key = "generalising circuit: efficiency against dataset size"
    assert before[key].verdict == "agrees" and after[key].verdict == "differs"
    assert "fewer than two sizes" in after[key].probe and after[key].paper == before[key].paper
    assert len(again.runs) == 10


def test_the_d_crit_stage_spec():
    stage = m.dcrit_stage("preset: kitouni-mlp-comprehension\nset: {weight_decay: 0.0, constraint.norm: 35.0}",
                          [84, 250, 750], [1685], [0, 1])
    assert stage.name == "dcrit"
    spec = parse_spec(stage.spec)
    axes = {k: [v[i] for v in a.values] for a in spec.axes for i, k in enumerate(a.keys)}
    assert axes["labels"] == ["shuffled"] * 3 + ["task"] and axes["n_train"] == [84, 250, 750, 1685]


def _estimate(low: float, mid: float, high: float) -> CriticalSize:
    return CriticalSize((100.0, 1000.0), (0, 1, 2), (low, mid, high), ("inside",) * 3, mid, low, high)


def test_the_transition_rule():
    """Linear in log size between the two trained sizes around the level, in any order; NaN when the
    accuracy never rises through it (varma-ungrokking's middling-accuracy crossing uses the same rule)."""
    sizes, acc = np.array([100, 400, 1600]), np.array([0.0, 0.5, 0.9])
    assert m.ungrokking_transition(sizes, acc, 0.7)[0] == pytest.approx(800.0)  # halfway in log size, 400 to 1,600
    assert math.isnan(m.ungrokking_transition(sizes, np.array([0.0, 0.1, 0.2]), 0.7)[0])
    assert math.isnan(m.ungrokking_transition(sizes, np.array([0.8, 0.9, 1.0]), 0.7)[0])
    assert m.ungrokking_transition(sizes[::-1], acc[::-1], 0.7)[0] == pytest.approx(800.0)
    assert m.ungrokking_transition(sizes, acc, 0.7)[1:] == (400.0, 1600.0)


def test_ungrokking_beside_d_crit():
    by_size = pd.Series([0.01, 0.05, 0.9, 1.0], index=[100, 200, 400, 800])
    # the median final test accuracy passes 0.5 at 200 * 2^(0.45 / 0.85) (linear in log size from 200 to 400)
    size, below, above = m.ungrokking_transition(by_size.index.to_numpy(), by_size.to_numpy())
    assert size == pytest.approx(200 * 2 ** (0.45 / 0.85)) and (below, above) == (200, 400)
    assert math.isnan(m.ungrokking_transition(np.array([1.0, 2.0]), np.array([0.0, 0.1]))[0])
    row = m.ungrokking_row(by_size, _estimate(250.0, 280.0, 300.0))
    assert row.verdict == "agrees" and "D_crit 280" in row.probe and "Sec. 4" in row.source
    assert m.ungrokking_row(by_size, _estimate(2000.0, 2500.0, 3000.0)).verdict == "differs"
    assert m.ungrokking_row(by_size, None).verdict == "differs"
    # sizes 20x apart only bracket the transition: agrees when the whole D_crit range lies inside
    wide = pd.Series([0.003, 1.0], index=[84, 1685])
    inside = m.ungrokking_row(wide, _estimate(664.0, 669.0, 675.0))
    assert inside.verdict == "agrees" and "between 84 and 1,685" in inside.probe
    assert m.ungrokking_row(wide, _estimate(60.0, 669.0, 675.0)).verdict == "differs"
    from probe.analyses import plots

    plt = plots._plt()
    fig, ax = plt.subplots()
    m.ungrokking_against_dcrit(ax, by_size.index, by_size.values, _estimate(250.0, 280.0, 300.0), by_size)
    assert ax.get_xscale() == "log" and len(ax.lines) >= 3
    plt.close(fig)
