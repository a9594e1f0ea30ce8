"""Sweeps given awkward input: an --out that is a file, swept values too long for a file name, damaged
sweep.json and status records, group tables that are not there, huge grids (streamed dry runs), and
a current directory holding a ``probe/`` folder of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from probe.cli import main
from probe.train import sweep as sw

TINY = """
preset: liu-toy-add
set: {steps: 20, model.decoder: [8], checkpoint.schedule: every, checkpoint.every: 10, checkpoint.metrics_every: 10}
"""


def _one_line(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("probe: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _prepared(tmp_path: Path) -> Path:
    spec = sw.parse_spec(TINY + "grid:\n  lr: [0.001, 0.002]\n")
    root, _ = sw.prepare(spec, tmp_path / "sweep")
    return root


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(TINY + "grid:\n  lr: [0.001]\n")
    (tmp_path / "afile").write_text("keep me")
    assert "afile exists and is not a directory" in _one_line(capsys, "sweep", tmp_path / "spec.yaml", "--out",
                                                             tmp_path / "afile", "--no-progress")
    assert (tmp_path / "afile").read_text() == "keep me"
    assert "not a probe sweep" in _one_line(capsys, "sweep", "status", tmp_path / "afile")


def test_long_swept_values_give_short_distinct_names(tmp_path, capsys):
    long_a, long_b = "a" * 300 + "1", "a" * 300 + "2"
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY + f"grid:\n  checkpoint.tensors: [['*', '{long_a}'], ['*', '{long_b}']]\n")
    code = main(["sweep", str(spec), "--out", str(tmp_path / "s"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and "done 2" in out, err
    names = [p.name for p in (tmp_path / "s" / "runs").iterdir()]
    assert len(set(names)) == 2 and all(len(n.encode()) <= sw.MAX_NAME_BYTES for n in names)
    assert all(n.startswith("checkpoint.tensors=") for n in names)
    assert main(["sweep", "status", str(tmp_path / "s")]) == 0
    assert "done: 2" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["no name", "name a path", "name twice", "no config"])
def test_a_damaged_index_is_one_line_for_every_reader(damage, tmp_path, capsys):
    root = _prepared(tmp_path)
    index = json.loads((root / "sweep.json").read_text())
    first = index["runs"][0]
    if damage == "no name":
        del first["name"]
    elif damage == "name a path":
        first["name"] = "../../outside"
    elif damage == "name twice":
        first["name"] = index["runs"][1]["name"]
    else:
        del first["config"]
    (root / "sweep.json").write_text(json.dumps(index))
    for argv in (["sweep", "status", root], ["phases", root], ["export", root, "--summary"]):
        assert "sweep.json" in _one_line(capsys, *argv)


@pytest.mark.parametrize("record", [
    {"state": "done", "step": "0123", "train_acc": [1.0], "val_acc": [1.0]},
    {"state": "done", "step": [0, 10], "train_acc": [1.0], "val_acc": [1.0, "x"]},
    {"state": "done", "step": [[0]], "train_acc": [[1.0]], "val_acc": [[1.0]]},
    {"state": "done", "step": [10, 0], "train_acc": [1.0, 1.0], "val_acc": [1.0, 1.0]},
])
def test_a_damaged_status_record_never_gives_a_traceback(record, tmp_path, capsys):
    root = _prepared(tmp_path)
    name = json.loads((root / "sweep.json").read_text())["runs"][0]["name"]
    (root / "status" / f"{name}.json").write_text(json.dumps(record))
    code = main(["phases", str(root)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code in (0, 2), err
    if code == 2:  # refused in one line ...
        assert err.startswith("probe: error: ") and err.count("\n") == 1
    else:  # ... or the record is not used: that run has no phase
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "n/a" in row, out


def test_a_group_table_that_is_not_there_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("preset: liu-toy-add\nset: {steps: 20, task: group, p: null, n_train: null}\n"
                                        "grid:\n  group: [S3, ../../etc/passwd]\n")
    err = _one_line(capsys, "sweep", "spec.yaml", "--dry-run")
    assert "grid point group='../../etc/passwd'" in err and "not found" in err
    err = _one_line(capsys, "sweep", "spec.yaml", "--out", "s", "--no-progress")
    assert "grid point group='../../etc/passwd'" in err and not (tmp_path / "s").exists()
    (tmp_path / "small.yaml").write_text("preset: liu-toy-add\nset: {steps: 20, task: group, p: null}\n"
                                         "grid:\n  group: [S3]\n")  # the preset's n_train=45 > 36 samples of S3
    assert "n_train must be in 1..36" in _one_line(capsys, "sweep", "small.yaml", "--dry-run")


def test_dry_run_streams_and_the_grid_is_built_lazily(tmp_path, capsys, monkeypatch):
    import probe.train.config as tc

    spec = sw.parse_spec(TINY + "grid:\n  lr: {logspace: [1e-4, 1e-2, 99999]}\n")
    assert sw.grid_size(spec) == 99_999
    calls = {"n": 0}
    original = tc.load_config

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(tc, "load_config", counting)
    first = next(sw.iter_grid(spec))
    assert first.name == "lr=0.0001" and calls["n"] <= 2  # the base, then the first point: not 99,999
    monkeypatch.undo()
    # a dry run prints every run up to a bad one, then refuses it in one line
    (tmp_path / "spec.yaml").write_text(TINY + "grid:\n  lr: [0.1, 0.2, -1, 0.3]\n")
    code = main(["sweep", str(tmp_path / "spec.yaml"), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 2 and out.startswith("4 runs; swept: lr\n") and out.count("--- lr=") == 2
    assert "grid point lr=-1: invalid config value lr=-1" in err and err.count("\n") == 1


def test_workers_ignore_a_probe_folder_in_the_current_directory(tmp_path, capsys, monkeypatch):
    """Workers start in the driver's directory; one holding a ``probe/`` package of its own (a checkout's
    parent) must not stand in for the installed package when they unpickle their job."""
    here = tmp_path / "here"
    (here / "probe").mkdir(parents=True)
    (here / "probe" / "__init__.py").write_text("raise ImportError('the probe/ folder of the current directory')\n")
    (here / "spec.yaml").write_text(TINY + "grid:\n  lr: [0.001, 0.002]\n")
    monkeypatch.chdir(here)
    code = main(["sweep", "spec.yaml", "--out", "fixed", "--no-progress", "--no-vectorize", "--jobs", "2"])
    out, err = capsys.readouterr()
    assert code == 0 and "done 2" in out, err
    # started as submitit starts them by default (``python -m``), they import that folder and die
    # outside any run: the driver says so and exits 1 with the runs still pending
    monkeypatch.setattr(sw, "worker_python", lambda: sys.executable)
    code = main(["sweep", "spec.yaml", "--out", "default", "--no-progress", "--no-vectorize"])
    out, err = capsys.readouterr()
    assert code == 1 and "pending 2" in out
    assert "a sweep worker failed outside its runs" in err and "the probe/ folder of the current directory" in err
