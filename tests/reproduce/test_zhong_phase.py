"""probe reproduce zhong-phase (docs/design.md, "Reproductions"): the paper-scale grid, the bins, the quick
scale end to end (golden) and rows recomputed from the runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from probe.reproduce import zhong as z
from probe.reproduce import zhong_phase as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("zhong-phase")


def test_the_paper_grid_covers_every_released_bin():
    from probe.train.sweep import parse_spec

    rec = get_reproduction("zhong-phase")
    assert {s.authors_file for s in rec.setting} == {z.TRAIN, z.NOTEBOOK, z.FIXED_CSV}
    spec = rec.scales["paper"].spec
    parse_spec(spec)
    axes = {line.split(":")[0].strip(): line.split("[", 1)[1].rstrip("]").split(", ")
            for line in spec.splitlines() if line.startswith("  ")}
    points = list(zip(map(int, axes["model.d_model"]), map(float, axes["model.attention_rate"])))
    assert len(points) == 25 and len(set(points)) == 25
    assert {z.fixed_bin(r) for w, r in points if w == 128} == set(z.FIXED_BINS)
    assert {z.vary_cell(w, r) for w, r in points} == set(z.VARY_BINS)
    assert all(int(d) == 4 * int(w) for d, w in zip(axes["model.d_mlp"], axes["model.d_model"]))


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "zhong-phase", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    cells = [(m.QUICK_WIDTH, 0), (m.QUICK_WIDTH, 4)]
    assert list(table["quantity"]) == [f"{name}, width 32-63, attention rate {j / 5:.1f}-{(j + 1) / 5:.1f}"
                                       for _, j in cells for _, name, _ in m.COLUMNS]
    runs = pd.read_csv(out / "runs.csv").set_index("attention_rate")
    assert list(runs.index) == m.QUICK_RATES
    # the two sides of the transition: symmetric gradients at a low rate, less so at a high one
    assert runs.loc[m.QUICK_RATES[0], "gradient_symmetricity"] > runs.loc[m.QUICK_RATES[1], "gradient_symmetricity"]


def test_rows_are_recomputed_from_the_runs(quick, monkeypatch):
    """Forcing the circularity filter's outcome on the quick runs turns a row from no run to a value."""
    _, res = quick
    runs = res.analysis.runs.copy()
    assert len(runs) == 2
    rows_before = {r.quantity: r for r in res.analysis.rows}
    runs["circularity"] = 1.0
    monkeypatch.setattr(z, "run_table", lambda sweep_dir: runs)
    changed = m.analyse("unused", "quick")
    for row in changed.rows:
        assert row.paper == rows_before[row.quantity].paper
        assert not row.probe.startswith("no run")
    gs = next(r for r in changed.rows if r.quantity.startswith("gradient symmetricity") and "0.0-0.2" in r.quantity)
    assert gs.probe == f"{runs.iloc[0]['gradient_symmetricity']:.3f}"
