"""probe reproduce varma-ungrokking (docs/design.md, "Reproductions"): two stages (grokked parents,
then reduced-set runs started from them), the quick scale end to end (golden: the small subset
ungrokks, the control keeps its accuracy), the crossing rule, and rows recomputed from the runs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from probe.reproduce import varma_ungrokking as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.run import load_run


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("varma-ungrokking")


def test_registered_with_two_stages_and_the_papers_sizes():
    rec = get_reproduction("varma-ungrokking")
    assert rec.artefact.repository == m.REPO and all(s.authors_file.startswith("arXiv 2309.02390")
                                                     for s in rec.setting)
    for scale in rec.scales.values():
        assert [s.name for s in scale.stages] == [m.STAGE, m.DCRIT_STAGE]
        assert "from: [sweep/runs/seed=" in scale.stages[0].spec and "labels: [shuffled" in scale.stages[1].spec
    assert m.AUTHORS_SIZES == (390, 488, 610, 763, 955, 1194, 1494)  # 7 geometric sizes in [390, 1494]
    assert all(math.floor(m._fraction(s, m.PAPER_N_TRAIN) * m.PAPER_N_TRAIN + 1e-9) == s for s in m.AUTHORS_SIZES)
    assert m._fraction(m.PAPER_N_TRAIN, m.PAPER_N_TRAIN) == 1.0


def test_quick_scale_golden(quick):
    out, res = quick
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "varma-ungrokking", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 6
    runs = pd.read_csv(out / "runs.csv").set_index("size")
    assert sorted(runs.index) == m.QUICK_SIZES
    small, full = runs.loc[m.QUICK_SIZES[0]], runs.loc[m.QUICK_SIZES[-1]]
    # both start grokked; on 84 pairs the network falls to near-random test accuracy with training
    # accuracy 1, on all its pairs it keeps test accuracy 1 (Fig. 7's claim at two sizes)
    assert small["start_val_acc"] > 0.99 and full["start_val_acc"] > 0.99
    assert small["final_val_acc"] < m.POOR and small["final_train_acc"] == 1.0
    assert full["final_val_acc"] > 0.99
    claims = table[table["quantity"].str.startswith(("parents", "reduced-set", "smallest", "sharp"))]
    assert len(claims) == 4 and set(claims["verdict"]) == {"agrees"}
    # two sizes 20x apart cannot place the 0.7 crossing: reported as a bracket, not an agreement
    cross = table[table["quantity"].str.startswith("dataset size")].iloc[0]
    assert cross["verdict"] == "differs" and "between 84 and 1,685" in cross["probe"]
    # D_crit in the same setting (the dcrit stage) lies inside the bracket of the ungrokking transition
    dcrit = table[table["quantity"] == "ungrokking transition against D_crit"].iloc[0]
    assert dcrit["verdict"] == "agrees" and "D_crit" in dcrit["probe"]
    assert (out / "figure.png").is_file()
    # the second stage's runs continue the parent's last checkpoint
    index = json.loads((out / m.STAGE / "sweep.json").read_text())
    child_name = next(r["name"] for r in index["runs"] if r["values"]["train_subset"] < 1)
    assert next(r["from"] for r in index["runs"]) == "../sweep/runs/seed=0"
    with load_run(out / "sweep" / "runs" / "seed=0") as parent, \
            load_run(out / m.STAGE / "runs" / child_name) as child:
        np.testing.assert_array_equal(np.asarray(parent.params("last")["embed.W_E"]),
                                      np.asarray(child.params(0)["embed.W_E"]))


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """Delete the small subset's run: the smallest set becomes the control, whose test accuracy
    stays high, so the 'smallest reduced set' row changes and differs."""
    out, res = quick
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    small = next(p for p in (copy / m.STAGE / "status").glob("*.json") if "train_subset=1" not in p.name)
    small.unlink()  # the run no longer counts as done
    again = m.analyse(str(copy / "sweep"), "quick")
    before = {r.quantity.split(" (")[0]: r for r in res.analysis.rows}
    after = {r.quantity.split(" (")[0]: r for r in again.rows}
    assert before["smallest reduced set"].verdict == "agrees"
    assert after["smallest reduced set"].verdict == "differs"
    assert after["smallest reduced set"].probe != before["smallest reduced set"].probe
    assert after["smallest reduced set"].paper == before["smallest reduced set"].paper
