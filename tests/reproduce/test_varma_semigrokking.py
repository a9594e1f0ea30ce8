"""probe reproduce varma-semigrokking (docs/design.md, "Reproductions"): a network trained near the
critical dataset size generalises late and only partially; the quick scale end to end (golden), the
curve summary the rows read, and rows recomputed from the runs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.varma_semigrokking as m  # registers the reproduction
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD

REPRODUCTION = "varma-semigrokking"


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction(REPRODUCTION)


def test_registered_with_the_papers_sections_as_sources():
    rec = get_reproduction(REPRODUCTION)
    assert rec.artefact.repository == m.REPO
    assert all(s.authors_file.startswith("arXiv 2309.02390") for s in rec.setting)
    assert "preset: nanda-modadd" in rec.scales["paper"].spec and "constraint.norm: 28.0" in rec.scales["quick"].spec


STEPS = np.arange(0, 10001, 100, dtype=float)


def _curves(val: np.ndarray) -> dict[str, float]:
    train = np.where(STEPS >= 100, 1.0, 0.0)
    return m.curve_summary(STEPS, train, val)


def test_the_curve_summary():
    late_middling = np.clip((STEPS - 4000) / 2000, 0, 1) * 0.7  # rises from step 4,000 and stays at 0.7
    s = _curves(late_middling)
    assert s["fit_step"] == 100 and s["final_val_acc"] == pytest.approx(0.7)
    assert s["gen_step"] == 5000 and s["delay"] == 50 and s["drift"] == pytest.approx(0.0)
    assert m.semigroks(s) == {"delayed": True, "middling": True, "settled": True}
    full = _curves(np.clip((STEPS - 4000) / 2000, 0, 1))  # groks fully: not middling
    assert m.semigroks(full) == {"delayed": True, "middling": False, "settled": True}
    never = _curves(np.zeros_like(STEPS))  # never generalises: neither delayed nor middling
    assert m.semigroks(never) == {"delayed": False, "middling": False, "settled": True}
    climbing = _curves(0.9 * (STEPS / 10000) ** 3)  # still climbing steeply at the end
    assert not m.semigroks(climbing)["settled"]
    prompt = _curves(np.where(STEPS >= 200, 0.6, 0.0))  # generalises as soon as it fits: not delayed
    assert not m.semigroks(prompt)["delayed"]
    assert math.isinf(_curves(np.zeros_like(STEPS))["gen_step"])


def test_quick_scale_golden(quick):
    out, res = quick
    assert json.loads((out / RECORD).read_text()) == {"reproduction": REPRODUCTION, "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 5
    assert set(table["verdict"]) == {"agrees"}
    runs = pd.read_csv(out / "runs.csv").set_index("size")
    near, control = runs.loc[m.QUICK_NEAR], runs.loc[m.QUICK_CONTROL]
    # near D_crit: fits at once, generalises many times later, to a middling level it keeps
    assert near["final_train_acc"] == 1.0 and near["delay"] >= m.DELAY
    assert m.MIDDLING[0] <= near["final_val_acc"] <= m.MIDDLING[1] and abs(near["drift"]) <= m.SETTLED
    assert bool(near["semigroks"])
    assert control["final_val_acc"] >= m.FULL and control["delay"] < m.DELAY


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """Take the control away: the run near D_crit is then the largest size, read as the control, whose
    middling accuracy differs from full generalisation; the near-D_crit rows go."""
    out, res = quick
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for status in (copy / "sweep" / "status").glob(f"n_train={m.QUICK_CONTROL}__*.json"):
        status.unlink()
    again = m.analyse(str(copy / "sweep"), "quick")
    assert [r.verdict for r in res.analysis.rows] == ["agrees"] * 5
    assert len(again.rows) == 1
    row = again.rows[0]
    assert row.quantity.startswith(f"control above D_crit ({m.QUICK_NEAR} pairs)") and row.verdict == "differs"
