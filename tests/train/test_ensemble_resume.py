"""An interrupted vectorised ensemble is finished as an ensemble and ends bit for bit as the
uninterrupted one (on the CPU): in process, with members killed at different steps, finished early
or never started; and as a sweep whose driver is killed (kill -9 of its process group) and run again.
Killing the driver alone stops its workers within the bound the design states."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import probe
import probe.train.ensemble as ensemble
from probe.errors import ProbeError
from probe.runfile import RunFile, RunWriter, run_file_path
from probe.train.config import load_config
from probe.train.ensemble import train_ensemble
from probe.train.steps import CommitClock

# liu-toy-add's adaptive checkpoints (each member checkpoints at its own steps); with a low stop
# threshold members 1 and 2 stop early (about steps 125 and 165), members 0 and 3 use the budget
BASE = {"steps": "200", "model.decoder": "16,16", "checkpoint.metrics_every": "5", "checkpoint.min_every": "5",
        "checkpoint.max_every": "40", "stop.after_generalization": "10", "stop.threshold": "0.5"}
MEMBERS = [{"lr": "1e-2", "embed_lr": "1e-1"}, {"lr": "3e-2", "embed_lr": "3e-1", "seed": "1"},
           {"lr": "1e-2", "embed_lr": "3e-1", "weight_decay": "1", "split_seed": "2"},
           {"lr": "3e-2", "embed_lr": "1e-1", "train_fraction": "0.5", "n_train": None, "model.init_scale": "0.5",
            "seed": "3"}]


# members 0 and 3 (those that use the whole budget) on minibatches of their own sizes: a resumed member draws the
# batches it would have drawn uninterrupted (its batch generator is in its resume state)
BATCHES = {"full": [None] * 4, "minibatch": ["8", None, None, "5"]}


def _configs(batches: str = "full") -> list:
    return [load_config("liu-toy-add", overrides={**BASE, **m, **({"batch_size": b} if b else {})})
            for m, b in zip(MEMBERS, BATCHES[batches])]


def assert_same_run(a: Path, b: Path) -> None:
    """Two run files hold the same run bit for bit: checkpoint steps, every saved tensor at every
    checkpoint, the metric rows, the final resume state and the finished flag."""
    with probe.load_run(a) as x, probe.load_run(b) as y:
        assert np.array_equal(x.steps, y.steps), (a, x.steps, y.steps)
        assert x.tensor_names == y.tensor_names
        for name in x.tensor_names:
            sa, sb = x.series(name), y.series(name)
            assert sa.dtype == sb.dtype and sa.tobytes() == sb.tobytes(), (a, name)
        mx, my = x.metrics, y.metrics
        assert list(mx.columns) == list(my.columns)
        for col in mx.columns:
            assert np.array_equal(mx[col].to_numpy(), my[col].to_numpy(), equal_nan=True), (a, col)
        assert x.finished == y.finished
        ra, rb = x.file.resume_state(), y.file.resume_state()
        assert ra is not None and rb is not None and ra.step == rb.step
        for part in ("params", "optim", "rng"):
            da, db = getattr(ra, part), getattr(rb, part)
            assert sorted(da) == sorted(db)
            for k in da:
                assert np.asarray(da[k]).tobytes() == np.asarray(db[k]).tobytes(), (a, part, k)
        assert ra.schedule.tobytes() == rb.schedule.tobytes()


def _committed(run_dir: Path) -> tuple[int, bool]:
    """(last committed checkpoint step or -1, finished) of a run file, read as any reader would."""
    rf = RunFile(run_file_path(run_dir))
    try:
        return (int(rf.steps[-1]) if len(rf.steps) else -1), rf.finished
    finally:
        rf.close()


@pytest.fixture(scope="module", params=sorted(BATCHES))
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[str, list[Path]]:
    root = tmp_path_factory.mktemp("uninterrupted")
    dirs = [root / f"m{i}" for i in range(len(MEMBERS))]
    train_ensemble(_configs(request.param), dirs, progress=False)
    return request.param, dirs


class _Rounds(CommitClock):
    """Commit rounds opened at chosen steps (the loop ticks once per step from step 0)."""

    AT = (0, 60, 130, 170)

    def __init__(self, max_seconds: float, ratio: float) -> None:
        super().__init__(max_seconds, ratio)
        self.ticks = -1

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks in self.AT:
            self.round += 1


@pytest.mark.parametrize("case", ["killed-in-a-commit-round", "one-member-never-started"])
def test_a_resumed_ensemble_ends_as_the_uninterrupted_one(tmp_path, uninterrupted, monkeypatch, case):
    """Killed during a commit round: two members finished (one of them after the step the others
    resume from, so it holds its place in the stack), one committed in the last round, one not.
    The resumed ensemble writes the same runs as the uninterrupted one, bit for bit."""
    batches, uninterrupted = uninterrupted
    configs = _configs(batches)
    dirs = [tmp_path / f"m{i}" for i in range(len(configs))]
    commits: list[int] = []
    real_commit = RunWriter.commit

    def commit(self: RunWriter, resume: Any) -> None:
        if resume.step >= _Rounds.AT[-1]:
            commits.append(resume.step)
            if len(commits) == 2:  # the kill lands between two members' commits of one round
                raise KeyboardInterrupt
        real_commit(self, resume)

    monkeypatch.setattr(ensemble, "CommitClock", _Rounds)
    monkeypatch.setattr(RunWriter, "commit", commit)
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(configs, dirs, progress=False)
    monkeypatch.undo()
    state = [_committed(d) for d in dirs]
    done = [i for i, (_, fin) in enumerate(state) if fin]
    going = [i for i, (_, fin) in enumerate(state) if not fin]
    assert len(done) == 2 and len(going) == 2, state
    assert len({state[i][0] for i in going}) == 2, f"the unfinished members should be at different steps: {state}"
    first = min(state[i][0] for i in going)
    assert any(state[i][0] >= first for i in done), f"no finished member holds a place in the stack: {state}"
    if case == "one-member-never-started":
        import shutil

        shutil.rmtree(dirs[going[0]])
    finished: list[int] = []
    train_ensemble(configs, dirs, progress=False, resume=True, on_finish=finished.append)
    assert sorted(finished) == list(range(len(configs)))
    assert finished[: len(done)] == done  # the finished members are reported at once
    for a, b in zip(dirs, uninterrupted):
        assert_same_run(a, b)


def test_resuming_refuses_a_run_of_another_config(tmp_path, uninterrupted):
    import shutil

    batches, uninterrupted = uninterrupted
    configs = _configs(batches)
    dirs = [tmp_path / f"m{i}" for i in range(2)]
    shutil.copytree(uninterrupted[0], dirs[0])
    shutil.copytree(uninterrupted[2], dirs[1])  # member 2's run where member 1's belongs
    before = run_file_path(dirs[1]).read_bytes()
    with pytest.raises(ProbeError, match="another config"):
        train_ensemble(configs[:2], dirs, progress=False, resume=True)
    assert run_file_path(dirs[1]).read_bytes() == before


# --------------------------------------------------------------------------------------------------
# a sweep whose driver is killed
# --------------------------------------------------------------------------------------------------
SPEC = """preset: liu-toy-add
set: {steps: 3000, model.decoder: '16,16', checkpoint.metrics_every: 5, checkpoint.min_every: 5,
      checkpoint.max_every: 40, embed_lr: 0.1}
