"""Vectorised ensembles: members match the same configs trained one by one, checkpoint by checkpoint,
full batch or on their own minibatches; member files are ordinary runs (they resume and analyse); what
does not vectorise is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import probe
from probe.errors import ProbeError
from probe.train.config import load_config
from probe.train.ensemble import Ensemble, train_ensemble, why_not
from probe.train.loop import resume, train

TOY = {"steps": "120", "checkpoint.schedule": "every", "checkpoint.every": "20", "checkpoint.metrics_every": "10"}
TOY_MEMBERS = [
    {"lr": "1e-3", "weight_decay": "0"},
    {"lr": "3e-4", "weight_decay": "1", "seed": "1"},
    {"lr": "1e-3", "embed_lr": "1e-2", "weight_decay": "0.1", "split_seed": "2"},
    {"lr": "2e-3", "train_fraction": "0.5", "model.init_scale": "0.5", "seed": "3"},
]
MINIBATCH_MEMBERS = [{"batch_size": "5", "lr": "1e-3"}, {"batch_size": "20", "lr": "3e-3", "seed": "1"},
                     {"lr": "1e-3", "split_seed": "2"}, {"batch_size": "8", "lr": "2e-3", "seed": "3"}]
TRANSFORMER = {"p": "11", "steps": "40", "model.d_model": "16", "model.d_mlp": "32", "model.n_heads": "2",
               "checkpoint.schedule": "every", "checkpoint.every": "10", "checkpoint.metrics_every": "5"}
TRANSFORMER_MEMBERS = [{"lr": "1e-3"}, {"lr": "3e-3", "weight_decay": "0.1", "seed": "1"},
                       {"lr": "1e-3", "train_fraction": "0.5", "split_seed": "4"}]


def _configs(preset: str, base: dict, members: list[dict]) -> list:
    out = []
    for m in members:
        overrides = {**base, **m}
        if "train_fraction" in m:
            overrides["n_train"] = None
        out.append(load_config(preset, overrides=overrides))
    return out


def _compare(a: Path, b: Path, rtol: float, atol: float) -> None:
    """Per checkpoint and tensor, ``|A - B| <= rtol |B| + atol sqrt(n)`` (Frobenius norms). Attention key
    biases are left out: softmax ignores them, so their gradient is rounding noise that Adam turns into
    full-size steps in either implementation."""
    with probe.load_run(a) as x, probe.load_run(b) as y:
        assert np.array_equal(x.steps, y.steps)
        for name in x.tensor_names:
            if name.endswith("attn.b_K"):  # its gradient is zero up to rounding: Adam walks on noise
                continue
            sa, sb = x.series(name).astype(np.float64), y.series(name).astype(np.float64)
            for t in range(len(sa)):
                diff = np.linalg.norm(sa[t] - sb[t])
                assert diff <= rtol * np.linalg.norm(sb[t]) + atol * np.sqrt(sb[t].size), (name, t, diff)
        mx, my = x.metrics, y.metrics
        assert np.array_equal(mx["step"], my["step"])
        for col in ("train_acc", "val_acc"):
            assert np.max(np.abs(mx[col].to_numpy() - my[col].to_numpy())) <= 0.02, col
        np.testing.assert_allclose(mx["train_loss"], my["train_loss"], rtol=1e-3, atol=1e-6)
        assert x.finished and y.finished
        assert x.config == y.config


@pytest.mark.parametrize("preset,base,members,tol", [
    ("liu-toy-add", TOY, TOY_MEMBERS, (1e-4, 1e-6)),
    # split, targets and weights drawn as grokking-squared's phase-diagram notebook: each member is set up
    # as its own run, so the option vectorises (full batch)
    ("liu-toy-add", {**TOY, "rng": "grokking-squared-phase", "n_train": "45"},
     [{"seed": "58", "split_seed": "58"}, {"seed": "58", "split_seed": "58", "lr": "1e-2", "weight_decay": "3"},
      {"seed": "9", "split_seed": "9"}], (1e-4, 1e-6)),
    # minibatches: each member draws its own batches (batch sizes differ; one member trains full batch)
    ("liu-toy-add", {**TOY, "steps": "200"}, MINIBATCH_MEMBERS, (1e-4, 1e-6)),
    # epochs over a shuffled split, and the training metrics of the update's own batch
    ("liu-toy-add", {**TOY, "steps": "200", "batching": "epochs", "checkpoint.train_metrics": "update"},
     MINIBATCH_MEMBERS, (1e-4, 1e-6)),
    # the minibatches of toy/train_add.py's random stream (50 training pairs: batch 45 draws)
    ("liu-toy-add", {**TOY, "steps": "200", "rng": "grokking-squared", "n_train": "50"},
     [{"batch_size": "45", "seed": "0", "split_seed": "0"},
      {"batch_size": "10", "seed": "1", "split_seed": "1", "lr": "3e-3"}], (1e-4, 1e-6)),
    ("nanda-modadd", TRANSFORMER, TRANSFORMER_MEMBERS, (1e-3, 1e-5)),
    ("nanda-modadd", {**TRANSFORMER, "batch_size": "32"}, TRANSFORMER_MEMBERS, (1e-3, 1e-5)),
    ("zhong-pizza", {**TRANSFORMER, "model.attention_rate": "0.5"}, TRANSFORMER_MEMBERS, (1e-3, 1e-5)),
    # the attention rate differs between members: each member's rate reaches the batched call (a knob)
    ("zhong-pizza", TRANSFORMER, [{"model.attention_rate": "0"}, {"model.attention_rate": "0.3", "seed": "1"},
                                  {"model.attention_rate": "1", "lr": "3e-3"}], (1e-3, 1e-5)),
])
def test_members_match_runs_trained_one_by_one(tmp_path, preset, base, members, tol):
    configs = _configs(preset, base, members)
    assert why_not(configs) is None
    dirs = [tmp_path / f"ens{i}" for i in range(len(configs))]
    train_ensemble(configs, dirs, progress=False)
    for i, cfg in enumerate(configs):
        single = tmp_path / f"one{i}"
        train(cfg, single, progress=False)
        _compare(dirs[i], single, *tol)


def test_member_files_are_ordinary_runs(tmp_path):
    configs = _configs("liu-toy-add", TOY, TOY_MEMBERS[:2])
    dirs = [tmp_path / "a", tmp_path / "b"]
    train_ensemble(configs, dirs, progress=False)
    resume(dirs[0], steps=160, progress=False)  # the ordinary trainer continues a member
    with probe.load_run(dirs[0]) as run:
        assert int(run.steps[-1]) == 160 and run.finished
    from probe import analyses

    df = analyses.compute(probe.load_run(dirs[1]), "rqi", steps="last", cache=False)
    assert 0.0 <= df["rqi"].iloc[0] <= 1.0


def test_what_does_not_vectorise_is_refused(tmp_path):
    base = _configs("liu-toy-add", TOY, [{}, {"steps": "60"}])
    assert "'steps'" in why_not(base)
    assert "optimizer sgd" in why_not(_configs("liu-toy-add", {**TOY, "optimizer": "sgd"}, [{}, {}]))
    assert "'batching'" in why_not(_configs("liu-toy-add", {**TOY, "batch_size": "8"}, [{}, {"batching": "epochs"}]))
    with pytest.raises(ProbeError, match="cannot train as one ensemble"):
        train_ensemble(base, [tmp_path / "x", tmp_path / "y"], progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_members_that_stop_early_leave_the_others_unchanged(tmp_path, monkeypatch):
    """One member stops early (its phase is decided) and leaves the stack; the members that go on
    still match their own runs, checkpoint by checkpoint."""
    base = {**TOY, "steps": "400", "stop.after_generalization": "20", "checkpoint.every": "40"}
    members = [{"lr": "1e-2", "embed_lr": "3e-2", "train_fraction": "0.9"}, {"lr": "1e-4", "embed_lr": "1e-4", "seed": "1"},
               {"lr": "3e-4", "weight_decay": "1", "seed": "2", "train_fraction": "0.6"}]
    configs = _configs("liu-toy-add", base, members)
    dirs = [tmp_path / f"ens{i}" for i in range(len(configs))]
    order: list[int] = []
    widths: list[int] = []
    keep = Ensemble._keep

    def kept(self: Ensemble, positions: list[int]) -> None:
        keep(self, positions)
        widths.append(int(self.train_idx.shape[1]))

    monkeypatch.setattr(Ensemble, "_keep", kept)
    train_ensemble(configs, dirs, progress=False, on_finish=order.append)
    # the member with the largest training set (49 of 55 pairs) stops first: the padded rows shrink to
    # the largest set left (the preset's 45)
    assert widths[0] == 45, widths
    last = []
    for i, cfg in enumerate(configs):
        train(cfg, tmp_path / f"one{i}", progress=False)
        _compare(dirs[i], tmp_path / f"one{i}", 1e-4, 1e-6)
        with probe.load_run(dirs[i]) as run:
            last.append(int(run.steps[-1]))
    assert min(last) < 400 and max(last) == 400  # one stopped early, one used the whole budget
    assert sorted(order) == [0, 1, 2] and last[order[0]] == min(last)  # reported as each one finished
