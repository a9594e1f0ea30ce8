"""probe reproduce power-fraction (docs/design.md, "Reproductions"): the authors' batch rule, the
per-operator summaries, the quick scale end to end (golden), and rows recomputed from the runs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from probe.reproduce import power_fraction as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("power-fraction")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("power-fraction")
    assert rec.artefact.repository == m.REPO and rec.artefact.commit == m.COMMIT
    assert {s.authors_file for s in rec.setting} <= {m.DATA, m.TRAINING, m.MODEL}
    paper = rec.scales["paper"].spec
    assert "p: 97" in paper and "steps: 100000" in paper and "batch_size: 512" in paper
    assert "task: [add, sub, div, x2+y2]" in paper and "seeds: [0, 1, 2]" in paper
    assert rec.scales["quick"].time != "unmeasured" and "Arn" in rec.artefact.description


def test_the_reference_claims_are_arns_text(arn_thesis):
    """Every quoted sentence of the rows and the setting table is in Arn's thesis, verbatim."""
    text = arn_thesis
    for quote in ("a clear relation between the amount of data and the learning performance",
                  "if fast generalization occurred, grokking occurred too when feeding less data from the same "
                  "dataset to the model", "for which the model achieved generalization",
                  "the same random seed to initialize model weights", "varying train-validation-split percentages",
                  "I doubled the range from the 10^6 optimization steps in the original paper"):
        assert quote in text, quote
    assert set(m.ARN_GENERALISED) == set(m.OPERATORS)


def test_the_authors_batch_rule_and_sizes():
    assert m.power_batch_size(100) == 50 and m.power_batch_size(101) == 51 and m.power_batch_size(5000) == 512
    assert m.n_samples("div", 97) == 9312 and m.n_samples("add", 97) == 9409
    # every paper fraction has at least 1,024 training equations: the batch is 512 throughout
    assert min(m.n_train(t, m.PAPER_P, f) for t in m.OPERATORS for f in m.PAPER_FRACTIONS) >= 1024
    assert m.quick_spec().count("batch_size: [144, 384]") == 1


def test_the_summaries():
    inf = math.inf
    assert m.non_increasing([inf, inf, 150.0]) and m.non_increasing([900.0, 400.0, 400.0])
    assert not m.non_increasing([400.0, 900.0]) and not m.non_increasing([150.0, inf])
    assert m.critical_fraction([0.3, 0.5, 0.8], [inf, 900.0, 150.0]) == 0.5
    assert m.critical_fraction([0.3, 0.5, 0.8], [200.0, inf, 150.0]) == 0.8  # every larger fraction must reach it
    assert math.isinf(m.critical_fraction([0.3, 0.8], [inf, inf]))
    assert m.median_steps([100.0, inf, inf]) == inf and m.median_steps([100.0, 300.0, inf]) == 300.0


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "power-fraction", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 3  # one operator: three rows
    assert set(table["verdict"]) <= {"agrees", "differs"}
    assert all(m.ARN in s for s in table["source"])
    runs = pd.read_csv(out / "runs.csv").set_index("train_fraction")
    assert list(runs["batch_size"]) == [144, 384]
    # the claim: the largest fraction reaches 99% validation accuracy within the budget, the smallest does not
    assert runs.loc[0.8, "val_step"] < m.QUICK_STEPS and math.isinf(runs.loc[0.3, "val_step"])
    assert runs.loc[0.3, "best_val_acc"] < runs.loc[0.8, "best_val_acc"]
    assert set(table["verdict"]) == {"agrees"}


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The 0.8 run trained at a learning rate 100 times smaller never reaches 99% validation accuracy:
    the operator's rows change with it."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = m._spec("", "[0.8]", "[384]", m.QUICK_P, 100, "checkpoint.schedule: every, checkpoint.every: 400", 10,
                   m.QUICK_EXTRA + ", lr: 1.0e-5", [0])
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    q = "x^2+y^2: reaches 99% validation accuracy at the largest fraction trained (0.8)"
    before = {r.quantity: r for r in res.analysis.rows}[q]
    after = {r.quantity: r for r in changed.rows}[q]
    assert after.paper == before.paper and after.probe.startswith("never") and after.verdict == "differs"
    assert before.verdict == "agrees"
