"""probe reproduce liu-fig13 (docs/design.md, "Reproductions"): App. G's batch-size claims recomputed
from probe's grid, the quick scale end to end (golden), and rows recomputed from the runs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from probe.reproduce import liu_fig13 as m
from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.train.sweep import expand, parse_spec


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig13")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig13")
    assert rec.artefact.commit == lp.COMMIT and "no released grid" in rec.artefact.description
    assert {s.authors_file for s in rec.setting} == {lp.REGRESSION_NB, lp.CLASSIFICATION_NB, lp.RULE_FILE,
                                                     m.BATCH_NB}
    paper = rec.scales["paper"]
    assert paper.time != "unmeasured" and "steps: 100000" in paper.spec
    points = expand(parse_spec(paper.spec))
    assert len(points) == 2 * 11 * 9
    assert sorted({p.config.batch_size for p in points}) == list(range(5, 46, 5))
    assert {p.config.batching for p in points} == {"random"}


def test_small_lrs_are_the_left_edge():
    runs = pd.DataFrame({"lr": list(lp.APPG_LRS)})
    assert lp.small_lrs(runs) == list(lp.APPG_LRS[:2]) and lp.small_lrs(runs.iloc[:1]) == [lp.APPG_LRS[0]]


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig13", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 6  # three claims per panel
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4
    # the claims: the full batch comprehends at lr 1e-4; batch 5 generalises later (not within the budget)
    assert set(runs.loc[runs["y"] == 45, "phase"]) == {"comprehension"}
    full = runs[runs["y"] == 45].set_index("task")["val_step"]
    small = runs[runs["y"] == 5].set_index("task")["val_step"]
    assert all(small[t] > full[t] for t in ("regression", "classification"))
    verdicts = dict(zip(table["quantity"], table["verdict"]))
    for task in ("regression", "classification"):
        assert verdicts[f"{task}: phase at batch size 45 (bottom left), decoder lr <= 0.0001"] == "agrees"
        assert verdicts[f"{task}: validation accuracy passes 0.9 later at batch size 5 than at 45, decoder lr "
                        "<= 0.0001"] == "agrees"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The full-batch regression cell with its validation curve set to zero in a copy of the sweep: it
    reads as memorization, so its row differs and batch 5 is no longer later; classification is the same."""
    out, res = quick
    sweep = shutil.copytree(out / "sweep", tmp_path / "sweep")
    runs = res.analysis.runs
    run = runs[(runs["task"] == "regression") & (runs["y"] == 45)]["run"].iloc[0]
    status = sweep / "status" / f"{run}.json"
    rec = json.loads(status.read_text())
    rec["val_acc"] = [0.0] * len(rec["val_acc"])
    status.write_text(json.dumps(rec))
    changed = m.analyse(str(sweep), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert [r.quantity for r in changed.rows] == list(before)
    full, _, later = changed.rows[:3]
    assert full.paper == before[full.quantity].paper and full.probe.startswith("0/1")
    assert full.verdict == "differs" and later.verdict == "differs" and later.probe.startswith("0/1")
    assert changed.rows[3:] == res.analysis.rows[3:]
