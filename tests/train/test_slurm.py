"""A sweep on a real single-node Slurm cluster (munged, slurmctld and slurmd from Debian's packages,
started by ``scripts/slurm-cluster.sh`` and stopped after the test) gives the same runs as the local
executor. Skipped, with the reason, where the daemons are not installed or this is not root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import probe

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-cluster.sh"
SPEC = """
preset: liu-toy-add
set: {steps: 150, checkpoint.schedule: every, checkpoint.every: 50, checkpoint.metrics_every: 10}
grid:
  lr: {logspace: [1e-4, 1e-2, 2]}
seeds: [0, 1]
"""


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root (SlurmUser=root); this is not root"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if shutil.which(b) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): run scripts/slurm-cluster.sh install"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _why_skip()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    try:  # starting daemons is no work that scales with the test: a generous bound that says what hung
        res = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run([str(SCRIPT), "stop", str(state)], timeout=600)
        pytest.fail("the test cluster did not start within 600 s (scripts/slurm-cluster.sh start)")
    if res.returncode != 0:
        subprocess.run([str(SCRIPT), "stop", str(state)], timeout=600)
        pytest.fail(f"the test cluster did not start: {res.stderr.strip()}")
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    try:
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop", str(state)], timeout=600)


def _sweep(waits, spec: Path, out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    """The sweep to its end while it makes progress (files written under ``out``: the index, job
    scripts and logs, checkpoints); a stall fails the test with the reason, whatever the machine's load."""
    return waits.run_to_end([sys.executable, "-m", "probe.cli", "sweep", str(spec), "--out", str(out), "--jobs", "2",
                             "--no-progress", *extra], watch=out, env=env)


def test_a_slurm_sweep_equals_the_local_one(cluster, tmp_path, waits):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    res = _sweep(waits, spec, tmp_path / "slurm", cluster, "--executor", "slurm", "--time", "10")
    assert res.returncode == 0, res.stderr
    assert "done 4" in res.stdout and "sacct" not in res.stderr
    jobs = {p.name.split("_")[0] for p in (tmp_path / "slurm" / ".submitit").glob("*_submission.sh")}
    assert jobs, "no Slurm job was submitted"
    res = _sweep(waits, spec, tmp_path / "local", cluster)
    assert res.returncode == 0, res.stderr
    a, b = probe.load_sweep(tmp_path / "slurm"), probe.load_sweep(tmp_path / "local")
    assert a.names == b.names and set(a.status()["state"]) == {"done"}
    for name in a.names:
        with a.run(name) as x, b.run(name) as y:
            assert x.finished and y.finished and x.config == y.config
            assert np.array_equal(x.steps, y.steps)
            for t in x.tensor_names:
                assert np.array_equal(x.series(t), y.series(t)), (name, t)
            assert np.array_equal(x.metrics["val_acc"], y.metrics["val_acc"])
    # run again on Slurm: everything is finished, nothing is submitted
    res = _sweep(waits, spec, tmp_path / "slurm", cluster, "--executor", "slurm", "--time", "10")
    assert res.returncode == 0, res.stderr
    assert {p.name.split("_")[0] for p in (tmp_path / "slurm" / ".submitit").glob("*_submission.sh")} == jobs
