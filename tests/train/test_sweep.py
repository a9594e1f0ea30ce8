"""Sweeps: spec validation and expansion, a local sweep end to end, idempotent re-runs, status and
phases, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import probe
from probe.cli import main
from probe.errors import ProbeError
from probe.phases import PhaseRule, classify, majority
from probe.train import sweep as sw

TINY = """
preset: liu-toy-add
set: {steps: 120, checkpoint.schedule: every, checkpoint.every: 40, checkpoint.metrics_every: 20}
grid:
  lr: {logspace: [1e-4, 1e-2, 2]}
seeds: [0, 1]
"""


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_spec_expands_to_named_validated_configs():
    spec = sw.parse_spec("""
preset: liu-toy-add
set: {steps: 50}
grid:
  lr: {logspace: [1e-4, 1e-2, 3]}
  weight_decay: {linspace: [0, 10, 2]}
zip:
  train_fraction: [0.5, 0.8]
  checkpoint.every: [10, 5]
seeds: [0, 1]
split_seeds: [3]
""")
    points = sw.expand(spec)
    assert len(points) == 3 * 2 * 2 * 2 * 1
    assert spec.swept == ["lr", "weight_decay", "train_fraction", "checkpoint.every", "seed", "split_seed"]
    assert spec.log_keys == {"lr"}
    lrs = sorted({p.values["lr"] for p in points})
    assert lrs == [1e-4, 1e-3, 1e-2]
    first = points[0]
    assert first.name == "lr=0.0001__weight_decay=0__train_fraction=0.5__checkpoint.every=10__seed=0__split_seed=3"
    assert first.config.lr == 1e-4 and first.config.train_fraction == 0.5 and first.config.checkpoint.every == 10
    assert first.config.steps == 50 and first.config.split_seed == 3 and first.config.n_train is None
    zipped = {(p.values["train_fraction"], p.values["checkpoint.every"]) for p in points}
    assert zipped == {(0.5, 10), (0.8, 5)}
    assert len({p.name for p in points}) == len(points)


@pytest.mark.parametrize("text,needle", [
    ("preset: liu-toy-add\ngrid: {nope: [1, 2]}", "nope"),
    ("preset: liu-toy-add\ngrid: {lr: [0.1, -5]}", "lr=-5"),
    ("preset: liu-toy-add\ngrid: {lr: []}", "grid axis 'lr' is empty"),
    ("preset: liu-toy-add\ngrid: {}", "the sweep has no axes"),
    ("preset: liu-toy-add\ngrids: {lr: [1]}", "unknown sweep spec key 'grids' (valid: preset"),
    ("preset: liu-toy-add\ngrid: {lr: {logspace: [0, 1, 3]}}", "logspace needs positive ends"),
    ("preset: liu-toy-add\nzip: {lr: [1, 2], steps: [1]}", "equal lengths"),
    ("preset: liu-toy-add\ngrid: {seed: [1]}\nseeds: [2]", "swept twice"),
    ("preset: nope\ngrid: {lr: [1]}", "nope"),
    ("preset: liu-toy-add\ngrid: {steps: [10, ten]}", "steps='ten'"),
    (": : :", "not valid YAML"),
])
def test_bad_specs_are_one_line_and_write_nothing(tmp_path, capsys, text, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "sweep"
    code, _, err = _cli(capsys, "sweep", spec, "--out", out, "--no-progress")
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_dry_run_prints_the_runs_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY)
    code, out, _ = _cli(capsys, "sweep", spec, "--out", tmp_path / "s", "--dry-run")
    assert code == 0 and out.startswith("4 runs; swept: lr, seed")
    assert out.count("--- lr=") == 4 and "steps: 120" in out
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory, waits) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sweep")
    spec = base / "spec.yaml"
    spec.write_text(TINY)
    res = waits.run_to_end([sys.executable, "-m", "probe.cli", "sweep", str(spec), "--out", str(base / "s"),
                            "--jobs", "2", "--no-progress"], base)
    assert res.returncode == 0, res.stderr
    assert "done 4" in res.stdout
    return spec, base / "s"


def test_a_local_sweep_trains_every_point_into_ordinary_runs(done_sweep):
    _, root = done_sweep
    s = probe.load_sweep(root)
    assert len(s.names) == 4 and list(s.values.columns) == ["run", "lr", "seed"]
    assert set(s.status()["state"]) == {"done"}
    for name in s.names:
        with s.run(name) as run:
            assert run.finished and int(run.steps[-1]) == 120
            assert run.config.lr == s.values.set_index("run").loc[name, "lr"]
    assert (root / "sweep.yaml").read_text() == TINY


def test_done_runs_open_each_finished_run_and_leave_out_what_cannot_be_read(done_sweep, tmp_path):
    _, root = done_sweep
    copy = tmp_path / "s"
    shutil.copytree(root, copy)
    s = probe.load_sweep(copy)
    lost, pending = s.names[1], s.names[2]
    (s.run_dir(lost) / "run.h5").write_bytes(b"not hdf5")  # finished once, damaged since
    (copy / "status" / f"{pending}.json").unlink()  # no record: not finished
    seen = []
    for name, run in s.done_runs():
        assert run.finished and int(run.steps[-1]) == 120
        seen.append(name)
    assert seen == [n for n in s.names if n not in (lost, pending)]
    with pytest.raises(ProbeError, match="refused"):  # what the reader raises is not swallowed
        for _, run in s.done_runs():
            raise ProbeError("refused")


def test_running_the_sweep_again_trains_nothing(done_sweep, capsys):
    spec, root = done_sweep
    before = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/run.h5")}
    code, out, err = _cli(capsys, "sweep", spec, "--out", root, "--no-progress")
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in root.glob("runs/*/run.h5")} == before


def test_an_interrupted_run_is_resumed_to_the_same_result(done_sweep, tmp_path, capsys, monkeypatch):
    spec, root = done_sweep
    copy = tmp_path / "s"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".submitit"))
    sweep = probe.load_sweep(copy)
    name = sweep.names[0]
    (copy / "status" / f"{name}.json").unlink()
    run_dir = copy / "runs" / name
    shutil.rmtree(run_dir)
    from probe.config import TrainConfig
    from probe.train import loop

    real = loop.Trainer.lr_factor

    def stop_at_70(self, step):
        if step == 70:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(loop.Trainer, "lr_factor", stop_at_70)
    with pytest.raises(KeyboardInterrupt):
        loop.train(TrainConfig.from_dict(sweep.index["runs"][0]["config"]), run_dir, progress=False)
    monkeypatch.undo()
    assert probe.load_sweep(copy).status().set_index("run").loc[name, "state"] == "interrupted"
    code, _, err = _cli(capsys, "sweep", spec, "--out", copy, "--no-progress")
    assert code == 0, err
    assert probe.load_sweep(copy).status().set_index("run").loc[name, "state"] == "done"
    with probe.load_run(run_dir) as a, probe.load_run(root / "runs" / name) as b:
        assert np.array_equal(a.steps, b.steps) and a.finished
        # b was trained in a vectorised ensemble, a alone and resumed: equal within float tolerance
        ea, eb = a.series("embed.W_E"), b.series("embed.W_E")
        assert np.linalg.norm(ea - eb) <= 1e-4 * np.linalg.norm(eb)


def test_the_sweep_vectorises_where_it_can_and_not_when_told(done_sweep, tmp_path, capsys):
    spec, root = done_sweep
    recs = [json.loads(p.read_text()) for p in (root / "status").glob("*.json")]
    assert all(r.get("ensemble") == 2 for r in recs)  # --jobs 2: two ensembles of two
    out = tmp_path / "plain"
    code, _, err = _cli(capsys, "sweep", spec, "--out", out, "--no-vectorize", "--no-progress")
    assert code == 0, [p.read_text()[:300] for p in (out / "status").glob("*.json")]
    for p in (out / "status").glob("*.json"):
        assert "ensemble" not in json.loads(p.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("seeds: [0, 1]", "seeds: [0, 1]\nzip: {warmup_steps: [0, 5]}"))
    code, _, err = _cli(capsys, "sweep", bad, "--out", tmp_path / "forced", "--vectorize", "--no-progress")
    assert code == 2 and "--vectorize: the runs differ in 'warmup_steps'" in err and err.count("\n") == 1
    assert not (tmp_path / "forced").exists()


def test_the_inline_executor_trains_the_same_runs_in_this_process(done_sweep, tmp_path, capsys):
    """``--executor inline``: no worker is started (no submitit folder), every run is done and equals the
    local workers' run (there two ensembles of two, here one of four: equal within float tolerance);
    with ``--jobs 2`` it is one line, exit 2, nothing written."""
    spec, root = done_sweep
    out = tmp_path / "inline"
    code, _, err = _cli(capsys, "sweep", spec, "--out", out, "--executor", "inline", "--no-progress")
    assert code == 0, err
    assert not (out / ".submitit").exists()
    s = probe.load_sweep(out)
    assert s.names == probe.load_sweep(root).names and set(s.status()["state"]) == {"done"}
    for name in s.names:
        with s.run(name) as a, probe.load_run(root / "runs" / name) as b:
            assert a.finished and np.array_equal(a.steps, b.steps)
            ea, eb = a.series("embed.W_E"), b.series("embed.W_E")
            assert np.linalg.norm(ea - eb) <= 1e-4 * np.linalg.norm(eb)
    code, _, err = _cli(capsys, "sweep", spec, "--out", tmp_path / "two", "--executor", "inline", "--jobs", "2")
    assert code == 2 and "--jobs must be 1" in err and err.count("\n") == 1
    assert not (tmp_path / "two").exists()


def test_status_and_phases_answer_from_the_records(done_sweep, capsys):
    _, root = done_sweep
    code, out, _ = _cli(capsys, "sweep", "status", root)
    assert code == 0 and out.startswith("done: 4, running: 0, failed: 0, interrupted: 0, pending: 0 (of 4)")
    code, out, err = _cli(capsys, "phases", root, "--format", "csv", "--threshold", "0.5", "--delay", "50")
    assert code == 0 and "threshold 0.5, budget 100000, delay 50" in err
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns[:3]) == ["run", "lr", "seed"]
    assert {"train_step", "val_step", "delay", "phase", "majority_phase", "majority_share"} <= set(df.columns)
    assert set(df["phase"]) <= {"comprehension", "grokking", "memorization", "confusion"}
    for _, row in df.iterrows():
        rec = json.loads((root / "status" / f"{row['run']}.json").read_text())
        want = classify(rec["step"], rec["train_acc"], rec["val_acc"], PhaseRule(0.5, 100_000, 50))
        assert row["phase"] == want.phase


def test_phase_rule_golden_cases():
    steps = np.arange(0, 5000, 100)
    ramp = lambda at: (steps >= at).astype(float)  # noqa: E731
    assert classify(steps, ramp(200), ramp(500)).phase == "comprehension"
    assert classify(steps, ramp(200), ramp(2000)).phase == "grokking"
    assert classify(steps, ramp(200), ramp(2000), PhaseRule(budget=1500)).phase == "memorization"
    assert classify(steps, ramp(99999), ramp(99999)).phase == "confusion"
    r = classify(steps, ramp(200), ramp(2000))
    assert (r.train_step, r.val_step, r.delay) == (200, 2000, 1800)
    assert majority(["grokking", "memorization", "grokking"]) == ("grokking", pytest.approx(2 / 3))


def test_a_different_spec_is_refused_and_nothing_changes(done_sweep, tmp_path, capsys):
    _, root = done_sweep
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("seeds: [0, 1]", "seeds: [0, 2]"))
    before = (root / "sweep.json").read_text()
    code, _, err = _cli(capsys, "sweep", other, "--out", root, "--no-progress")
    assert code == 2 and "was made from a different sweep spec" in err and err.count("\n") == 1
    assert (root / "sweep.json").read_text() == before


def test_slurm_where_none_is_reachable_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no squeue
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY)
    code, _, err = _cli(capsys, "sweep", spec, "--out", tmp_path / "s", "--executor", "slurm", "--no-progress")
    assert code == 2 and "--executor slurm: no Slurm here" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_status_of_something_that_is_not_a_sweep(tmp_path, capsys):
    code, _, err = _cli(capsys, "sweep", "status", tmp_path)
    assert code == 2 and "is not a probe sweep" in err
    with pytest.raises(ProbeError, match="unknown executor"):
        sw.ExecutorOptions("cloud")


def test_phase_diagram_and_sweep_summary(done_sweep, tmp_path, capsys):
    _, root = done_sweep
    png = tmp_path / "phases.png"
    code, out, err = _cli(capsys, "plot", root, "--figure", "phase-diagram", "--x", "lr", "--y", "seed",
                          "--out", png, "--threshold", "0.5")
    assert code == 0, err
    assert png.stat().st_size > 5000
    code, _, err = _cli(capsys, "plot", root, "--figure", "phase-diagram", "--x", "lr", "--y", "nope", "--out", png)
    assert code == 2 and "'nope' is not a swept key of this sweep (valid: lr, seed)" in err
    code, _, err = _cli(capsys, "plot", root, "--figure", "metric", "--out", png)
    assert code == 2 and "is a sweep" in err
    code, out, err = _cli(capsys, "export", root, "--summary", "--format", "csv", "--no-progress")
    assert code == 0, err
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns[:3]) == ["run", "lr", "seed"] and len(df) == 4 and "final_val_acc" in df.columns
    code, out, err = _cli(capsys, "export", root, "--metric", "rqi", "--steps", "first,last", "--format", "csv",
                          "--no-progress")
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns[:4]) == ["run", "lr", "seed", "step"] and len(df) == 8 and "rqi" in df.columns


def test_local_jobs_have_no_short_time_limit(tmp_path):
    """submitit's local executor kills a job after 2 minutes unless told otherwise."""
    ex = sw._executor(tmp_path, sw.ExecutorOptions())
    assert ex._executor.parameters["timeout_min"] >= 60 * 24
    assert sw._executor(tmp_path, sw.ExecutorOptions(time_min=30))._executor.parameters["timeout_min"] == 30


