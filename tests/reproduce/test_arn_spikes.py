"""probe reproduce arn-spikes (docs/design.md, "Reproductions"): the quotations are Arn's text, the
spike records on curves with known spikes, the quick scale end to end (golden: the thesis's
qualitative findings) and rows recomputed from the runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from probe.reproduce import arn_spikes as m
from probe.reproduce.registry import get_reproduction
from probe.train.sweep import parse_spec

REPRODUCTION = "arn-spikes"
N_ROWS = 7


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction(REPRODUCTION)


def test_registered_in_arns_setting_beside_the_authors_files():
    rec = get_reproduction(REPRODUCTION)
    assert rec.artefact.repository == "github.com/openai/grok"
    assert {s.authors_file for s in rec.setting} <= {"grok/data.py", "grok/training.py", "grok/transformer.py"}
    paper = parse_spec(rec.scales["paper"].spec)
    assert paper.fixed["weight_decay"] == m.WEIGHT_DECAY == 0.01 and paper.fixed["softmax_dtype"] == "float32"
    assert paper.fixed["steps"] == 100_000 and "stop" not in str(paper.fixed)  # spikes after generalisation count
    quick = parse_spec(rec.scales["quick"].spec)
    assert quick.fixed["p"] == 31 and "batch_size: [144, 384]" in rec.scales["quick"].spec
    assert "batch_size: [512, 512, 512]" in rec.scales["paper"].spec  # min(512, ceil(n / 2)) at p = 97
    rows = {s.setting: s for s in rec.setting}
    assert "0.01" in rows["optimizer"].authors and "1%" in rows["evaluation cadence"].authors


def test_the_reference_claims_are_arns_text(arn_thesis):
    """Every quoted sentence of the rows is in Arn's thesis, verbatim."""
    text = arn_thesis
    for quote in ("our training loss gets very close to zero, but spikes again after some time by a factor of over "
                  "10^6", "occur for almost every dataset for almost every training percentage",
                  "They happen even where generalization is not possible",
                  "They also happen when grokking has occurred already and the validation accuracy is perfect",
                  "the lower bound for grokking is the first training loss spike",
                  "not once in my experiments the model jumped to a minimum that generalized worse. In other words: "
                  "There is no un-grokking.", "the spikes of the validation and training losses mirror each other",
                  "I set to 0.01", "different parts of the same dataset, same random seed"):
        assert quote in text, quote


def _curves(spikes: dict[int, float], n: int = 200, every: int = 10) -> pd.DataFrame:
    """Metric rows every ``every`` steps: the training loss decays from 1 to 1e-4, with one-row spikes
    to the given values at the given steps; the validation accuracy climbs by 0.1 at each spike."""
    steps = np.arange(0, n * every, every)
    loss = np.geomspace(1.0, 1e-4, n)
    val_acc = np.full(n, 0.3)
    for s, v in spikes.items():
        i = s // every
        loss[i] = v
        val_acc[i] = 0.05  # a dip during the spike
        val_acc[i + 1:] += 0.1
    val_loss = 1.0 - val_acc
    return pd.DataFrame({"step": steps, "train_loss": loss, "train_acc": np.ones(n), "val_loss": val_loss,
                         "val_acc": val_acc})


def test_spike_records_read_height_plateaus_and_validation_loss():
    m_ = _curves({600: 5.0, 1500: 2.0})
    recs = m.spike_records(m_)
    assert [r.start for r in recs] == [600, 1500] and [r.recovery for r in recs] == [10, 10]
    floor = float(m_["train_loss"].iloc[50:60].min())  # the minimum of the rows before step 600
    assert recs[0].floor == pytest.approx(floor) and recs[0].height == pytest.approx(5.0 / floor)
    # the plateau before each spike, and after it: the last row before the next spike (or the end)
    assert recs[0].val_acc_before == pytest.approx(0.3) and recs[0].val_acc_after == pytest.approx(0.4)
    assert recs[1].val_acc_before == pytest.approx(0.4) and recs[1].val_acc_after == pytest.approx(0.5)
    assert all(r.val_loss_rose for r in recs)
    # a spike whose plateau after it is shorter than SETTLE is not read; one not recovered neither
    late = m.spike_records(_curves({1900: 1.0}))
    assert len(late) == 1 and math.isnan(late[0].val_acc_after)
    last = m.spike_records(_curves({1990: 1.0}))
    assert last[0].recovery is None and math.isnan(last[0].val_acc_after)


