"""probe reproduce (docs/design.md, "Reproductions"): the registry's records, the quick scale end to
end (golden: its qualitative claims and its reference rows), rows recomputed from the runs, and bad
input refused in one line before anything is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from probe.cli import main
from probe.reproduce import liu_fig5b
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD


REPRODUCTION = "liu-fig5b"  # the reproduction these tests exercise (one xdist group)


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("liu-fig5b")


def test_the_reference_numbers_are_the_released_ones():
    """The files' iter_rqi: 739 to 2,553 where RQI passed 0.95, 9999 for never."""
    finite = [v for seeds in liu_fig5b.AUTHORS_ITER_RQI.values() for v in seeds if v < liu_fig5b.NEVER]
    assert (min(finite), max(finite), len(finite)) == (739, 2553, 14)
    assert liu_fig5b.authors_steps(30) == [math.inf, math.inf, 740.0]
    assert sorted(liu_fig5b.AUTHORS_ITER_RQI) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 54]


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "liu-fig5b", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 2 * len(liu_fig5b.QUICK_N) + 1  # median steps and share reached per fraction, run by run
    # seed S is the authors' run S (rng grokking-squared): the runs that pass within the quick budget
    # pass within the metric cadence of the authors' step, the others never do, as theirs never do
    by_run = table[table["quantity"].str.contains("run by run")].iloc[0]
    assert by_run["verdict"] == "agrees" and by_run["probe"].startswith("4 of 4")
    assert set(table["verdict"]) <= {"agrees", "differs"}
    assert all("rqistep_num_" in s for s in table["source"])
    runs = pd.read_csv(out / "runs.csv")
    med = runs.groupby("n_train")["rqi_step"].median()
    # the figure's claims: below the critical fraction RQI stays under 0.95; above it, it passes it
    assert np.isinf(med.loc[20]) and np.isfinite(med.loc[45]) and med.loc[45] < liu_fig5b.QUICK_STEPS


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The same analysis over a sweep whose 45-pair run trains its embeddings 100 times slower: the
    rows for that fraction change with the run (RQI no longer passes 0.95), the others are absent."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = liu_fig5b.QUICK_SPEC_TEMPLATE.format(n_train=[45], seeds=[0], extra=", embed_lr: 1.0e-5")
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = liu_fig5b.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert {r.quantity for r in changed.rows if "fraction" in r.quantity} == {k for k in before if "45/55" in k}
    for row in changed.rows:
        assert row.probe != before[row.quantity].probe
        assert row.paper == before[row.quantity].paper or "run by run" in row.quantity  # fewer runs compared
    share = next(r for r in changed.rows if r.quantity.startswith("share"))
    assert share.probe.startswith("0/1") and share.verdict == "differs"


def test_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    text = capsys.readouterr().out
    rec = get_reproduction("liu-fig5b")
    from probe.reproduce.registry import recorded_verdict

    assert "liu-fig5b" in text and rec.artefact.path in text and f"scale paper: {rec.scales['paper'].time}" in text
    assert f"last recorded verdict: {recorded_verdict(rec)}" in text


@pytest.mark.parametrize("argv,needle", [
    (["reproduce", "nope", "--out", "{d}"], "unknown reproduction 'nope'"),
    (["reproduce", "liu-fig5b", "--out", "{d}", "--scale", "huge"], "unknown scale 'huge'"),
    (["reproduce", "liu-fig5b", "--out", "{other}"], "holds the reproduction 'other-one'"),
    (["reproduce", "liu-fig5b", "--out", "{d}", "--jobs", "0"], "must be >= 1"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, argv, needle):
    d, other = tmp_path / "new", tmp_path / "other"
    other.mkdir()
    (other / RECORD).write_text(json.dumps({"reproduction": "other-one", "scale": "quick"}))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [a.format(d=d, other=other) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if "nope" in needle:
        assert "liu-fig5b" in err


def test_the_recorded_verdict_is_counted_from_the_committed_comparison(tmp_path):
    from probe.reproduce.registry import get_reproduction, recorded_verdict

    rec = get_reproduction("liu-fig5b")
    assert recorded_verdict(rec, tmp_path).startswith("paper scale not yet run")
    (tmp_path / rec.name).mkdir()
    (tmp_path / rec.name / "comparison.csv").write_text(
        "quantity,paper,source,probe,tolerance,verdict\na,1,f,1,x,agrees\nb,2,f,9,x,differs\nc,3,f,3,x,agrees\n")
    assert recorded_verdict(rec, tmp_path) == "paper scale: 2 of 3 numbers agree (1 differ)"


def test_no_vectorize_reaches_the_sweep(monkeypatch, tmp_path):
    """``--no-vectorize`` trains every run on its own, as ``probe sweep --no-vectorize`` does."""
    import probe.reproduce.runner as runner
    from probe.train import sweep

    seen = {}

    def fake_run_sweep(spec, out, opts, progress=True):
        seen["vectorize"] = opts.vectorize
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    assert main(["reproduce", "liu-fig4a", "--out", str(tmp_path / "a"), "--no-vectorize", "--no-progress"]) == 130
    assert seen == {"vectorize": "off"}
    assert main(["reproduce", "liu-fig4a", "--out", str(tmp_path / "b"), "--no-progress"]) == 130
    assert seen == {"vectorize": "auto"}
    assert runner.reproduce.__defaults__[-1] == "auto"
