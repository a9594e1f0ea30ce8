"""probe reproduce liu-fig15 (docs/design.md, "Reproductions"): App. G's representation-weight-decay
claim recomputed from probe's grid, the quick scale end to end (golden), and rows recomputed from the
runs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from probe.reproduce import liu_fig15 as m
from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.train.sweep import expand, parse_spec


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig15")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig15")
    assert rec.artefact.commit == lp.COMMIT and "no released grid" in rec.artefact.description
    assert {s.authors_file for s in rec.setting} == {lp.REGRESSION_NB, lp.CLASSIFICATION_NB, lp.RULE_FILE}
    paper = rec.scales["paper"]
    assert paper.time != "unmeasured" and "steps: 100000" in paper.spec
    points = expand(parse_spec(paper.spec))
    assert len(points) == 2 * 11 * 11
    assert sorted({p.values["embed_weight_decay"] for p in points}) == list(m.PAPER_WDS)
    assert all(p.config.resolved_embed_lr == pytest.approx(1e-3) and p.config.weight_decay == 0.0 for p in points)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig15", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 2  # one claim per panel
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8
    # the claims: lr 1e-4 comprehends and lr 1e-2 memorises, with representation weight decay 0 and 1
    assert set(runs.loc[runs["lr"] < 1e-3, "phase"]) == {"comprehension"}
    assert set(runs.loc[runs["lr"] > 1e-3, "phase"]) == {"memorization"}
    assert list(table["verdict"]) == ["agrees"] * 2


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The regression cell at lr 1e-4 and weight decay 1 with its validation curve set to zero in a copy
    of the sweep: it reads as memorization, unlike weight decay 0, so the regression row falls to 1/2."""
    out, res = quick
    sweep = shutil.copytree(out / "sweep", tmp_path / "sweep")
    runs = res.analysis.runs
    run = runs[(runs["task"] == "regression") & (runs["y"] == 1.0) & (runs["lr"] < 1e-3)]["run"].iloc[0]
    status = sweep / "status" / f"{run}.json"
    rec = json.loads(status.read_text())
    rec["val_acc"] = [0.0] * len(rec["val_acc"])
    status.write_text(json.dumps(rec))
    changed = m.analyse(str(sweep), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    row = changed.rows[0]
    assert row.quantity.startswith("regression:") and row.paper == before[row.quantity].paper
    assert row.probe.startswith("1/2 = 0.50") and "memorization (at wd 0: comprehension)" in row.probe
    assert row.verdict == "differs" and changed.rows[1] == before[changed.rows[1].quantity]