grid:
  lr: [0.01, 0.03]
seeds: [0, 1]
"""


def _sweep(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "probe.cli", "sweep", str(spec), "--out", str(out), "--jobs", "1", "--no-progress",
            "--vectorize"]


def _one_core() -> None:
    """Run the sweep on one core: its worker then trains with one torch thread, the same in every
    launch (bit-identity needs the same threads), and a loaded machine cannot make threads spin."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _holders(root: Path) -> list[int]:
    """Pids of the processes (other than this one) with a file under ``root`` open."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(str(root)) for link in links):
            pids.append(int(proc.name))
    return pids


def _committed_rows(root: Path) -> dict[str, int]:
    """Committed checkpoints per run of the sweep (runs without a readable run file count 0)."""
    out = {}
    for d in sorted((root / "runs").glob("*")):
        try:
            rf = RunFile(run_file_path(d))
        except (ProbeError, OSError):
            out[d.name] = 0
            continue
        try:
            out[d.name] = len(rf.steps)
        finally:
            rf.close()
    return out


def _failure_records(root: Path) -> str:
    """The sweep's status records of runs that did not finish, to say why in a failing assertion."""
    records = [f"{p.name}: {p.read_text()[-400:]}" for p in sorted((root / "status").glob("*.json"))
               if '"done"' not in p.read_text()]
    return "\n".join(records)


