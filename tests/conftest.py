"""Shared fixtures: tiny configs that train in a second."""

from __future__ import annotations

from pathlib import Path

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
