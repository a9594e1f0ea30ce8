"""probe reproduce liu-fig14 (docs/design.md, "Reproductions"): App. G's initialisation-scale claims
recomputed from probe's grid, the quick scale end to end (golden), and rows recomputed from the runs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from probe.reproduce import liu_fig14 as m
from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.train.sweep import expand, parse_spec


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig14")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig14")
    assert rec.artefact.commit == lp.COMMIT and "no released grid" in rec.artefact.description
    assert {s.authors_file for s in rec.setting} == {lp.REGRESSION_NB, lp.CLASSIFICATION_NB, lp.RULE_FILE}
    paper = rec.scales["paper"]
    assert paper.time != "unmeasured" and "steps: 100000" in paper.spec
    points = expand(parse_spec(paper.spec))
    assert len(points) == 2 * 11 * 11
    assert {p.values["model.objective"] for p in points} == set(lp.OBJECTIVES)
    assert sorted({p.values["model.init_scale"] for p in points}) == pytest.approx(sorted(m.PAPER_SCALES))
    assert m.PAPER_SCALES[0] == pytest.approx(0.1) and m.PAPER_SCALES[5] == pytest.approx(1.0)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig14", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 4  # two claims per panel
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and set(runs["task"]) == {"regression", "classification"}
    # the claims: scale 0.1 comprehends at every decoder lr, scale 10 memorises
    assert set(runs.loc[runs["y"] == 0.1, "phase"]) == {"comprehension"}
    assert set(runs.loc[runs["y"] == 10.0, "phase"]) == {"memorization"}
    assert list(table["verdict"]) == ["agrees"] * 4


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """A comprehending regression cell's validation curve set to zero in a copy of the sweep: it reads as
    memorization, so the share at the smallest scale falls to 1/2; the paper's side is the same."""
    out, res = quick
    sweep = shutil.copytree(out / "sweep", tmp_path / "sweep")
    runs = res.analysis.runs
    run = runs[(runs["task"] == "regression") & (runs["y"] == 0.1)]["run"].iloc[0]
    status = sweep / "status" / f"{run}.json"
    rec = json.loads(status.read_text())
    rec["val_acc"] = [0.0] * len(rec["val_acc"])
    status.write_text(json.dumps(rec))
    changed = m.analyse(str(sweep), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert [r.quantity for r in changed.rows] == list(before)
    row = changed.rows[0]
    assert row.quantity.startswith("regression: phase at the smallest")
    assert row.paper == before[row.quantity].paper and row.probe.startswith("1/2 = 0.50")
    assert row.verdict == "differs"
    assert changed.rows[2] == before[changed.rows[2].quantity]  # classification untouched
