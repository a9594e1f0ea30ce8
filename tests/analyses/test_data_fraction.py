"""Data-fraction curves (Liu Fig. 4b / 5b; Power et al. Fig. 1 per operator): the per-run table, the
critical fraction rule, the figure from the CLI, one curve per operator, and bad input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import probe
from probe.analyses.effective import crossing, effective_theory
from probe.analyses.sweeps import critical_fractions, fraction_table
from probe.cli import main
from probe.phases import PhaseRule

TOY = """
preset: liu-toy-add
set: {steps: 800, n_train: null, checkpoint.schedule: every, checkpoint.every: 50, checkpoint.metrics_every: 10}
grid:
  train_fraction: [0.3, 0.9]
seeds: [0, 1]
"""
OPERATORS = """
preset: kitouni-mlp
set: {p: 11, steps: 200, checkpoint.schedule: every, checkpoint.every: 50, checkpoint.metrics_every: 10}
grid:
  task: [add, sub]
  train_fraction: [0.5, 0.8]
"""


def _sweep(tmp_path: Path, text: str, name: str, waits) -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    res = waits.run_to_end([sys.executable, "-m", "probe.cli", "sweep", str(spec), "--out", str(tmp_path / name),
                            "--no-progress"], tmp_path)
    assert res.returncode == 0, res.stderr
    return tmp_path / name


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, waits) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fractions")
    return _sweep(base, TOY, "toy", waits), _sweep(base, OPERATORS, "ops", waits)


def test_table_rows_agree_with_each_run(sweeps):
    root, _ = sweeps
    sweep = probe.load_sweep(root)
    table = fraction_table(sweep, PhaseRule(threshold=0.9))
    assert len(table) == 4 and set(table["curve"]) == {"all"}
    for _, row in table.iterrows():
        with sweep.run(row["run"]) as run:
            assert row["fraction"] == pytest.approx(len(run.split.train) / run.task.n_samples)
            m = run.metrics
            passed = np.flatnonzero(m["val_acc"].to_numpy() >= 0.9)
            assert row["val_step"] == (m["step"].to_numpy()[passed[0]] if len(passed) else np.inf)
            rqi = probe.analyses.compute(run, "rqi")
            above = rqi["rqi"].to_numpy() > 0.95
            if np.isinf(row["rqi_step"]):
                assert not above.any()
            else:
                k = int(np.flatnonzero(rqi["step"].to_numpy() == row["rqi_step"])[0])
                assert above[k] and not above[:k].any()
            th = effective_theory(run.task, run.split.train)
            expected = np.inf if th.lambda3 <= 0 else 1.0 / (th.lambda3 * run.config.resolved_embed_lr)
            assert row["predicted"] == pytest.approx(expected)
    # 16 of 55 samples cannot pin down the linear structure (Liu Fig. 4a: critical fraction ~0.4)
    low = table[table["fraction"] < 0.4]
    assert np.isinf(low["predicted"]).all()
    assert np.isfinite(table[table["fraction"] > 0.8]["predicted"]).all()
    assert table.attrs["probe"]["data_fraction"]["threshold"] == 0.9


def test_critical_fraction_rule():
    def table(col_values):
        rows = []
        for f, vals in col_values.items():
            rows += [{"curve": "c", "fraction": f, "val_step": v, "rqi_step": np.nan} for v in vals]
        return pd.DataFrame(rows)

    assert critical_fractions(table({0.2: [np.inf, np.inf], 0.4: [100, 200], 0.6: [50, 60]}))["c"]["val_step"] == 0.4
    # reached at 0.2 but not at 0.4: the transition is above 0.4
    assert critical_fractions(table({0.2: [100, 90], 0.4: [np.inf, np.inf], 0.6: [50, 60]}))["c"]["val_step"] == 0.6
    assert critical_fractions(table({0.2: [np.inf], 0.4: [np.inf]}))["c"]["val_step"] is None
    assert "rqi_step" not in critical_fractions(table({0.2: [1.0]}))["c"]  # RQI does not apply


def test_figure_from_the_cli_with_one_curve_per_operator(sweeps, tmp_path, capsys):
    toy, ops = sweeps
    out = tmp_path / "toy.png"
    assert main(["plot", str(toy), "--figure", "data-fraction", "--out", str(out), "--no-progress"]) == 0
    assert out.stat().st_size > 10_000
    out = tmp_path / "ops.png"
    assert main(["plot", str(ops), "--figure", "data-fraction", "--out", str(out), "--no-progress"]) == 0
    table = fraction_table(probe.load_sweep(ops))
    assert set(table["curve"]) == {"task=add", "task=sub"}
    assert table["rqi_step"].notna().all()  # RQI applies to both operation tables
    assert table["predicted"].isna().all()  # the effective theory is the toy model's


def test_a_sweep_without_a_size_axis_is_one_line(tmp_path, capsys, waits):
    root = _sweep(tmp_path, "preset: liu-toy-add\nset: {steps: 20}\ngrid:\n  lr: [1e-3, 2e-3]\n", "lr", waits)
    code = main(["plot", str(root), "--figure", "data-fraction", "--out", str(tmp_path / "f.png")])
    err = capsys.readouterr().err
    assert code == 2 and "varies no training-set size" in err and "lr" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.png").exists()
    code = main(["plot", str(root), "--figure", "data-fraction", "--x", "seed", "--out", str(tmp_path / "f.png")])
    assert code == 2 and "not a swept key" in capsys.readouterr().err


def test_crossing():
    f = np.array([0.1, 0.2, 0.3, 0.4])
    assert crossing(f, np.array([0.0, 0.25, 0.75, 1.0])) == pytest.approx(0.25)
    assert crossing(f, np.array([0.0, 0.5, 0.5, 1.0])) == pytest.approx(0.2)
    assert crossing(f, np.array([0.6, 0.7, 0.8, 1.0])) == pytest.approx(0.1)
    assert math.isnan(crossing(f, np.array([0.0, 0.1, 0.2, 0.3])))
