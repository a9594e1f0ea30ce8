"""probe reproduce liu-fig6b (docs/design.md, "Reproductions"): the released grid parsed into the module,
the authors' phase rule, the quick scale end to end (golden), and rows recomputed from the runs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from probe.reproduce import liu_fig6b as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig6b")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig6b")
    assert rec.artefact.path == f"{m.TRAIN_FILE}, {m.TEST_FILE}"
    assert {s.authors_file for s in rec.setting} == {m.TRAIN_SCRIPT, m.RULE_FILE}
    assert rec.scales["paper"].time != "unmeasured" and "steps: 100000" in rec.scales["paper"].spec
    assert "rng: grokking-squared-phase, seed: 58" in rec.scales["paper"].spec


def test_the_reference_numbers_are_the_released_ones():
    assert len(m.AUTHORS_TRAIN) == len(m.AUTHORS_TEST) == 11
    assert all(len(r) == 11 for r in m.AUTHORS_TRAIN + m.AUTHORS_TEST)
    assert m.AUTHORS_TRAIN[0][0] == 1650 and m.AUTHORS_TEST[0][0] == 2076 and m.AUTHORS_TRAIN[10][0] == 248
    assert m.AUTHORS_TEST[3][5] == 1400 and m.AUTHORS_TEST[1][9] == 97186
    assert sum(v == m.NEVER for r in m.AUTHORS_TRAIN for v in r) == 39
    phases = Counter(m.authors_cell(i, j)[2] for i in range(11) for j in range(11))
    assert phases == {"memorization": 49, "confusion": 39, "comprehension": 17, "grokking": 16}


def test_the_authors_rule():
    assert m.authors_phase(100, 1099) == "comprehension"
    assert m.authors_phase(100, 1100) == "comprehension"  # exactly 1e3: none of their masks, drawn as 0
    assert m.authors_phase(100, 1101) == "grokking"
    assert m.authors_phase(100, m.NEVER) == "memorization"
    assert m.authors_phase(m.NEVER, m.NEVER) == "confusion"
    assert m.authors_cell(10, 0) == (249.0, float("inf"), "memorization")


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig6b", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    n_phases = len({m.authors_cell(i, j)[2] for i in (0, 10) for j in (0, 3)})
    assert len(table) == 1 + n_phases + 4  # overall, per authors' phase, per cell
    runs = pd.read_csv(out / "runs.csv").set_index(["lr_index", "wd_index"])
    # the claims: high rate without weight decay memorises; low rate comprehends; high rate + wd 3 confused
    assert runs.loc[(10, 0), "phase"] == "memorization"
    assert runs.loc[(0, 0), "phase"] == "comprehension" and runs.loc[(0, 3), "phase"] == "comprehension"
    assert runs.loc[(10, 3), "phase"] == "confusion"
    # at the notebook's seed the runs are the authors' runs: each first step past 0.9 is the released one,
    # seen at probe's next metrics row (every 10 steps); at decoder lr 1e-2 rounding (the batched AdamW
    # against torch's) moves it by up to one row
    for col, theirs in (("train_step", "authors_train_step"), ("val_step", "authors_test_step")):
        reached = runs[np.isfinite(runs[theirs])]
        assert len(reached) >= 2
        seen = np.ceil(reached[theirs] / 10) * 10
        assert (reached[col] == seen)[reached.index.get_level_values(0) == 0].all()
        assert (np.abs(reached[col] - seen) <= 10).all()


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """One cell trained with a frozen embedding (embed_lr tiny): its validation accuracy no longer
    passes, so its row and the overall share change; the authors' side is the same."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = m._spec([m.AUTHORS_LRS[0]], [0.0], m.QUICK_STEPS, 10, 20, extra=", embed_lr: 1.0e-7")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    cell = next(r for r in changed.rows if r.quantity.startswith("phase at"))
    assert cell.paper == before[cell.quantity].paper and cell.probe != before[cell.quantity].probe
    assert cell.verdict == "differs" and changed.rows[0].probe.startswith("0/1")
