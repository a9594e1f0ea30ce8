"""probe reproduce lee-grokfast (docs/design.md, "Reproductions"): the authors' numbers in the module,
the setting table naming their files, the quick scale end to end (golden: the fitting claim), rows
recomputed from the runs, and the paper scale's rows on curves made up to test the verdicts."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.lee_grokfast as m  # registers lee-grokfast
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.train.sweep import parse_spec


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("lee-grokfast")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("lee-grokfast")
    assert rec.artefact.repository == m.REPO and rec.artefact.path == m.README and len(rec.artefact.commit) == 40
    assert {s.authors_file for s in rec.setting} == {m.MAIN, m.FILTERS}
    assert all(s.authors and s.probe for s in rec.setting)
    for scale in ("quick", "paper"):
        assert parse_spec(rec.scales[scale].spec).preset == "lee-grokfast"
    assert "steps: 60000" in rec.scales["paper"].spec and rec.scales["paper"].time.startswith("1 h 50 min")


def test_the_reference_numbers_are_the_authors():
    """README.md's Grokfast table (910, 39,890, x 43.84) and the unfiltered run of main.py (1,520)."""
    assert (m.AUTHORS_EMA_STEPS, m.AUTHORS_BASELINE_STEPS, m.AUTHORS_UNFILTERED_NOT_BY) == (910, 39_890, 1_520)
    assert round(m.AUTHORS_BASELINE_STEPS / m.AUTHORS_EMA_STEPS, 2) == m.AUTHORS_SPEEDUP
    assert m.first_reached(np.array([0, 10, 20]), np.array([0.1, 0.95, 1.0])) == 10.0
    assert math.isinf(m.first_reached(np.array([0, 10]), np.array([0.1, 0.9499])))
    assert m.steps_agree(910, 1360) and not m.steps_agree(910, 1370) and m.steps_agree(math.inf, math.inf)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "lee-grokfast", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 1
    assert table["quantity"][0].startswith(f"training loss at step {m.QUICK_STEPS}")
    runs = pd.read_csv(out / "runs.csv").set_index("filter")
    assert set(runs.index) == {"ema", "none"} and (runs["last_step"] == m.QUICK_STEPS).all()
    # the claim: the filtered run leaves the initial loss plateau first
    assert runs.loc["ema", "final_train_loss"] < runs.loc["none", "final_train_loss"]
    assert table["verdict"][0] == "agrees"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The two run directories swapped under the sweep's index: the filtered entry now reads the
    unfiltered run's curves, and the row follows."""
    out, res = quick
    sweep = tmp_path / "sweep"
    shutil.copytree(out / "sweep", sweep)
    a, b = (sweep / "runs" / f"grokfast.filter={f}" for f in ("ema", "none"))
    a.rename(tmp_path / "held")
    b.rename(a)
    (tmp_path / "held").rename(b)
    swapped = m.analyse(str(sweep), "quick")
    before = res.analysis.rows[0]
    after = swapped.rows[0]
    assert after.quantity == before.quantity and after.paper == before.paper
    assert after.probe != before.probe and after.verdict == "differs"


def _fake_sweep(root, runs):
    """A sweep directory whose runs are given by their curves (filter, weight decay, steps, train and
    validation accuracy), written as the sweep and the trainer would, to test the paper rows' verdicts."""
    from probe.config import TrainConfig

    analyse_runs = []
    for name, (filt, wd, steps, train_acc, val_acc) in runs.items():
        cfg = TrainConfig().with_overrides({"grokfast.filter": filt, "weight_decay": wd, "steps": int(steps[-1])})
        analyse_runs.append({"name": name, "values": {}, "config": cfg.to_dict()})
        metrics = pd.DataFrame({"step": steps, "train_loss": 1 - np.asarray(train_acc), "train_acc": train_acc,
                                "val_loss": 1 - np.asarray(val_acc), "val_acc": val_acc})
        metrics.to_csv(root / f"{name}.csv", index=False)
    (root / "sweep.json").write_text(json.dumps({"runs": analyse_runs}))


def test_paper_rows_and_their_verdicts(monkeypatch, tmp_path):
    """The paper scale's rows on made-up curves: the EMA run fits first and reaches 95% at 1,000 (within 1.5
    of 910), none at wd 0.005 at 2,000 (after 1,520), the baseline never within its budget (differs, and so
    does the speed-up)."""
    steps = np.arange(0, 3001, 10)
    runs = {"ema": ("ema", 0.005, steps, steps >= 300, steps >= 1000),
            "none": ("none", 0.005, steps, steps >= 800, steps >= 2000),
            "base": ("none", 0.0, steps, steps >= 800, np.zeros(len(steps)))}
    _fake_sweep(tmp_path, runs)

    class FakeRun:
        def __init__(self, name):
            self.metrics = pd.read_csv(tmp_path / f"{name}.csv")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class FakeSweep:
        index = json.loads((tmp_path / "sweep.json").read_text())

        def run(self, name):
            return FakeRun(name)

    monkeypatch.setattr("probe.sweep.load_sweep", lambda root: FakeSweep())
    res = m.analyse(str(tmp_path), "paper")
    verdicts = [r.verdict for r in res.rows]
    assert len(res.rows) == 6 and verdicts == ["agrees", "agrees", "agrees", "differs", "differs", "agrees"]
    assert res.rows[1].probe.startswith("1,000") and res.rows[2].probe.startswith("2,000")
    assert res.rows[3].probe.startswith("never") and res.rows[4].probe.startswith("n/a")
    assert all(r.source.startswith(m.REPO) for r in res.rows)
