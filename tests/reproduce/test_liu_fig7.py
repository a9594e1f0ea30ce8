"""probe reproduce liu-fig7 (docs/design.md, "Reproductions"): the values read off the released panel,
the shared transformer spec, the quick scale end to end (golden) and rows recomputed from the runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from probe.reproduce import liu_fig7 as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD

N_ROWS = 7


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig7")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig7")
    assert rec.artefact.repository == m.REPO and rec.artefact.commit == m.COMMIT and rec.artefact.path == m.NOTEBOOK
    assert {s.authors_file for s in rec.setting} == {m.TRAIN_SCRIPT, m.MODELS, m.DATA, m.UTILS, m.HPARAMS,
                                                      m.NOTEBOOK}
    assert all(s.authors_file for s in rec.setting)
    assert rec.scales["paper"].time == "unmeasured" and "unmeasured" not in rec.scales["quick"].time


def test_the_spec_is_the_authors_setting():
    spec = yaml.safe_load(m.transformer_spec(m.PAPER_RUN, [0, 1], m.PAPER_CHECKPOINTS))
    s = spec["set"]
    assert (s["p"], s["steps"], s["lr"], s["embed_lr"], s["weight_decay"], s["embed_weight_decay"]) == (
        59, 20000, 2e-4, 1e-3, 1.0, 0.01)
    assert (s["model.n_layers"], s["model.d_model"], s["model.n_heads"], s["model.d_mlp"], s["model.dropout"]) == (
        2, 256, 1, 128, 0.05)
    assert s["betas"] == [0.9, 0.999] and s["train_fraction"] == 0.8 and s["warmup_steps"] == 0
    assert spec["zip"] == {"seed": [0, 1], "split_seed": [0, 1]}
    paper = yaml.safe_load(get_reproduction("liu-fig7").scales["paper"].spec)
    assert paper["zip"]["seed"] == list(range(100)) and paper["set"]["checkpoint.schedule"] == "geometric"
    # the quick scale keeps the product steps x embedding learning rate
    quick, paper = m.QUICK_RUN, m.PAPER_RUN
    assert quick["steps"] * quick["embed_lr"] == pytest.approx(paper["steps"] * paper["embed_lr"])


def test_the_values_read_off_the_panel():
    steps = [s for s, _ in m.AUTHORS_CURVE]
    values = dict(m.AUTHORS_CURVE)
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 19981
    assert values[1] == pytest.approx(m.AUTHORS_INIT, abs=0.05)
    assert values[19981] == pytest.approx(m.AUTHORS_END, abs=0.05)
    assert max(values.values()) == pytest.approx(m.AUTHORS_PEAK, abs=0.01) and values[2000] == m.AUTHORS_PEAK
    assert values[m.AUTHORS_GEN] == pytest.approx(m.AUTHORS_AT_GEN, abs=0.05)
    assert m.AUTHORS_MEM < m.AUTHORS_PEAK_STEP < m.AUTHORS_GEN
    # 59 random N(0, 1) points in 256 dimensions: the initial e^S is the authors' 51.7
    rng = np.random.default_rng(0)
    e = rng.normal(size=(59, 256))
    e -= e.mean(axis=0)
    s = np.linalg.svd(e, compute_uv=False) ** 2
    assert m.effective_dimension(s / s.sum()) == pytest.approx(m.AUTHORS_INIT, abs=m.DIM_TOL)


def test_curve_helpers():
    a = pd.DataFrame({"step": [0, 10, 20], "effective_dim": [3.0, 4.0, 1.0]})
    b = pd.DataFrame({"step": [0, 10, 20, 30], "effective_dim": [5.0, 6.0, 3.0, 0.0]})
    steps, mean = m.mean_curve([a, b])
    assert list(steps) == [0, 10, 20] and list(mean) == [4.0, 5.0, 2.0]
    assert m.value_at(steps, mean, 15) == 3.5 and np.isnan(m.value_at(steps, mean, float("inf")))
    assert m.mean_steps([100.0, float("inf"), 300.0]) == (200.0, 2) and m.mean_steps([float("inf")])[1] == 0
    metrics = pd.DataFrame({"step": [0, 20, 40], "train_acc": [0.1, 0.995, 1.0]})
    assert m.first_step(metrics, "train_acc") == 20 and m.first_step(metrics, "train_acc", 1.1) == float("inf")
    assert m.steps_agree(1620, 2400) and not m.steps_agree(1620, 2500) and not m.steps_agree(1620, float("inf"))


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig7", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == N_ROWS
    assert set(table["verdict"]) <= {"agrees", "differs"}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 1 and runs["p"].iloc[0] == 31
    r = runs.iloc[0]
    # the quick claims: the training set is fitted before the validation set; e^S rises first and peaks
    # before generalisation (the paper's "increases up to generalization time"), then ends far below
    # its initial value ("decreases drastically afterwards")
    assert r["mem_step"] < r["gen_step"] <= 800
    assert r["eff_dim_end"] / r["eff_dim_init"] < 0.8
    peak = table[table["quantity"].str.startswith("step of the largest mean e^S")]
    assert len(peak) == 1 and peak["verdict"].iloc[0] == "agrees"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The quick run stopped after 100 steps: it has not generalised, so its steps and e^S rows change;
    the authors' side is the same."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    short = dict(m.QUICK_RUN, steps=100)
    run_sweep(parse_spec(m.transformer_spec(short, [m.QUICK_SEED], m.QUICK_CHECKPOINTS)), tmp_path / "sweep",
              ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert [r.quantity for r in changed.rows] == list(before)
    for row in changed.rows:
        assert row.paper == before[row.quantity].paper
    gen = next(r for r in changed.rows if "generalisation: val acc" in r.quantity)
    assert gen.probe.startswith("never") and gen.verdict == "differs" and gen.probe != before[gen.quantity].probe
    end = next(r for r in changed.rows if r.quantity.startswith("mean e^S at the last step"))
    assert end.probe != before[end.quantity].probe
