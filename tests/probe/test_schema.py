"""The run file's schema, described once (probe/schema.py): the docs list it, the writer checks its
header and layout against it, the reader checks files against it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import probe
from probe.errors import ProbeError
from probe.schema import (RUN_ATTRS, RUN_DATASETS, RUN_GROUPS, SCHEMA_VERSION, DatasetSpec, RunHeader, RunLayout,
                          check_structure)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "runs" / "toy-add"


def _table(section: str) -> dict[str, list[str]]:
    """The first markdown table under ``## section`` of docs/run-format.md: first cell -> the others."""
    text = (ROOT / "docs" / "run-format.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(body) if line.startswith("|"))
    rows = []
    for line in body[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return {cells[0].strip("`"): cells[1:] for cells in rows}


def _doc_path(spec: DatasetSpec) -> str:
    path = re.sub(r"slot[01]", "slot{0,1}", spec.path)
    return path + ("/<key>" if spec.nested else "/<name>") if spec.each else path


def test_the_docs_list_the_schema():
    attrs = _table("Root attributes")
    assert list(attrs) == [a.name for a in RUN_ATTRS]
    for a in RUN_ATTRS:
        kind = ("JSON object" if a.kind is dict else "JSON list") if a.json else a.kind.__name__
        assert attrs[a.name][:2] == [kind, "yes" if a.required else "no"], a.name
    datasets = _table("Datasets")
    assert list(datasets) == list(dict.fromkeys(_doc_path(s) for s in RUN_DATASETS))
    rows = {"all": "all", "checkpoints": "committed checkpoints", "metrics": "committed metrics"}
    for s in RUN_DATASETS:
        assert datasets[_doc_path(s)][1] == rows[s.rows], s.path
    text = (ROOT / "docs" / "run-format.md").read_text()
    for path, _ in RUN_GROUPS:
        assert f"`{path}`" in text or "resume/slot{0,1}/{params,optim,rng}" in text


def _header(**kw) -> RunHeader:
    base = dict(config={"steps": 1}, task={"name": "add", "p": 5}, symbols=("0", "1"), parameters=("a", "b"),
                packages={"probe": "x"}, n_classes=5)
    return RunHeader(**{**base, **kw})


def test_the_header_is_checked_when_made_as_when_read():
    h = _header(parent={"run": "/x", "step": 3, "optimizer": False, "config": {}})
    attrs = h.to_attrs()
    assert attrs["format"] == "probe-run" and attrs["schema_version"] == SCHEMA_VERSION
    assert json.loads(attrs["symbols"]) == ["0", "1"] and "created" not in attrs
    assert RunHeader.from_attrs(attrs, "f", ProbeError) == h
    with pytest.raises(ProbeError, match="attribute 'symbols' is not a list of strings"):
        _header(symbols=(1, 2))
    with pytest.raises(ProbeError, match="attribute 'parent' is not an object"):
        _header(parent={"run": "/x"})
    with pytest.raises(ProbeError, match="attribute 'n_classes' is not an integer"):
        RunHeader.from_attrs({**attrs, "n_classes": "5"}, "f", ProbeError)
    with pytest.raises(ProbeError, match="attribute 'parent' is not a JSON object"):
        RunHeader.from_attrs({**attrs, "parent": "[1, 2]"}, "f", ProbeError)
    with pytest.raises(ProbeError, match="attribute 'config' is missing"):
        RunHeader.from_attrs({k: v for k, v in attrs.items() if k != "config"}, "f", ProbeError)


def _layout(**kw) -> RunLayout:
    base = dict(header=_header(), task_arrays={"inputs": np.zeros((4, 2), np.int64), "labels": np.zeros(4, np.int64)},
                split={"train": np.array([0, 1]), "val": np.array([2, 3])}, static={},
                param_shapes={"a": (2, 3), "b": (3,)}, saved=("a",), series_dtype="float32",
                optim_shapes={"a/step": ()}, rng_sizes={"torch": 8}, schedule_size=2)
    return RunLayout(**{**base, **kw})


def test_the_layout_is_checked_before_anything_is_written(tmp_path):
    from probe.runfile import ResumeState, RunFile, RunWriter

    with pytest.raises(ValueError, match="param_shapes must list the header's parameters"):
        _layout(param_shapes={"b": (3,), "a": (2, 3)})
    with pytest.raises(ValueError, match="saved must be"):
        _layout(saved=("b", "a"))
    with pytest.raises(ValueError, match="split indices"):
        _layout(split={"train": np.array([0, 1, 2]), "val": np.array([2, 3])})
    layout = _layout()
    bad = ResumeState(step=0, params={"a": np.zeros((3, 2)), "b": np.zeros(3)}, optim={"a/step": np.zeros(1)},
                      has_optim=False, rng={"torch": np.zeros(8, np.uint8)}, schedule=np.zeros(2))
    with pytest.raises(ProbeError, match="parameter 'a' has shape \\(3, 2\\), the model's has \\(2, 3\\)"):
        RunWriter.create(tmp_path / "run.h5", layout, resume=bad)
    assert not list(tmp_path.iterdir())
    writer = RunWriter.create(tmp_path / "run.h5", layout)
    writer.write_checkpoint(0, {"a": np.ones((2, 3))}, ResumeState(
        step=0, params={"a": np.ones((2, 3)), "b": np.ones(3)}, optim={"a/step": np.zeros(())}, has_optim=True,
        rng={"torch": np.arange(8, dtype=np.uint8)}, schedule=np.zeros(2)))
    writer.close(finished=True)
    rf = RunFile(tmp_path / "run.h5")  # what the writer made, the reader accepts
    try:
        assert rf.header == layout.header and rf.finished and rf.steps.tolist() == [0]
        assert rf.resume_state().params["a"].tolist() == np.ones((2, 3)).tolist()
        assert set(check_structure(rf.f, SCHEMA_VERSION, ProbeError)) >= {"checkpoints/params/a", "status/finished"}
    finally:
        rf.close()


def test_a_parent_attribute_that_is_not_an_object_is_one_line(tmp_path, capsys):
    from probe.cli import main

    d = tmp_path / "run"
    shutil.copytree(SHIPPED, d, ignore=shutil.ignore_patterns("analysis"))
    for value in ("[1, 2]", '"x"', '{"run": 3, "step": "last"}'):
        with h5py.File(d / "run.h5", "r+") as f:
            f.attrs["parent"] = value
        assert main(["info", str(d)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "attribute 'parent'" in err and "Traceback" not in err
    with h5py.File(d / "run.h5", "r+") as f:
        f.attrs["parent"] = json.dumps({"run": "/elsewhere", "step": 10, "optimizer": False, "config": {}})
    with probe.load_run(d) as run:
        assert run.file.header.parent["step"] == 10
