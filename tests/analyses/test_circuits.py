"""Varma et al.'s circuit efficiencies and critical dataset size (probe.analyses.circuits, the library
side in probe.analyses.theory, ``probe theory critical-dataset-size``): analytic crossings, the
monotone properties, one-line refusals, and a tiny sweep of memorising and generalising networks read
end to end, with bad input refused by the command line with exit code 2 and nothing written."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from probe.analyses import circuits as c
from probe.analyses import theory
from probe.cli import main
from probe.errors import ProbeError

pytestmark = pytest.mark.xdist_group("circuits")  # one worker trains the module's sweep once

SIZES = np.array([100.0, 200.0, 400.0, 800.0])


def mem_curve(scale: float, d_crit: float, gen: float = 10.0) -> np.ndarray:
    """A memorising efficiency linear in log size that meets the level ``gen`` at ``d_crit``."""
    return gen - scale * (np.log(SIZES) - np.log(d_crit))


def test_logit_scale_is_the_correct_logit_against_the_mean_of_the_others():
    z = np.array([[3.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    assert c.logit_scale(z, np.array([0, 2])) == pytest.approx(((3 - 0) + (3 - 1.5)) / 2)
    assert c.logit_scale(z + 7.0, np.array([0, 2])) == pytest.approx(c.logit_scale(z, np.array([0, 2])))  # shift-free
    assert c.logit_scale(2 * z, np.array([0, 2])) == pytest.approx(2 * c.logit_scale(z, np.array([0, 2])))
    with pytest.raises(ProbeError, match="logit_scale needs"):
        c.logit_scale(z, np.array([0]))


def test_two_curves_crossing_at_a_known_size_give_that_size():
    mem = np.stack([mem_curve(2.0, 300.0), mem_curve(1.0, 300.0)])  # linear in log size: exact interpolation
    gen = np.full_like(mem, 10.0)
    est = c.critical_size(SIZES, mem, gen, seeds=(3, 4))
    assert est.per_seed == pytest.approx((300.0, 300.0)) and est.estimate == pytest.approx(300.0)
    assert est.where == ("inside", "inside") and est.seeds == (3, 4) and est.crossed == 2
    assert "300" in est.describe() and "2 of 2 seeds" in est.describe()


def test_the_estimate_is_the_median_and_the_interval_the_range_over_seeds():
    mem = np.stack([mem_curve(1.0, d) for d in (150.0, 300.0, 600.0)])
    est = c.critical_size(SIZES, mem, np.full_like(mem, 10.0))
    assert est.per_seed == pytest.approx((150.0, 300.0, 600.0))
    assert (est.low, est.estimate, est.high) == pytest.approx((150.0, 300.0, 600.0))


def test_the_generalising_level_is_interpolated_in_log_size_and_held_constant_beyond():
    gen = np.array([np.nan, np.nan, 10.0, 12.0])
    assert c.log_interp(SIZES, gen, SIZES) == pytest.approx([10.0, 10.0, 10.0, 12.0])
    assert c.log_interp(SIZES, gen, np.array([565.685424949238]))[0] == pytest.approx(11.0)  # halfway in log
    # generalising measured only at the two largest sizes: the crossing uses its level held below them
    mem = np.stack([mem_curve(1.0, 300.0)] * 2)
    est = c.critical_size(SIZES, mem, np.stack([gen, gen]))
    assert est.estimate == pytest.approx(300.0)


def test_monotone_properties():
    mem = np.stack([mem_curve(1.0, 300.0), mem_curve(1.0, 300.0)])
    gen = np.full_like(mem, 10.0)
    base = c.critical_size(SIZES, mem, gen).estimate
    # a more efficient generalising circuit crosses the memorising curve at a smaller size ...
    assert c.critical_size(SIZES, mem, gen + 0.5).estimate < base
    # ... a more efficient memorising circuit at a larger one
    assert c.critical_size(SIZES, mem + 0.5, gen).estimate > base
    # the sizes' order does not matter
    assert c.critical_size(SIZES[::-1], mem[:, ::-1], gen[:, ::-1]).estimate == pytest.approx(base)
    assert c.falls(mem[0]) and not c.falls(mem[0][::-1]) and not c.falls(np.array([1.0]))
    assert c.spread(np.array([10.0, np.nan, 12.5])) == pytest.approx(1.25) and math.isnan(c.spread(np.array([3.0])))


def test_curves_that_do_not_cross_say_where():
    mem = np.stack([mem_curve(1.0, 300.0)] * 2)
    above = c.critical_size(SIZES, mem, np.full_like(mem, -100.0))  # memorising always the more efficient
    below = c.critical_size(SIZES, mem, np.full_like(mem, 100.0))  # generalising always the more efficient
    assert above.where == ("above", "above") and math.isnan(above.estimate) and math.isnan(above.low)
    assert below.where == ("below", "below") and math.isnan(below.estimate)
    assert "no crossing" in above.describe() and "2 above" in above.describe()


@pytest.mark.parametrize("sizes, mem, gen, message", [
    (SIZES[:2], np.ones((2, 2)), np.ones((2, 2)), "got 2 size"),  # two sizes
    (SIZES, np.ones((1, 4)), np.ones((1, 4)), "got 4 size(s) and 1 seed"),  # one seed
    (SIZES, np.ones((2, 4)), np.full((2, 4), np.nan), "0 seed(s) with both"),  # no generalising network
    (SIZES, np.array([[1, 1, np.nan, np.nan], [1, 1, 1, 1.0]]), np.ones((2, 4)), "1 seed(s) with both"),
    (SIZES, np.ones((2, 3)), np.ones((2, 3)), "one shape"),
    (np.array([1.0, 1.0, 2.0, 3.0]), np.ones((2, 4)), np.ones((2, 4)), "distinct positive"),
])
def test_too_few_sizes_or_seeds_are_refused_in_one_line(sizes, mem, gen, message):
    with pytest.raises(ProbeError) as exc:
        c.critical_size(sizes, mem, gen)
    assert message in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------------------
# a tiny sweep: memorising networks at 3 sizes and generalising ones at 1, 2 seeds, norm held at 8 (the
# digits task, whose small MLP generalises within 60 steps)
# --------------------------------------------------------------------------------------------------
SPEC = ("set: {task: digits, p: null, steps: 60, optimizer: adamw, lr: 0.01, weight_decay: 0.0, model.kind: digits, "
        "model.width: 32, model.depth: 2, model.init_alpha: 1.0, model.objective: cross_entropy, "
        "constraint.norm: 8.0, checkpoint.schedule: every, checkpoint.every: 60, checkpoint.metrics_every: 20}\n"
        "zip:\n  labels: [shuffled, shuffled, shuffled, task]\n  n_train: [20, 40, 80, 300]\nseeds: [0, 1]\n")
GEN = 0.5  # the digits networks on the true labels reach about 0.9


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    out = tmp_path_factory.mktemp("circuits") / "sweep"
    run_sweep(parse_spec(SPEC), out, ExecutorOptions(kind="inline"), progress=False)
    return out


def test_a_sweep_of_both_circuits_reads_end_to_end(sweep):
    res = theory.critical_dataset_size_table(str(sweep), min_val_acc=GEN)
    runs = res.runs.set_index("run")
    assert len(runs) == 8 and set(runs["labels"]) == {"shuffled", "task"}
    assert (runs.loc[runs["labels"] == "shuffled", "circuit"] == "memorising").all()
    assert runs["norm"].to_numpy() == pytest.approx(8.0, rel=1e-5)  # every run at the constrained norm
    assert res.norm == pytest.approx(8.0, rel=1e-5)
    # each logit scale is the one computed from the run's own last checkpoint
    name = runs.index[0]
    import torch

    with _open(sweep, name) as run:
        x, y = run.dataset("train")
        with torch.no_grad():
            z = run.model("last").answer(x).double().numpy()
    assert runs.loc[name, "logit_scale"] == pytest.approx(c.logit_scale(z, y.numpy()))
    assert list(res.curves.columns) == ["size", "seed", "memorising", "generalising"]
    assert sorted(set(res.curves["size"])) == [20, 40, 80, 300] and res.estimate.seeds == (0, 1)
    assert (runs.loc[runs["labels"] == "task", "circuit"] == "generalising").all()
    # a generalising network that does not reach min_val_acc counts for neither circuit
    strict = theory.circuit_runs(str(sweep), min_val_acc=1.0)
    assert set(strict.loc[strict["labels"] == "task", "circuit"]) <= {"generalising", "neither"}


def _open(sweep, name):
    import probe

    return probe.load_sweep(sweep).run(name)


def test_runs_at_different_norms_are_refused(sweep, monkeypatch):
    runs = theory.circuit_runs(str(sweep), min_val_acc=GEN)
    runs.loc[0, "norm"] = 9.0
    monkeypatch.setattr(theory, "circuit_runs", lambda *a, **k: runs)
    with pytest.raises(ProbeError, match="not one fixed norm"):
        theory.critical_dataset_size_table(str(sweep))


def test_the_command_prints_the_curves_and_the_estimate(sweep, capsys, tmp_path):
    assert main(["theory", "critical-dataset-size", str(sweep), "--min-val-acc", str(GEN)]) == 0
    out = capsys.readouterr()
    assert "critical dataset size:" in out.out and "memorising" in out.out
    csv = tmp_path / "curves.csv"
    assert main(["theory", "critical-dataset-size", str(sweep), "--min-val-acc", str(GEN), "--out", str(csv),
                 "--format", "csv"]) == 0
    assert list(pd.read_csv(csv).columns) == ["size", "seed", "memorising", "generalising"]


@pytest.mark.parametrize("drop, message", [
    ("seed=1", "1 seed(s) with both"),  # one seed left
    ("n_train=40", "got 2 size(s)"),  # two memorising sizes left
])
def test_the_command_refuses_too_few_sizes_or_seeds_with_exit_2_and_writes_nothing(sweep, tmp_path, capsys,
                                                                                   drop, message):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for status in (copy / "status").glob(f"*{drop}*.json"):
        status.unlink()  # those runs no longer count as done
    out = tmp_path / "curves.csv"
    assert main(["theory", "critical-dataset-size", str(copy), "--min-val-acc", str(GEN), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("probe: error:") and message in err[0]
    assert not out.exists()


def test_a_bad_threshold_is_refused(sweep, capsys):
    assert main(["theory", "critical-dataset-size", str(sweep), "--min-val-acc", "1.5"]) == 2
    assert "--min-val-acc" in capsys.readouterr().err
