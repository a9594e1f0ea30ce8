"""Faults around sweeps (docs/design.md, "Sweeps"): two drivers on one sweep directory at once,
damaged status records and lock files, a reader holding a run open while its training ends, and a
disk that fills up during a sweep. Every outcome is the sweep an undisturbed driver makes (runs equal
bit for bit on the CPU, each trained once), or one line saying why, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import probe
from probe.cli import main
from probe.errors import ProbeError

CLI = [sys.executable, "-m", "probe.cli"]
#: four tiny runs (two learning rates, two seeds)
SPEC = """
preset: liu-toy-add
set: {steps: 100, model.decoder: [16, 16], checkpoint.schedule: every, checkpoint.every: 2,
      checkpoint.metrics_every: 10}
grid:
  lr: [1.0e-3, 3.0e-3]
seeds: [0, 1]
"""
#: every run file's replacement (``os.replace`` onto ``run.h5``: a run created, or copied to resume) is
#: logged by an audit hook that the sweep's processes load at start-up
RENAME_LOG = "PROBE_TEST_RENAME_LOG"
SITECUSTOMIZE = f"""
import os, sys

def _log_run_files(event, args):
    if event == "os.rename" and os.fspath(args[1]).endswith("run.h5"):
        with open(os.environ[{RENAME_LOG!r}], "a") as f:
            f.write(f"{{os.getpid()}} {{os.fspath(args[1])}}\\n")

if os.environ.get({RENAME_LOG!r}):
    sys.addaudithook(_log_run_files)
"""


def _sweep(spec: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "sweep", str(spec), "--out", str(out), "--jobs", "2", "--no-vectorize", "--no-progress", *extra]


def _contents(run_dir: Path) -> dict[str, Any]:
    """Everything a run committed: steps, every saved tensor at every checkpoint, metric rows, finished."""
    with probe.load_run(run_dir) as run:
        return {"steps": np.asarray(run.steps).copy(), "finished": run.finished, "metrics": run.metrics,
                "tensors": {name: run.series(name).copy() for name in run.tensor_names}}


def _assert_same_runs(root: Path, reference: Path) -> None:
    s = probe.load_sweep(root)
    assert set(s.status()["state"]) == {"done"}, s.status()
    for name in s.names:
        a, b = _contents(root / "runs" / name), _contents(reference / "runs" / name)
        assert a["finished"] and np.array_equal(a["steps"], b["steps"]), name
        assert a["metrics"].equals(b["metrics"]), name
        assert a["tensors"].keys() == b["tensors"].keys()
        for tensor, value in a["tensors"].items():
            assert np.array_equal(value, b["tensors"][tensor]), (name, tensor)


def _copy(root: Path, to: Path) -> Path:
    shutil.copytree(root, to, ignore=shutil.ignore_patterns(".submitit"))
    return to


def _one_line_or_table(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    """Run a read command in-process: exit 0, or exit 2 with one line; never a traceback."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code != 0:
        assert code == 2 and err.startswith("probe: error: ") and err.count("\n") == 1, err
    return code, out, err


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, spec: Path, waits: Any) -> Path:
    """The sweep as one undisturbed driver makes it."""
    root = tmp_path_factory.mktemp("reference") / "s"
    res = waits.run_to_end(_sweep(spec, root), root.parent)
    assert res.returncode == 0, res.stderr
    return root


# --------------------------------------------------------------------------------------------------
# two drivers
# --------------------------------------------------------------------------------------------------
def test_two_drivers_on_one_directory_train_each_run_once(spec, reference, tmp_path, waits):
    """Two ``probe sweep`` of one spec into one directory, started together: both end with exit 0,
    each run file is written once (by the worker that locked the run; the other driver leaves it
    alone, and nothing is retrained or resumed), and the runs are those of a single driver."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "renames.log"
    env = {**os.environ, RENAME_LOG: str(log),
           "PYTHONPATH": os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)}
    root = tmp_path / "s"
    drivers = [subprocess.Popen(_sweep(spec, root), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        waits.until(lambda: all(d.poll() is not None for d in drivers), "both sweep drivers to finish",
                    progress=lambda: waits.files(tmp_path), poll=0.2)
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
                d.wait()
    for d in drivers:
        out, err = d.communicate()
        assert d.returncode == 0 and "Traceback" not in err, err
    created = [Path(line.split(" ", 1)[1]).parent.name for line in log.read_text().splitlines()]
    names = probe.load_sweep(root).names
    assert sorted(created) == sorted(names), f"run files written per run: {sorted(created)}"
    _assert_same_runs(root, reference)


def test_a_driver_preparing_beside_another_joins_its_sweep(spec, tmp_path, monkeypatch):
    """The instants two drivers starting together can meet in: the other has made ``runs/`` and
    ``status/`` but not yet the index, or writes the index between this one's check and its write.
    Either way this driver joins the sweep (or refuses another grid); it never calls the directory
    foreign or replaces the other's index."""
    from probe.train import sweep as sw

    parsed = sw.load_spec(spec)
    other_grid = sw.parse_spec(SPEC.replace("3.0e-3", "5.0e-3"))
    root = tmp_path / "s"
    (root / "runs").mkdir(parents=True)
    (root / "status").mkdir()
    (root / ".sweep.json.12345.tmp").write_text("{")
    sw.prepare(parsed, root)
    assert probe.load_sweep(root).names == [p.name for p in sw.expand(parsed)]

    real_link = os.link
    for i, (racer, outcome) in enumerate(((parsed, None), (other_grid, "different sweep spec"))):
        sw.prepare(racer, tmp_path / f"other{i}")
        index = (tmp_path / f"other{i}" / "sweep.json").read_bytes()  # what the other driver writes

        def link_after_the_other(src: Any, dst: Any, index: bytes = index) -> None:
            Path(dst).write_bytes(index)
            real_link(src, dst)

        late = tmp_path / f"late{i}"
        monkeypatch.setattr(sw.os, "link", link_after_the_other)
        if outcome is None:
            sw.prepare(parsed, late)
            assert (late / "sweep.json").read_bytes() == index  # the other's index, kept
        else:
            with pytest.raises(ProbeError, match=outcome):
                sw.prepare(parsed, late)
        monkeypatch.setattr(sw.os, "link", real_link)
        assert not list(late.glob(".sweep.json.*"))

    foreign = tmp_path / "foreign"  # anything else in the directory: not a sweep being prepared
    (foreign / "runs").mkdir(parents=True)
    (foreign / "runs" / "notes.txt").write_text("mine")
    with pytest.raises(ProbeError, match="not a probe sweep directory"):
        sw.prepare(parsed, foreign)


