"""probe reproduce liu-fig4a (docs/design.md, "Reproductions"): the paper's numbers in the module, the
0.5 crossing, the quick scale end to end (golden), the dof read from each run's split as the dof
metric reads it, and rows recomputed from the runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import probe.reproduce.liu_fig4a as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD



@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig4a")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig4a")
    assert rec.artefact.path == m.NOTEBOOK and rec.artefact.commit == m.COMMIT
    assert {s.authors_file for s in rec.setting} == {m.TRAIN_SCRIPT, m.NOTEBOOK}
    assert all(s.authors and s.probe for s in rec.setting)
    paper = rec.scales["paper"].spec
    assert m.PAPER_SIZES == list(range(3, 55, 3)) and f"n_train: {m.PAPER_SIZES}" in paper
    assert f"split_seeds: {list(range(100))}" in paper and "steps: 1," in paper


def test_the_reference_numbers_are_the_papers():
    assert (m.R_C, m.SMALLEST) == (0.4, 22) and m.SMALLEST == round(m.R_C * m.N_SAMPLES)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig4a", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 4  # r_c, P below 22 samples, P above half the samples, the smallest size
    assert set(table["verdict"]) <= {"agrees", "differs"}
    assert all(s.startswith("Liu et al. 2022 ") for s in table["source"])
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(m.QUICK_SIZES) * m.QUICK_SPLITS and (runs["full_dof"] == 2).all()
    assert (runs["dof"] >= 2).all() and (runs["linear"] == (runs["dof"] == 2)).all()
    prob = runs.groupby("n_train")["linear"].mean()
    # the figure's claims: no split of 12 implies the linear representation, every split of 30
    # does, and the probability crosses 0.5 between 18 and 24 samples
    assert prob.loc[12] == 0.0 and prob.loc[30] == 1.0
    assert prob.loc[18] < 0.5 <= prob.loc[24]


def test_the_dof_is_the_dof_metric(quick):
    from probe.analyses import compute
    from probe.sweep import load_sweep

    out, res = quick
    sw = load_sweep(out / "sweep")
    for _, row in res.analysis.runs.iloc[::9].iterrows():
        with sw.run(row["run"]) as run:
            assert int(compute(run, "dof", cache=False)["dof"].iloc[-1]) == row["dof"]


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The same analysis over three splits of 12 samples: the probability never reaches 0.5 and no
    split implies the linear representation, so those rows change and differ; the paper's side is
    the same, and the row above half the samples is absent."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    run_sweep(parse_spec(m._spec([12], 3)), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert len(changed.rows) == 3
    for row in changed.rows:
        assert row.paper == before[row.quantity].paper and row.probe != before[row.quantity].probe
    rc, below, smallest = changed.rows
    assert rc.probe.startswith("never reached") and rc.verdict == "differs"
    assert below.probe.startswith("0/3") and below.verdict == "agrees"
    assert smallest.probe.startswith("none") and smallest.verdict == "differs"
