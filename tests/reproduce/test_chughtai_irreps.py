"""probe reproduce chughtai-irreps (docs/design.md, "Reproductions"): the shipped dihedral tables, the
authors' irrep names and faithfulness, the released numbers' consistency, the quick scale end to end
(golden: generalisation, jointly faithful key irreps, the characters' share of the logits) and rows
recomputed from the runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.chughtai_irreps as m
from probe.analyses import irreps as ir
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.tasks import make_task, read_group_csv

#: per quick group: generalisation, faithful, FVE, fewer key irreps, faithful before generalising; S4 also
#: the sign-first claim
N_QUICK_ROWS = 5 + 5 + 1


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("chughtai-irreps")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("chughtai-irreps")
    assert rec.artefact.repository == m.REPO and rec.artefact.commit == m.COMMIT
    assert rec.artefact.path == m.BATCH
    known = {m.MODELS, m.CREATE, m.TRAIN, m.GROUPS_CODE, m.METRICS_CODE, m.ORDER_CODE, m.EVAL_CODE,
             m.TRANSFORMER_TABLE}
    for s in rec.setting:
        files = {f.strip() for f in s.authors_file.split(",")}
        assert files and files <= known, (s.setting, s.authors_file)
    assert {m.MODELS, m.CREATE, m.METRICS_CODE, m.ORDER_CODE} <= {f.strip() for s in rec.setting
                                                                  for f in s.authors_file.split(",")}
    paper = rec.scales["paper"].spec
    assert "steps: 250000" in paper and "lr: 0.001" in paper and "model.d_embed: 256" in paper
    assert "seed: [1, 2, 3, 4, 1, 2, 3, 4]" in paper and "D59" in paper and "n: [5, 5, 5, 5," in paper
    assert "D9" in rec.scales["quick"].spec and "n: [4, 4, null, null]" in rec.scales["quick"].spec


@pytest.mark.parametrize("n", [9, 59])
def test_the_shipped_dihedral_tables_are_the_function_s(n):
    table, symbols = read_group_csv(m.dihedral_csv(n))
    ref, ref_symbols = m.dihedral_table(n)
    assert symbols == ref_symbols and np.array_equal(table, ref)
    # the composition of the plane's rotations r^a and reflections r^a s, as 2 x 2 matrices
    theta = 2 * np.pi / n

    def rot(a: int) -> np.ndarray:
        return np.array([[np.cos(a * theta), -np.sin(a * theta)], [np.sin(a * theta), np.cos(a * theta)]])

    mats = [rot(a) for a in range(n)] + [rot(a) @ np.diag([1.0, -1.0]) for a in range(n)]
    for i in range(2 * n):
        for j in range(0, 2 * n, max(1, n // 4)):
            np.testing.assert_allclose(mats[i] @ mats[j], mats[table[i, j]], atol=1e-9)
    task = make_task("group", group=str(m.dihedral_csv(n)))  # the group axioms are checked
    assert task.n_samples == (2 * n) ** 2 and m.group_name(task) == f"D{n}"


def test_authors_names_and_faithfulness():
    s5 = make_task("perm", n=5)
    rec = ir.irreps(s5.table)
    assert m.authors_names(s5, rec) == {"1a": "trivial", "1b": "sign", "4a": "standard", "4b": "standard_sign",
                                        "5a": "s5_5d_b", "5b": "s5_5d_a", "6a": "s5_6d"}
    assert [m.jointly_faithful(rec, [lab]) for lab in rec.labels] == [False, False, True, True, True, True, True]
    s4 = make_task("perm", n=4)
    assert m.authors_names(s4, ir.irreps(s4.table)) == {"1a": "trivial", "1b": "sign", "2a": "s4_2d",
                                                         "3a": "standard", "3b": "standard_sign"}
    d9 = make_task("group", group=str(m.dihedral_csv(9)))
    rec9 = ir.irreps(d9.table)
    names = m.authors_names(d9, rec9)
    assert names == {"1a": "trivial", "1b": "sign", "2a": "freq_1", "2b": "freq_2", "2c": "freq_3", "2d": "freq_4"}
    label = {v: k for k, v in names.items()}
    assert len(m.kernel(rec9, label["freq_3"])) == 3  # the rotations by multiples of 3
    assert not m.jointly_faithful(rec9, [label["freq_3"], label["sign"]])
    assert m.jointly_faithful(rec9, [label["freq_3"], label["freq_1"]])
    assert m.authors_faithful("D59", "freq_3") and not m.authors_faithful("D9", "freq_3")
    assert not m.authors_faithful("S5", "sign") and m.authors_faithful("S5", "s5_6d")


def test_the_released_numbers_are_consistent():
    """The 50-seed counts agree with each other (the key irreps counted per irrep and per run) and the
    per-seed records with their own key lists; every released run's key irreps are jointly faithful
    and it learned a faithful irrep before generalising."""
    assert sum(m.S5_N_KEY.values()) == sum(m.S5_FIRST.values()) == m.S5_SEEDS
    assert sum(m.S5_KEY_COUNTS.values()) == sum(k * r for k, r in m.S5_N_KEY.items())
    assert m.S5_KEY_COUNTS["s5_6d"] == 0 and set(m.S5_KEY_COUNTS) == set(m.AUTHORS_N_IRREPS["S5"])
    lo, mid, hi = m.S5_FVE_RANGE
    for group, runs in m.AUTHORS_RUNS.items():
        assert sorted(runs) == [1, 2, 3, 4]
        for run in runs.values():
            assert set(run.passes) == set(run.final) == set(run.key) <= set(m.AUTHORS_N_IRREPS[group])
            # the key irreps' squared similarities make up the logit FVE (every other similarity is below 0.004)
            assert sum(v * v for v in run.final.values()) == pytest.approx(run.fve, abs=1e-3)
            assert m.authors_jointly_faithful(group, run.key)
            assert m.authors_faithful_before_generalising(group, run)
            if group == "S5":
                assert lo <= run.fve <= hi
    assert [m.authors_first(m.AUTHORS_RUNS["S5"][s]) for s in (1, 2, 3, 4)] == ["sign"] * 4


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "chughtai-irreps", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == N_QUICK_ROWS
    assert set(table["verdict"]) <= {"agrees", "differs"}
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["group"]) == ["D9", "D9", "S4", "S4"] and sorted(runs["seed"]) == [1, 1, 2, 2]
    # the paper's claims that hold at this scale: every run generalises, a faithful irrep is learned before
    # it does, the key irreps are jointly faithful and their characters explain most of the logits
    assert (runs["final_val_acc"] >= m.GEN_ACC).all() and runs["gen_step"].max() <= 1500
    assert runs["jointly_faithful"].all() and runs["faithful_before_gen"].all()
    assert (runs["fve"] > 0.5).all() and (runs["fve"] <= 1).all()
    assert (runs["n_key"] <= runs["n_irreps"]).all()
    for group in ("S4", "D9"):
        keys = runs.loc[runs["group"] == group, "key_names"]
        assert all("sign" in k.split(",") for k in keys)
    for pattern in ("validation accuracy reaches", "jointly faithful", "logit FVE", "before validation accuracy"):
        rows = table[table["quantity"].str.contains(pattern, regex=False)]
        assert len(rows) == 2 and set(rows["verdict"]) == {"agrees"}, pattern
    assert all("authors' S5" in q or "authors' D59" in q for q in table["quantity"])


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """One S4 run trained at a learning rate 100 times smaller for 300 steps: it does not generalise,
    so its rows change; the authors' side is the same."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    groups = (m.GroupRuns("S4", 0.8, (1,)),)
    spec = m.spec(groups, **{**m.QUICK, "steps": 300, "lr": 1e-4})
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert len(changed.rows) == 6 and all(", S4 " in r.quantity for r in changed.rows)
    for row in changed.rows:
        assert row.paper == before[row.quantity].paper and row.source == before[row.quantity].source
    gen = next(r for r in changed.rows if "validation accuracy reaches" in r.quantity)
    assert gen.probe.startswith("0/1") and gen.verdict == "differs" and gen.probe != before[gen.quantity].probe
    fve = next(r for r in changed.rows if "logit FVE" in r.quantity)
    assert fve.probe != before[fve.quantity].probe
    assert math.isinf(float(changed.runs["gen_step"].iloc[0]))