def test_run_summary_counts_spikes_grokking_and_worse_plateaus():
    m_ = _curves({600: 5.0, 1500: 2.0})
    m_.loc[m_["step"] >= 1600, "val_acc"] = 0.995  # generalised after the second spike: grokking (fit at 0)
    s = m.run_summary(m_, m.spike_records(m_))
    assert s["fit_step"] == 0 and s["gen_step"] == 1600 and s["grokked"] and s["generalised"]
    assert s["spikes"] == 2 and s["first_spike"] == 600 and s["spikes_after_gen"] == 0
    assert s["max_step"] == 1500 and s["worse_plateaus"] == 0 and s["settled"] == 2
    worse = _curves({600: 5.0, 1500: 2.0})
    worse.loc[worse["step"] > 600, "val_acc"] = 0.1  # the plateau after the first spike is lower
    assert m.run_summary(worse, m.spike_records(worse))["worse_plateaus"] == 1
    calm = _curves({})
    c = m.run_summary(calm, m.spike_records(calm))
    assert c["spikes"] == 0 and math.isinf(c["first_spike"]) and math.isnan(c["max_height"]) and not c["generalised"]


def test_quick_scale_golden(quick):
    """The thesis's findings at the quick scale: both runs fit the training set and then spike, the
    run that generalises spikes after it, the one that does not spikes anyway; the validation loss
    rises with every spike and no spike leaves a worse plateau. The 10^6 height needs Arn's weight
    decay 0.01 (the paper scale); no quick run groks."""
    out, res = quick
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == N_ROWS
    runs = pd.read_csv(out / "runs.csv").set_index("train_fraction")
    low, high = runs.loc[0.3], runs.loc[0.8]
    assert low["fit_step"] <= 150 and high["fit_step"] <= 150
    assert low["spikes"] >= 1 and high["spikes"] >= 1 and not low["generalised"] and high["generalised"]
    assert high["spikes_after_gen"] >= 1 and low["first_spike"] > low["fit_step"]
    assert low["val_loss_rose"] == low["spikes"] and high["val_loss_rose"] == high["spikes"]
    assert runs["worse_plateaus"].sum() == 0 and runs["settled"].sum() >= 1
    verdicts = dict(zip(table["quantity"], table["verdict"]))
    for q in ("runs with at least one training-loss spike", "spikes in runs that do not generalise",
              "spikes after generalisation", "spikes after which the validation accuracy settles lower than before",
              "spikes with which the validation loss rises too"):
        assert verdicts[q] == "agrees", q
    assert verdicts["largest training-loss spike (peak over the running minimum)"] == "differs"
    assert 10 < runs["max_height"].max() < m.HUGE


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The generalising run alone, stopped before its first spike: the spike rows change."""
    from probe.train.sweep import ExecutorOptions, run_sweep

    _, res = quick
    spec = m._spec(m.QUICK_P, m.QUICK_TASK, [0.8], m._batches(m.QUICK_TASK, m.QUICK_P, [0.8]), 250, m.QUICK_WD, 10,
                   ", model.d_model: 64, model.d_mlp: 256")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = {r.quantity: r for r in m.analyse(str(tmp_path / "sweep"), "quick").rows}
    before = {r.quantity: r for r in res.analysis.rows}
    assert set(changed) == set(before)
    row = changed["runs with at least one training-loss spike"]
    assert row.probe.startswith("0 of 1") and row.verdict == "differs" and before[row.quantity].verdict == "agrees"
    assert changed["spikes after generalisation"].verdict == "differs"
    assert all(changed[q].paper == before[q].paper for q in changed)
