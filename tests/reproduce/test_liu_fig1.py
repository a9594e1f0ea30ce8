"""probe reproduce liu-fig1 (docs/design.md, "Reproductions"): the values read off the released videos'
frames, the stages and the order measure, the quick scale end to end (golden) and rows recomputed from
the runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from probe.reproduce import liu_fig1 as m
from probe.reproduce import liu_fig7 as f7
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.tasks import make_task

N_ROWS = 5 + len(m.FRAME_EPOCHS) + 3 * len(m.STAGES)


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig1")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig1")
    assert rec.artefact.commit == m.WEBPAGE_COMMIT and rec.artefact.path == f"{m.VIDEO_REFIT}, {m.VIDEO_FIXED}"
    assert {s.authors_file for s in rec.setting} == {f7.TRAIN_SCRIPT, f7.MODELS, f7.DATA, f7.UTILS, f7.HPARAMS,
                                                      m.PLOT_SCRIPT, m.FIG_SCRIPT}
    assert "checkpoint.every: 20" in rec.scales["paper"].spec and "seed: [1]" in rec.scales["paper"].spec


def test_the_values_read_off_the_frames():
    epochs = [m.AUTHORS_FRAMES[s][0] for s in m.STAGES]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == 19980
    assert all(e % 20 == 0 for e in epochs)  # logged every 20 epochs
    own = [m.AUTHORS_FRAMES[s][3] for s in m.STAGES]
    fixed = [m.AUTHORS_FRAMES[s][4] for s in m.STAGES]
    # no ring on the refit axes before generalisation, a ring from then on; always one on the fixed axes
    assert [v >= m.RING for v in own] == [False, False, True, True] and all(v >= m.RING for v in fixed)
    assert m.AUTHORS_FRAMES["overfitting"][1] == m.OVERFIT_ACC
    assert m.AUTHORS_TRAIN_099 < m.AUTHORS_FRAMES["generalisation"][0]


def test_the_order_measure():
    task = make_task("add", p=23)
    theta = 2 * np.pi * 5 * np.arange(23) / 23  # a ring at frequency 5
    ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    assert m.ring_order(ring, task) == pytest.approx(1.0)
    scrambled = ring[np.random.default_rng(0).permutation(23)]
    assert m.ring_order(scrambled, task) < m.RING


def test_the_best_pair_of_final_components():
    """Two rings at nearly equal variance, each on its own pair of components: the best pair holds a
    ring, also for a noisy copy of the embeddings on the final axes; random embeddings have none."""
    task = make_task("add", p=29)
    a = np.arange(29)
    rng = np.random.default_rng(0)
    rings = [np.stack([np.cos(2 * np.pi * k * a / 29), np.sin(2 * np.pi * k * a / 29)], axis=1) for k in (3, 7)]
    final = np.concatenate([1.01 * rings[0], rings[1], 0.1 * rng.standard_normal((29, 4))], axis=1)
    q, pair = m.best_pair_order(final, final, task)
    assert q > 0.99 and pair in ((1, 2), (3, 4))  # one ring on each of the first two pairs
    start = final + 0.3 * rng.standard_normal(final.shape)
    q0, pair0 = m.best_pair_order(start, final, task)
    assert q0 >= m.RING and set(pair0) <= {1, 2, 3, 4}
    assert m.best_pair_order(rng.standard_normal((29, 8)), final, task)[0] < m.RING


def test_the_stages():
    metrics = pd.DataFrame({"step": [0, 20, 40, 60, 80], "train_acc": [0.0, 0.5, 0.98, 1.0, 1.0],
                            "val_acc": [0.0, 0.0, 0.3, 0.995, 1.0]})
    stages = m.stage_steps(metrics, np.array([0, 40, 80]))
    assert stages == {"initialisation": 0.0, "overfitting": 40.0, "generalisation": 80.0, "end": 80.0}
    assert m.stage_steps(metrics.assign(val_acc=0.5), np.array([0, 40, 80]))["generalisation"] == float("inf")


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig1", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == N_ROWS
    assert set(table["verdict"]) <= {"agrees", "differs"}
    runs = pd.read_csv(out / "runs.csv").set_index("stage")
    assert list(runs.index) == list(m.STAGES)
    # the quick claims: no ring on the initial embeddings' own axes, a ring when the model generalises
    # (at this scale it fades again by the end, so the final axes show none)
    assert runs.loc["initialisation", "order_own"] < m.RING
    assert runs.loc["generalisation", "order_own"] >= m.RING
    assert runs.loc["generalisation", "order_own"] > runs.loc["initialisation", "order_own"] + 0.2
    rings = table[table["quantity"].str.startswith("circular order")]
    assert len(rings) == 3 * len(m.STAGES) and (rings["verdict"] == "agrees").sum() >= 3
    # the quick run ends at step 800: the authors' frame epochs are not reached
    frames = table[table["quantity"].str.contains("the authors' .* frame", regex=True)]
    assert len(frames) == len(m.FRAME_EPOCHS) and frames["probe"].str.startswith("n/a").all()


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The quick run stopped after 100 steps: it neither fits its training set nor generalises, so its
    stage rows change; the authors' side is the same."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    short = dict(f7.QUICK_RUN, steps=100)
    run_sweep(parse_spec(m._spec(short, f7.QUICK_SEED, m.QUICK_CHECKPOINTS)), tmp_path / "sweep", ExecutorOptions(kind="inline"),
              progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert [r.quantity for r in changed.rows] == list(before)
    for row in changed.rows:
        assert row.paper == before[row.quantity].paper
    gen = next(r for r in changed.rows if r.quantity.startswith("generalisation stage"))
    assert gen.probe.startswith("never") and gen.verdict == "differs"
    end = next(r for r in changed.rows if r.quantity.startswith("val acc at the end"))
    assert end.probe != before[end.quantity].probe and end.verdict == "differs"
