"""Contract battery over every preset (``probe.train.config.PRESETS``; read when the tests are
collected, so a new preset is tested here with no edit): shrunk to a few steps, each trains, and a
run interrupted mid-way, or killed before its run file existed, resumes to the same run bit for bit
(docs/design.md, "Run format": crash safety)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import probe
from probe.config import TrainConfig
from probe.train.config import PRESETS, load_config
from probe.train.loop import resume, train

#: a few steps, a checkpoint every second step, metrics at every step
SHRINK = {"steps": "6", "checkpoint.schedule": "every", "checkpoint.every": "2", "checkpoint.metrics_every": "1"}
#: modular tasks shrink to this prime (the models keep the preset's widths)
SMALL_P = 23


def _config(preset: str) -> TrainConfig:
    cfg = load_config(preset, overrides=SHRINK)
    if cfg.p is not None and cfg.p > SMALL_P and cfg.n_train is None:
        cfg = load_config(preset, overrides={**SHRINK, "p": str(SMALL_P)})
    return cfg


def _contents(run_dir: Path) -> dict[str, Any]:
    """Everything a run committed: steps, the weights at each checkpoint, the metric rows, finished."""
    with probe.load_run(run_dir) as run:
        steps = [int(s) for s in run.steps]
        return {"steps": steps, "finished": run.finished, "metrics": run.metrics,
                "params": {s: {k: v.numpy().copy() for k, v in run.params(s).items()} for s in steps}}


def _assert_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["steps"] == b["steps"] and a["finished"] == b["finished"]
    assert a["metrics"].equals(b["metrics"]), (a["metrics"], b["metrics"])
    for step, params in a["params"].items():
        assert params.keys() == b["params"][step].keys()
        for name, value in params.items():
            assert np.array_equal(value, b["params"][step][name]), (step, name)


_references: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``reference(preset)``: the uninterrupted shrunk run of the preset (trained once per module)."""

    def get(preset: str) -> dict[str, Any]:
        if preset not in _references:
            run_dir = tmp_path_factory.mktemp("reference") / preset
            train(_config(preset), run_dir, progress=False)
            _references[preset] = _contents(run_dir)
        return _references[preset]

    return get


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_trains_and_an_interrupted_run_resumes_bit_identical(preset, reference, tmp_path, train_interrupted):
    full = reference(preset)
    assert full["finished"] and full["steps"] == [0, 2, 4, 6]
    run_dir = tmp_path / "run"
    train_interrupted(_config(preset), run_dir, at_call=4)  # stopped as Ctrl-C would, during the 4th step
    with probe.load_run(run_dir) as run:
        assert not run.finished and int(run.steps[-1]) < 6
    resume(run_dir, progress=False)
    _assert_identical(full, _contents(run_dir))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_run_killed_before_its_file_existed_resumes_bit_identical(preset, reference, tmp_path):
    """What a kill between writing the config copy and the run file leaves: ``config.yaml`` (as the
    trainer writes it) and a partial ``run.h5.tmp``."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_config(preset).to_dict(), sort_keys=False))
    (run_dir / "run.h5.tmp").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    resume(run_dir, progress=False)
    _assert_identical(reference(preset), _contents(run_dir))
