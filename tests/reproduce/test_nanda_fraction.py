"""probe reproduce nanda-fraction (docs/design.md, "Reproductions"): the released curves' parsing and
milestones, the quick scale end to end (golden), and rows recomputed from the runs."""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest

from probe.reproduce import nanda_fraction as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD

AUTHORS_FILES = {m.TRAIN_CODE, m.HELPERS}


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("nanda-fraction")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("nanda-fraction")
    assert rec.artefact.path == m.RESULTS and rec.artefact.commit == m.COMMIT
    assert {s.authors_file for s in rec.setting} <= AUTHORS_FILES
    assert all(s.authors and s.probe for s in rec.setting)
    paper = rec.scales["paper"].spec
    assert "p: 113" in paper and "steps: 50000" in paper and str(list(m.AUTHORS_FRACTIONS)) in paper
    assert set(m.QUICK_FRACTIONS) <= set(m.AUTHORS_FRACTIONS) and rec.scales["quick"].time != "unmeasured"


def test_the_reference_numbers_are_the_released_ones():
    """The ten released runs: the fractions, and test loss crossing 0.1 at epoch 157 (0.95) to 21,848
    (0.25), each curve ending at its first test loss below 3e-6."""
    assert m.AUTHORS_FRACTIONS == (0.25, 0.28, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    assert m.authors_steps(0.3) == (7583.0, 7930.0, 8995.0)
    assert m.AUTHORS_MILESTONES[0.95][1] == 157 and m.AUTHORS_MILESTONES[0.25][1] == 21848
    assert m.AUTHORS_MILESTONES[0.9] == (156, 222, 1056) and m.AUTHORS_MILESTONES[0.5] == (744, 956, 1617)
    assert all(a < b < c for a, b, c in m.AUTHORS_MILESTONES.values())
    rho = m.rank_correlation(list(m.AUTHORS_FRACTIONS), [m.AUTHORS_MILESTONES[f][1] for f in m.AUTHORS_FRACTIONS])
    assert rho < -0.95


def _torch_zip(obj, path):
    """A file laid out as torch.save writes plain lists: a zip with archive/data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/version", "3\n")


def test_the_released_file_is_parsed_and_its_milestones_read(tmp_path):
    test_a = [4.7, 4.7, 2.0, 0.9, 0.05, 1e-4, 2.5e-6]
    test_b = [4.7, 5.0, 0.5, 0.08, 2e-6]
    obj = [[0.9, 0.5], [[4.7] * 7, test_a, [4.7] * 5, test_b]]
    _torch_zip(obj, tmp_path / "sweep.pth")
    curves = m.load_released(str(tmp_path / "sweep.pth"))
    assert sorted(curves) == [0.5, 0.9]
    assert m.milestones(curves[0.9][1]) == (3, 4, 6)
    assert m.milestones(curves[0.5][1]) == (2, 3, 4)
    assert m.milestones([4.7, 0.5]) == (1, -1, -1)
    with pytest.raises(ValueError):
        m.parse_released([[0.9], [[1.0]]])  # one fraction needs two curves


def test_a_file_holding_objects_is_refused(tmp_path):
    """Only lists and numbers are read: any class in the pickle (here an OrderedDict) is refused."""
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps([[0.5], [OrderedDict(), []]], protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        m.load_released(str(path))


def test_steps_and_rank_correlation():
    assert m.steps_agree(math.inf, math.inf) and not m.steps_agree(math.inf, 100.0)
    assert m.steps_agree(100.0, 150.0) and not m.steps_agree(100.0, 151.0)
    assert m.first_below([3.0, 0.5, 0.01], 0.1, [0, 10, 20]) == 20.0
    assert math.isinf(m.first_below([3.0, 2.0], 1.0))
    assert m.rank_correlation([0.5, 0.8], [math.inf, 890.0]) == pytest.approx(-1.0)
    assert math.isnan(m.rank_correlation([0.5, 0.8], [math.inf, math.inf]))


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "nanda-fraction", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 3 * len(m.QUICK_FRACTIONS) + 1  # three levels per fraction, one ordering row
    assert set(table["verdict"]) <= {"agrees", "differs"}
    assert all(m.RESULTS in s for s in table["source"])
    runs = pd.read_csv(out / "runs.csv").set_index("train_fraction")
    # the claim: the larger fraction starts to generalise (test loss < 1) within the budget, the smaller does not
    assert np.isinf(runs.loc[0.5, "step_loss_1"]) and np.isfinite(runs.loc[0.9, "step_loss_1"])
    assert runs.loc[0.9, "step_loss_1"] < m.QUICK_STEPS
    assert table.iloc[-1]["verdict"] == "agrees"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The 0.9 run trained at a learning rate 100 times smaller: it no longer reaches test loss 1,
    so its rows change; the authors' side stays."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = m._spec(m.QUICK_P, [0.9], 100, 50, 500, m.QUICK_MODEL + ", lr: 1.0e-5")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    row = next(r for r in changed.rows if r.quantity == "steps to test loss < 1, train fraction 0.9")
    assert row.paper == before[row.quantity].paper and row.probe != before[row.quantity].probe
    assert row.probe.startswith("never") and row.verdict == "differs"
    assert len(changed.rows) == 3  # one fraction: no ordering row
