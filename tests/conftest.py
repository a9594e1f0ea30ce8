"""Shared fixtures: tiny configs that train in a second."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from probe.config import TrainConfig
from probe.train.config import load_config

TINY_TOY = {"steps": "60", "model.decoder": "16,16", "checkpoint.schedule": "every", "checkpoint.every": "5",
            "checkpoint.metrics_every": "5"}
TINY_TRANSFORMER = {"p": "11", "steps": "20", "model.d_model": "16", "model.n_heads": "2", "model.d_mlp": "32",
                    "checkpoint.every": "5", "checkpoint.metrics_every": "5"}


@pytest.fixture
def tiny_toy_config() -> TrainConfig:
    return load_config("liu-toy-add", overrides=TINY_TOY)


@pytest.fixture
def tiny_transformer_config() -> TrainConfig:
    return load_config("nanda-modadd", overrides=TINY_TRANSFORMER)


@pytest.fixture
def toy_run(tmp_path: Path, tiny_toy_config: TrainConfig) -> Path:
    from probe.train.loop import train

    train(tiny_toy_config, tmp_path / "toy", progress=False)
    return tmp_path / "toy"


@pytest.fixture
def transformer_run(tmp_path: Path, tiny_transformer_config: TrainConfig) -> Path:
    from probe.train.loop import train

    train(tiny_transformer_config, tmp_path / "tf", progress=False)
    return tmp_path / "tf"


def _train_interrupted(cfg: TrainConfig, run_dir: Path, at_call: int) -> None:
    """Train ``cfg`` into ``run_dir`` and stop it as Ctrl-C would, at the ``at_call``-th training step
    (the trainer asks for its learning-rate factor once per step)."""
    import probe.train.loop as loop

    original = loop.Trainer.lr_factor
    calls = {"n": 0}

    def boom(self: loop.Trainer, step: int) -> float:
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self, step)

    loop.Trainer.lr_factor = boom  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.train(cfg, run_dir, progress=False)
    finally:
        loop.Trainer.lr_factor = original  # type: ignore[method-assign]


def _wait_for_checkpoints(proc: "subprocess.Popen[bytes]", run_dir: Path, n: int, timeout: float = 120.0) -> None:
    """Wait until ``run_dir``'s run file has at least ``n`` committed checkpoints (or ``proc`` ended)."""
    import time

    from probe.runfile import RunFile, run_file_path

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if run_file_path(run_dir).exists():
            try:
                rf = RunFile(run_file_path(run_dir))
                count = len(rf.steps)
                rf.close()
            except Exception:
                count = 0
            if count >= n:
                return
        time.sleep(0.05)


@pytest.fixture
def train_interrupted() -> Any:
    """``train_interrupted(cfg, run_dir, at_call)``: a run stopped mid-way as Ctrl-C would stop it."""
    return _train_interrupted


@pytest.fixture
def wait_for_checkpoints() -> Any:
    """``wait_for_checkpoints(proc, run_dir, n)``: wait for a training process to commit ``n`` checkpoints."""
    return _wait_for_checkpoints
