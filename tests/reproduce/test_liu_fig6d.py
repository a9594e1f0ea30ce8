"""probe reproduce liu-fig6d (docs/design.md, "Reproductions"): the released S3 grid in the module equal to
the authors' file, their phase rule, the quick scale end to end (golden), and rows recomputed from the
runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from probe.reproduce import liu_fig6d as m
from probe.reproduce import liu_phase as lp
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD

#: a local copy of github.com/ejmichaud/grokking-squared (a bare git directory), when there is one
MIRROR = Path("/work/.mirror/ejmichaud+grokking-squared/repo")


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig6d")


def released(path: str, tmp_path: Path) -> Path:
    """The authors' file at the cited commit, read from the local copy (skipped without one)."""
    if not MIRROR.is_dir() or shutil.which("git") is None:
        pytest.skip("no local copy of the authors' repository")
    out = subprocess.run(["git", f"--git-dir={MIRROR}", "show", f"{lp.COMMIT}:{path}"], capture_output=True)
    if out.returncode:
        pytest.skip(f"{path} at {lp.COMMIT[:7]} is not in the local copy")
    dest = tmp_path / Path(path).name
    dest.write_bytes(out.stdout)
    return dest


def test_the_literals_are_the_released_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    import numpy as np

    with h5py.File(released(m.DATA_FILE, tmp_path), "r") as f:
        assert sorted(f) == ["learning_rate", "test_steps", "train_steps", "weight_decay"]
        assert np.allclose(f["learning_rate"][()], m.AUTHORS_LRS, rtol=1e-12, atol=0)
        assert f["weight_decay"][()].tolist() == list(m.AUTHORS_WDS)
        assert f["train_steps"][()].tolist() == [list(r) for r in m.AUTHORS_TRAIN]
        assert f["test_steps"][()].tolist() == [list(r) for r in m.AUTHORS_TEST]


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig6d")
    assert rec.artefact.path == m.DATA_FILE and rec.artefact.commit == lp.COMMIT
    assert {s.authors_file for s in rec.setting} == {m.TRAIN_SCRIPT}
    assert "steps: 100000" in rec.scales["paper"].spec
    assert "model.init_scale: 0.1" in rec.scales["paper"].spec and "preset: liu-toy-s3" in rec.scales["paper"].spec


def test_the_reference_numbers_are_the_released_ones():
    assert len(m.AUTHORS_LRS) == len(m.AUTHORS_TRAIN) == len(m.AUTHORS_TEST) == 16
    assert all(len(r) == 11 for r in m.AUTHORS_TRAIN + m.AUTHORS_TEST)
    assert m.AUTHORS_LRS[0] == pytest.approx(1e-5) and m.AUTHORS_LRS[15] == pytest.approx(1e-2)
    assert m.AUTHORS_TRAIN[0][0] == 487 and m.AUTHORS_TEST[0][0] == 722 and m.AUTHORS_TRAIN[15][0] == 37
    assert m.AUTHORS_TEST[15][7] == 3762 and m.AUTHORS_TRAIN[6][10] == 95400
    assert sum(v == m.GRID.never for r in m.AUTHORS_TRAIN for v in r) == 10
    assert m.GRID.phases() == Counter({"comprehension": 73, "memorization": 62, "grokking": 31, "confusion": 10})


def test_the_authors_rule():
    never = m.GRID.never
    assert lp.authors_phase(100, 1099, never) == "comprehension"
    assert lp.authors_phase(100, 1100, never) == "comprehension"  # exactly 1e3: none of their masks, drawn as 0
    assert lp.authors_phase(100, 1101, never) == "grokking"
    assert lp.authors_phase(100, never, never) == "memorization"
    assert lp.authors_phase(never, never, never) == "confusion"
    assert m.GRID.cell(15, 0) == (38.0, float("inf"), "memorization")
    assert m.GRID.cell(15, 7) == (649.0, 3763.0, "grokking")
    assert [m.GRID.cell(i, j)[2] for i, j in m.QUICK_CELLS] == ["memorization", "comprehension", "memorization",
                                                               "confusion"]


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig6d", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 1 + 3 + 4  # overall, per authors' phase (three of them), per cell
    runs = pd.read_csv(out / "runs.csv").set_index(["row_index", "col_index"])
    assert sorted(runs.index) == sorted(m.QUICK_CELLS)
    # the claims: a fast decoder without weight decay memorises, with weight decay 200 it is confused, and
    # lr 1e-3 with weight decay 30 comprehends
    assert runs.loc[(15, 0), "phase"] == "memorization" and runs.loc[(10, 0), "phase"] == "memorization"
    assert runs.loc[(15, 10), "phase"] == "confusion"
    assert runs.loc[(10, 7), "phase"] == "comprehension"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The comprehending cell's validation curve set to zero in a copy of the sweep: it reads as
    memorization, so its row and the overall share change; the authors' side is the same."""
    out, res = quick
    sweep = shutil.copytree(out / "sweep", tmp_path / "sweep")
    run = res.analysis.runs.set_index(["row_index", "col_index"]).loc[(10, 7), "run"]
    status = sweep / "status" / f"{run}.json"
    rec = json.loads(status.read_text())
    rec["val_acc"] = [0.0] * len(rec["val_acc"])
    status.write_text(json.dumps(rec))
    changed = m.analyse(str(sweep), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    cell = next(r for r in changed.rows if r.quantity == m._cell_label(m.AUTHORS_LRS[10], m.AUTHORS_WDS[7]))
    assert cell.paper == before[cell.quantity].paper and cell.probe != before[cell.quantity].probe
    assert cell.verdict == "differs" and cell.probe.startswith("memorization")
    assert changed.rows[0].probe.startswith("3/4") and changed.rows[0].paper == before[changed.rows[0].quantity].paper