def _wait_until(proc: subprocess.Popen, done: Any, what: str, timeout: float, poll: float = 0.05) -> None:
    """Wait until ``done()``; fail naming ``what`` if ``proc`` ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before {what}: {proc.stderr.read().decode()[-600:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def test_a_sweep_killed_during_its_ensemble_ends_as_if_uninterrupted(tmp_path):
    """The same sweep twice: once uninterrupted; once killed twice during its ensemble (the driver
    alone, whose worker must then stop within the design's bound; then the driver's whole process
    group, mid-step or mid-commit) and run again. Every run ends bit for bit the same."""
    from probe.train.sweep import DRIVER_BOUND_SECONDS

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    t0 = time.monotonic()
    res = subprocess.run(_sweep(spec, clean), capture_output=True, text=True, preexec_fn=_one_core)
    assert res.returncode == 0, res.stderr
    took = time.monotonic() - t0  # the whole sweep, uninterrupted: the waits below scale with it
    names = sorted(p.name for p in (clean / "runs").iterdir())
    assert len(names) == 4
    total = sum(_committed_rows(clean).values())

    # 1. kill -9 of the driver alone, once a commit round after the first (step 0) is in
    members = len(names)
    driver = subprocess.Popen(_sweep(spec, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, preexec_fn=_one_core)
    _wait_until(driver, lambda: sum(_committed_rows(killed).values()) > members,
                "a commit round after step 0", timeout=4 * took + 60)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    gone = time.monotonic()
    while _holders(killed):
        assert time.monotonic() - gone < DRIVER_BOUND_SECONDS + 5, \
            f"workers outlived the killed driver by over {DRIVER_BOUND_SECONDS + 5:.0f} s: {_holders(killed)}"
        time.sleep(0.1)
    print(f"the workers stopped {time.monotonic() - gone:.1f} s after their driver was killed")
    first = sum(_committed_rows(killed).values())
    assert first < total, "the sweep finished before the kill"

    # 2. run it again, and kill -9 its process group (driver and worker) once a commit round after the
    # first of the resumed ensemble is in (that one commits each member's first checkpoint)
    driver = subprocess.Popen(_sweep(spec, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, preexec_fn=_one_core)
    _wait_until(driver, lambda: sum(_committed_rows(killed).values()) > first + members,
                "a commit round of the resumed ensemble", timeout=4 * took + 60)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert sum(_committed_rows(killed).values()) < total, "the sweep finished before the kill"

    # 3. run it to the end
    res = subprocess.run(_sweep(spec, killed), capture_output=True, text=True, preexec_fn=_one_core)
    assert res.returncode == 0, res.stderr + _failure_records(killed)
    for name in names:
        assert_same_run(killed / "runs" / name, clean / "runs" / name)


def test_a_planned_ensemble_is_launched_whole_on_every_re_run(tmp_path):
    """The first launch records its ensembles; a re-run launches a recorded ensemble whole while one
    of its runs is to do, whatever --jobs now says; --no-vectorize drops only ensembles not started;
    a damaged record is one line naming the file and the way out."""
    from probe.train import sweep as sw

    spec = sw.parse_spec(SPEC.replace("seeds: [0, 1]", "seeds: [0, 1, 2, 3]"))
    points = sw.expand(spec)
    names = [p.name for p in points]
    root = tmp_path / "s"
    (root / "runs").mkdir(parents=True)
    first = sw.plan_sweep(root, points, names, "auto", 2)  # two ensembles of four
    assert sorted(len(g) for g in first) == [4, 4] and sorted(n for g in first for n in g) == sorted(names)
    started, idle = first
    (root / "runs" / started[1]).mkdir()  # one run of the first ensemble has started
    assert sw.plan_sweep(root, points, [started[1], idle[0]], "auto", 1) == [started, idle]
    assert sw.plan_sweep(root, points, [started[1], idle[0]], "off", 1) == [started, [idle[0]]]
    assert sw.plan_sweep(root, points, [idle[0], idle[1]], "auto", 1) == [[idle[0], idle[1]]]  # replanned
    (root / sw.ENSEMBLES_FILE).write_text('{"ensembles": [["nope", "x"]]}')
    with pytest.raises(ProbeError, match="ensembles.json names run 'nope' that is not in the grid; delete it"):
        sw.plan_sweep(root, points, names, "auto", 1)
