"""probe reproduce liu-fig3 (docs/design.md, "Reproductions"): the released Acc and Acc-hat carried
into the module, Acc-hat checked against a direct reading of the authors' App. D procedure, the quick
scale end to end (golden), and rows recomputed from the runs."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.liu_fig3 as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD



@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig3")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("liu-fig3")
    assert rec.artefact.commit == m.COMMIT and "realacc_num_N_seed_S.txt" in rec.artefact.path
    assert {s.authors_file for s in rec.setting} == {m.TRAIN_SCRIPT, m.DRIVER, m.NOTEBOOK}
    assert all(s.authors and s.probe for s in rec.setting)
    paper = rec.scales["paper"].spec
    assert "steps: 5000" in paper and "batch_size: 45" in paper and "seed: [0, 1, 2]" in paper
    assert f"n_train: {m.PAPER_N}" in paper and m.PAPER_N == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 54]


def test_the_reference_numbers_are_the_released_ones():
    """realacc / predacc x 55 from toy/results/fig3 (every released value is a count over 55)."""
    assert sorted(m.AUTHORS_ACC) == sorted(m.AUTHORS_ACC_HAT) == m.PAPER_N
    assert m.authors_acc(5)[0] == pytest.approx(1.272727272727272596e-01, abs=1e-15)
    assert m.authors_acc_hat(25)[2] == pytest.approx(9.090909090909090606e-01, abs=1e-15)
    assert m.authors_acc(54) == pytest.approx([51 / 55, 53 / 55, 54 / 55])
    assert m.authors_acc_hat(54) == [1.0, 1.0, 1.0]
    # Acc-hat counts every training sample as correct: never fewer than the training set
    assert all(c >= n for n, seeds in m.AUTHORS_ACC_HAT.items() for c in seeds)
    gaps = [abs(a - h) for n in m.PAPER_N for a, h in zip(m.AUTHORS_ACC[n], m.AUTHORS_ACC_HAT[n])]
    assert sum(g == 0 for g in gaps) == 15 and max(gaps) == 7 and np.mean(gaps) / 55 == pytest.approx(0.0193, abs=1e-4)


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig3", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 2 * len(m.QUICK_N) + 3  # Acc and Acc-hat per fraction, the mean gap, run by run
    by_run = table[table["quantity"].str.contains("run by run")]
    assert len(by_run) == 2 and all(by_run["probe"].str.contains(f"of {len(m.QUICK_N) * len(m.QUICK_SEEDS)} give"))
    assert set(table["verdict"]) <= {"agrees", "differs"}
    assert all("toy/results/fig3/" in s for s in table["source"])
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(m.QUICK_N) * len(m.QUICK_SEEDS) and set(runs["step"]) == {m.QUICK_STEPS}
    # Acc is the full dataset's: training and validation accuracy weighted by their sizes
    n_val = m.N_SAMPLES - runs["n_train"]
    np.testing.assert_allclose(runs["acc"], (runs["n_train"] * runs["train_acc"] + n_val * runs["val_acc"]) / 55)
    med = runs.groupby("n_train")[["acc", "acc_hat"]].median()
    # the figure's claims: little beyond the training samples at 10/55, nearly everything at 45/55,
    # and Acc-hat close to Acc in every run
    assert (med.loc[10] <= 0.35).all() and (med.loc[45] >= 0.85).all()
    assert (runs["acc_hat"] >= runs["n_train"] / 55 - 1e-12).all()
    assert (np.abs(runs["acc"] - runs["acc_hat"]) <= 0.1).all()


def _authors_acc_hat(embeddings: np.ndarray, inputs: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    """App. D as the authors' train_add computes it, written out directly: normalise each dimension
    (centre, divide by its std, ddof 1), take every pair of distinct samples with the same sum whose
    mean squared residual is below 0.01, and count the training samples plus every other sample paired
    with a training sample."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = (e - e.mean(axis=0)) / e.std(axis=0, ddof=1)
    in_train = set(int(i) for i in train)
    dbar = set(in_train)
    for s, t in combinations(range(len(labels)), 2):
        if labels[s] != labels[t]:
            continue
        r = e[inputs[s, 0]] + e[inputs[s, 1]] - e[inputs[t, 0]] - e[inputs[t, 1]]
        if np.mean(r * r) < 0.01:
            if t in in_train:
                dbar.add(s)
            if s in in_train:
                dbar.add(t)
    return len(dbar) / len(labels)


def test_acc_hat_is_the_authors_procedure(quick):
    from probe.sweep import load_sweep

    out, res = quick
    sw = load_sweep(out / "sweep")
    for _, row in res.analysis.runs.iterrows():
        with sw.run(row["run"]) as run:
            emb = run.read_embeddings(np.array([len(run.steps) - 1]))[0]
            expect = _authors_acc_hat(emb, run.task.inputs, run.task.labels, run.split.train)
        assert row["acc_hat"] == pytest.approx(expect, abs=1e-12), row["run"]


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The same analysis over a sweep whose 45-pair run barely moves its embeddings: the parallelograms
    do not form, so Acc-hat falls to about the training samples and its row changes; the authors'
    side is the same and the rows of the fraction not trained are absent."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = m._spec([45], [0], m.QUICK_STEPS, extra=", embed_lr: 1.0e-9")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    hat = next(r for r in changed.rows if r.quantity.startswith("Acc-hat"))
    assert "45/55" in hat.quantity and hat.paper == before[hat.quantity].paper
    assert hat.probe != before[hat.quantity].probe and hat.verdict == "differs"
    assert {r.quantity for r in changed.rows if "fraction" in r.quantity} == {k for k in before if "45/55" in k}
    # the initial random embeddings form at most a chance parallelogram or two
    assert 45 / 55 <= changed.runs["acc_hat"].iloc[0] < 0.9