def test_local_workers_take_the_groups_left_when_their_own_are_done(tmp_path, waits):
    """--jobs 2 over three runs, the first long: worker 0's share is the first and the third, worker 1's
    the second; worker 1, done with it, trains the third while worker 0 is still on the first (with a
    fixed share the third would wait for the first). Each run is trained once."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("preset: liu-toy-add\nset: {model.decoder: [16, 16], checkpoint.schedule: every, "
                    "checkpoint.every: 500}\nzip:\n  steps: [4000, 10, 10]\n  lr: [1.0e-3, 2.0e-3, 3.0e-3]\n")
    root = tmp_path / "s"
    res = waits.run_to_end([sys.executable, "-m", "probe.cli", "sweep", str(spec), "--out", str(root), "--jobs",
                            "2", "--no-vectorize", "--no-progress"], tmp_path)
    assert res.returncode == 0, res.stderr
    s = probe.load_sweep(root)
    assert set(s.status()["state"]) == {"done"}
    long_run, _, third = s.names
    done_at = {n: (root / "status" / f"{n}.json").stat().st_mtime_ns for n in s.names}
    assert done_at[third] < done_at[long_run]
    for name in s.names:
        with s.run(name) as run:
            assert run.finished and len(run.steps) == len(set(run.steps.tolist()))


def _workers_of(root: Path) -> list[int]:
    """Pids of processes (other than this one) whose command line or open files name ``root``."""
    import os

    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(str(root) in link for link in links):
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("vectorize", ["--no-vectorize", "--vectorize"])
def test_killing_the_driver_takes_its_workers_down(tmp_path, vectorize, waits):
    """kill -9 of ``probe sweep`` during training: its local workers stop too (no orphan keeps a run
    locked as "running"), and running the sweep again finishes every run."""
    import signal

    import h5py

    spec = tmp_path / "spec.yaml"
    spec.write_text("preset: liu-toy-add\nset: {steps: 3000, model.decoder: [32, 32], checkpoint.schedule: every, "
                    "checkpoint.every: 150}\ngrid:\n  lr: [1e-3, 2e-3]\n")
    root = tmp_path / "s"
    cmd = [sys.executable, "-m", "probe.cli", "sweep", str(spec), "--out", str(root), "--jobs", "1", "--no-progress",
           vectorize]
    # started as from a background shell (SIGINT ignored, as nohup and `cmd &` leave it): the workers
    # must still be able to stop at a step boundary
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    # a worker is training (waits as long as the sweep directory changes)
    waits.until(lambda: list(root.glob("runs/*/run.h5")) and _workers_of(root), "a worker training",
                progress=lambda: waits.files(root), proc=driver, poll=0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    waits.until(lambda: not _workers_of(root), "the workers to stop after the driver was killed", poll=0.2)
    # an interrupt, not the kill that would follow it, stopped them: a worker stopped by Ctrl-C closes
    # its run file, which a killed writer would have left flagged open for writing
    for path in root.glob("runs/*/run.h5"):
        with h5py.File(path, "r", locking=False):  # raises "file is already open for write" after a kill
            pass
    states = set(probe.load_sweep(root).status()["state"])
    assert "running" not in states and states & {"interrupted", "pending"}
    res = waits.run_to_end(cmd, root)  # as long as it commits checkpoints, however busy the machine
    assert res.returncode == 0, res.stderr
    s = probe.load_sweep(root)
    assert set(s.status()["state"]) == {"done"}
    for name in s.names:
        with s.run(name) as run:
            assert run.finished and int(run.steps[-1]) == 3000