# --------------------------------------------------------------------------------------------------
# damaged status records and lock files
# --------------------------------------------------------------------------------------------------
def _damage(root: Path) -> dict[str, str]:
    """Damage one file per run, each in another way; returns what was done to which run."""
    names = probe.load_sweep(root).names
    status = root / "status"
    record = json.loads((status / f"{names[2]}.json").read_text())
    done = {
        names[0]: "garbage bytes in its status record",
        names[1]: "its status record cut in half",
        names[2]: "a string where its record has the list of steps",
        names[3]: "garbage in its lock file, and a record that is not a JSON object",
    }
    (status / f"{names[0]}.json").write_bytes(b"\x00\xff\xfe\x9c not json at all")
    text = (status / f"{names[1]}.json").read_text()
    (status / f"{names[1]}.json").write_text(text[: len(text) // 2])
    (status / f"{names[2]}.json").write_text(json.dumps({**record, "step": "100"}))
    (status / f"{names[3]}.lock").write_bytes(os.urandom(64))
    (status / f"{names[3]}.json").write_text('["done"]')
    return done


def test_damaged_status_and_lock_files_are_reported_and_recovered(spec, reference, tmp_path, capsys, waits):
    root = _copy(reference, tmp_path / "s")
    damaged = _damage(root)
    code, out, _ = _one_line_or_table(capsys, ["sweep", "status", str(root)])
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    for name in damaged:
        assert name in rows, out
    _one_line_or_table(capsys, ["phases", str(root)])
    _one_line_or_table(capsys, ["plot", str(root), "--figure", "phase-diagram", "--x", "lr", "--y", "seed",
                                "--out", str(tmp_path / "phases.png"), "--no-progress"])
    # running the sweep again checks each run anew: finished runs are recorded again, none retrained
    before = {name: (root / "runs" / name / "run.h5").stat().st_mtime_ns for name in damaged}
    res = waits.run_to_end(_sweep(spec, root), root)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert {name: (root / "runs" / name / "run.h5").stat().st_mtime_ns for name in damaged} == before
    _assert_same_runs(root, reference)
    code, out, _ = _one_line_or_table(capsys, ["sweep", "status", str(root)])
    assert code == 0 and out.startswith("done: 4,"), out


# --------------------------------------------------------------------------------------------------
# a reader holds a run open while its training ends
# --------------------------------------------------------------------------------------------------
def test_a_reader_holding_a_run_while_its_training_ends(tmp_path, waits):
    spec = tmp_path / "one.yaml"
    spec.write_text(SPEC.replace("steps: 100", "steps: 400").replace("seeds: [0, 1]", "").replace(
        "lr: [1.0e-3, 3.0e-3]", "lr: [1.0e-3]"))
    root = tmp_path / "s"
    driver = subprocess.Popen(_sweep(spec, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = waits.until(lambda: next(iter(root.glob("runs/*")), None), "the sweep's run directory",
                              progress=lambda: waits.files(tmp_path), proc=driver)
        waits.checkpoints(driver, run_dir, 3)
        held = probe.load_run(run_dir)  # open until the sweep has ended
        seen = len(held.steps)
        waits.until(lambda: driver.poll() is not None, "the sweep to finish", progress=lambda: waits.files(root),
                    poll=0.2)
        _, err = driver.communicate()
        assert driver.returncode == 0 and "Traceback" not in err, err
        assert probe.load_sweep(root).status()["state"].tolist() == ["done"]
        assert len(held.steps) >= seen and np.isfinite(held.params("last")["embed.W_E"].numpy()).all()
        held.close()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    with probe.load_run(run_dir) as run:
        assert run.finished and int(run.steps[-1]) == 400


# --------------------------------------------------------------------------------------------------
# a full disk
# --------------------------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_disk_that_fills_up_during_a_sweep(spec, reference, tmp_path, capsys, waits):
    small = tmp_path / "small"
    # room for the sweep and most of its runs, not their last checkpoints: 40 KiB less than the
    # undisturbed sweep's files take (its runs grow by about 100 KiB each over their 51 checkpoints)
    need = sum(f.stat().st_size for f in reference.rglob("*") if f.is_file())
    if not _mount_tmpfs(small, f"{(need - (40 << 10)) >> 10}k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        res = waits.run_to_end(_sweep(spec, small / "s"), small)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        code, out, _ = _one_line_or_table(capsys, ["sweep", "status", str(small / "s")])
        said = [line for line in (res.stderr + out).splitlines() if "no space left" in line.lower()]
        assert said, f"no run says the disk is full:\n{res.stderr}\n{out}"
        assert "done: 4," not in out
        big = _copy(small / "s", tmp_path / "big")
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    res = waits.run_to_end(_sweep(spec, big), big)
    assert res.returncode == 0, res.stderr
    _assert_same_runs(big, reference)
