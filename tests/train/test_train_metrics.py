"""``checkpoint.train_metrics`` (docs/design.md, "Training"): ``eval`` measures the training loss and
accuracy over the whole training set without dropout, ``update`` takes them from the step's own
forward pass (its batch, dropout on). The option changes the metric rows only, never the training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probe
from probe.errors import ProbeError
from probe.train import loop
from probe.train.config import load_config

# a small transformer with heavy dropout on addition mod 13, full batch
BASE = {"p": "13", "train_fraction": "0.6", "steps": "60", "lr": "3e-3", "model.d_model": "32", "model.n_heads": "2",
        "model.d_mlp": "64", "model.dropout": "0.3", "checkpoint.schedule": "every", "checkpoint.every": "20",
        "checkpoint.metrics_every": "10", "warmup_steps": "0"}


def _train(tmp_path, name: str, **extra: str):
    cfg = load_config("nanda-modadd", overrides={**BASE, **extra})
    return loop.train(cfg, tmp_path / name, progress=False)


def _eval_train(run, step: int) -> tuple[float, float]:
    """The training loss and accuracy of the checkpoint at ``step`` over the whole training set, eval mode."""
    model = run.model(step)
    model.eval()
    x, y = run.dataset("train")
    with torch.no_grad():
        out = model.answer(x, last_only=True)
        return float(model.loss(out, y)), float((model.predict(out) == y).double().mean())


def test_update_metrics_come_from_the_training_pass_and_leave_the_training_alone(tmp_path):
    ev, up = _train(tmp_path, "eval"), _train(tmp_path, "update", **{"checkpoint.train_metrics": "update"})
    with probe.load_run(ev) as a, probe.load_run(up) as b:
        assert b.config.checkpoint.train_metrics == "update" and a.config.checkpoint.train_metrics == "eval"
        # the same training, bit for bit: every saved tensor at every checkpoint
        assert np.array_equal(a.steps, b.steps)
        for name in a.tensor_names:
            assert a.series(name).tobytes() == b.series(name).tobytes(), name
        ma, mb = a.metrics.set_index("step"), b.metrics.set_index("step")
        assert ma["val_loss"].tolist() == mb["val_loss"].tolist()
        for step in a.steps:  # eval: the checkpoint's own loss without dropout; update: the dropped-out pass
            loss, acc = _eval_train(a, int(step))
            assert ma.loc[step, "train_loss"] == pytest.approx(loss, rel=1e-6, abs=1e-9)
            assert ma.loc[step, "train_acc"] == pytest.approx(acc)
            if step > 0:
                assert mb.loc[step, "train_loss"] != pytest.approx(loss, rel=1e-3)
        # dropout 0.3 costs the fitted model accuracy on its own batch
        assert mb["train_acc"].iloc[-1] < ma["train_acc"].iloc[-1]


def test_without_dropout_both_give_the_same_rows(tmp_path):
    ev = _train(tmp_path, "eval", **{"model.dropout": "0.0"})
    up = _train(tmp_path, "update", **{"model.dropout": "0.0", "checkpoint.train_metrics": "update"})
    with probe.load_run(ev) as a, probe.load_run(up) as b:
        cols = ["step", "train_loss", "train_acc", "val_loss", "val_acc"]
        assert a.metrics[cols].equals(b.metrics[cols])


def test_minibatch_update_metrics_are_the_batchs(tmp_path):
    up = _train(tmp_path, "mb", **{"model.dropout": "0.0", "batch_size": "8", "checkpoint.train_metrics": "update"})
    with probe.load_run(up) as run:
        acc = run.metrics["train_acc"].to_numpy()
    assert np.allclose(acc * 8, np.round(acc * 8))  # a share of the 8 rows of the step's batch


def test_unknown_values_are_refused():
    with pytest.raises(ProbeError, match="checkpoint.train_metrics"):
        load_config("nanda-modadd", overrides={"checkpoint.train_metrics": "batch"})