def test_the_paper_scale_rows_and_figure_on_short_runs(tmp_path):
    """The paper scale's groups (S5 and the shipped D59 table) for 20 steps on a small MLP: every row the
    paper scale compares is produced (the steps to generalise, the number of key irreps and how often
    each S5 irrep is key against the 50 released seeds), with the authors' numbers, and the figure draws
    the authors' side."""
    from matplotlib import pyplot as plt

    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    groups = tuple(m.GroupRuns(g.name, g.train_fraction, (1,)) for g in m.PAPER_GROUPS)
    spec = m.spec(groups, **{**m.PAPER_RUNS, "steps": 20, "d_embed": 16, "hidden": 16, "count": 5, "every": 10})
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    res = m.analyse(str(tmp_path / "sweep"), "paper")
    quantities = [r.quantity for r in res.rows]
    assert len(res.rows) == 13 + 7 and not any("nearest group" in q for q in quantities)
    s5 = {r.quantity: r for r in res.rows if r.quantity.endswith(", S5")}
    assert s5["steps to validation accuracy 0.99 (median over runs), S5"].paper.endswith(
        "(seeds 1-4: 161,742, 93,556, 99,561, 139,310)")
    for name, count in m.S5_KEY_COUNTS.items():
        assert s5[f"runs in which {name} is a key irrep, S5"].paper == f"{count}/50 (seeds 1-50)"
    assert s5["key irreps per run (median), S5"].tolerance == "inside 2 to 5"
    d59 = {r.quantity: r for r in res.rows if r.quantity.endswith(", D59")}
    assert d59["runs in which sign is a key irrep, D59"].paper == "3/4 (seeds 1-4)"
    assert d59["key irreps per run (median), D59"].paper == "10.5 of 30 (seeds 1-4: 12, 10, 11, 9)"
    runs = res.runs.set_index("group")
    assert runs.loc["S5", "n_irreps"] == 6 and runs.loc["D59", "n_irreps"] == 30
    assert runs.loc["S5", "final_val_acc"] < 0.5  # 20 steps: nothing generalises
    fig = m.draw(res)
    assert len(fig.axes) == 6
    plt.close(fig)
