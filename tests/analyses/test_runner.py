"""The runner: compute over a run or arrays, step selection, caching, registry rules, shipped runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from probe import analyses
import probe
from probe.analyses.registry import Metric, load
from probe.run import select_steps
from probe.errors import ProbeError
from probe.tasks import make_split, make_task

DATA = Path(__file__).resolve().parents[2] / "data" / "runs"


@pytest.fixture
def toy_add(tmp_path: Path) -> Path:
    dst = tmp_path / "toy-add"
    shutil.copytree(DATA / "toy-add", dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


def test_shipped_toy_run_rqi_rises_to_one_as_it_generalises(toy_add: Path):
    run = probe.load_run(toy_add)
    df = analyses.compute(run, ["rqi", "acc_hat"])
    assert list(df.columns[:3]) == ["step", "rqi", "parallelograms"]
    assert len(df) == len(run.steps)
    assert df["rqi"].iloc[0] < 0.1 and df["rqi"].iloc[-1] == pytest.approx(1.0)
    m = run.metrics.set_index("step")
    val = m.loc[df["step"], "val_acc"].to_numpy()
    first_full = df["step"][val >= 1.0].iloc[0]
    early = df[df["step"] < first_full / 4]["rqi"].mean()
    late = df[df["step"] >= first_full]["rqi"].mean()
    assert late > early + 0.4
    final_acc = (len(run.split.train) * m["train_acc"].iloc[-1] + len(run.split.val) * m["val_acc"].iloc[-1]) \
        / run.task.n_samples
    assert df["acc_hat"].iloc[-1] == pytest.approx(final_acc, abs=0.02)
    bounds = analyses.compute(run, ["rqi_bar", "alexander_violations"])
    assert (df["rqi"] <= bounds["rqi_bar"] + 1e-12).all()  # Alexander principle, Liu eq. 16


def test_arrays_work_without_a_run():
    task = make_task("nonmod-add", p=10)
    split = make_split(task.n_samples, 0.8, 0)
    series = np.stack([np.random.default_rng(0).normal(size=(10, 2)), np.arange(10)[:, None] * np.ones((1, 2))])
    df = analyses.compute(series, ["rqi", "acc_hat", "rqi_bar"], task=task, split=split, steps="all")
    assert df["step"].tolist() == [0, 1]
    assert df["rqi"].iloc[1] == 1.0 and df["rqi"].iloc[0] < 0.1
    single = analyses.compute(series[1], "rqi", task=task)
    assert single["rqi"].tolist() == [1.0]
    with pytest.raises(ProbeError, match="needs task="):
        analyses.compute(series, "rqi")
    with pytest.raises(ProbeError, match="forward pass"):
        analyses.compute(series, "rqi", task=task, hook="hook_agg")


def test_params_are_validated_and_recorded(toy_add: Path):
    run = probe.load_run(toy_add)
    df = analyses.compute(run, "rqi", steps="last", delta=0.05)
    assert df.attrs["probe"]["rqi"]["params"]["delta"] == 0.05
    with pytest.raises(ProbeError, match="must be a positive number"):
        analyses.compute(run, "rqi", delta=-1)
    with pytest.raises(ProbeError, match="not a valid float"):
        analyses.compute(run, "rqi", delta="abc")
    with pytest.raises(ProbeError, match="does not belong to rqi"):
        analyses.compute(run, "rqi", freq=3)
    with pytest.raises(ProbeError, match=r"unknown metric 'rqx' \(valid: acc_bar, acc_hat"):
        analyses.compute(run, "rqx")


def test_cache_is_reused_invalidated_and_survives_corruption(toy_add: Path):
    run = probe.load_run(toy_add)
    first = analyses.compute(run, "rqi", steps="0:1000")
    files = sorted((toy_add / "analysis").glob("rqi-*.parquet"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = analyses.compute(run, "rqi", steps="0:1000")
    assert files[0].stat().st_mtime_ns == mtime and again.equals(first)
    analyses.compute(run, "rqi", steps="0:1000", delta=0.02)  # other parameters: another entry
    assert len(list((toy_add / "analysis").glob("rqi-*.parquet"))) == 2
    files[0].write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="unusable"):
        fixed = analyses.compute(run, "rqi", steps="0:1000")
    assert fixed.equals(first)
    forced = analyses.compute(run, "rqi", steps="0:1000", force=True)
    assert forced.equals(first)


def test_select_steps():
    steps = np.array([0, 10, 20, 50, 100])
    assert select_steps(steps, "all").tolist() == [0, 1, 2, 3, 4]
    assert select_steps(steps, "last").tolist() == [4]
    assert select_steps(steps, "10:50").tolist() == [1, 2, 3]
    assert select_steps(steps, "0:100:2").tolist() == [0, 2, 4]
    assert select_steps(steps, "20,100").tolist() == [2, 4]
    with pytest.raises(ProbeError, match="step 30 is not a checkpoint"):
        select_steps(steps, "30")
    with pytest.raises(ProbeError, match="selects no checkpoint"):
        select_steps(steps, "200:300")
    with pytest.raises(ProbeError, match="STRIDE must be >= 1"):
        select_steps(steps, "0:100:0")


def test_registry_rejects_duplicates_and_declares_needs():
    m = analyses.get_metric("rqi")
    assert m.needs == {"embeddings"} and m.requirements({"hook": "hook_agg"}) == {"embeddings", "forward"}
    with pytest.raises(ValueError, match="registered twice"):
        load().add("rqi", Metric(name="rqi", description="", needs=frozenset(), fn=lambda *a: {}))


def test_what_a_metric_applies_to_is_its_check_in_words():
    from probe.analyses.applies import anything, classification, last_position_readout, modular_add_grid

    assert analyses.get_metric("rqi_bar").tasks == analyses.get_metric("rqi_bar").applies.description
    assert analyses.get_metric("restricted_loss").applies is modular_add_grid
    assert analyses.get_metric("restricted_loss").tasks == (f"{modular_add_grid.description}, "
                                                             f"{last_position_readout.description}")
    assert analyses.get_metric("efficiency").applies is anything
    assert analyses.get_metric("efficiency").tasks == classification.description == "classification runs"
    assert analyses.get_metric("param_norm").tasks == "any task"


def test_checkpoints_in_the_runner_read_their_run(toy_add: Path, monkeypatch):
    """The runner's checkpoints are the run's own: ``params()`` works inside a metric as in a notebook."""
    def squared_norm(ckpt, ctx):
        return {"sq": float(sum(float((t.double() ** 2).sum()) for t in ckpt.params().values()))}

    monkeypatch.setitem(load()._items, "params_probe", Metric(name="params_probe", description="",
                                                              needs=frozenset({"weights"}), fn=squared_norm))
    run = probe.load_run(toy_add)
    df = analyses.compute(run, "params_probe", steps="first,last", cache=False)
    want = [sum(float((t.double() ** 2).sum()) for t in run.params(int(s)).values()) for s in df["step"]]
    assert df["sq"].tolist() == pytest.approx(want) and want[0] != want[1]
    with pytest.raises(ProbeError, match="needs the run's weights; plain arrays have none"):
        analyses.compute(np.zeros((10, 2)), "params_probe", task=make_task("nonmod-add", p=10))


def test_metrics_that_do_not_apply_are_errors():
    s3 = make_task("perm", n=3)
    emb = np.random.default_rng(0).normal(size=(6, 3, 3))
    with pytest.raises(ProbeError, match="does not apply to task perm.*abelian"):
        analyses.compute(emb, "rqi_bar", task=s3, split=make_split(36, 0.5, 0))
    with pytest.raises(ProbeError, match="does not apply.*modular addition"):
        analyses.compute(np.zeros((10, 2)), "rqi_circular", task=make_task("nonmod-add", p=10))


def test_hook_rqi_equals_embedding_rqi_for_sum_aggregation(tmp_path: Path):
    from probe.config import TrainConfig
    from probe.train.config import load_config
    from probe.train.loop import train

    cfg: TrainConfig = load_config("liu-toy-add", overrides={
        "task": "add", "p": "7", "ordered": "true", "n_train": None, "train_fraction": "0.8", "steps": "30",
        "model.decoder": "8", "checkpoint.schedule": "every", "checkpoint.every": "10",
        "checkpoint.metrics_every": "10"})
    train(cfg, tmp_path / "r", progress=False)
    run = probe.load_run(tmp_path / "r")
    for delta in (0.05, 0.3, 1.0):
        emb = analyses.compute(run, "rqi", delta=delta, cache=False)
        hook = analyses.compute(run, "rqi", delta=delta, hook="hook_agg", test="delta", cache=False)
        assert np.array_equal(emb["parallelograms"], hook["parallelograms"])


def test_circular_rqi_of_a_clock_is_one_and_random_is_low():
    task = make_task("add", p=23)
    a = np.arange(23)
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 2)))[0]
    clock = np.stack([np.cos(2 * np.pi * 5 * a / 23), np.sin(2 * np.pi * 5 * a / 23)], 1) @ basis.T
    df = analyses.compute(clock, "rqi_circular", task=task)
    assert df["rqi_circular"].iloc[0] == 1.0 and df["plane_freq"].iloc[0] == 5
    noise = analyses.compute(rng.normal(size=(23, 8)), "rqi_circular", task=task)
    assert noise["rqi_circular"].iloc[0] < 0.2  # chance: circ_delta / pi = 0.1
    pca = analyses.compute(clock, "rqi_circular", task=task, plane="pca")
    assert pca["rqi_circular"].iloc[0] == 1.0
