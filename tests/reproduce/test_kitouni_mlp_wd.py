"""probe reproduce kitouni-mlp-wd (docs/design.md, "Reproductions"): the steps read off the released
figures, the delay rule, the quick scale end to end (golden: the post's two claims) and rows
recomputed from the runs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from probe.reproduce import kitouni_mlp_wd as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD

N_ROWS = 2 * (1 + len(m.THRESHOLDS) + 1 + 2 + 1)  # per weight decay: train, val steps, delay, finals, claim


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("kitouni-mlp-wd")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("kitouni-mlp-wd")
    assert rec.artefact.repository == m.REPO and rec.artefact.commit == m.COMMIT
    assert rec.artefact.path == f"{m.FIG_GROK}, {m.FIG_COMP}"
    assert {s.authors_file for s in rec.setting} == {m.TRAIN_SCRIPT, m.LOG_SCRIPT, m.PLOT_SCRIPT}
    assert "steps: [10000, 10000, 10000, 10000, 10000, 10000]" in rec.scales["paper"].spec
    assert "softmax_dtype: float32" in rec.scales["quick"].spec


def test_the_reference_numbers_are_the_ones_read_off_the_figures():
    """Training epoch e is probe's step e, validation epoch e is step e + 1 (train.py evaluates the
    validation split after the update); the delays are the events' definition on those steps."""
    assert m.authors_step(m.WD_GROK, "train", 0.99) == 14.0 and m.authors_step(m.WD_GROK, "val", 0.9) == 3679.0
    assert m.authors_delay(m.WD_GROK) == 3668.0 and m.authors_delay(m.WD_COMP) == 57.0
    for wd in (m.WD_GROK, m.WD_COMP):
        for curve in ("train", "val"):
            steps = [m.AUTHORS_EPOCHS[wd][curve][t] for t in m.THRESHOLDS]
            assert steps == sorted(steps) and 0 < steps[0] < m.BUDGET
    assert m.authors_delay(m.WD_GROK) > m.GROK_DELAY > m.authors_delay(m.WD_COMP)


def test_the_delay_rule():
    row = {"train_0.9": 15.0, "val_0.9": math.inf, "last_step": 1500}
    assert m._delay_text(pd.Series(row)) == ("> 1,485 (val < 0.9 at step 1,500)", True)
    assert m._delay_text(pd.Series({**row, "last_step": 800}))[1] is None  # too short to tell
    assert m._delay_text(pd.Series({**row, "val_0.9": 105.0})) == ("90", False)
    assert m._delay_text(pd.Series({**row, "train_0.9": math.inf}))[1] is None
    assert m.steps_agree(math.inf, math.inf) and not m.steps_agree(3679.0, math.inf)
    assert m.steps_agree(92.0, 105.0) and not m.steps_agree(92.0, 140.0)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "kitouni-mlp-wd", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == N_ROWS
    assert set(table["verdict"]) <= {"agrees", "differs"}
    runs = pd.read_csv(out / "runs.csv").set_index("weight_decay")
    grok, comp = runs.loc[m.WD_GROK], runs.loc[m.WD_COMP]
    # the post's claims: at 0.03 the training set is fitted at once and validation stays low for
    # over a thousand steps; at 5 validation follows training within tens of steps
    assert grok["train_0.99"] <= 50 and math.isinf(grok["val_0.9"]) and grok["final_val_acc"] < 0.5
    assert comp["train_0.99"] <= 100 and comp["val_0.99"] <= 300 and comp["delay"] < m.GROK_DELAY
    claims = table[table["quantity"].str.contains("delay >=|follows", regex=True)]
    assert len(claims) == 2 and set(claims["verdict"]) == {"agrees"}


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The weight-decay-5 run trained at a learning rate 300 times smaller (two seeds, one worker
    each): it no longer fits or generalises within its 300 steps, so its rows change; the authors'
    side is the same."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = m._spec([(m.WD_COMP, m.QUICK_STEPS[m.WD_COMP], s) for s in (0, 1)], extra=", lr: 1.0e-4")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert len(changed.rows) == N_ROWS // 2 and all("weight decay 5" in r.quantity for r in changed.rows)
    for row in changed.rows:
        assert row.paper == before[row.quantity].paper
    val = next(r for r in changed.rows if r.quantity.startswith("steps to val acc >= 0.9,"))
    assert val.probe != before[val.quantity].probe and val.verdict == "differs"
    claim = next(r for r in changed.rows if "follows" in r.quantity)
    assert claim.probe.startswith("0/2") and claim.verdict == "differs"
