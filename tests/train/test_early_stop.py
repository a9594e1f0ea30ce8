"""Early stop once the phase is decided (stop.after_generalization): ordinary runs, resumed runs and
ensemble members stop at the same step."""

from __future__ import annotations

import numpy as np
import pytest

import probe
from probe.config import StopConfig
from probe.run import describe_run
from probe.train import loop
from probe.train.config import load_config
from probe.train.ensemble import train_ensemble

FAST = {"stop.after_generalization": "40", "checkpoint.schedule": "every", "checkpoint.every": "30",
        "steps": "2000"}


def _cfg(**extra: str):
    return load_config("kitouni-mlp-comprehension", overrides={**FAST, **extra})


def test_stop_step_rule():
    rule = StopConfig(after_generalization=100, threshold=0.9)
    steps = [0, 10, 20, 30]
    assert rule.stop_step(steps, [0.1, 0.95, 1, 1], [0.0, 0.5, 0.95, 1]) == 120
    assert rule.stop_step(steps, [0.1, 0.95, 1, 1], [0.0, 0.5, 0.6, 0.7]) is None  # memorising: no stop
    assert StopConfig().stop_step(steps, [1] * 4, [1] * 4) is None


def test_a_run_stops_after_its_phase_is_decided_and_resumes_to_the_same_end(tmp_path, monkeypatch):
    cfg = _cfg()
    full = tmp_path / "full"
    loop.train(cfg, full, progress=False)
    with probe.load_run(full) as run:
        m = run.metrics
        decided = max(m["step"][m["train_acc"] > 0.9].iloc[0], m["step"][m["val_acc"] > 0.9].iloc[0])
        assert run.finished and int(run.steps[-1]) == decided + 40 < 2000
        end = int(run.steps[-1])
    cut = tmp_path / "cut"
    real = loop.Trainer.lr_factor

    def interrupt(self, step):
        if step == end - 10:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(loop.Trainer, "lr_factor", interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, cut, progress=False)
    monkeypatch.undo()
    loop.resume(cut, progress=False)
    with probe.load_run(full) as a, probe.load_run(cut) as b:
        assert np.array_equal(a.steps, b.steps) and b.finished
        for name in a.tensor_names:
            assert np.array_equal(a.series(name), b.series(name))


def test_ensemble_members_stop_where_their_own_runs_stop(tmp_path):
    configs = [_cfg(), _cfg(weight_decay="1", seed="1")]
    train_ensemble(configs, [tmp_path / f"e{i}" for i in range(len(configs))], progress=False)
    for i, cfg in enumerate(configs):
        loop.train(cfg, tmp_path / f"o{i}", progress=False)
        with probe.load_run(tmp_path / f"e{i}") as a, probe.load_run(tmp_path / f"o{i}") as b:
            assert a.finished and b.finished
            assert abs(int(a.steps[-1]) - int(b.steps[-1])) <= 10  # decided at the same metric row
            info = describe_run(a)["early_stop"]  # probe info says where and why it stopped
            assert info["after_generalization"] == 40
            assert info["stopped_at"] == int(a.metrics["step"].iloc[-1]) < cfg.steps
