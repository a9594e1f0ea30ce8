"""Two-stage sweeps: a spec's ``from:`` starts every run from a checkpoint of another run (as
``probe train --from`` does), relocatable with the runs it starts from, never vectorised, and its bad
input one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from probe.cli import main
from probe.run import load_run
from probe.train import sweep as sw

PARENT_SETS = ["steps=60", "checkpoint.schedule=every", "checkpoint.every=20", "checkpoint.metrics_every=20"]
STAGE = """
from: parent
from_optimizer: true
set: {steps: 100, checkpoint.schedule: every, checkpoint.every: 20, checkpoint.metrics_every: 20}
grid:
  train_subset: [0.5, 1.0]
"""


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("staged")
    assert main(["train", "--preset", "liu-toy-add", *sum((["--set", s] for s in PARENT_SETS), []),
                 "--no-progress", "--out", str(root / "parent")]) == 0
    (root / "stage.yaml").write_text(STAGE)
    assert main(["sweep", str(root / "stage.yaml"), "--out", str(root / "s2"), "--no-progress"]) == 0
    return root


def test_each_run_continues_the_parent(staged):
    index = json.loads((staged / "s2" / "sweep.json").read_text())
    assert {r["from"] for r in index["runs"]} == {"../parent"}  # kept relative to the sweep
    assert all(r["from_optimizer"] for r in index["runs"])
    with load_run(staged / "parent") as parent:
        last = parent.params("last")
    for name in ("train_subset=0.5", "train_subset=1"):
        with load_run(staged / "s2" / "runs" / name) as run:
            assert run.finished and int(run.steps[0]) == 0 and int(run.steps[-1]) == 100  # its own count
            first = run.params(0)
            for key, value in last.items():  # its step 0 is the parent's last checkpoint
                np.testing.assert_array_equal(np.asarray(first[key]), np.asarray(value))
    with load_run(staged / "s2" / "runs" / "train_subset=0.5") as small, \
            load_run(staged / "s2" / "runs" / "train_subset=1") as full:
        assert small.split.sizes[0] < full.split.sizes[0]


def test_the_full_subset_equals_continuing_the_parent_by_hand(staged, tmp_path):
    by_hand = tmp_path / "by-hand"
    sets = ["steps=100", "checkpoint.schedule=every", "checkpoint.every=20", "checkpoint.metrics_every=20",
            "train_subset=1.0"]
    assert main(["train", "--from", str(staged / "parent"), "--with-optimizer",
                 *sum((["--set", s] for s in sets), []), "--no-progress", "--out", str(by_hand)]) == 0
    with load_run(by_hand) as a, load_run(staged / "s2" / "runs" / "train_subset=1") as b:
        np.testing.assert_array_equal(a.metrics["val_loss"], b.metrics["val_loss"])


def test_moved_with_its_parent_the_sweep_still_matches_and_trains_nothing(staged, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(staged, moved)
    stamps = {f: f.stat().st_mtime_ns for f in (moved / "s2").rglob("run.h5")}
    code, _, err = _cli(capsys, "sweep", moved / "stage.yaml", "--out", moved / "s2", "--no-progress")
    assert code == 0, err
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps


def test_runs_with_a_parent_are_not_vectorised(staged):
    spec = sw.parse_spec(STAGE, where=staged / "stage.yaml")
    points = sw.expand(spec)
    assert all(p.parent == str((staged / "parent").resolve()) and p.parent_optimizer for p in points)
    assert sw.plan(points, [p.name for p in points], "auto", 1) == [[p.name] for p in points]


def test_from_as_an_axis_pairs_each_run_with_its_parent(staged):
    spec = sw.parse_spec("zip:\n  seed: [0, 1]\n  from: [parent, s2/runs/train_subset=0.5]\n",
                         where=staged / "z.yaml")
    points = sw.expand(spec)
    assert [p.name for p in points] == ["seed=0__from=parent", "seed=1__from=train_subset_0.5"]
    assert Path(points[1].parent).name == "train_subset=0.5"
    assert points[1].config.train_subset == 0.5  # the parent's config is the base


@pytest.mark.parametrize("text,needle", [
    ("from: nothere\nseeds: [0]\n", "does not exist (train it first)"),
    ("preset: liu-toy-add\nfrom_optimizer: true\nseeds: [0]\n", "'from_optimizer' goes with 'from'"),
    ("preset: liu-toy-add\nset: {from: parent}\nseeds: [0]\n", "not a config key for 'set'"),
    ("from: parent\nfrom_optimizer: 3\nseeds: [0]\n", "must be true or false"),
    ("from: parent\ngrid:\n  from: [parent]\n", "both a spec key and an axis"),
    ("from: parent\nset: {model.d_embed: 2}\nseeds: [0]\n", "different model or task"),
])
def test_bad_stage_specs_are_one_line_and_write_nothing(staged, tmp_path, capsys, text, needle):
    spec = tmp_path / "bad.yaml"
    shutil.copytree(staged / "parent", tmp_path / "parent")
    spec.write_text(text)
    code, _, err = _cli(capsys, "sweep", spec, "--out", tmp_path / "out", "--no-progress")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
