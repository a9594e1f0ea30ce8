"""probe reproduce omnigrok-digits (docs/design.md, "Reproductions"): the numbers read off the authors'
released notebooks, the quick scale end to end (golden: memorising before generalising at alpha 8,
generalising as it fits at alpha 1), and rows recomputed from the runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.omnigrok_digits as m  # registers omnigrok-digits (until the catalogue lists it)
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD

NAME = "omnigrok-digits"


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction(NAME)


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction(NAME)
    assert rec.artefact.commit == m.COMMIT and m.GROK_NB in rec.artefact.path
    assert {s.authors_file for s in rec.setting} == {m.GROK_NB, m.LAND_NB, m.PLOT_NB}
    task = next(s for s in rec.setting if s.setting == "task")
    assert "MNIST" in task.authors and "digits" in task.probe and task.difference  # the data set differs, said
    assert "steps: [100000, 10000]" in rec.scales["paper"].spec
    assert f"steps: [{m.QUICK_FREE}, {m.QUICK_CONSTRAINED}]" in rec.scales["quick"].spec


def test_the_reference_numbers_are_the_released_ones():
    """The curve is read at the notebook's logging steps (every 667 from 667 on), the norm only falls, and
    the derived references are the ones the comparison quotes."""
    steps = [r[0] for r in m.AUTHORS_CURVE]
    assert all(s % 667 == 0 for s in steps if s >= 667) and steps[-1] == m.AUTHORS_LAST_LOGGED == 667 * 149
    norms = [r[3] for r in m.AUTHORS_CURVE]
    assert norms == sorted(norms, reverse=True) and (norms[0], norms[-1]) == (93.4, 52.1)
    assert (m.A_TRAIN_STEP, m.A_TRAIN_VALUE, m.A_TRAIN_PREV) == (1334, 0.946, 0.609)
    assert (m.A_VAL_STEP, m.A_VAL_VALUE, m.A_VAL_PREV) == (21344, 0.513, 0.491)
    assert m.A_VAL_AT_TRAIN == 0.182 and m.A_NORM_AT_VAL == 73.1
    assert (m.AUTHORS_FINAL_TRAIN, m.AUTHORS_FINAL_TEST) == (1.0, 0.893)  # "A: 100.0%|89.3%"
    assert m.AUTHORS_NORM_ALPHA1 == pytest.approx(11.71, abs=0.01)
    assert m.AUTHORS_NORM_ALPHA1 * m.ALPHA == pytest.approx(norms[0], rel=0.01)  # alpha 8 start, as drawn
    with pytest.raises(ValueError):
        m.authors_first(2, 0.95)


def test_helpers():
    metrics = pd.DataFrame({"step": [0, 50, 100, 150], "train_acc": [0.1, 0.95, 1.0, 1.0],
                            "val_acc": [0.1, 0.2, 0.6, 0.9]})
    assert m.first_step(metrics, "train_acc", 0.9) == 50 and m.first_step(metrics, "val_acc", 0.95) == math.inf
    steps, norms = np.array([0.0, 100.0]), np.array([10.0, 8.0])
    assert m.norm_at(steps, norms, 50) == 9.0 and math.isnan(m.norm_at(steps, norms, math.inf))
    assert m.within_factor(1000, 2999) and not m.within_factor(1000, 3001) and not m.within_factor(1000, math.inf)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": NAME, "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 13  # 9 free-run rows, 4 constrained
    assert all(m.REPO in s for s in table["source"])
    runs = pd.read_csv(out / "runs.csv").set_index("kind")
    free, con = runs.loc["free"], runs.loc["constrained"]
    # the claims: at alpha 8 it memorises before it generalises; at alpha 1 it generalises as it fits
    assert free["train_step"] <= m.QUICK_FREE and free["val_at_train"] < m.THRESHOLD_VAL
    assert free["norm_init"] == pytest.approx(93.5, abs=0.5) and free["norm_final"] < free["norm_init"]
    assert con["val_step"] <= 200 and con["best_val"] > 0.9
    assert con["norm_final"] == pytest.approx(free["norm_init"] * m.RELATIVE, rel=1e-4)  # the norm is held
    verdicts = dict(zip(table["quantity"], table["verdict"]))
    assert verdicts["free: validation accuracy at that step (memorised before generalising)"] == "agrees"
    assert verdicts["constrained: first step with validation accuracy >= 0.5, against the free run"] == "agrees"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """A sweep of one constrained run held at the alpha 8 norm (constraint.relative 1): its constrained rows
    change with the run (it does not generalise within 300 steps), the authors' side stays, and without a
    free run the rows that compare with it are absent."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = ("preset: omnigrok-digits\nset: {constraint.relative: 1.0, weight_decay: 0.0, batch_size: 100, "
            "checkpoint.schedule: geometric, checkpoint.count: 5, checkpoint.metrics_every: 50}\n"
            "grid:\n  steps: [300]\n")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert [r.quantity for r in changed.rows] == [q for q in before if q.startswith("constrained") and
                                                   "against the free run" not in q]
    best = next(r for r in changed.rows if r.quantity == "constrained: best validation accuracy")
    assert best.paper == before[best.quantity].paper and best.probe != before[best.quantity].probe
    held = next(r for r in changed.rows if r.quantity.startswith("constrained (alpha 1): weight norm"))
    assert held.verdict == "differs"  # held at 93.5, not at the alpha 1 norm
